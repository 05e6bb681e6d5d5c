"""The on-disk encoding of Raft's durable state: a write-ahead log and a snapshot file.

The log is a sequence of framed records, each
``u32 length | u32 xxh32(length) | u64 xxh3(payload) | payload`` (payload msgpack);
the length has its own checksum so that a flipped length cannot pass for a torn tail.
Records are hard states and entries; an entry at index ``i`` replaces every persisted
entry at ``i`` or later (Raft's truncation on conflict), so replaying the records in
order rebuilds exactly what the ``Ready`` stream persisted.

A record cut short at the very end of the file (or a zero-filled tail) is a torn write
from a crash: it was never fsynced, so nothing acknowledged depends on it and it is
dropped. A record that
fails its checksum anywhere else is corruption: ``CorruptLog`` names the offset, and the
node refuses to start rather than serve state it cannot trust. So is a ``CONFIG`` entry
whose configuration does not decode.

The snapshot file is one framed record ``[format, index, term, data, ...]``. Format 2
adds the configuration in force at the snapshot's index (``[voters, learners]``, or nil
when the snapshot does not know it); format 1, written before membership changes
existed, still loads, with no configuration (Raft then uses its ``RaftConfig``'s).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import msgpack
import xxhash

from fabric.consensus import membership
from fabric.consensus.types import Entry, EntryKind, HardState, Membership, Snapshot

_FRAME = struct.Struct("<IIQ")
_LENGTH = struct.Struct("<I")
_MAX_RECORD_BYTES = 64 * 1024 * 1024
_HARD_STATE = 0
_ENTRY = 1
_SNAPSHOT_FORMAT = 2


class CorruptLog(Exception):
    """The durable Raft state cannot be trusted (an operating fault of that disk)."""


def _length_check(length: int) -> int:
    return xxhash.xxh32_intdigest(_LENGTH.pack(length))


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    return _FRAME.pack(n, _length_check(n), xxhash.xxh3_64_intdigest(payload)) + payload


def encode_hard_state(hs: HardState) -> bytes:
    return _frame(msgpack.packb([_HARD_STATE, hs.term, hs.vote, hs.commit]))


def encode_entry(entry: Entry) -> bytes:
    body = [_ENTRY, entry.index, entry.term, int(entry.kind), entry.data]
    return _frame(msgpack.packb(body, use_bin_type=True))


@dataclass
class WalContents:
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    valid_bytes: int = 0
    """Length of the well-formed prefix; a torn tail beyond it should be cut off."""


def _apply_record(out: WalContents, record: list[object], offset: int) -> None:
    match record:
        case [0, int(term), vote, int(commit)] if vote is None or isinstance(vote, str):
            out.hard_state = HardState(term, vote, commit)
        case [1, int(index), int(term), int(kind), bytes(data)]:
            entries = out.entries
            if entries and index <= entries[-1].index:
                del entries[index - entries[0].index :]
            if entries and index != entries[-1].index + 1:
                raise CorruptLog(f"raft log: entry {index} after {entries[-1].index} at {offset}")
            entries.append(_entry(index, term, kind, data, offset))
        case _:
            raise CorruptLog(f"raft log: unknown record at byte {offset}")


def _entry(index: int, term: int, kind: int, data: bytes, offset: int) -> Entry:
    try:
        entry = Entry(index, term, EntryKind(kind), data)
        if entry.kind is EntryKind.CONFIG:
            membership.decode(data)
    except ValueError as exc:
        raise CorruptLog(f"raft log: bad entry {index} at byte {offset}: {exc}") from None
    return entry


def decode_wal(data: bytes) -> WalContents:
    out = WalContents()
    pos = 0
    while pos < len(data):
        if pos + _FRAME.size > len(data):
            break  # torn frame header at the tail
        length, length_check, digest = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if length_check != _length_check(length) or length > _MAX_RECORD_BYTES:
            if not any(data[pos:]):
                break  # a zero-filled tail: space allocated by a write that never landed
            raise CorruptLog(f"raft log: bad record header at byte {pos}")
        if end > len(data):
            break  # torn payload at the tail
        payload = data[pos + _FRAME.size : end]
        if xxhash.xxh3_64_intdigest(payload) != digest:
            if end == len(data):
                break  # a torn last record
            raise CorruptLog(f"raft log: checksum mismatch in the record at byte {pos}")
        try:
            record = msgpack.unpackb(payload, raw=False)
        except Exception as exc:
            raise CorruptLog(f"raft log: undecodable record at byte {pos}: {exc}") from exc
        _apply_record(out, record, pos)
        pos = end
    out.valid_bytes = pos
    return out


def encode_snapshot(snap: Snapshot) -> bytes:
    m = snap.membership
    members = None if m is None else [list(m.voters), list(m.learners)]
    body = [_SNAPSHOT_FORMAT, snap.index, snap.term, snap.data, members]
    return _frame(msgpack.packb(body, use_bin_type=True))


def decode_snapshot(data: bytes) -> Snapshot:
    if len(data) < _FRAME.size:
        raise CorruptLog("raft snapshot: file too short")
    length, length_check, digest = _FRAME.unpack_from(data, 0)
    payload = data[_FRAME.size :]
    bad_length = length != len(payload) or length_check != _length_check(length)
    if bad_length or xxhash.xxh3_64_intdigest(payload) != digest:
        raise CorruptLog("raft snapshot: checksum mismatch")
    match msgpack.unpackb(payload, raw=False):
        case [1, int(index), int(term), bytes(body)]:
            return Snapshot(index, term, body)
        case [2, int(index), int(term), bytes(body), members]:
            return Snapshot(index, term, body, _membership(members))
    raise CorruptLog("raft snapshot: unknown format")


def _membership(members: object) -> Membership | None:
    match members:
        case None:
            return None
        case [list(voters), list(learners)] if all(
            isinstance(i, str) for i in (*voters, *learners)
        ):
            m = Membership(tuple(voters), tuple(learners))
            problem = membership.problem(m)
            if problem is None:
                return m
            raise CorruptLog(f"raft snapshot: bad configuration: {problem}")
    raise CorruptLog("raft snapshot: malformed configuration")
