"""In-memory disks for the simulator, with crash semantics and scripted faults.

Appends stay volatile until ``sync``; ``crash()`` cuts every file back to what was
synced, as a power loss would. ``write_atomic`` is durable at once (it stands for
write-temp, fsync, rename). A failed disk raises ``DiskFault`` on every operation; a
``full`` one on every write (reads still work), until space is freed. A ``slow`` disk's
``sync`` takes virtual time, so a crash can land while it runs: the writes it was asked to
make durable are then lost. File names follow the real disk's rule
(``fabric.ids.file_name``): a name a real disk would refuse is refused here too.

With a hardware model (``fabric.hardware.DiskSpec``) the disk is one device that serves
one operation at a time, in the order they were asked: each waits for the ones before
it, then for its own latency and bytes over the bandwidth, and only then acts (checks
faults and space, reads or changes the files). Without one, operations take no virtual
time and never yield to the loop, as before models existed.
"""

from __future__ import annotations

from collections.abc import Sequence

from fabric.hardware import DiskSpec
from fabric.ids import file_name
from fabric.ports import Clock, DiskFault, DiskFull
from fabric.sim.loop import SimClock

DATA_SUFFIX = ".eg"
"""Only extent-group files count against ``capacity_bytes``: the Raft log and snapshot
live in space reserved for metadata, so a full data disk never stops consensus."""


class SimDisk:
    def __init__(
        self,
        name: str,
        capacity_bytes: int = 1 << 40,
        model: DiskSpec | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.capacity_bytes = capacity_bytes
        self._files: dict[str, bytearray] = {}
        self._synced: dict[str, int] = {}
        self.failed = False
        self.full = False
        self._slow: tuple[Clock, float] | None = None
        self.model = model
        self._clock = clock or SimClock()
        self._free_at = 0.0
        """Virtual time at which the device finishes the operations asked so far."""
        self.busy_s = 0.0
        """Virtual seconds the device has spent serving operations (its utilisation)."""

    async def _serve(self, op: str, nbytes: int, then_sync: bool = False) -> None:
        """Wait for the device: the operations before this one, then this one's cost
        (and a sync's, as one operation, when ``then_sync``)."""
        if self.model is None:
            return
        cost = self.model.service_s(op, nbytes)
        if then_sync:
            cost += self.model.service_s("sync", 0)
        if cost <= 0:
            return
        now = self._clock.now()
        self._free_at = max(now, self._free_at) + cost
        self.busy_s += cost
        await self._clock.sleep(self._free_at - now)

    def slow(self, clock: Clock, sync_s: float) -> None:
        """From now on every ``sync`` takes ``sync_s`` seconds of ``clock``."""
        self._slow = (clock, sync_s)

    def _check(self) -> None:
        if self.failed:
            raise DiskFault(f"disk {self.name} has failed")

    def _check_space(self, adding: int = 0) -> None:
        self._check()
        if self.full:
            raise DiskFull(f"disk {self.name}: no space left on device")
        if adding and self._used() + adding > self.capacity_bytes:
            raise DiskFull(f"disk {self.name}: no space left (capacity {self.capacity_bytes})")

    def _used(self) -> int:
        return sum(len(f) for p, f in self._files.items() if p.endswith(DATA_SUFFIX))

    async def read(self, path: str) -> bytes | None:
        file_name(path)
        await self._serve("read", len(self._files.get(path, b"")))
        self._check()
        data = self._files.get(path)
        return None if data is None else bytes(data)

    async def write_atomic(self, path: str, data: bytes) -> None:
        file_name(path)
        await self._serve("write", len(data), then_sync=True)  # write-temp, fsync, rename
        self._check_space()
        self._files[path] = bytearray(data)
        self._synced[path] = len(data)

    async def append(self, path: str, data: bytes) -> int:
        file_name(path)
        await self._serve("write", len(data))
        self._check_space(len(data) if path.endswith(DATA_SUFFIX) else 0)
        f = self._files.setdefault(path, bytearray())
        self._synced.setdefault(path, 0)
        offset = len(f)
        f += data
        return offset

    async def append_parts(self, path: str, parts: Sequence[bytes]) -> int:
        return await self.append(path, b"".join(parts))

    async def write_at(self, path: str, offset: int, data: bytes) -> None:
        file_name(path)
        await self._serve("write", len(data))
        self._check_space()
        f = self._files.get(path)
        if f is None or offset < 0 or offset + len(data) > len(f):
            raise DiskFault(f"disk {self.name}: write past the end of {path}")
        f[offset : offset + len(data)] = data

    async def sync(self, path: str) -> None:
        file_name(path)
        self._check()
        f = self._files.get(path)
        if f is None:
            return
        size = len(f)  # what this sync was asked to make durable
        await self._serve("sync", 0)
        if self._slow is not None:
            clock, sync_s = self._slow
            await clock.sleep(sync_s)
        if self._files.get(path) is not f:
            return  # replaced or deleted meanwhile
        if self.model is not None:
            self._check()  # the device failed while this sync waited its turn
        self._synced[path] = max(self._synced.get(path, 0), min(size, len(f)))

    async def pread(self, path: str, offset: int, length: int) -> bytes:
        file_name(path)
        await self._serve("read", max(0, length))
        self._check()
        f = self._files.get(path)
        if f is None:
            raise DiskFault(f"disk {self.name}: no file {path}")
        if offset < 0 or length < 0:  # as pread(2) would: EINVAL, not a slice from the end
            raise DiskFault(f"disk {self.name}: invalid range {offset}+{length} of {path}")
        return bytes(f[offset : offset + length])

    async def size(self, path: str) -> int | None:
        file_name(path)
        self._check()
        f = self._files.get(path)
        return None if f is None else len(f)

    async def delete(self, path: str) -> None:
        file_name(path)
        self._check()
        self._files.pop(path, None)
        self._synced.pop(path, None)

    async def listdir(self) -> list[str]:
        self._check()
        return sorted(self._files)

    async def usage(self) -> tuple[int, int]:
        self._check()
        return sum(len(f) for f in self._files.values()), self.capacity_bytes

    # --- inspection by tests and checkers (no fault applies: they are not the node) -------
    def files(self) -> list[str]:
        """Every path on the disk, sorted."""
        return sorted(self._files)

    def contents(self, path: str) -> bytes | None:
        """What a read of ``path`` returns now (synced or not), or None if there is no file."""
        data = self._files.get(path)
        return None if data is None else bytes(data)

    def synced_bytes(self, path: str) -> int | None:
        """How many bytes of ``path`` survive a crash, or None if there is no file."""
        return self._synced.get(path) if path in self._files else None

    # --- what the simulator does to disks ---------------------------------------------------
    def crash(self) -> None:
        """Power loss: every file keeps only what was synced; the device queue empties."""
        self._free_at = 0.0
        for path, f in self._files.items():
            del f[self._synced.get(path, 0) :]

    def corrupt(self, path: str, offset: int, flip: int = 0xFF) -> None:
        self._files[path][offset] ^= flip
