"""Fuzzing the wire: whatever a peer sends, decoding gives a valid message or a WireError.

Three properties, over every kind a node can receive from another (Raft's messages and
``fabric.wire.messages``):

* any bytes, and any msgpack tree built from registered tags, decode or raise
  ``WireError``, nothing else;
* a valid message of every kind survives encode/decode unchanged;
* a valid message with one field, anywhere inside it, replaced by something hostile
  (negative, huge, the wrong type, a path, NUL, overlong) is refused with ``WireError``
  or decodes to a message an independent oracle (``looks_valid``) finds valid.

The example counts keep the whole file to a few seconds.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fabric.wire.messages as wm
from fabric import faults, limits
from fabric.consensus import membership
from fabric.consensus import types as raft
from fabric.metadata.commands import DropEgroup, Put, SealEgroups, WriteExtents
from fabric.wire import codec
from fabric.wire.codec import WireError, decode, encode

FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

# --- valid values -----------------------------------------------------------------------
node_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", fullmatch=True)
egids = st.one_of(
    st.builds(lambda n, h: f"eg-{n}-{h:012x}", node_ids, st.integers(0, 2**48 - 1)),
    st.builds(
        lambda h, k, j: f"st-{h:012x}-{k}{j}",
        st.integers(0, 2**48 - 1),
        st.sampled_from("pd"),
        st.integers(0, 20),
    ),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True),
)
indexes = st.integers(0, limits.MAX_WIRE_INDEX)
offsets = st.integers(0, 2**30)
small_bytes = st.binary(max_size=64)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
fault_ids = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True)
fault_texts = st.builds(
    lambda fid, nodes, ms, start: faults.Fault(
        fid,
        "net-delay",
        {"nodes": nodes},
        tuple(nodes),
        faults.check_params("net-delay", {"ms": ms}),
        start,
        None,
        tuple(nodes),
    ).to_text(),
    fault_ids,
    st.lists(node_ids, min_size=1, max_size=3, unique=True),
    st.floats(0, 1000),
    st.floats(0, 2e9),
)
codes = st.sampled_from(["", "bad_request", "not_found", "conflict", "unavailable", "error"])


@st.composite
def memberships(draw: st.DrawFn) -> raft.Membership:
    members = draw(st.lists(node_ids, min_size=1, max_size=limits.MAX_NODES, unique=True))
    n_voters = draw(st.integers(1, min(len(members), limits.MAX_VOTERS)))
    return raft.Membership(tuple(members[:n_voters]), tuple(members[n_voters:]))


@st.composite
def entries_after(draw: st.DrawFn, prev_index: int, term: int) -> tuple[raft.Entry, ...]:
    count = draw(st.integers(0, 4))
    out = []
    for i in range(count):
        kind = draw(st.sampled_from(raft.EntryKind))
        data = {
            raft.EntryKind.COMMAND: draw(small_bytes),
            raft.EntryKind.NOOP: b"",
            raft.EntryKind.CONFIG: membership.encode(draw(memberships())),
        }[kind]
        out.append(raft.Entry(prev_index + 1 + i, draw(st.integers(0, term)), kind, data))
    return tuple(out)


@st.composite
def append_requests(draw: st.DrawFn) -> raft.AppendRequest:
    term = draw(st.integers(0, 2**40))
    prev = draw(st.integers(0, 2**40))
    return raft.AppendRequest(
        term,
        draw(node_ids),
        draw(node_ids),
        prev,
        draw(st.integers(0, term)),
        draw(entries_after(prev, term)),
        draw(indexes),
        draw(indexes),
    )


snapshots = st.builds(
    raft.Snapshot, indexes, st.integers(0, 2**40), small_bytes, st.none() | memberships()
)


@st.composite
def vote_requests(draw: st.DrawFn) -> raft.VoteRequest:
    term = draw(st.integers(0, 2**40))
    return raft.VoteRequest(
        term,
        draw(node_ids),
        draw(node_ids),
        draw(indexes),
        draw(st.integers(0, term)),
        draw(st.booleans()),
    )


@st.composite
def snapshot_requests(draw: st.DrawFn) -> raft.SnapshotRequest:
    snap = draw(snapshots)
    term = draw(st.integers(snap.term, 2**41))
    return raft.SnapshotRequest(term, draw(node_ids), draw(node_ids), snap)


valid_commands = st.one_of(
    st.builds(DropEgroup, egids),
    st.builds(SealEgroups, st.lists(egids, max_size=3).map(tuple)),
    st.builds(Put, st.from_regex(r"kv/[a-z]{1,8}", fullmatch=True), st.integers(-5, 5)),
    st.builds(WriteExtents, st.just("vd-0000000000000001"), st.just(()), st.just(()), st.just(())),
)
disk_reports = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["disk0", "/data/n1/d1", "d 2"]),
        "state": st.sampled_from(["UP", "FULL", "FAILED"]),
        "used_bytes": indexes,
        "capacity_bytes": indexes,
    },
    optional={"error": st.text(max_size=20)},
)
extent_checks = st.builds(wm.ExtentCheck, offsets, offsets, st.integers(0, 2**64 - 1))

KINDS: dict[type, st.SearchStrategy[Any]] = {
    raft.Entry: st.builds(
        raft.Entry, indexes, indexes, st.just(raft.EntryKind.COMMAND), small_bytes
    ),
    raft.Snapshot: snapshots,
    raft.Membership: memberships(),
    raft.VoteRequest: vote_requests(),
    raft.VoteResponse: st.builds(
        raft.VoteResponse, indexes, node_ids, node_ids, st.booleans(), st.booleans()
    ),
    raft.AppendRequest: append_requests(),
    raft.AppendResponse: st.builds(
        raft.AppendResponse, indexes, node_ids, node_ids, st.booleans(), indexes, indexes, indexes
    ),
    raft.SnapshotRequest: snapshot_requests(),
    wm.ErrorReply: st.builds(wm.ErrorReply, codes, texts),
    wm.ProposeRequest: st.builds(wm.ProposeRequest, valid_commands.map(encode)),
    wm.ProposeReply: st.builds(
        wm.ProposeReply,
        st.booleans(),
        st.none() | st.integers(0, 99) | texts,
        codes,
        texts,
        indexes,
    ),
    wm.ReadIndexRequest: st.just(wm.ReadIndexRequest()),
    wm.ReadIndexReply: st.builds(wm.ReadIndexReply, indexes),
    wm.NodeReport: st.builds(
        wm.NodeReport,
        node_ids,
        st.sampled_from(["UP", "DEGRADED"]),
        st.fixed_dictionaries(
            {"disks": st.lists(disk_reports, max_size=3)},
            optional={
                "reason": texts,
                "out_of_service_s": st.floats(0, 1e6),
                "io": st.fixed_dictionaries(
                    {}, optional={"written_bytes": indexes, "read_bytes": indexes}
                ),
            },
        ),
    ),
    wm.Ack: st.just(wm.Ack()),
    wm.ClusterViewRequest: st.builds(wm.ClusterViewRequest, st.integers(0, limits.TRENDS_KEPT)),
    wm.ClusterViewReply: st.builds(
        wm.ClusterViewReply,
        st.dictionaries(texts, st.none() | st.integers(0, 9) | texts, max_size=3),
    ),
    wm.AppendExtents: st.builds(
        wm.AppendExtents, egids, st.lists(small_bytes, max_size=4).map(tuple), st.just(-1) | offsets
    ),
    wm.AppendReply: st.builds(wm.AppendReply, st.lists(offsets, max_size=4).map(tuple)),
    wm.ReadExtent: st.builds(wm.ReadExtent, egids, offsets, st.integers(0, 2**22)),
    wm.ExtentData: st.builds(wm.ExtentData, small_bytes),
    wm.RepairExtent: st.builds(wm.RepairExtent, egids, offsets, small_bytes),
    wm.DeleteEgroupFiles: st.builds(wm.DeleteEgroupFiles, egids),
    wm.StatEgroup: st.builds(wm.StatEgroup, egids),
    wm.EgroupStat: st.builds(wm.EgroupStat, offsets),
    wm.ListEgroups: st.just(wm.ListEgroups()),
    wm.EgroupList: st.builds(wm.EgroupList, st.lists(egids, max_size=4).map(tuple)),
    wm.ExtentCheck: extent_checks,
    wm.PullEgroup: st.builds(
        wm.PullEgroup,
        egids,
        st.lists(node_ids, min_size=1, max_size=3, unique=True).map(tuple),
        st.lists(extent_checks, max_size=3).map(tuple),
    ),
    wm.PullReply: st.builds(wm.PullReply, offsets, indexes),
    wm.MembershipRequest: st.builds(
        wm.MembershipRequest, st.sampled_from(["add_learner", "promote", "remove"]), node_ids
    ),
    wm.FaultControl: st.one_of(
        st.builds(wm.FaultControl, st.just("inject"), fault_texts),
        st.builds(wm.FaultControl, st.sampled_from(["clear", "list"]), st.just(""), fault_ids),
    ),
    wm.FaultState: st.builds(
        wm.FaultState,
        st.lists(fault_texts, max_size=3).map(tuple),
        st.integers(0, 2**31 - 1),
        st.floats(-1e6, 1e6),
    ),
}
"""A strategy of valid values for every kind a peer can send (``test_every_kind_is_covered``)."""

PEER_KINDS = sorted(
    (cls for cls in codec.registered().values() if cls.__module__ in (wm.__name__, raft.__name__)),
    key=lambda cls: cls.__name__,
)
any_valid = st.sampled_from(PEER_KINDS).flatmap(lambda cls: KINDS[cls])


def test_every_kind_is_covered() -> None:
    assert set(PEER_KINDS) == set(KINDS)
    # A kind with fields and no check would let a handler see whatever types allow.
    unchecked = [c.__name__ for c in PEER_KINDS if dataclasses.fields(c) and not codec.checked(c)]
    assert unchecked == ["ExtentData"]  # bytes of any content, bounded by the message size


@FAST
@given(any_valid)
def test_valid_messages_round_trip_unchanged(message: Any) -> None:
    assert decode(encode(message)) == message


# --- hostile values ------------------------------------------------------------------------
HOSTILE_TEXT = ["", ".", "..", "../x", "a/b", "/etc/passwd", "x\x00y", "n1\n", "é", "A" * 5000]
HOSTILE = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.sampled_from([-1, -(2**63), 2**63, 2**64 - 1, 2**63 - 1, 0, 1]),
    st.sampled_from([None, True, False, 1.5, float("nan"), b"", b"\x00" * 8, [], {}, [1, 2]]),
    st.sampled_from([{"disks": "x"}, {"reason": 5}, {"evil": 1}, {"disks": [{"name": "../x"}]}]),
    st.lists(st.just("n1"), min_size=20, max_size=20),
)


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one field or item, at any depth, replaced by a hostile value."""
    if dataclasses.is_dataclass(value) and dataclasses.fields(value):
        field = draw(st.sampled_from([f.name for f in dataclasses.fields(value)]))
        inner = getattr(value, field)
        replaced = draw(mutated(inner)) if draw(st.booleans()) else draw(HOSTILE)
        return dataclasses.replace(value, **{field: replaced})
    if isinstance(value, tuple) and value:
        i = draw(st.integers(0, len(value) - 1))
        item = draw(mutated(value[i])) if draw(st.booleans()) else draw(HOSTILE)
        return (*value[:i], item, *value[i + 1 :])
    return draw(HOSTILE)


ID_FIELDS = {"egid", "frm", "to", "node", "node_id"}
ID_LISTS = {"egids", "sources", "voters", "learners"}
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def looks_valid(value: Any) -> bool:
    """An oracle written apart from ``fabric.wire.checks``: types as declared, ids that
    cannot name a path, numbers in range, all the way down."""
    if not dataclasses.is_dataclass(value):
        return True
    hints = typing.get_type_hints(type(value))
    for f in dataclasses.fields(value):
        v, hint = getattr(value, f.name), hints[f.name]
        if hint in (int, str, bytes, bool) and type(v) is not hint:
            return False
        if f.name in ID_FIELDS and not (isinstance(v, str) and _SAFE_ID.fullmatch(v)):
            return False
        if f.name in ID_LISTS and not all(_SAFE_ID.fullmatch(x) for x in v):
            return False
        if hint is int and not (-1 if f.name == "at" else 0) <= v < 2**64:
            return False
        if hint is int and f.name != "checksum" and v > limits.MAX_WIRE_INDEX:
            return False
        items = v if isinstance(v, tuple) else (v,)
        if not all(looks_valid(x) for x in items):
            return False
    return True


@FAST
@given(st.data())
def test_a_hostile_field_is_refused_or_harmless(data: st.DataObject) -> None:
    original = data.draw(any_valid)
    message = data.draw(mutated(original))
    try:
        blob = encode(message)
    except (TypeError, ValueError, OverflowError):
        return  # not even encodable by msgpack: no peer can send it either
    try:
        back = decode(blob)
    except WireError:
        return
    assert looks_valid(back), back


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".", "..", "x\x00", "eg\n", "e" * 65])
def test_a_command_naming_a_bad_group_is_refused_inside_a_proposal(bad: str) -> None:
    for command in (DropEgroup(bad), SealEgroups(("eg-1", bad))):
        with pytest.raises(WireError, match="not an extent-group id"):
            decode(encode(wm.ProposeRequest(encode(command))))


# --- arbitrary input ---------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_wire_error(blob: bytes) -> None:
    try:
        decode(blob)
    except WireError:
        pass


@FAST
@given(any_valid, st.data())
def test_a_damaged_encoding_decodes_or_raises_a_wire_error(
    message: Any, data: st.DataObject
) -> None:
    blob = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        decode(bytes(blob[:cut]))
    except WireError:
        pass


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    texts,
    st.binary(max_size=10),
    st.sampled_from(HOSTILE_TEXT),
)


def _ext(tree: list[Any]) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb(tree, use_bin_type=True, default=_default))


def _default(value: Any) -> Any:
    raise TypeError(type(value).__name__)


trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
        st.builds(
            lambda tag, fields: _ext([tag, *fields]),
            st.sampled_from(sorted(codec.registered())) | st.integers(-3, 300),
            st.lists(inner, max_size=9),
        ),
    ),
    max_leaves=30,
)


@FAST
@given(trees)
def test_any_msgpack_tree_of_registered_kinds_decodes_or_raises_a_wire_error(tree: Any) -> None:
    blob = msgpack.packb([limits.WIRE_VERSION, tree], use_bin_type=True)
    try:
        decode(blob)
    except WireError:
        pass
