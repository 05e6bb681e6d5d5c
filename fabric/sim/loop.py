"""A deterministic asyncio event loop on virtual time.

Theory of operation
-------------------
asyncio's own loop is already deterministic when nothing outside it can wake it: its
ready queue is FIFO and its timers fire in (deadline, insertion) order. Only two things
tie it to the real world: ``loop.time()`` reads the monotonic clock, and ``select()``
waits for real file descriptors. ``VirtualLoop`` replaces both: time is a number that
jumps straight to the next timer when nothing is ready (trio's autojump clock), and the
selector never has a descriptor to report. A whole cluster then runs in one thread, as
fast as the CPU allows, and the same seed replays the same run.

If nothing is ready and no timer is pending, no event can ever happen again:
``select`` raises ``SimulationStalled`` instead of hanging.

Pausing one node (SIGSTOP under ``fabric run``): every task a node starts carries its id
(``fabric.ports.NODE_ID``, a context variable), and a ``pausable`` loop schedules each
callback of such a context behind a gate. While the node is paused the gate holds what
reaches it, in order, instead of running it; ``resume`` schedules the held callbacks
again. Its timers keep their deadlines, so a node paused past its election timeout
campaigns the moment it resumes, as a stopped process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import selectors
from collections.abc import Callable, Iterator
from typing import Any, TypeVarTuple

from fabric.ports import NODE_ID

_Ts = TypeVarTuple("_Ts")


SIM_GC_THRESHOLD = (50_000, 20, 100)
"""The cyclic collector's thresholds while a simulation runs (Python's are (700, 10, 10))."""


@contextlib.contextmanager
def sparse_collection() -> Iterator[None]:
    """Collect cyclic garbage less often while a simulation runs; the thresholds are
    restored after.

    A simulated cluster keeps millions of long-lived objects (every node's records, log
    entries and indexes), and the default thresholds re-scan them again and again: at a
    thousand nodes the collector took 29% of the run's wall time. What a simulated node
    makes and drops (messages, timers, futures) is freed by reference counting; cycles
    wait a little longer for their collection."""
    before = gc.get_threshold()
    gc.set_threshold(*SIM_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class SimulationStalled(RuntimeError):
    """Every task is waiting and no timer is pending: the simulation can make no progress."""


class _VirtualSelector(selectors._BaseSelectorImpl):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        assert self.loop is not None
        if timeout is None:
            raise SimulationStalled("no task is runnable and no timer is pending")
        if timeout > 0:
            self.loop.advance(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        self._virtual_now = 0.0
        super().__init__(selector)
        selector.loop = self
        self._clock_resolution = 1e-9

        self.pausable = False
        """Gate node callbacks (``pause``); off, a callback costs nothing more."""
        self.paused: set[str] = set()
        self._held: dict[str, list[tuple[Callable[..., Any], tuple[Any, ...], Any]]] = {}

    def time(self) -> float:
        return self._virtual_now

    # --- pausing a node ---------------------------------------------------------------------
    def call_soon(
        self,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        node = self._node_of(context) if self.pausable else None
        if node is None:
            return super().call_soon(callback, *args, context=context)
        return super().call_soon(self._gate, node, callback, args, context=context)

    def call_at(
        self,
        when: float,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        node = self._node_of(context) if self.pausable else None
        if node is None:
            return super().call_at(when, callback, *args, context=context)
        return super().call_at(when, self._gate, node, callback, args, context=context)

    @staticmethod
    def _node_of(context: contextvars.Context | None) -> str | None:
        return NODE_ID.get() if context is None else context.get(NODE_ID)

    def _gate(self, node: str, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if node in self.paused:
            held = (callback, args, contextvars.copy_context())
            self._held.setdefault(node, []).append(held)
            return
        callback(*args)

    def hold(self, node: str, callback: Callable[[], Any]) -> None:
        """Run ``callback`` now, or when ``node`` resumes if it is paused (what arrives
        for a paused node: it waits in the socket)."""
        if node in self.paused:
            self._held.setdefault(node, []).append((callback, (), contextvars.Context()))
        else:
            callback()

    def pause(self, node: str) -> None:
        assert self.pausable, "a loop made pausable before the nodes started"
        self.paused.add(node)

    def resume(self, node: str) -> None:
        """``node`` runs again: what it was held from, in order, before anything new."""
        self.paused.discard(node)
        for callback, args, context in self._held.pop(node, []):
            super().call_soon(self._gate, node, callback, args, context=context)

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "virtual time never goes backwards"
        self._virtual_now += seconds


class SimClock:
    """The Clock port under simulation: loop time, and a wall clock at a fixed epoch plus it."""

    def __init__(self, epoch_wall: float = 1_800_000_000.0) -> None:
        self._epoch = epoch_wall

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return self._epoch + self.now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def inline_offload(fn: Any, *args: Any) -> Any:
    """The simulator's Offload: run the work right here, deterministically."""
    return fn(*args)
