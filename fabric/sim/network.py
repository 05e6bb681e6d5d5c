"""The simulator's network: in-memory delivery with scripted delay, loss and partitions.

Every message is encoded and decoded with the real wire codec on its way, so the
simulator exercises the same bytes a socket would carry. Every random choice (loss,
latency) comes from the network's own seeded RNG, in the order messages are sent, so
a run is replayed exactly by its seed.

With a hardware model (``fabric.hardware.NetworkSpec``) every directed link is a FIFO
wire: a message waits for the ones sent on it before, goes out at the link's bandwidth,
then arrives after the base latency plus a jitter draw (which may reorder messages, as
the real transport's parallel connections do); links between racks (nodes' ``rack``
labels) may have their own latency and bandwidth. Without one, a message
arrives after a uniform 0.2..2 ms (``latency_s``), the draw the simulator always made.

Counters (always kept, model or not): bytes per directed link (``link_bytes``), and per
(``inside``/``across`` racks, traffic family) (``scoped_bytes``, families from
``fabric.traffic``), counted as sent, whether delivered or not, like ``bytes_sent``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from typing import Any, Protocol

from fabric import traffic
from fabric.errors import FabricError, from_code
from fabric.hardware import NetworkSpec
from fabric.ports import Handler, OneWayHandler, PeerUnreachable
from fabric.sim.loop import VirtualLoop
from fabric.wire.codec import decode, encode
from fabric.wire.messages import ErrorReply
from fabric.wire.refusals import Refusals

SCOPES = ("inside", "across")
"""Where a link runs: inside one rack (or between nodes without a rack), or across two."""


class SenderFaults(Protocol):
    """Faults a node applies to what it sends (``nodes.faultinject.NetFaults``): the same
    object a real transport consults, so a simulated fault means what a real one does."""

    rules: dict[str, Any]

    def one_way(self, peer: str) -> tuple[int, float]: ...

    async def before_call(self, peer: str, size: int, now: float) -> None: ...


Tap = Callable[[float, str, str, bytes], None]
"""Sees every encoded message the network carries: (virtual send time, sender, receiver,
the bytes), as it is handed over, delivered or not."""


class SimNetwork:
    def __init__(
        self,
        rng: random.Random,
        model: NetworkSpec | None = None,
        racks: dict[str, str] | None = None,
    ) -> None:
        self.rng = rng
        self.model = model
        self.racks: dict[str, str] = dict(racks or {})
        """Node id -> rack label; a node not listed is in no rack."""
        self._link_free_at: dict[tuple[str, str], float] = {}
        self.link_bytes: dict[tuple[str, str], int] = {}
        """Bytes sent per directed link (sender, receiver)."""
        self.scoped_bytes: dict[tuple[str, str], int] = {}
        """Bytes sent per (scope, family): ``("across", "repair")`` is repair traffic
        between racks."""
        self.endpoints: dict[str, SimTransport] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.loss = 0.0
        self.latency_s = (0.0002, 0.002)
        self.sent = 0
        self.dropped = 0
        self.bytes_sent = 0
        self.watchers: list[Callable[[str, str, Any], None]] = []
        """Called with (sender, receiver, message) for every message sent, as it is sent
        (delivered or not): how checkers see what nodes say."""
        self.taps: list[Tap] = []
        self.refuse_dead = False
        """Calls to a node that is not running fail at once (connection refused) and its
        crash fails the calls waiting on it (connection reset), as for a killed process
        on a live host; False: they time out, as for a machine that lost power."""
        self._waiting: dict[str, dict[asyncio.Future[Any], None]] = {}
        """Calls waiting on each node, in the order they were made (a dict: deterministic)."""

    def transport(self, node_id: str, spawn: Callable[[Any], Any]) -> SimTransport:
        t = SimTransport(node_id, self, spawn)
        self.endpoints[node_id] = t
        return t

    def detach(self, node_id: str) -> None:
        """The node crashed: nothing reaches it and nothing it sent is still delivered."""
        self.endpoints.pop(node_id, None)
        waiting = list(self._waiting.pop(node_id, {}))
        if waiting:
            # The reset travels like any packet. Never in the same instant: a caller whose
            # own node crashes in that instant must see its cancellation first (asyncio's
            # wait_for would let this error through in its place, and the task live on).
            waiting[0].get_loop().call_later(self.latency_s[0], _reset, node_id, waiting)
        for link in [link for link in self._link_free_at if node_id in link]:
            del self._link_free_at[link]  # its connections reset: nothing queues on them

    # --- faults -----------------------------------------------------------------------------
    def partition(self, *groups: list[str]) -> None:
        """Cut every link between nodes of different groups (both directions)."""
        for a, b in itertools.permutations(range(len(groups)), 2):
            for x in groups[a]:
                for y in groups[b]:
                    self.blocked.add((x, y))

    def isolate(self, node: str, others: list[str]) -> None:
        self.partition([node], [o for o in others if o != node])

    def heal(self) -> None:
        self.blocked.clear()

    # --- delivery ---------------------------------------------------------------------------
    def watch(self, frm: str, to: str, message: Any) -> None:
        for watcher in self.watchers:
            watcher(frm, to, message)

    def cross_rack(self, a: str, b: str) -> bool:
        return self.racks.get(a) != self.racks.get(b)

    def bytes_by(self, scope: str | None = None, family: str | None = None) -> int:
        """Bytes sent in ``scope`` (``inside``/``across``) of ``family``; None: any."""
        return sum(
            n
            for (s, f), n in self.scoped_bytes.items()
            if (scope is None or s == scope) and (family is None or f == family)
        )

    def traffic(self) -> dict[str, dict[str, int]]:
        """The counters as plain data for a report: bytes per family inside racks and
        across them, and per directed link (``"n1->n2"``)."""
        out: dict[str, dict[str, int]] = {scope: {} for scope in SCOPES}
        for (scope, family), n in sorted(self.scoped_bytes.items()):
            out[scope][family] = n
        out["links"] = {f"{a}->{b}": n for (a, b), n in sorted(self.link_bytes.items())}
        return out

    def _count(self, frm: str, to: str, nbytes: int, family: str) -> None:
        self.sent += 1
        self.bytes_sent += nbytes
        link = (frm, to)
        self.link_bytes[link] = self.link_bytes.get(link, 0) + nbytes
        key = (SCOPES[self.cross_rack(frm, to)], family)
        self.scoped_bytes[key] = self.scoped_bytes.get(key, 0) + nbytes

    def _modelled_delay(self, model: NetworkSpec, frm: str, to: str, nbytes: int) -> float:
        """Seconds from now until the message arrives: its turn on the link, its bytes
        at the link's bandwidth, the base latency and a jitter draw."""
        latency_s, bandwidth = model.link(self.cross_rack(frm, to))
        now = asyncio.get_running_loop().time()
        out_at = now
        if bandwidth > 0:
            link = (frm, to)
            out_at = max(now, self._link_free_at.get(link, 0.0)) + nbytes / bandwidth
            self._link_free_at[link] = out_at
        jitter_s = model.jitter_ms / 1000
        if jitter_s > 0:
            if model.jitter == "exponential":
                latency_s += self.rng.expovariate(1 / jitter_s)
            else:
                latency_s += self.rng.uniform(0.0, jitter_s)
        return out_at - now + latency_s

    def deliver(
        self,
        frm: str,
        to: str,
        payload: bytes,
        fn: Callable[[Any], None],
        family: str = "control",
    ) -> None:
        """Deliver ``payload`` to ``fn`` after the link's delay, unless lost or cut."""
        self._count(frm, to, len(payload), family)
        if self.taps:
            now = asyncio.get_running_loop().time()
            for tap in self.taps:
                tap(now, frm, to, payload)
        if (frm, to) in self.blocked or self.rng.random() < self.loss:
            self.dropped += 1
            return
        if self.model is None:
            delay = self.rng.uniform(*self.latency_s)
        else:
            delay = self._modelled_delay(self.model, frm, to, len(payload))
        sender = self.endpoints.get(frm)

        def arrive() -> None:
            loop = asyncio.get_running_loop()
            if isinstance(loop, VirtualLoop) and to in loop.paused:
                loop.hold(to, arrive)  # a stopped process leaves it in its socket
                return
            # A node that crashed since sending, or a receiver that is gone, loses it.
            if self.endpoints.get(frm) is not sender or to not in self.endpoints:
                self.dropped += 1
                return
            if (frm, to) in self.blocked:
                self.dropped += 1
                return
            fn(decode(payload))

        asyncio.get_running_loop().call_later(delay, arrive)


def _reset(node_id: str, waiting: list[asyncio.Future[Any]]) -> None:
    for reply in waiting:
        if not reply.done():
            reply.set_exception(PeerUnreachable(node_id, "connection reset (it crashed)"))


class SimTransport:
    def __init__(self, node_id: str, net: SimNetwork, spawn: Callable[[Any], Any]) -> None:
        self.node_id = node_id
        self.net = net
        self._spawn = spawn
        self._on_call: Handler | None = None
        self._on_message: OneWayHandler | None = None
        self.refusals = Refusals()
        """Stays at zero: simulated nodes send only what the codec accepts (a message it
        refused would be a bug, and crashes the run)."""
        self.faults: SenderFaults | None = None
        """Injected network faults on what this node sends (None: none can be injected)."""

    def serve(self, on_call: Handler, on_message: OneWayHandler) -> None:
        self._on_call = on_call
        self._on_message = on_message

    def set_peers(self, urls: dict[str, str]) -> None:
        """The simulated network reaches nodes by id: nothing to learn."""

    def send(self, peer: str, message: Any) -> None:
        def arrive(msg: Any) -> None:
            target = self.net.endpoints[peer]
            if target._on_message is not None:
                target._on_message(self.node_id, msg)

        self.net.watch(self.node_id, peer, message)
        payload = encode(message)
        family = traffic.family(message)
        if self.faults is None or not self.faults.rules:
            self.net.deliver(self.node_id, peer, payload, arrive, family)
            return
        copies, wait_s = self.faults.one_way(peer)
        for _ in range(copies):
            if wait_s:
                asyncio.get_running_loop().call_later(
                    wait_s, self._late, peer, payload, arrive, family
                )
            else:
                self.net.deliver(self.node_id, peer, payload, arrive, family)

    def _late(self, peer: str, payload: bytes, arrive: Callable[[Any], None], family: str) -> None:
        """A delayed send leaves now, unless this node crashed meanwhile (its queue with it)."""
        if self.net.endpoints.get(self.node_id) is self:
            self.net.deliver(self.node_id, peer, payload, arrive, family)

    async def call(self, peer: str, message: Any, timeout_s: float) -> Any:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()

        def answer(msg: Any) -> None:
            if not reply.done():
                reply.set_result(msg)

        family = traffic.family(message)  # its reply counts in the same family

        def arrive(msg: Any) -> None:
            target = self.net.endpoints[peer]
            target._spawn(target._serve_call(self.node_id, msg, answer, family))

        self.net.watch(self.node_id, peer, message)
        payload = encode(message)
        if self.faults is not None and self.faults.rules:
            await self.faults.before_call(peer, len(payload), loop.time())
        if self.net.refuse_dead and peer not in self.net.endpoints:
            refused: asyncio.Future[None] = loop.create_future()
            loop.call_later(2 * self.net.latency_s[0], refused.set_result, None)
            await refused  # the refusal's round trip: a retry loop never spins in place
            raise PeerUnreachable(peer, "connection refused (not running)")
        waiting = self.net._waiting.setdefault(peer, {}) if self.net.refuse_dead else {}
        waiting[reply] = None
        self.net.deliver(self.node_id, peer, payload, arrive, family)
        try:
            result = await asyncio.wait_for(reply, timeout_s)
        except TimeoutError:
            raise PeerUnreachable(peer, f"no answer within {timeout_s:g} s") from None
        finally:
            waiting.pop(reply, None)
        if isinstance(result, ErrorReply):
            raise from_code(result.code, result.message)
        return result

    async def _serve_call(
        self, frm: str, msg: Any, answer: Callable[[Any], None], family: str
    ) -> None:
        assert self._on_call is not None, "a call arrived before the node served"
        try:
            result = await self._on_call(frm, msg)
        except FabricError as exc:
            result = ErrorReply(exc.code, exc.message)
        self.net.deliver(self.node_id, frm, encode(result), answer, family)
