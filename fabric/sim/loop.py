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
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


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

    def time(self) -> float:
        return self._virtual_now

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
