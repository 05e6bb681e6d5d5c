"""CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries.

Theory of operation
-------------------
The reflected polynomial 0x82F63B78 with initial value and final XOR 0xFFFFFFFF (as in
iSCSI and ext4); ``crc32c(b"123456789") == 0xE3069283``. No CRC-32C package is installed
in the project, so this is a table-driven loop in Python, one byte per step.

The structures it checks are mostly zeros: a 64 KiB region table holds a few dozen bytes
of entries. Feeding a zero byte is a linear map of the 32-bit state over GF(2), so a run
of ``n`` trailing zeros is applied at once as the product of precomputed maps for
``2**k`` zero bytes (the method of zlib's ``crc32_combine``). That makes checking a
region table cost microseconds instead of milliseconds.
"""

from __future__ import annotations

POLYNOMIAL = 0x82F63B78
"""CRC-32C polynomial, bit-reflected."""
_MASK = 0xFFFFFFFF
_STATE_BITS = 32
_ZERO_RUN_POWERS = 48
"""Zero runs up to 2**48 bytes are applied in one go (far beyond any structure)."""


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (POLYNOMIAL if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def _apply(matrix: tuple[int, ...], state: int) -> int:
    """Multiply a GF(2) 32x32 matrix (column ``i`` = image of bit ``i``) by ``state``."""
    out, bit = 0, 0
    while state:
        if state & 1:
            out ^= matrix[bit]
        state >>= 1
        bit += 1
    return out


def _zero_run_maps() -> tuple[tuple[int, ...], ...]:
    """Maps of the state for 1, 2, 4, ... zero bytes fed."""
    one = tuple(_TABLE[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(_STATE_BITS))
    maps = [one]
    for _ in range(_ZERO_RUN_POWERS - 1):
        last = maps[-1]
        maps.append(tuple(_apply(last, column) for column in last))
    return tuple(maps)


_ZERO_RUNS = _zero_run_maps()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data``, continuing from a previous result ``crc``."""
    raw = bytes(data)
    body = raw.rstrip(b"\0")
    zeros = len(raw) - len(body)
    assert zeros < 1 << _ZERO_RUN_POWERS
    table = _TABLE
    state = crc ^ _MASK
    for byte in body:
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    power = 0
    while zeros:
        if zeros & 1:
            state = _apply(_ZERO_RUNS[power], state)
        zeros >>= 1
        power += 1
    return state ^ _MASK


def checksum_with_field_zeroed(buf: bytes, field_at: int) -> int:
    """CRC-32C of ``buf`` with its 4-byte checksum field at ``field_at`` read as zero."""
    head = crc32c(buf[:field_at])
    head = crc32c(b"\0\0\0\0", head)
    return crc32c(buf[field_at + 4 :], head)
