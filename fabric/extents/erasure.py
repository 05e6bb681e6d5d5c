"""Reed-Solomon erasure coding of extent-group chunks, through pyeclib (ISA-L).

A strip has ``k`` data groups and ``m`` parity groups. Groups are cut into chunks of
``chunk_bytes``; chunk ``c`` of the ``k`` data groups (zero-padded at the end) is encoded
as one pyeclib buffer. The code is systematic: pyeclib's data fragment ``i`` is a small
header followed by chunk ``c`` of data group ``i`` itself, so data groups keep their
bytes as they are and only the headers need storing beside the parity. A parity record
is ``k`` data-fragment headers followed by the parity fragment (header included);
any ``k`` of the ``k + m`` fragments rebuild any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pyeclib.ec_iface import ECDriver

PREFERRED_BACKENDS = ("isa_l_rs_vand", "liberasurecode_rs_vand")


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


def layout(k: int, m: int, chunk_bytes: int) -> Layout:
    probe = _driver(k, m).encode(bytes(k * chunk_bytes))
    header = len(probe[0]) - chunk_bytes
    assert header > 0 and probe[0][header:] == bytes(chunk_bytes), "pyeclib is not systematic"
    return Layout(k, m, chunk_bytes, header)


def encode(lay: Layout, chunks: list[bytes]) -> list[bytes]:
    """Parity records (``m`` of them) for one chunk of each of the ``k`` data groups."""
    assert len(chunks) == lay.k
    padded = b"".join(c.ljust(lay.chunk_bytes, b"\0") for c in chunks)
    frags = _driver(lay.k, lay.m).encode(padded)
    for i in range(lay.k):
        assert (
            frags[i][lay.header_bytes :] == padded[i * lay.chunk_bytes : (i + 1) * lay.chunk_bytes]
        )
    headers = b"".join(f[: lay.header_bytes] for f in frags[: lay.k])
    return [headers + frags[lay.k + j] for j in range(lay.m)]


def rebuild(lay: Layout, data: dict[int, bytes], parity: dict[int, bytes], want: int) -> bytes:
    """Fragment ``want`` (0..k-1 data, k..k+m-1 parity) of one chunk, with its header.

    ``data`` maps data-group index to its chunk bytes, ``parity`` maps parity index
    (0..m-1) to its parity record; at least one parity record is needed for the headers.
    """
    if not parity:
        raise ErasureError("no parity record: data fragments lack their headers")
    headers = next(iter(parity.values()))[: lay.k * lay.header_bytes]
    frags = []
    for i, chunk in sorted(data.items()):
        h = headers[i * lay.header_bytes : (i + 1) * lay.header_bytes]
        frags.append(h + chunk.ljust(lay.chunk_bytes, b"\0"))
    for _, record in sorted(parity.items()):
        frags.append(record[lay.k * lay.header_bytes :])
    if len(frags) < lay.k:
        raise ErasureError(f"{len(frags)} fragments, need {lay.k}")
    try:
        out = _driver(lay.k, lay.m).reconstruct(frags[: lay.k + lay.m], [want])
    except Exception as exc:  # pyeclib's ECDriverError family: bad or inconsistent fragments
        raise ErasureError(f"reconstruction failed: {exc}") from exc
    fragment: bytes = out[0]
    return fragment
