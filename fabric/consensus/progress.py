"""What a leader knows about each peer, and the quorum arithmetic over it.

Theory of operation
-------------------
A leader keeps one ``Progress`` per peer (every voter but itself, and every learner).
``match`` is the highest index known to be in the peer's log (it only grows while this
node is leader); ``next`` is the next index to send. The flow-control state says how:

* PROBE: one append at ``next-1``, then wait (``probe_sent``) for the answer; the
  heartbeat tick unpauses it. A success moves to REPLICATE; a rejection moves ``next``
  back to the peer's hint; an index compacted away sends a snapshot (SNAPSHOT).
* REPLICATE: appends back to back, ``next`` moving on optimistically, at most
  ``max_inflight`` unacknowledged. A fresh rejection falls back to PROBE.
* SNAPSHOT: nothing until the peer acknowledges the snapshot's index (then REPLICATE).

A peer is *stalled* when messages are outstanding but ``match`` has not moved for a whole
election timeout: the appends or the snapshot were lost, so the leader probes again from
``match+1`` (which resends the snapshot if it is still needed).

``ProgressTracker`` holds the map and answers quorum questions over the voters of the
configuration in force: the highest index a majority holds, whether a majority was heard
from lately (check-quorum), and the newest read-index round a majority acknowledged. The
leader counts itself only while it is a voter (a leader removed by a change it has not
committed yet manages the cluster without being part of it). ``reconfigure`` follows a
membership change: new peers start probing, a promoted learner keeps what the leader
knows of its log, and removed ones stay as ``leaving`` (replicated to, counted nowhere)
until the change is committed, then are forgotten.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from enum import Enum

from fabric.consensus.types import Membership


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    def __init__(self, next_index: int, max_inflight: int, voter: bool) -> None:
        self.match = 0
        self.next = next_index
        self.voter = voter
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight: deque[int] = deque()
        """Last index of each unacknowledged append, oldest first."""
        self.max_inflight = max_inflight
        self.recent_active = False
        self.read_ack = 0
        self.commit_told = 0
        """The highest commit index a message told this peer it may apply."""
        self.lazy = False
        """A learner that gets committed entries with its heartbeats (``lazy_learners``)."""
        self.wanted = 0
        """A lazy learner is sent entries up to here at once (``Raft.catch_up``)."""
        self.stalled_heartbeats = 0

    # -- transitions -----------------------------------------------------------------

    def become_probe(self) -> None:
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = index

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()
        self.stalled_heartbeats = 0
        self.commit_told = 0  # a peer we probe again may have restarted and forgotten

    # -- events ----------------------------------------------------------------------

    def can_send(self) -> bool:
        match self.state:
            case ProgressState.PROBE:
                return not self.probe_sent
            case ProgressState.REPLICATE:
                return len(self.inflight) < self.max_inflight
            case ProgressState.SNAPSHOT:
                return False

    def sent(self, last: int) -> None:
        """An append carrying entries up to ``last`` went out."""
        if self.state is ProgressState.REPLICATE:
            self.next = last + 1
            self.inflight.append(last)
        else:
            self.probe_sent = True

    def acked(self, index: int) -> bool:
        """The peer holds our log up to ``index``; True if that is news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.next = max(self.next, index + 1)
            self.stalled_heartbeats = 0
        match self.state:
            case ProgressState.PROBE:
                self.become_replicate()
            case ProgressState.SNAPSHOT if self.match >= self.pending_snapshot:
                self.become_replicate()
            case _:
                while self.inflight and self.inflight[0] <= index:
                    self.inflight.popleft()
        return updated

    def rejected(self, rejected: int, hint: int) -> None:
        """The peer's log does not contain our entry at ``rejected``; ``hint`` is where
        it suggests probing next. Stale rejections are ignored.

        A rejection at ``match`` itself cannot be stale: the peer acknowledged that
        entry and has lost it since (its disk was wiped or replaced). Probing starts
        again below it, so it can catch up; a voter in that state also abstains from
        elections until it is re-added (``RaftConfig.abstain``), and the commit index
        never moves back whatever ``match`` says now."""
        if 0 < rejected == self.match and hint <= self.match:
            self.match = max(0, hint - 1)
            self.become_probe()
            return
        match self.state:
            case ProgressState.REPLICATE if rejected > self.match:
                self.become_probe()
                self.next = max(self.match + 1, min(hint, rejected))
            case ProgressState.PROBE if rejected == self.next - 1:
                self.next = max(self.match + 1, min(hint, rejected))
                self.probe_sent = False
            case _:
                pass

    def heartbeat_tick(self, stall_limit: int) -> None:
        """Called at every heartbeat: unpause a probe, notice a stalled pipeline."""
        self.probe_sent = False
        outstanding = self.state is ProgressState.SNAPSHOT or bool(self.inflight)
        self.stalled_heartbeats = self.stalled_heartbeats + 1 if outstanding else 0
        if self.stalled_heartbeats >= stall_limit:
            self.become_probe()

    def status(self) -> dict[str, object]:
        return {
            "match": self.match,
            "next": self.next,
            "state": self.state.value,
            "inflight": len(self.inflight),
            "recent_active": self.recent_active,
            "voter": self.voter,
        }


def quorum(voters: int) -> int:
    return voters // 2 + 1


def quorum_value(values: list[int]) -> int:
    """The largest value that a majority of ``values`` reaches (one value per voter)."""
    return sorted(values, reverse=True)[quorum(len(values)) - 1]


class ProgressTracker:
    def __init__(
        self,
        self_id: str,
        config: Membership,
        next_index: int,
        max_inflight: int,
        lazy_learners: bool = False,
    ) -> None:
        self._self_id = self_id
        self._max_inflight = max_inflight
        self._lazy_learners = lazy_learners
        self.peers: dict[str, Progress] = {}
        self.reconfigure(config, next_index)

    def reconfigure(
        self, config: Membership, next_index: int, leaving: frozenset[str] = frozenset()
    ) -> None:
        """Track the peers of ``config``, and ``leaving`` ones as if they were learners;
        a new one starts probing at ``next_index``."""
        self._voter_count = len(config.voters)
        self.self_voter = self._self_id in config.voters
        self.leaving = leaving
        peers: dict[str, Progress] = {}
        for p in (*config.voters, *config.learners, *sorted(leaving)):
            if p != self._self_id:
                pr = self.peers.get(p) or Progress(next_index, self._max_inflight, voter=False)
                pr.voter = p in config.voters
                # A peer leaving is not lazy: it must hear the change that removes it.
                pr.lazy = self._lazy_learners and not pr.voter and p not in leaving
                peers[p] = pr
        self.peers = peers
        self._voters = [pr for pr in peers.values() if pr.voter]
        """The voters' progress: quorum questions are asked on every acknowledgement, and
        a big cluster is mostly learners."""

    def __iter__(self) -> Iterator[tuple[str, Progress]]:
        return iter(self.peers.items())

    def _voter_values(self, own: int, pick: Callable[[Progress], int]) -> list[int]:
        others = [pick(pr) for pr in self._voters]
        return [own, *others] if self.self_voter else others

    def committed_index(self, own_match: int) -> int:
        """The highest index that a majority of voters (this leader included, if it is
        one) holds."""
        return quorum_value(self._voter_values(own_match, lambda pr: pr.match))

    def read_acked(self, own_seq: int) -> int:
        """The newest read-index round that a majority of voters acknowledged."""
        return quorum_value(self._voter_values(own_seq, lambda pr: pr.read_ack))

    def quorum_active(self) -> bool:
        """Whether a majority of voters (this leader included) was heard from lately;
        clears the marks for the next period."""
        active = self.self_voter + sum(pr.recent_active for pr in self._voters)
        for pr in self.peers.values():
            pr.recent_active = False
        return active >= quorum(self._voter_count)

    def status(self) -> dict[str, object]:
        return {peer: pr.status() for peer, pr in self.peers.items()}
