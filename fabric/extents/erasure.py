"""Reed-Solomon erasure coding of extent-group chunks, through pyeclib (ISA-L).

A strip has ``k`` data groups and ``m`` parity groups. Groups are cut into chunks of
``chunk_bytes``; chunk ``c`` of the ``k`` data groups (zero-padded at the end) is encoded
as one pyeclib buffer. The code is systematic: pyeclib's data fragment ``i`` is a small
header followed by chunk ``c`` of data group ``i`` itself, so data groups keep their
bytes as they are and only the headers need storing beside the parity. A parity record
is ``k`` data-fragment headers followed by the parity fragment (header included);
any ``k`` of the ``k + m`` fragments rebuild any other.

Work is done a window of several chunks at a time (``encode_window``,
``rebuild_window``): one call per window keeps the per-call overhead of the caller (a
thread hop, a message) off each chunk. pyeclib takes only ``bytes`` (a memoryview makes
it fail or abort), so a window's columns are sliced as memoryviews and joined into one
``bytes`` buffer per chunk, the one copy the library's interface forces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pyeclib.ec_iface import ECDriver

PREFERRED_BACKENDS = ("isa_l_rs_vand", "liberasurecode_rs_vand")

Buffer = bytes | bytearray | memoryview
_SAMPLE_BYTES = 4096
"""Bytes at each end of a data fragment checked against the data on every encode."""


class ErasureError(Exception):
    """Fragments that cannot rebuild what was asked (too few, or corrupt)."""


@lru_cache(maxsize=1)
def backend() -> str:
    """The best Reed-Solomon backend that loads here: ISA-L, else liberasurecode's own."""
    for name in PREFERRED_BACKENDS:
        try:
            ECDriver(k=2, m=1, ec_type=name)
        except Exception:  # pyeclib raises its own error kinds for a missing library
            continue
        return name
    raise RuntimeError("no Reed-Solomon backend of pyeclib can be loaded")


@dataclass(frozen=True)
class Layout:
    k: int
    m: int
    chunk_bytes: int
    header_bytes: int

    @property
    def parity_record_bytes(self) -> int:
        return self.k * self.header_bytes + self.header_bytes + self.chunk_bytes


@lru_cache(maxsize=32)
def _driver(k: int, m: int) -> ECDriver:
    return ECDriver(k=k, m=m, ec_type=backend())


@lru_cache(maxsize=32)
def layout(k: int, m: int, chunk_bytes: int) -> Layout:
    """The layout of a ``k + m`` code over chunks of ``chunk_bytes`` (probed once: the
    probe encodes ``k`` whole chunks, far too slow to repeat per read)."""
    probe = _driver(k, m).encode(bytes(k * chunk_bytes))
    header = len(probe[0]) - chunk_bytes
    assert header > 0 and probe[0][header:] == bytes(chunk_bytes), "pyeclib is not systematic"
    return Layout(k, m, chunk_bytes, header)


def _padded(chunk: Buffer, size: int) -> Buffer:
    return chunk if len(chunk) == size else bytes(chunk) + bytes(size - len(chunk))


def encode(lay: Layout, chunks: Sequence[Buffer]) -> list[bytes]:
    """Parity records (``m`` of them) for one chunk of each of the ``k`` data groups
    (a chunk shorter than ``chunk_bytes``, at a group's end, reads as zero-padded)."""
    assert len(chunks) == lay.k and all(len(c) <= lay.chunk_bytes for c in chunks)
    c, h = lay.chunk_bytes, lay.header_bytes
    frags = _driver(lay.k, lay.m).encode(b"".join(_padded(x, c) for x in chunks))
    for i, chunk in enumerate(chunks):
        # The stored data group must be pyeclib's data fragment (``layout`` checked a
        # whole one): its first and last bytes are compared on every call, cheaply.
        n = len(chunk)
        assert frags[i].startswith(chunk[:_SAMPLE_BYTES], h), "pyeclib is not systematic"
        assert frags[i].startswith(chunk[-_SAMPLE_BYTES:], h + max(0, n - _SAMPLE_BYTES))
        assert frags[i].count(0, h + n) == c - n, "padding is not zeros"
    headers = b"".join(f[:h] for f in frags[: lay.k])
    return [headers + frags[lay.k + j] for j in range(lay.m)]


def encode_window(lay: Layout, columns: Sequence[Buffer], chunks: int) -> list[list[bytes]]:
    """Parity records of ``chunks`` consecutive chunks: ``columns[i]`` holds data group
    ``i``'s bytes for them (shorter, or empty, where a group ends: zeros). Returns, per
    parity member, one record per chunk."""
    assert len(columns) == lay.k
    c = lay.chunk_bytes
    views = [memoryview(col) for col in columns]
    assert all(len(v) <= chunks * c for v in views), "a column longer than its window"
    out: list[list[bytes]] = [[] for _ in range(lay.m)]
    for n in range(chunks):
        records = encode(lay, [v[n * c : (n + 1) * c] for v in views])
        for j, record in enumerate(records):
            out[j].append(record)
    return out


def rebuild(
    lay: Layout, data: Mapping[int, Buffer], parity: Mapping[int, Buffer], want: int
) -> bytes:
    """Fragment ``want`` (0..k-1 data, k..k+m-1 parity) of one chunk, with its header.

    ``data`` maps data-group index to its chunk bytes, ``parity`` maps parity index
    (0..m-1) to its parity record; at least one parity record is needed for the headers.
    """
    if not parity:
        raise ErasureError("no parity record: data fragments lack their headers")
    h = lay.header_bytes
    headers = bytes(next(iter(parity.values()))[: lay.k * h])
    frags = []
    for i, chunk in sorted(data.items()):
        frags.append(headers[i * h : (i + 1) * h] + _padded(chunk, lay.chunk_bytes))
    for _, record in sorted(parity.items()):
        frags.append(bytes(record[lay.k * h :]))
    if len(frags) < lay.k:
        raise ErasureError(f"{len(frags)} fragments, need {lay.k}")
    try:
        out = _driver(lay.k, lay.m).reconstruct(frags[: lay.k + lay.m], [want])
    except Exception as exc:  # pyeclib's ECDriverError family: bad or inconsistent fragments
        raise ErasureError(f"reconstruction failed: {exc}") from exc
    fragment: bytes = out[0]
    return fragment


def rebuild_window(
    lay: Layout,
    data: Mapping[int, Buffer],
    parity: Mapping[int, Buffer],
    want: int,
    chunks: int,
) -> list[bytes]:
    """Fragment ``want`` (with header) of ``chunks`` consecutive chunks: ``data[i]`` holds
    data group ``i``'s bytes for them (shorter where the group ends), ``parity[j]`` the
    window's parity records of member ``j``, back to back."""
    c, r = lay.chunk_bytes, lay.parity_record_bytes
    dv = {i: memoryview(b) for i, b in data.items()}
    pv = {j: memoryview(b) for j, b in parity.items()}
    out = []
    for n in range(chunks):
        pieces = {j: v[n * r : (n + 1) * r] for j, v in pv.items()}
        whole = {j: p for j, p in pieces.items() if len(p) == r}
        out.append(rebuild(lay, {i: v[n * c : (n + 1) * c] for i, v in dv.items()}, whole, want))
    return out
