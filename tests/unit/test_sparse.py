"""``fabric vdisk read -o FILE`` writes a thin vdisk as a sparse file."""

from __future__ import annotations

import random
from pathlib import Path

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
