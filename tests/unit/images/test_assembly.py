"""ExtentAssembler and Decoder: runs in any nearby order become exactly the source disk.

The store is modelled the way the image service uses it: each batch replaces whole
extents, each late run is merged into what is stored. Whatever the order of the runs,
the stored disk must equal the source, batches must stay within their bounds, and the
buffers kept alive by views must stay under the pin limit.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.images.assembly import Decoder, ExtentAssembler, ExtentBatch
from fabric.images.base import MemorySpill, ReaderLimits, Run
from fabric.images.declared import DISK_FORMATS, FormatMismatch

E = 4096
REORDER = 3
BATCH = 4
BRIDGE = 2


class Store:
    """The vdisk as the image service writes it: whole batches, then merges (sparse)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.extents: dict[int, bytearray] = {}

    def apply(self, batches: list[ExtentBatch], late: list[Run]) -> None:
        for batch in batches:
            assert 0 < len(batch.extents) <= BATCH
            for i, extent in enumerate(batch.extents, batch.first):
                assert len(extent) == min(E, self.size - i * E)
                self.extents[i] = bytearray(extent)
        for run in late:  # merged into what is stored (zeros where nothing is)
            index, inner = divmod(run.offset, E)
            assert inner + len(run.data) <= E, "a late run stays inside one extent"
            extent = self.extents.setdefault(index, bytearray(min(E, self.size - index * E)))
            extent[inner : inner + len(run.data)] = run.data

    def read(self, length: int) -> bytes:
        disk = bytearray(length)
        for i, extent in self.extents.items():
            disk[i * E : i * E + len(extent)] = extent[: max(0, length - i * E)]
        return bytes(disk[:length])


def source_disk(rng: random.Random, extents: int) -> bytes:
    size = extents * E - rng.choice((0, 1, 777))
    disk = bytearray(size)
    for i in range(extents):
        kind = rng.choice(("zero", "full", "partial"))
        lo, hi = i * E, min(size, (i + 1) * E)
        if kind == "full":
            disk[lo:hi] = rng.randbytes(hi - lo)
        elif kind == "partial":
            a = rng.randrange(lo, hi)
            b = rng.randrange(a, hi) + 1
            disk[a:b] = rng.randbytes(b - a)
    return bytes(disk)


def runs_of(rng: random.Random, disk: bytes, far: float) -> list[Run]:
    """The disk's non-zero bytes as runs cut anywhere, views of a few 'chunks', mostly in
    order, some swapped with a neighbour, a fraction ``far`` moved anywhere."""
    runs: list[Run] = []
    pos = 0
    while pos < len(disk):
        n = min(len(disk) - pos, rng.choice((1, 100, E // 2, E, 3 * E)))
        chunk = disk[pos : pos + n + rng.randrange(3)]  # a buffer a bit larger than the run
        if any(chunk[:n]):
            runs.append(Run(pos, memoryview(chunk)[:n]))
        pos += n
    for i in range(len(runs) - 1):
        if rng.random() < 0.3:
            runs[i], runs[i + 1] = runs[i + 1], runs[i]
    for _ in range(int(len(runs) * far)):
        runs.insert(rng.randrange(len(runs) + 1), runs.pop(rng.randrange(len(runs))))
    return runs


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    extents=st.integers(1, 40),
    far=st.sampled_from((0.0, 0.0, 0.05, 0.5)),
    take_every=st.integers(1, 7),
    pin_limit=st.sampled_from((0, 3 * E, 1 << 20)),
)
def test_any_nearby_order_stores_exactly_the_source(
    seed: int, extents: int, far: float, take_every: int, pin_limit: int
) -> None:
    rng = random.Random(seed)
    disk = source_disk(rng, extents)
    asm = ExtentAssembler(E, len(disk), REORDER, BATCH, BRIDGE, pin_limit)
    store = Store(len(disk))
    for n, run in enumerate(runs_of(rng, disk, far), 1):
        asm.add(run)
        assert asm.pinned_bytes <= pin_limit, f"seed {seed}: pins over the limit"
        if n % take_every == 0:
            store.apply(*asm.take())
    store.apply(*asm.take(final=True))
    assert store.read(len(disk)) == disk, f"seed {seed}: the stored disk differs from the source"
    assert asm.take(final=True) == ([], [])


def test_in_order_runs_leave_in_full_batches_without_late_merges() -> None:
    disk = bytes(range(256)) * (E * 20 // 256)
    asm = ExtentAssembler(E, len(disk), REORDER, BATCH, BRIDGE, 1 << 20)
    batches: list[ExtentBatch] = []
    for pos in range(0, len(disk), 1000):
        asm.add(Run(pos, disk[pos : pos + 1000]))
        got, late = asm.take()
        assert not late
        batches += got
    batches += asm.take(final=True)[0]
    assert [(b.first, len(b.extents)) for b in batches] == [(i, BATCH) for i in range(0, 20, 4)]
    assert b"".join(e for b in batches for e in b.extents) == disk


def test_short_holes_are_bridged_and_long_ones_split_batches() -> None:
    data = b"\x01" * E
    asm = ExtentAssembler(E, 30 * E, REORDER, 8, BRIDGE, 1 << 20)
    for index in (0, 3, 4, 10):  # holes of 2 (bridged) and 5 (not) extents
        asm.add(Run(index * E, data))
    batches, _ = asm.take(final=True)
    assert [(b.first, len(b.extents)) for b in batches] == [(0, 5), (10, 1)]
    assert batches[0].extents[1] == bytes(E)  # the bridge is a zero extent: a hole


def test_a_whole_extent_of_bytes_leaves_without_a_copy() -> None:
    extent = b"\x07" * E
    asm = ExtentAssembler(E, 8 * E, REORDER, BATCH, BRIDGE, 1 << 20)
    asm.add(Run(2 * E, extent))
    batches, _ = asm.take(final=True)
    assert batches[0].extents[0] is extent


def test_scattered_pieces_never_pin_more_than_the_limit() -> None:
    """Each piece cut from a different large buffer: the views are compacted away."""
    big = 64 * E
    asm = ExtentAssembler(E, 64 * E, REORDER, BATCH, BRIDGE, pin_limit_bytes=4 * big)
    for i in range(64):
        buf = bytes([i + 1]) * big
        asm.add(Run(i * E, memoryview(buf)[:E]))
        assert asm.pinned_bytes <= 4 * big
    batches, _ = asm.take(final=True)
    assert b"".join(e for b in batches for e in b.extents) == b"".join(
        bytes([i + 1]) * E for i in range(64)
    )


def test_decoder_steps_a_raw_source_within_its_budget() -> None:
    rng = random.Random(5)
    disk = source_disk(rng, 50)
    dec = Decoder(ReaderLimits(), MemorySpill(), E, REORDER, BATCH, BRIDGE, 1 << 20)
    store: Store | None = None
    chunks = [disk[i : i + 3000] for i in range(0, len(disk), 3000)]
    for at in range(0, len(chunks), 7):
        dec.feed(chunks[at : at + 7])
        while True:
            step = dec.step(budget_bytes=2 * E)
            if dec.size_bytes is not None:
                store = store or Store(dec.size_bytes)
                store.apply(step.batches, step.late)
            if not step.more:
                break
    dec.finish()
    while True:
        step = dec.step(budget_bytes=2 * E)
        assert store is not None
        store.apply(step.batches, step.late)
        if not step.more:
            break
    pad = -len(disk) % 512  # a raw disk ends on a whole sector
    assert dec.reader is not None and dec.reader.virtual_size == len(disk) + pad
    assert store is not None and store.read(len(disk) + pad) == disk + bytes(pad)


def _decode(blob: bytes, allowed: frozenset[str] | None, chunk: int = 4096) -> Decoder:
    """Feed ``blob`` through a decoder (extents discarded); the decoder at the end."""
    dec = Decoder(ReaderLimits(), MemorySpill(), E, REORDER, BATCH, BRIDGE, 1 << 20, allowed)
    for at in range(0, len(blob), chunk):
        dec.feed([blob[at : at + chunk]])
        while dec.step(budget_bytes=2 * E).more:
            pass
    dec.finish()
    while dec.step(budget_bytes=2 * E).more:
        pass
    return dec


def test_a_declared_format_refuses_other_content_before_any_run() -> None:
    """A qcow2 whose magic was damaged reads as raw: declared qcow2, it is refused as
    soon as the reader is chosen, before a single extent is cut."""
    broken = b"QFI\x00" + bytes(range(256)) * 300
    dec = Decoder(
        ReaderLimits(), MemorySpill(), E, REORDER, BATCH, BRIDGE, 1 << 20, frozenset({"qcow2"})
    )
    dec.feed([broken])
    with pytest.raises(FormatMismatch) as err:
        dec.step(budget_bytes=2 * E)
    assert (err.value.detected, err.value.allowed) == ("raw", frozenset({"qcow2"}))
    assert dec.assembler is None  # nothing was cut into extents
    assert _decode(broken, frozenset({"raw"})).reader.format == "raw"  # type: ignore[union-attr]
    assert _decode(broken, None).reader.format == "raw"  # type: ignore[union-attr]


def test_iso_content_is_told_by_its_volume_descriptor() -> None:
    iso = bytearray(64 * 1024)
    iso[32769:32774] = b"CD001"
    assert _decode(bytes(iso), frozenset({"iso"})).reader.format == "iso"  # type: ignore[union-attr]
    with pytest.raises(FormatMismatch) as err:
        _decode(bytes(iso), DISK_FORMATS)
    assert err.value.detected == "iso"
    with pytest.raises(FormatMismatch):
        _decode(bytes(64 * 1024), frozenset({"iso"}))  # no descriptor: a raw disk


def test_a_raw_reader_that_turns_out_a_fixed_vhd_is_checked_at_the_end() -> None:
    from tests.unit.images.test_raw import fixed_footer

    blob = b"z" * 4096 + fixed_footer(4096)
    assert _decode(blob, frozenset({"vhd"})).reader.format == "vhd"  # type: ignore[union-attr]
    with pytest.raises(FormatMismatch) as err:
        _decode(blob, frozenset({"raw"}))
    assert err.value.detected == "vhd"
