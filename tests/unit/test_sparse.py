"""``fabric vdisk read -o FILE`` reads a thin vdisk's data only and writes it as a sparse file."""

from __future__ import annotations

import random
from pathlib import Path

from nodes.api_data import extent_runs
from shell.cli import READ_GAP_BYTES, _data_ranges
from shell.sparse import BLOCK_BYTES, SparseWriter

MIB = 1 << 20


def test_zero_runs_become_holes_and_the_content_is_kept(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * BLOCK_BYTES + 123)
    size = 64 * MIB
    stream = bytes(8 * MIB) + data + bytes(size - 8 * MIB - len(data))
    out = tmp_path / "out.img"
    with open(out, "wb") as f:
        sparse = SparseWriter(f)
        for start in range(0, len(stream), 1 << 20):  # as the client hands chunks over
            sparse.write(stream[start : start + (1 << 20)])
        sparse.finish()
    st = out.stat()
    assert st.st_size == size
    assert out.read_bytes() == stream
    assert st.st_blocks * 512 < 2 * MIB, f"{st.st_blocks * 512} bytes allocated of {size}"
    assert sparse.hole_bytes >= size - len(data) - BLOCK_BYTES


def test_a_stream_of_data_is_written_as_it_is(tmp_path: Path) -> None:
    stream = random.Random(2).randbytes(BLOCK_BYTES * 2 + 7)
    out = tmp_path / "out.img"
    with open(out, "wb") as f:
        sparse = SparseWriter(f)
        sparse.write(stream)
        sparse.finish()
    assert out.read_bytes() == stream and sparse.hole_bytes == 0


def test_a_reader_asks_only_for_the_extents_that_hold_data() -> None:
    block_map = {0: "a", 1: "b", 5: "", 7: "c", 40: "d", 41: "e"}
    runs = extent_runs(block_map)
    assert runs == [[0, 2], [7, 1], [40, 2]]
    layout = {"size": 42 * MIB - 10, "extent_bytes": MIB, "mapped": runs}
    # Runs closer than READ_GAP_BYTES are read as one; the end is the vdisk's.
    assert 5 * MIB < READ_GAP_BYTES < 32 * MIB
    assert _data_ranges(layout, 0, layout["size"]) == [(0, 8 * MIB), (40 * MIB, 42 * MIB - 10)]
    # An offset and a length cut the ranges.
    assert _data_ranges(layout, MIB + 5, 7 * MIB + 1) == [(MIB + 5, 7 * MIB + 1)]
    assert _data_ranges(layout, 40 * MIB + 1, 41 * MIB) == [(40 * MIB + 1, 41 * MIB)]
    assert _data_ranges(layout, 10 * MIB, 20 * MIB) == []
