"""Messages survive the wire exactly; a peer's garbage is a WireError, nothing else."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fabric.wire.messages  # noqa: F401 - registers the message kinds
from fabric.consensus.types import (
    AppendRequest,
    Entry,
    EntryKind,
    Membership,
    Snapshot,
    SnapshotRequest,
)
from fabric.wire import codec
from fabric.wire.codec import WireError, decode, encode

node_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", fullmatch=True)
entry_parts = st.tuples(
    st.integers(0, 2**30), st.sampled_from([EntryKind.COMMAND]), st.binary(max_size=64)
)


@given(st.lists(entry_parts, max_size=5), st.integers(0, 2**40), node_ids)
def test_append_request_round_trip(
    parts: list[tuple[int, EntryKind, bytes]], commit: int, frm: str
) -> None:
    # A valid append: entries follow prev_index one by one, none after the leader's term.
    es = tuple(Entry(2 + i, min(term, 3), kind, data) for i, (term, kind, data) in enumerate(parts))
    msg = AppendRequest(3, frm, "n2", 1, 1, es, commit, 7)
    back = decode(encode(msg))
    assert back == msg
    assert all(isinstance(e.kind, EntryKind) for e in back.entries)


def test_nested_snapshot_round_trip() -> None:
    msg = SnapshotRequest(2, "n1", "n3", Snapshot(10, 2, b"\x00" * 1000))
    assert decode(encode(msg)) == msg
    members = Membership(("n1", "n2", "n3"), ("n4",))
    msg = SnapshotRequest(2, "n1", "n3", Snapshot(10, 2, b"s", members))
    back = decode(encode(msg))
    assert back == msg and isinstance(back.snapshot.membership.voters, tuple)


def test_a_snapshot_from_a_sender_without_memberships_still_decodes() -> None:
    def ext(*fields: object) -> msgpack.ExtType:
        return msgpack.ExtType(1, msgpack.packb(list(fields), use_bin_type=True))

    old = msgpack.packb([1, ext(7, 2, "n1", "n3", ext(2, 10, 2, b"s"))], use_bin_type=True)
    assert decode(old) == SnapshotRequest(2, "n1", "n3", Snapshot(10, 2, b"s"))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_is_a_wire_error(blob: bytes) -> None:
    try:
        decode(blob)
    except WireError:
        pass


def test_wrong_version_and_unknown_tag_are_refused() -> None:
    with pytest.raises(WireError, match="wire version"):
        decode(msgpack.packb([99, 1]))
    with pytest.raises(WireError, match="unknown message tag"):
        decode(msgpack.packb([1, msgpack.ExtType(1, msgpack.packb([9999]))]))


def test_a_shared_kind_is_decoded_once_per_process_and_others_every_time() -> None:
    """``register_class(shared=True)``: a thousand simulated nodes decoding the same
    Raft entry get one (immutable) value; a kind that is not shared, and may hold
    mutable data, is never handed out twice."""
    from fabric.consensus.types import AppendRequest, Entry, EntryKind

    entry = Entry(7, 2, EntryKind.COMMAND, b"payload")
    to_b = codec.encode(AppendRequest(2, "n1", "n2", 6, 2, (entry,), 7, 0))
    to_c = codec.encode(AppendRequest(2, "n1", "n3", 6, 2, (entry,), 7, 0))
    got_b, got_c = codec.decode(to_b), codec.decode(to_c)
    assert got_b.entries[0] == entry and got_b.entries[0] is got_c.entries[0]
    again = codec.decode(to_b)
    assert again == got_b and again is not got_b  # the message itself is not shared

    @dataclasses.dataclass(slots=True)
    class Loose:
        x: int

    with pytest.raises(AssertionError, match="shared but not frozen"):
        codec.register_class(Loose, 250, shared=True)
