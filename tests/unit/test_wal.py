"""Raft's durable state survives crashes and refuses corruption."""

from __future__ import annotations

import msgpack
import pytest

from fabric.consensus import membership
from fabric.consensus.types import Entry, EntryKind, HardState, Membership, Snapshot
from fabric.consensus.wal import (
    CorruptLog,
    _frame,
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


# Written by the release before membership changes (snapshot format 1; a WAL of a hard
# state, a NOOP and a command), kept byte for byte: they must still load.
SNAPSHOT_FORMAT_1 = bytes.fromhex("0b000000535b9e2aa7b759e1e9080b6394012a03c4057374617465")
WAL_BEFORE_MEMBERSHIP = bytes.fromhex(
    "07000000f8c88be65f61bbdd8908ae24940002a26e310207000000f8c88be60a1ec8bf8db3e844950101"
    "0101c40008000000c458da9e605cf5abd2bcd7759501020200c40178"
)


def test_files_from_before_membership_changes_still_load() -> None:
    assert decode_snapshot(SNAPSHOT_FORMAT_1) == Snapshot(42, 3, b"state", None)
    wal = decode_wal(WAL_BEFORE_MEMBERSHIP)
    assert wal.hard_state == HardState(2, "n1", 2)
    assert wal.entries == [Entry(1, 1, EntryKind.NOOP), Entry(2, 2, EntryKind.COMMAND, b"x")]


def test_a_snapshot_keeps_its_configuration() -> None:
    for m in (Membership(("n1", "n2", "n3"), ("n4",)), None):
        snap = Snapshot(42, 3, b"state", m)
        assert decode_snapshot(encode_snapshot(snap)) == snap


@pytest.mark.parametrize("members", [[[], ["n1"]], [["n1"], ["n1"]], [["n1", 2], []], "n1"])
def test_a_snapshot_with_a_malformed_configuration_is_corrupt(members: object) -> None:
    body = msgpack.packb([2, 42, 3, b"state", members], use_bin_type=True)
    with pytest.raises(CorruptLog, match="configuration"):
        decode_snapshot(_frame(body))


def test_configuration_entries_replay_and_a_malformed_one_is_corrupt() -> None:
    m = Membership(("n1", "n2"), ("n3",))
    good = Entry(6, 2, EntryKind.CONFIG, membership.encode(m))
    wal = decode_wal(_log() + encode_entry(good))
    assert wal.entries[-1] == good and membership.decode(wal.entries[-1].data) == m
    bad = Entry(6, 2, EntryKind.CONFIG, b"junk")
    with pytest.raises(CorruptLog, match="bad entry 6"):
        decode_wal(_log() + encode_entry(bad) + encode_hard_state(HardState(2, "n2", 5)))
    with pytest.raises(CorruptLog, match="bad entry 6"):
        body = msgpack.packb([1, 6, 2, 99, b""], use_bin_type=True)  # an unknown kind
        decode_wal(_log() + _frame(body))
