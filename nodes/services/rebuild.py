"""Re-replication: the leader restores every lost copy of replicated data.

Theory of operation
-------------------
A node is **lost** once the leader has recorded it DOWN for ``delay_s`` (the
``[rebuild]`` settings: the config's, or ``fabric rebuild``'s at runtime). Every
``limits.REBUILD_EVERY_S``, and whenever a copy finishes, the leader's planner lists
the sealed replicated groups with a copy on a lost node, **least redundant first**
(fewest copies on UP nodes), and starts copies while the limits allow:

* at most ``per_node`` copies involve any node at once, as source or as target;
* a cluster-wide byte rate (``bytes_per_s``, 0 for none): a token bucket charged
  with each group's size when its copy starts.

For each, the planner picks a target on an UP node in a fault domain none of the
surviving copies uses (rendezvous over the nodes not at their limit), claims the file
(``rebuild/<egid>``), and sends ``PullEgroup``: the target reads the group from the
survivors (``nodes.services.copier``), checks every live extent, fsyncs, and answers.
Then ``AddReplica`` swaps the lost node for the target in the group's replicas. So
every surviving node takes part, as a source or a target, and the leader only plans.

An open group with a lost copy is sealed first (its writer has moved on). A group
whose copies are all lost, or that no fault domain can take, is reported once in the
event log (``rebuild_stuck``) and retried on later passes. Erasure-coded strip members
are recomputed by the EC job (``EcService``) under the same notion of lost.

A node that comes back is no longer listed for the groups rebuilt meanwhile: its copies
of them are surplus, swept when it registers (``sweep_orphans``) and by the file sweep;
the groups not rebuilt yet are whole again and are left alone. A copy that fails (the
target died, no good source) leaves a claimed partial file that the claim's expiry or
the next attempt deletes; its group is tried again after ``RETRY_AFTER_S``.

Every node (leader or not) samples the replicated totals once a second: bytes at
reduced resiliency, seconds spent with any, and the rebuild rate, for ``/metrics``
and ``fabric status``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Set
from dataclasses import dataclass, field
from typing import Any

from fabric import limits
from fabric.config import ClusterConfig
from fabric.errors import FabricError, from_code
from fabric.metadata import healing, keys
from fabric.metadata.commands import AddReplica, DropIntent, RegisterIntents, SealEgroups
from fabric.metadata.records import EgroupIntent, EgroupRecord, RebuildSettings, StripMember
from fabric.metadata.state import MetadataState
from fabric.placement.rendezvous import NotEnoughDomains, place
from fabric.ports import Clock, PeerUnreachable, Transport
from fabric.wire.messages import ExtentCheck, PullEgroup, PullReply
from nodes.services.catalog import Catalog
from nodes.services.copier import Copier
from nodes.services.events import EventLog
from nodes.services.inflight import GroupsInFlight
from nodes.services.metadata import MetadataService
from nodes.services.replicas import ReplicaClient

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5.0
"""A group whose copy failed is not tried again sooner than this."""


@dataclass(frozen=True, slots=True)
class Work:
    """A group with a copy to rebuild."""

    eg: EgroupRecord
    lost: str
    """The lost node whose copy is replaced."""
    live: tuple[str, ...]
    """Its copies on UP nodes: the sources."""
    to: str = ""
    """Where the copy must go (a rebalance move); "" lets placement choose."""


def to_rebuild(
    state: MetadataState, lost: set[str], draining: set[str] | None = None
) -> tuple[list[Work], list[EgroupRecord]]:
    """Sealed replicated groups with a copy to make: on a lost node or lost with a disk
    (least redundant first), then on a draining node; and the open ones, to seal first."""
    draining = draining or set()
    up = state.up_nodes()
    away = lost | draining
    egids = {egid for node in away for egid in state.idx.egroups_on.get(node, ())}
    egids |= state.idx.short_egroups
    work, open_groups = [], []
    for eg in state.egroups(sorted(egids)):
        if eg.strip or eg.parity or not eg.extents:
            continue  # EC members are the EC job's; an empty group is collected instead
        if not eg.sealed:
            open_groups.append(eg)
            continue
        on_lost = [n for n in eg.replicas if n in lost]
        on_draining = [n for n in eg.replicas if n in draining]
        if on_lost:
            replaced = on_lost[0]
        elif eg.lost_copies:
            replaced = ""  # a copy lost with its disk left the replicas: add one back
        elif on_draining:
            replaced = on_draining[0]
        else:
            continue
        work.append(Work(eg, replaced, tuple(n for n in eg.replicas if n in up)))
    work.sort(key=lambda w: (w.lost in draining, len(w.live), w.eg.egid))
    return work, open_groups


def rebalance_moves(
    state: MetadataState,
    nodes: Set[str],
    domains: dict[str, str],
    limit: int,
    started: bool = False,
) -> list[Work]:
    """Copies to move from the fullest nodes to the emptiest until every node's bytes
    are within ``limits.REBALANCE_TOLERANCE`` of the mean (or one extent group).

    A rebalance starts only when a node holds less than ``REBALANCE_START_BELOW`` of the
    mean (a node that joined, or came back empty) and the mean is worth it: placement
    by rendezvous keeps a steady cluster even, and moving data costs the disks what
    clients would have had."""
    usage = {n: 0 for n in nodes}
    groups: dict[str, list[EgroupRecord]] = {n: [] for n in nodes}
    for node in nodes:
        for eg in state.egroups(sorted(state.idx.egroups_on.get(node, ()))):
            usage[node] += eg.size
            if eg.sealed and eg.extents and not eg.strip and not eg.parity:
                groups[node].append(eg)
    if len(usage) < 2:
        return []
    mean = sum(usage.values()) / len(usage)
    worth = mean >= limits.REBALANCE_MIN_MEAN_GROUPS * limits.EGROUP_MAX_BYTES
    if not started and not (worth and min(usage.values()) < limits.REBALANCE_START_BELOW * mean):
        return []
    slack = max(limits.REBALANCE_TOLERANCE * mean, float(limits.EGROUP_MAX_BYTES))
    moves: list[Work] = []
    for src in sorted(usage, key=lambda n: (-usage[n], n)):
        for eg in sorted(groups[src], key=lambda g: (-g.size, g.egid)):
            if len(moves) >= limit or usage[src] - mean <= slack / 2:
                break
            others = {domains.get(n, n) for n in eg.replicas if n != src}
            fits = [n for n in nodes if n not in eg.replicas and domains.get(n, n) not in others]
            if not fits:
                continue
            dst = min(fits, key=lambda n: (usage[n], n))
            if usage[src] - usage[dst] <= slack:
                continue  # moving it would only swap which node is the fuller
            moves.append(Work(eg, src, tuple(n for n in eg.replicas if n in nodes), dst))
            usage[src] -= eg.size
            usage[dst] += eg.size
    return moves


def reduced_bytes(state: MetadataState) -> dict[str, int]:
    """container -> bytes of its data with a copy or strip member on a node not UP."""
    up = state.up_nodes()
    out: dict[str, int] = {}
    egids = {e for n, held in state.idx.egroups_on.items() if n not in up for e in held}
    egids |= state.idx.short_egroups
    for eg in state.egroups(sorted(egids)):
        if eg.extents and not eg.strip and not eg.parity:
            out[eg.container] = out.get(eg.container, 0) + eg.size
    strip_ids = {s for n, held in state.idx.strips_on.items() if n not in up for s in held}
    strip_ids |= {eg.strip for eg in state.egroups(sorted(state.idx.short_egroups)) if eg.strip}
    for strip_id in sorted(strip_ids):
        strip = state.strip(strip_id)
        if strip is not None:
            out[strip.container] = out.get(strip.container, 0) + strip.data_bytes
    return out


@dataclass
class RebuildStats:
    copies: int = 0
    bytes_copied: int = 0
    failed: int = 0
    refused: int = 0
    """Copies whose commit was refused (the group changed meanwhile)."""


@dataclass
class ContainerWatch:
    """What one node saw of a container's resiliency over time."""

    reduced_bytes: int = 0
    reduced_seconds: float = 0.0
    """Seconds with any byte at reduced resiliency (sampled)."""
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    """(time, rebuilt bytes ever) over the last ``REBUILD_RATE_WINDOW_S``."""

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


class RebuildService:
    def __init__(
        self,
        node_id: str,
        config: ClusterConfig,
        clock: Clock,
        transport: Transport,
        metadata: MetadataService,
        catalog: Catalog,
        copier: Copier,
        replicas: ReplicaClient,
        events: EventLog,
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]],
        inflight: GroupsInFlight,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self._scale = config.timeouts.background_scale
        self.clock = clock
        self.transport = transport
        self.metadata = metadata
        self.catalog = catalog
        self.copier = copier
        self.replicas = replicas
        self.events = events
        self.spawn = spawn
        self.inflight = inflight
        self.stats = RebuildStats()
        self.watch: dict[str, ContainerWatch] = {}
        self._reduced: tuple[MetadataState | None, int, dict[str, int]] = (None, -1, {})
        """``reduced_bytes`` of a state at an applied index (only an entry changes it)."""
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._busy: dict[str, int] = {}
        """node -> copies it takes part in now (as source or target)."""
        self._retry_at: dict[str, float] = {}
        self._tokens = 0.0
        self._refilled = 0.0
        self._wake = asyncio.Event()
        self._episode: float | None = None
        """When the current rebuild began (None: nothing to rebuild)."""
        self._episode_bytes = 0
        self._stuck: set[str] = set()
        """Groups already reported as stuck in this episode."""
        self._rebalance_at = 0.0
        self._moves: list[Work] = []
        self._done: set[str] = set()
        """Groups whose copy finished (or failed) since the rebalance plan was made."""
        self._rebalancing = False
        self._rebalance_bytes = 0

    @property
    def state(self) -> MetadataState:
        return self.metadata.state

    @property
    def running(self) -> list[str]:
        """Groups being copied now (on the leader)."""
        return sorted(self._running)

    def settings(self) -> RebuildSettings:
        return healing.effective_rebuild(self.state, self.config.rebuild)

    # --- the leader's planner ---------------------------------------------------------------
    async def run_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), limits.REBUILD_EVERY_S * self._scale)
            except TimeoutError:
                pass
            self._wake.clear()
            if not self.metadata.is_leader:
                self._stand_down()
                await self.metadata.until_leader()
                continue
            await self.plan()

    def _stand_down(self) -> None:
        for task in self._running.values():
            task.cancel()
        self._running.clear()
        self._busy.clear()
        self._episode = None

    async def plan(self) -> None:
        """Start the copies the limits allow, most urgent first."""
        settings = self.settings()
        now = self.clock.now()
        lost = healing.lost_nodes(self.state, settings, self.clock.wall())
        draining = healing.draining_nodes(self.state) & self.state.up_nodes()
        work, open_groups = to_rebuild(self.state, lost, draining)
        if open_groups:
            await self.metadata.propose(SealEgroups(tuple(eg.egid for eg in open_groups)))
        strips = any(n in lost for n in self.state.idx.strips_on) or any(
            eg.strip for eg in self.state.egroups(sorted(self.state.idx.short_egroups))
        )
        await self._episode_change(bool(work or open_groups or strips), work, lost)
        self._refill(settings, now)
        if not (work or open_groups or strips):
            work = await self._rebalance(settings, draining)
        domains = self.catalog.fault_domains()
        for w in work:
            if w.eg.egid in self._running or self._retry_at.get(w.eg.egid, 0.0) > now:
                continue
            if self.inflight.held_by_other(w.eg.egid, "rebuild"):
                continue  # being erasure coded: its replicas are about to change
            if settings.bytes_per_s and self._tokens <= 0:
                break
            if not w.live:
                await self._stuck_once(w.eg.egid, f"every copy of {w.eg.egid} is on a lost node")
                continue
            sources = sorted(w.live, key=lambda n: self._busy.get(n, 0))
            if self._busy.get(sources[0], 0) >= settings.per_node:
                continue
            if w.to:
                target = w.to if self._busy.get(w.to, 0) < settings.per_node else None
            else:
                target = self._target(w, domains, settings)
            if target is None:
                continue
            self._tokens -= w.eg.size
            self._start(w, target, tuple(sources))

    def _target(self, w: Work, domains: dict[str, str], settings: RebuildSettings) -> str | None:
        used = {domains.get(n, n) for n in w.live}
        free = [
            c
            for c in self.catalog.candidates(set(w.eg.replicas), used)
            if self._busy.get(c.node, 0) < settings.per_node
        ]
        try:
            return place(f"{w.eg.egid}/rebuild", free, 1)[0]
        except NotEnoughDomains:
            return None  # every candidate busy, or none left: a later pass

    def _refill(self, settings: RebuildSettings, now: float) -> None:
        if not settings.bytes_per_s:
            self._tokens, self._refilled = 0.0, now
            return
        burst = max(float(settings.bytes_per_s), float(limits.EGROUP_MAX_BYTES))
        elapsed = max(0.0, now - self._refilled)
        self._tokens = min(burst, self._tokens + elapsed * settings.bytes_per_s)
        self._refilled = now

    def _start(self, w: Work, target: str, sources: tuple[str, ...]) -> None:
        self.inflight.take(w.eg.egid, "rebuild")  # now: the EC job plans meanwhile
        for node in (target, sources[0]):
            self._busy[node] = self._busy.get(node, 0) + 1
        task = self.spawn(self._copy(w, target, sources), f"rebuild-{w.eg.egid}")
        self._running[w.eg.egid] = task

    async def _copy(self, w: Work, target: str, sources: tuple[str, ...]) -> None:
        egid = w.eg.egid
        try:
            await self._copy_and_commit(w, target, sources)
        except (PeerUnreachable, FabricError) as exc:
            self.stats.failed += 1
            self._retry_at[egid] = self.clock.now() + RETRY_AFTER_S
            log.warning("rebuild of %s onto %s failed: %s", egid, target, exc)
            await self._stuck_once(egid, f"a copy of {egid} onto {target} failed: {exc}")
        finally:
            self.inflight.release(egid, "rebuild")
            self._done.add(egid)
            if self._running.get(egid) is asyncio.current_task():
                del self._running[egid]
                for node in (target, sources[0]):
                    self._busy[node] = self._busy.get(node, 1) - 1
            self._wake.set()

    async def _copy_and_commit(self, w: Work, target: str, sources: tuple[str, ...]) -> None:
        egid = w.eg.egid
        claim = keys.rebuild_claim(egid)
        if self.state.get(keys.intent_key(claim)) is not None:
            # An earlier attempt's claim may name another target: end it (its partial
            # file is then a surplus copy, which the file sweep deletes) and claim anew.
            await self.metadata.propose(DropIntent(claim))
        intent = EgroupIntent(claim, w.eg.container, (StripMember(egid, target),), self.node_id)
        result = await self.metadata.propose(RegisterIntents((intent,)))
        if not result.ok:
            raise from_code(result.code, result.message)
        checks = tuple(
            ExtentCheck(e.offset, e.stored_len, e.checksum) for _, e in self.state.extents_in(egid)
        )
        pull = PullEgroup(egid, sources, checks)
        if target == self.node_id:
            reply = await self.copier.pull(pull)
        else:
            timeout = limits.REPLICA_TIMEOUT_S + w.eg.size / limits.REBUILD_COPY_MIN_BYTES_PER_S
            reply = await self.transport.call(target, pull, timeout)
        assert isinstance(reply, PullReply)
        result = await self.metadata.propose(AddReplica(egid, w.lost, target, reply.bytes_copied))
        if not result.ok:
            self.stats.refused += 1
            log.info("rebuilt copy of %s on %s not needed: %s", egid, target, result.message)
            return
        self.stats.copies += 1
        self.stats.bytes_copied += reply.bytes_copied
        self._episode_bytes += reply.bytes_copied
        if w.lost in self.state.up_nodes():
            # A move (drain, rebalance): the old copy is surplus now; the file sweep would
            # delete it too, later.
            failed = await self.replicas.delete_files([(egid, w.lost)])
            if failed:
                log.info("surplus copy of %s on %s left to the sweep", egid, w.lost)
        log.info(
            "rebuilt %s on %s from %s (%d bytes)", egid, target, sources[0], reply.bytes_copied
        )

    # --- rebalancing --------------------------------------------------------------------
    async def _rebalance(self, settings: RebuildSettings, draining: set[str]) -> list[Work]:
        """Moves toward even usage, once nothing needs rebuilding. The plan is made again
        only when its moves are done (usage then counts them) and at most every
        ``limits.REBALANCE_EVERY_S`` (it visits every group)."""
        now = self.clock.now()
        self._moves = [w for w in self._moves if w.eg.egid not in self._done]
        if self._running or now < self._rebalance_at:
            return [w for w in self._moves if w.eg.egid not in self._running]
        self._rebalance_at = now + limits.REBALANCE_EVERY_S * self._scale
        self._done.clear()
        nodes = (self.state.up_nodes() - draining) - set(self.catalog.no_room())
        limit = settings.per_node * max(1, len(nodes))
        moves = self._moves = rebalance_moves(
            self.state, nodes, self.catalog.fault_domains(), limit, self._rebalancing
        )
        if moves and not self._rebalancing:
            self._rebalancing, self._rebalance_bytes = True, self.stats.bytes_copied
            size = sum(w.eg.size for w in moves)
            await self.events.record(
                "rebalance_started",
                "",
                f"rebalance started: usage is uneven; moving {len(moves)} extent groups "
                f"({size} bytes) first",
            )
        elif not moves and self._rebalancing:
            self._rebalancing = False
            moved = self.stats.bytes_copied - self._rebalance_bytes
            await self.events.record(
                "rebalance_finished",
                "",
                f"rebalance finished: {moved} bytes moved; every node within "
                f"{limits.REBALANCE_TOLERANCE:.0%} of the mean (or one extent group)",
            )
        return moves

    # --- the event log ----------------------------------------------------------------------
    async def _episode_change(self, pending: bool, work: list[Work], lost: set[str]) -> None:
        if pending and self._episode is None:
            self._episode, self._episode_bytes = self.clock.now(), 0
            self._stuck.clear()
            size = sum(w.eg.size for w in work)
            where = [f"on {', '.join(sorted(lost))}"] if lost else []
            if any(not w.lost for w in work):
                where.append("lost with a disk")
            await self.events.record(
                "rebuild_started",
                ",".join(sorted(lost)),
                f"rebuild started: {len(work)} extent groups ({size} bytes) had a copy "
                + (" or ".join(where) or "to make again"),
                "warning",
            )
        elif not pending and self._episode is not None and not self._running:
            took = self.clock.now() - self._episode
            self._episode = None
            await self.events.record(
                "rebuild_finished",
                "",
                f"rebuild finished: {self._episode_bytes} bytes copied in {took:.1f} s; "
                "every group has its full copies again",
            )

    async def _stuck_once(self, egid: str, why: str) -> None:
        if egid in self._stuck:
            return
        self._stuck.add(egid)
        await self.events.record("rebuild_stuck", egid, f"cannot rebuild yet: {why}", "error")

    # --- what every node watches ------------------------------------------------------------
    async def watch_forever(self) -> None:
        while True:
            self.sample()
            await self.clock.sleep(1.0 * self._scale)

    def sample(self) -> None:
        now = self.clock.now()
        state = self.state
        cached, at, reduced = self._reduced
        if cached is not state or at != state.applied_index:
            # Every node samples; a big cluster's learners apply a batch a heartbeat.
            reduced = reduced_bytes(state)
            self._reduced = (state, state.applied_index, reduced)
        for container in self.state.containers():
            watch = self.watch.setdefault(container.name, ContainerWatch())
            if watch.samples and watch.reduced_bytes:
                watch.reduced_seconds += now - watch.samples[-1][0]
            watch.reduced_bytes = reduced.get(container.name, 0)
            watch.samples.append((now, container.stats.rebuilt_bytes))
            while watch.samples and now - watch.samples[0][0] > limits.REBUILD_RATE_WINDOW_S:
                watch.samples.popleft()

    def progress(self) -> dict[str, dict[str, Any]]:
        """Per container: bytes at reduced resiliency, the rebuild rate and an ETA, for
        ``fabric status`` (the groups on lost nodes are visited once for all of them)."""
        reduced_by = reduced_bytes(self.state)
        out = {}
        for container in self.state.containers():
            watch = self.watch.get(container.name, ContainerWatch())
            reduced = reduced_by.get(container.name, 0)
            rate = watch.rate()
            out[container.name] = {
                "reduced_resiliency_bytes": reduced,
                "rebuild_bytes_per_s": round(rate),
                "rebuild_eta_s": round(reduced / rate, 1) if reduced and rate > 0 else None,
                "reduced_resiliency_seconds": round(watch.reduced_seconds, 1),
            }
        return out
