"""Erasure coding, a window at a time: any k of the k + m members rebuild any other.

Fed data only (the pure core): columns of uneven length, as a strip's groups are, encoded
by ``encode_window``; then every lost member is rebuilt by ``rebuild_window`` from a
random choice of k survivors that holds at least one parity record (the data fragments'
headers live there).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.extents import erasure

CHUNK = 4096


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 3),
    st.randoms(use_true_random=False),
)
def test_any_k_members_with_a_parity_record_rebuild_any_other(
    k: int, m: int, chunks: int, rng: random.Random
) -> None:
    lay = erasure.layout(k, m, CHUNK)
    columns = [rng.randbytes(rng.randint(0, chunks * CHUNK)) for _ in range(k)]
    records = erasure.encode_window(lay, columns, chunks)
    assert [len(r) for r in records] == [chunks] * m
    assert all(len(x) == lay.parity_record_bytes for r in records for x in r)
    parity = {j: b"".join(r) for j, r in enumerate(records)}
    # A lost parity member with no other parity left is encoded afresh from the data
    # (``EcService._member_window``), never rebuilt: its headers would be gone.
    for lost in range(k + m if m > 1 else k):
        others = [i for i in range(k + m) if i != lost]
        rng.shuffle(others)
        chosen = others[:k]
        if not any(i >= k for i in chosen):
            chosen[-1] = next(i for i in others if i >= k)
        data = {i: columns[i] for i in chosen if i < k}
        par = {i - k: parity[i - k] for i in chosen if i >= k}
        frags = erasure.rebuild_window(lay, data, par, lost, chunks)
        got = b"".join(f[lay.header_bytes :] for f in frags)
        if lost < k:
            assert got == columns[lost].ljust(chunks * CHUNK, b"\0"), f"data {lost}"
        else:
            want = b"".join(r[k * lay.header_bytes + lay.header_bytes :] for r in records[lost - k])
            assert got == want, f"parity {lost - k}"


def test_without_a_parity_record_the_headers_are_missing() -> None:
    lay = erasure.layout(2, 1, CHUNK)
    with pytest.raises(erasure.ErasureError, match="no parity record"):
        erasure.rebuild_window(lay, {0: bytes(CHUNK)}, {}, 1, 1)


def test_too_few_members_cannot_rebuild() -> None:
    lay = erasure.layout(3, 2, CHUNK)
    records = erasure.encode_window(lay, [bytes(CHUNK)] * 3, 1)
    with pytest.raises(erasure.ErasureError, match="2 fragments, need 3"):
        erasure.rebuild_window(lay, {0: bytes(CHUNK)}, {0: records[0][0]}, 1, 1)
