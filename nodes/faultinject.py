"""Injected faults, applied inside one real node process (``fabric.faults`` says what).

Each family has its applier, wrapped around the port it breaks, and each wrapper's
fast path is one test of an empty collection: with no fault active, a node pays
nothing measurable (the write path is benchmarked through them).

* ``FaultyClock`` skews or strobes ``wall()`` only: Raft's timers run on ``now()``.
  The transport signs and checks peer requests on this wall clock, so a skew beyond
  ``limits.PEER_CLOCK_SKEW_S`` (60 s) is also an authentication fault: peers refuse
  the node's requests and it refuses theirs.
* ``FaultyDisk`` wraps a ``Disk``: EIO with a probability, latency per operation, a
  bit flipped at rest (once) or in what a read returns, ENOSPC on extent-group
  appends, and LazyFS's mode in which appended bytes stay in memory until the
  file's ``sync``, so a kill loses exactly what was never synced.
* ``NetFaults`` is consulted by the transport for every message to a peer, and by
  ``client_faults`` (an aiohttp middleware) for API requests.
* ``FaultAgent`` keeps this node's active faults with their expiry (on the
  monotonic clock) and serves ``FaultControl``; it also carries out the node faults
  (kill, restart, pause) on its own process.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fabric import faults, limits
from fabric.errors import BadRequest, NotFound
from fabric.faults import CLIENTS, Fault
from fabric.ports import Clock, DiskFault, DiskFull, PeerUnreachable
from fabric.wire.messages import FaultControl, FaultState

log = logging.getLogger(__name__)

EG_SUFFIX = ".eg"


# --- clock --------------------------------------------------------------------------------
class FaultyClock:
    """A clock whose ``wall()`` may be skewed by a fixed offset or strobed."""

    def __init__(self, inner: Clock) -> None:
        self.inner = inner
        self.fault: Fault | None = None
        self._started = 0.0

    def now(self) -> float:
        return self.inner.now()

    def wall(self) -> float:
        if self.fault is None:
            return self.inner.wall()
        return self.inner.wall() + self.skew_s()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    def skew_s(self) -> float:
        """How far ``wall()`` is from the true wall clock right now."""
        fault = self.fault
        if fault is None:
            return 0.0
        offset: float = fault.params["offset_s"]
        if fault.kind == "clock-skew":
            return offset
        # Strobe: the clock jumps ahead by the offset and back, every half period.
        half = fault.params["period_s"] / 2
        return offset if int((self.inner.now() - self._started) / half) % 2 == 0 else 0.0

    def set(self, fault: Fault | None) -> None:
        self.fault = fault
        self._started = self.inner.now()


# --- disks --------------------------------------------------------------------------------
class FaultyDisk:
    """A ``Disk`` whose operations may fail, slow down, corrupt, fill or lose unsynced
    bytes, as the faults in ``faults`` (this disk's) say."""

    def __init__(self, inner: Any, rng: random.Random) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.rng = rng
        self.faults: dict[str, Fault] = {}
        self._held: dict[str, bytearray] = {}
        """lose-unsynced: bytes appended to each file since its last sync."""
        self.flipped = 0
        """Bits flipped by disk-corrupt (at rest and on read)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # root, close(), capacity_bytes of the real disk

    # --- applying -----------------------------------------------------------------------
    async def add(self, fault: Fault) -> None:
        self.faults[fault.id] = fault
        if fault.kind == "disk-corrupt" and fault.params["mode"] == "at-rest":
            await self._corrupt_at_rest()

    async def remove(self, fault_id: str) -> None:
        fault = self.faults.pop(fault_id, None)
        if fault is not None and fault.kind == "disk-lose-unsynced" and not self._losing():
            for path in list(self._held):
                await self._flush(path)

    def _losing(self) -> bool:
        return any(f.kind == "disk-lose-unsynced" for f in self.faults.values())

    async def _before(self, op: str, path: str = "") -> None:
        """Delay or fail operation ``op`` (read, write, fsync) as the faults say."""
        for f in list(self.faults.values()):
            if f.kind == "disk-slow" and op in f.params["ops"]:
                await asyncio.sleep(f.params["ms"] / 1000)
            elif f.kind == "disk-fail" and op in f.params["ops"]:
                if self.rng.random() < f.params["probability"]:
                    raise DiskFault(f"disk {self.name}: injected I/O error on {op} ({f.id})")
            elif f.kind == "disk-full" and op == "write" and path.endswith(EG_SUFFIX):
                raise DiskFull(f"disk {self.name}: no space left (injected, {f.id})")

    def _after_read(self, data: bytes) -> bytes:
        for f in self.faults.values():
            on_read = f.kind == "disk-corrupt" and f.params["mode"] == "on-read"
            if on_read and data and self.rng.random() < f.params["probability"]:
                self.flipped += 1
                return _flip(data, self.rng.randrange(len(data) * 8))
        return data

    async def _corrupt_at_rest(self) -> None:
        """Flip one bit inside the largest extent-group file, once, durably."""
        sizes = []
        for name in await self.inner.listdir():
            if name.endswith(EG_SUFFIX):
                sizes.append(((await self.inner.size(name)) or 0, name))
        sizes = [s for s in sizes if s[0] > 0]
        if not sizes:
            log.warning("disk-corrupt: no extent group on disk %s to corrupt", self.name)
            return
        size, path = max(sizes)
        bit = self.rng.randrange(size * 8)
        old = await self.inner.pread(path, bit // 8, 1)
        await self.inner.write_at(path, bit // 8, _flip(old, bit % 8))
        self.flipped += 1
        log.warning("disk-corrupt: flipped bit %d of %s on disk %s", bit, path, self.name)

    # --- the Disk port ------------------------------------------------------------------
    async def read(self, path: str) -> bytes | None:
        if not self.faults:
            data: bytes | None = await self.inner.read(path)
            return data
        await self._before("read")
        data = await self.inner.read(path)
        held = self._held.get(path)
        if held:
            data = (data or b"") + bytes(held)
        return None if data is None else self._after_read(data)

    async def write_atomic(self, path: str, data: bytes) -> None:
        if self.faults:
            await self._before("write", path)
            self._held.pop(path, None)
        await self.inner.write_atomic(path, data)

    async def append(self, path: str, data: bytes) -> int:
        return await self.append_parts(path, (data,))

    async def append_parts(self, path: str, parts: Sequence[bytes]) -> int:
        if not self.faults:
            offset: int = await self.inner.append_parts(path, parts)
            return offset
        await self._before("write", path)
        if not self._losing():
            await self._flush(path)
            offset = await self.inner.append_parts(path, parts)
            return offset
        held = self._held.get(path)
        if held is None:
            # Creates the file, as a real append would, so size() and listdir() see it.
            await self.inner.append_parts(path, ())
            held = self._held[path] = bytearray()
        offset = ((await self.inner.size(path)) or 0) + len(held)
        for part in parts:
            held += part
        return offset

    async def _flush(self, path: str) -> None:
        held = self._held.pop(path, None)
        if held:
            await self.inner.append(path, bytes(held))

    async def write_at(self, path: str, offset: int, data: bytes) -> None:
        if self.faults:
            await self._before("write", path)
            await self._flush(path)
        await self.inner.write_at(path, offset, data)

    async def sync(self, path: str) -> None:
        if self.faults:
            await self._before("fsync")
            await self._flush(path)
        await self.inner.sync(path)

    async def pread(self, path: str, offset: int, length: int) -> bytes:
        if not self.faults:
            data: bytes = await self.inner.pread(path, offset, length)
            return data
        await self._before("read")
        held = self._held.get(path)
        if held:
            base = (await self.inner.size(path)) or 0
            if offset + length > base:
                head = await self.inner.pread(path, offset, max(0, base - offset))
                start = max(0, offset - base)
                data = head + bytes(held[start : offset + length - base])
                return self._after_read(data)
        data = await self.inner.pread(path, offset, length)
        return self._after_read(data)

    async def size(self, path: str) -> int | None:
        n: int | None = await self.inner.size(path)
        held = self._held.get(path)
        if held and n is not None:
            return n + len(held)
        return n

    async def delete(self, path: str) -> None:
        self._held.pop(path, None)
        await self.inner.delete(path)

    async def listdir(self) -> list[str]:
        names: list[str] = await self.inner.listdir()
        return names

    async def usage(self) -> tuple[int, int]:
        used, capacity = await self.inner.usage()
        if any(f.kind == "disk-full" for f in self.faults.values()):
            return used, used  # nothing left: the disk watch reports the disk FULL
        return used, capacity


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- network ------------------------------------------------------------------------------
@dataclass
class _Rule:
    fault: Fault
    peers: frozenset[str]


class NetFaults:
    """The network faults this node applies to what it sends (and answers clients)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rules: dict[str, _Rule] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        """What the faults did: dropped, refused, delayed, duplicated messages and calls."""
        self._free_at: dict[str, float] = {}
        self.on_reset: Callable[[], Awaitable[None]] | None = None
        """Drops the transport's pooled connections (set by the transport)."""

    def add(self, fault: Fault) -> None:
        self.rules[fault.id] = _Rule(fault, frozenset(fault.peers))

    def remove(self, fault_id: str) -> None:
        self.rules.pop(fault_id, None)

    def toward(self, peer: str) -> list[Fault]:
        return [r.fault for r in self.rules.values() if peer in r.peers]

    def delay_s(self, fault: Fault) -> float:
        p = fault.params
        ms: float = p["ms"]
        if p["jitter_ms"]:
            if p["distribution"] == "normal":
                ms += self.rng.gauss(0, p["jitter_ms"])
            else:
                ms += self.rng.uniform(-p["jitter_ms"], p["jitter_ms"])
        return max(0.0, ms) / 1000

    def bandwidth_wait_s(self, fault: Fault, peer: str, size: int, now: float) -> float:
        """How long a body of ``size`` bytes waits behind those sent before it."""
        start = max(now, self._free_at.get(peer, 0.0))
        self._free_at[peer] = start + size / fault.params["bytes_per_s"]
        return self._free_at[peer] - now

    def one_way(self, peer: str) -> tuple[int, float]:
        """For a one-way message to ``peer``: how many copies to deliver (0: dropped)
        and after how long."""
        copies, wait = 1, 0.0
        for f in self.toward(peer):
            if f.kind in ("net-partition", "net-reset") or (
                f.kind == "net-loss" and self.rng.random() < f.params["probability"]
            ):
                self.counts["messages_dropped"] += 1
                return 0, 0.0
            if f.kind == "net-duplicate" and self.rng.random() < f.params["probability"]:
                self.counts["messages_duplicated"] += 1
                copies = 2
            elif f.kind == "net-delay":
                wait += self.delay_s(f)
        return copies, wait

    async def before_call(self, peer: str, size: int, now: float) -> None:
        """Delay, throttle or refuse (``PeerUnreachable``, so callers retry) a call."""
        for f in self.toward(peer):
            if f.kind in ("net-partition", "net-reset"):
                self.counts["calls_refused"] += 1
                raise PeerUnreachable(peer, f"{f.kind} (injected fault {f.id})")
            if f.kind == "net-loss" and self.rng.random() < f.params["probability"]:
                self.counts["calls_lost"] += 1
                raise PeerUnreachable(peer, f"request lost (injected fault {f.id})")
            if f.kind == "net-delay":
                self.counts["calls_delayed"] += 1
                await asyncio.sleep(self.delay_s(f))
            elif f.kind == "net-bandwidth":
                await asyncio.sleep(self.bandwidth_wait_s(f, peer, size, now))


@web.middleware
async def client_faults(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Network faults toward API clients (``"to": "clients"``). Fault control itself is
    exempt, so a fault can always be listed and cleared."""
    net = request.app.get(NET_FAULTS)
    if net is None or not net.rules or request.path.startswith(("/api/v1/faults", "/internal/")):
        return await handler(request)
    rules = net.toward(CLIENTS)
    for f in rules:
        if f.kind in ("net-partition", "net-reset") or (
            f.kind == "net-loss" and net.rng.random() < f.params["probability"]
        ):
            net.counts["client_requests_dropped"] += 1
            if request.transport is not None:
                request.transport.close()  # the client sees its connection reset
            raise web.HTTPServiceUnavailable(text=f"{f.kind} (injected fault {f.id})")
        if f.kind == "net-delay":
            await asyncio.sleep(net.delay_s(f))
    response = await handler(request)
    for f in rules:
        if f.kind == "net-bandwidth":
            body = response.body if isinstance(response, web.Response) else None
            sent = len(body) if isinstance(body, bytes | bytearray) else 0
            size = (request.content_length or 0) + sent
            loop = asyncio.get_running_loop()
            await asyncio.sleep(net.bandwidth_wait_s(f, CLIENTS, size, loop.time()))
    return response


NET_FAULTS = web.AppKey("net_faults", NetFaults)


# --- the node's own process ----------------------------------------------------------------
_RESUMER = (
    "import os, signal, sys, time; "
    "time.sleep(float(sys.argv[1])); os.kill(int(sys.argv[2]), signal.SIGCONT)"
)
"""A detached helper that resumes a paused node after the pause's duration: a stopped
process cannot wake itself."""


def _kill_self(fault: Fault) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _restart_self(fault: Fault) -> None:
    """Exec this node again with the same command line (same pid: the launcher's pid
    file stays right). Nothing is flushed or closed, as after a crash; every descriptor
    is close-on-exec, so the directory lock and the listening socket go with the image."""
    logging.shutdown()
    os.execv(sys.executable, sys.orig_argv)


def _pause_self(fault: Fault) -> None:
    if fault.until_wall is not None:
        wait = fault.until_wall - fault.started_wall
        subprocess.Popen(
            [sys.executable, "-c", _RESUMER, f"{wait:.3f}", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    os.kill(os.getpid(), signal.SIGSTOP)


ProcessFault = Callable[[Fault], None]
"""What a node fault does to the process (the simulator brings its own)."""


# --- the agent ----------------------------------------------------------------------------
class FaultAgent:
    """This node's active faults: applies them, clears them (on request or when their
    duration ends), lists them, and serves ``FaultControl``."""

    def __init__(
        self,
        node_id: str,
        clock: FaultyClock,
        disks: Sequence[FaultyDisk],
        net: NetFaults,
        process: dict[str, ProcessFault] | None = None,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.disks = list(disks)
        self.net = net
        self.process = process or {
            "node-kill": _kill_self,
            "node-restart": _restart_self,
            "node-pause": _pause_self,
        }
        self.active: dict[str, Fault] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._expiring: set[asyncio.Task[None]] = set()

    async def control(self, message: FaultControl) -> FaultState:
        match message.op:
            case "inject":
                await self.inject(faults.from_text(message.fault))
            case "clear":
                await self.clear(message.fault_id)
        return self.state()

    def state(self) -> FaultState:
        return FaultState(
            tuple(f.to_text() for f in self.active.values()), os.getpid(), self.clock.skew_s()
        )

    async def inject(self, fault: Fault) -> None:
        if fault.id in self.active:
            return  # a retried control call
        if len(self.active) >= limits.MAX_FAULTS:
            raise BadRequest(f"node {self.node_id} already has {limits.MAX_FAULTS} faults")
        loop = asyncio.get_running_loop()
        family = faults.family(fault.kind)
        if family == "node":
            self._node_fault(fault, loop)
            if fault.kind in faults.INSTANT_KINDS:
                return
        elif family == "net":
            self.net.add(fault)
            if fault.kind == "net-reset" and self.net.on_reset is not None:
                await self.net.on_reset()
        elif family == "disk":
            targets = self._disks(fault)
            for disk in targets:
                await disk.add(fault)
        else:
            if self.clock.fault is not None:
                self.active.pop(self.clock.fault.id, None)  # one clock fault at a time
            self.clock.set(fault)
        self.active[fault.id] = fault
        if fault.until_wall is not None:
            wait = max(0.0, fault.until_wall - fault.started_wall)
            self._timers[fault.id] = loop.call_later(wait, self._start_expiry, fault.id)
        log.warning("fault injected: %s", faults.describe(fault))

    def _disks(self, fault: Fault) -> list[FaultyDisk]:
        name = fault.params.get("disk")
        found = [d for d in self.disks if name is None or d.name == name]
        if not found:
            known = ", ".join(d.name for d in self.disks)
            raise BadRequest(f"node {self.node_id} has no disk {name!r} (disks: {known})")
        return found

    def _node_fault(self, fault: Fault, loop: asyncio.AbstractEventLoop) -> None:
        if fault.kind == "node-resume":
            return  # a node that hears this runs already
        # A moment later, so that the answer saying it was done goes out first.
        loop.call_later(limits.FAULT_ACT_DELAY_S, self.process[fault.kind], fault)

    def _start_expiry(self, fault_id: str) -> None:
        # Kept until done: a task only the loop refers to may be collected mid-way.
        task = asyncio.get_running_loop().create_task(self._expire(fault_id))
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _expire(self, fault_id: str) -> None:
        self._timers.pop(fault_id, None)
        try:
            if fault_id in self.active:
                await self.clear(fault_id)
        except Exception:
            # An expiry that fails must be seen: the fault would otherwise stay on.
            log.exception("fault %s: clearing it at the end of its duration failed", fault_id)

    async def clear(self, fault_id: str = "") -> None:
        ids = list(self.active) if not fault_id else [fault_id]
        if fault_id and fault_id not in self.active:
            raise NotFound(f"no active fault {fault_id} on {self.node_id}")
        failed: list[Exception] = []
        for fid in ids:
            fault = self.active.pop(fid)
            timer = self._timers.pop(fid, None)
            if timer is not None:
                timer.cancel()
            self.net.remove(fid)
            if self.clock.fault is not None and self.clock.fault.id == fid:
                self.clock.set(None)
            for disk in self.disks:  # every disk, even when one cannot write back its bytes
                try:
                    await disk.remove(fid)
                except Exception as exc:
                    failed.append(exc)
            log.warning("fault cleared: %s", faults.describe(fault))
        if failed:
            raise failed[0]

    def summary(self) -> dict[str, Any]:
        """For ``/api/v1/health``: what is active here and what it did."""
        return {
            "active": sorted(f"{f.kind} {f.id}" for f in self.active.values()),
            "wall_skew_s": self.clock.skew_s(),
            "net": dict(self.net.counts),
            "bits_flipped": sum(d.flipped for d in self.disks),
        }
