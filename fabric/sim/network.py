"""The simulator's network: in-memory delivery with scripted delay, loss and partitions.

Every message is encoded and decoded with the real wire codec on its way, so the
simulator exercises the same bytes a socket would carry. Every random choice (loss,
latency) comes from the network's own seeded RNG, in the order messages are sent, so
a run is replayed exactly by its seed.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from typing import Any, Protocol

from fabric.errors import FabricError, from_code
from fabric.ports import Handler, OneWayHandler, PeerUnreachable
from fabric.wire.codec import decode, encode
from fabric.wire.messages import ErrorReply
from fabric.wire.refusals import Refusals


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
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
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

    def deliver(self, frm: str, to: str, payload: bytes, fn: Callable[[Any], None]) -> None:
        """Deliver ``payload`` to ``fn`` after a random latency, unless lost or cut."""
        self.sent += 1
        self.bytes_sent += len(payload)
        if self.taps:
            now = asyncio.get_running_loop().time()
            for tap in self.taps:
                tap(now, frm, to, payload)
        if (frm, to) in self.blocked or self.rng.random() < self.loss:
            self.dropped += 1
            return
        delay = self.rng.uniform(*self.latency_s)
        sender = self.endpoints.get(frm)

        def arrive() -> None:
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
        if self.faults is None or not self.faults.rules:
            self.net.deliver(self.node_id, peer, payload, arrive)
            return
        copies, wait_s = self.faults.one_way(peer)
        for _ in range(copies):
            if wait_s:
                asyncio.get_running_loop().call_later(wait_s, self._late, peer, payload, arrive)
            else:
                self.net.deliver(self.node_id, peer, payload, arrive)

    def _late(self, peer: str, payload: bytes, arrive: Callable[[Any], None]) -> None:
        """A delayed send leaves now, unless this node crashed meanwhile (its queue with it)."""
        if self.net.endpoints.get(self.node_id) is self:
            self.net.deliver(self.node_id, peer, payload, arrive)

    async def call(self, peer: str, message: Any, timeout_s: float) -> Any:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()

        def answer(msg: Any) -> None:
            if not reply.done():
                reply.set_result(msg)

        def arrive(msg: Any) -> None:
            target = self.net.endpoints[peer]
            target._spawn(target._serve_call(self.node_id, msg, answer))

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
        self.net.deliver(self.node_id, peer, payload, arrive)
        try:
            result = await asyncio.wait_for(reply, timeout_s)
        except TimeoutError:
            raise PeerUnreachable(peer, f"no answer within {timeout_s:g} s") from None
        finally:
            waiting.pop(reply, None)
        if isinstance(result, ErrorReply):
            raise from_code(result.code, result.message)
        return result

    async def _serve_call(self, frm: str, msg: Any, answer: Callable[[Any], None]) -> None:
        assert self._on_call is not None, "a call arrived before the node served"
        try:
            result = await self._on_call(frm, msg)
        except FabricError as exc:
            result = ErrorReply(exc.code, exc.message)
        self.net.deliver(self.node_id, frm, encode(result), answer)
