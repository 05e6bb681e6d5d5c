"""The bytes-on-disk check sees each way the disks can disagree with metadata."""

from __future__ import annotations

import random

import pytest

from fabric.extents.policy import ContainerPolicy
from fabric.sim.checkers import DiskMismatch
from nodes.simcluster import SimCluster
from tests.sim.conftest import chunks

MiB = 1 << 20


def test_flipped_byte_lost_copy_and_stray_file_are_each_reported(sim: SimCluster) -> None:
    data = random.Random(4).randbytes(3 * MiB)

    async def write() -> None:
        g = sim.nodes["n1"]
        await g.catalog.create_container("c", ContainerPolicy(rf=2))
        await g.catalog.create_vdisk("v", "c", len(data))
        await g.writer.write("v", 0, len(data), chunks(data))

    sim.run(write())
    audit = sim.check_disks(strict=True)
    assert (audit.copies, audit.extents, audit.unreferenced) == (2, 6, ())

    # A file no record places on its node is listed, and fails only in strict mode.
    stray = sim.disks["n5"][-1]
    sim.run(stray.append("eg-stray.eg", b"left behind"))
    assert sim.check_disks().unreferenced == (f"n5:{stray.name}:eg-stray.eg",)
    with pytest.raises(DiskMismatch, match=r"eg-stray\.eg is referenced by no record"):
        sim.check_disks(strict=True)

    disk, path = next((d, p) for d in sim.disks["n1"] for p in d.files() if p.endswith(".eg"))
    disk.corrupt(path, MiB + 10)
    second_extent = r"(?s)seed 1: 1 disk problem.*at 1048576\+1048576 does not match"
    with pytest.raises(DiskMismatch, match=second_extent):
        sim.check_disks()
    disk.corrupt(path, MiB + 10)  # flipped back

    sim.run(disk.delete(path))
    with pytest.raises(DiskMismatch, match=f"{path[:-3]} has no file on n1"):
        sim.check_disks()
