"""Raft's durable state survives crashes and refuses corruption."""

from __future__ import annotations

import pytest

from fabric.consensus.types import Entry, EntryKind, HardState, Snapshot
from fabric.consensus.wal import (
    CorruptLog,
    decode_snapshot,
    decode_wal,
    encode_entry,
    encode_hard_state,
    encode_snapshot,
)


def _log() -> bytes:
    return b"".join(
        [
            encode_hard_state(HardState(1, "n1", 0)),
            *(encode_entry(Entry(i, 1, EntryKind.COMMAND, b"x%d" % i)) for i in range(1, 6)),
            encode_hard_state(HardState(2, "n2", 3)),
        ]
    )


def test_replay_rebuilds_entries_and_latest_hard_state() -> None:
    wal = decode_wal(_log())
    assert wal.hard_state == HardState(2, "n2", 3)
    assert [e.index for e in wal.entries] == [1, 2, 3, 4, 5]
    assert wal.valid_bytes == len(_log())


def test_an_entry_replaces_every_later_persisted_entry() -> None:
    data = _log() + encode_entry(Entry(3, 2, EntryKind.NOOP))
    wal = decode_wal(data)
    assert [(e.index, e.term) for e in wal.entries] == [(1, 1), (2, 1), (3, 2)]


@pytest.mark.parametrize("cut", [1, 5, 13, 20])
def test_torn_tail_is_dropped_not_fatal(cut: int) -> None:
    full = _log() + encode_entry(Entry(6, 2, EntryKind.COMMAND, b"last"))
    wal = decode_wal(full[:-cut])
    assert [e.index for e in wal.entries] == [1, 2, 3, 4, 5]
    assert wal.valid_bytes == len(_log())


def test_corruption_before_the_tail_refuses_to_start() -> None:
    data = bytearray(_log())
    data[40] ^= 0x55
    with pytest.raises(CorruptLog, match="checksum mismatch"):
        decode_wal(bytes(data))


def test_snapshot_round_trip_and_corruption() -> None:
    snap = Snapshot(42, 3, b"state" * 100)
    assert decode_snapshot(encode_snapshot(snap)) == snap
    bad = bytearray(encode_snapshot(snap))
    bad[-3] ^= 1
    with pytest.raises(CorruptLog):
        decode_snapshot(bytes(bad))


def test_every_single_byte_flip_before_the_last_record_is_caught() -> None:
    data = _log()
    last = len(data) - len(encode_hard_state(HardState(2, "n2", 3)))
    for i in range(last):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(CorruptLog):
            decode_wal(bytes(bad))


def test_zero_filled_tail_is_a_torn_write() -> None:
    wal = decode_wal(_log() + bytes(4096))
    assert len(wal.entries) == 5
