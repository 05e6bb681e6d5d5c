"""A replica file takes batches at their reserved offsets, durably, in order, or refuses."""

from __future__ import annotations

import asyncio

import pytest

from fabric import limits
from fabric.errors import Conflict, Unavailable
from fabric.ports import DiskFault
from fabric.sim.disk import SimDisk
from fabric.wire.messages import AppendExtents
from nodes.services.storage import StorageService, egroup_file


class CountingDisk(SimDisk):
    """Counts fsyncs, and can hold them so batches pile up behind one."""

    def __init__(self) -> None:
        super().__init__("d0")
        self.syncs = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def sync(self, path: str) -> None:
        self.started.set()
        await self.gate.wait()
        self.syncs += 1
        await super().sync(path)


def file_of(disk: SimDisk, egid: str) -> bytes:
    return disk.contents(egroup_file(egid))


async def test_batches_land_at_their_offsets_whatever_order_they_arrive_in() -> None:
    disk = CountingDisk()
    storage = StorageService("n1", [disk])
    # Tasks start in the order they are made: the second batch is there first, and waits.
    second, first = await asyncio.gather(
        storage.append(AppendExtents("g", (b"cc", b"d"), 3)),
        storage.append(AppendExtents("g", (b"aa", b"b"), 0)),
    )
    assert first.offsets == (0, 2)
    assert second.offsets == (3, 5)
    assert file_of(disk, "g") == b"aabccd"


async def test_a_batch_is_answered_only_once_its_bytes_are_synced() -> None:
    disk = CountingDisk()
    storage = StorageService("n1", [disk])
    disk.gate.clear()
    batches = [
        asyncio.ensure_future(storage.append(AppendExtents("g", (bytes([i]) * 4,), 4 * i)))
        for i in range(5)
    ]
    await disk.started.wait()  # the first fsync began; the other batches queue behind it
    assert not any(b.done() for b in batches)
    assert disk.synced_bytes(egroup_file("g")) == 0
    disk.gate.set()
    await asyncio.gather(*batches)
    assert disk.synced_bytes(egroup_file("g")) == 20
    # Group commit: the batches that queued behind the first fsync shared the next one.
    assert disk.syncs <= 2


async def test_a_gap_that_is_never_filled_is_refused_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "APPEND_ORDER_WAIT_S", 0.05)
    storage = StorageService("n1", [SimDisk("d0")])
    with pytest.raises(Unavailable, match="did not come"):
        await storage.append(AppendExtents("g", (b"late",), 100))


async def test_an_offset_already_written_is_a_conflict() -> None:
    disk = SimDisk("d0")
    storage = StorageService("n1", [disk])
    await storage.append(AppendExtents("g", (b"abcd",), 0))
    with pytest.raises(Conflict):
        await storage.append(AppendExtents("g", (b"zz",), 0))
    assert file_of(disk, "g") == b"abcd"


async def test_after_a_failed_write_later_batches_are_refused_not_acknowledged() -> None:
    class FailingOnce(SimDisk):
        failed_once = False

        async def append_parts(self, path: str, parts: tuple[bytes, ...]) -> int:  # type: ignore[override]
            if not self.failed_once:
                self.failed_once = True
                raise DiskFault("disk d0: I/O error")
            return await super().append_parts(path, parts)

    storage = StorageService("n1", [FailingOnce("d0")])
    later = asyncio.ensure_future(storage.append(AppendExtents("g", (b"b",), 1)))
    with pytest.raises(Unavailable, match="I/O error"):
        await storage.append(AppendExtents("g", (b"a",), 0))
    with pytest.raises(Unavailable, match="I/O error"):
        await later


async def test_a_failed_fsync_refuses_the_batches_behind_it() -> None:
    class SyncFails(SimDisk):
        async def sync(self, path: str) -> None:
            raise DiskFault("disk d0: fsync failed")

    storage = StorageService("n1", [SyncFails("d0")])
    with pytest.raises(Unavailable, match="fsync failed"):
        await storage.append(AppendExtents("g", (b"a",), 0))
    with pytest.raises(Unavailable, match="fsync failed"):
        await storage.append(AppendExtents("g", (b"b",), 1))


async def test_appends_without_an_offset_go_to_the_end() -> None:
    disk = SimDisk("d0")
    storage = StorageService("n1", [disk])
    assert (await storage.append(AppendExtents("g", (b"xy",)))).offsets == (0,)
    assert (await storage.append(AppendExtents("g", (b"z", b"w")))).offsets == (2, 3)
    assert file_of(disk, "g") == b"xyzw"
