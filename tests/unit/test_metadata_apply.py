"""Apply is total: no log entry, however malformed, stops the state machine.

Each test feeds the pure state machine what a forged or corrupt peer message could put
in the log (bytes that do not decode, a record of the wrong type under a known prefix,
values out of range, illegal state moves) and checks it comes back refused, changes
nothing, and that the state machine goes on applying the next entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest

from fabric.extents.policy import ContainerPolicy
from fabric.metadata.commands import (
    Batch,
    CreateContainer,
    CreateImage,
    CreateVdisk,
    Delete,
    MapWrite,
    NewEgroup,
    NewExtent,
    Put,
    RegisterIntents,
    SetNodeState,
    UpdateImage,
    UpdateTask,
    WriteExtents,
)
from fabric.metadata.records import (
    EgroupIntent,
    ImageRecord,
    StripMember,
    TaskRecord,
)
from fabric.metadata.state import MetadataState
from fabric.wire.codec import WIRE_VERSION, encode

FIXTURES = Path(__file__).parent.parent / "fixtures"


def fresh() -> MetadataState:
    s = MetadataState()
    assert s.apply(1, CreateContainer("c", ContainerPolicy(rf=1).to_dict(), 1.0)).ok
    assert s.apply(2, CreateVdisk("vd-1", "v", "c", 1 << 20, 1.0)).ok
    return s


def raw(*items: Any) -> bytes:
    return msgpack.packb([WIRE_VERSION, *items], use_bin_type=True)


def forged(tag: int, *fields: Any) -> bytes:
    """A log entry for message ``tag`` with arbitrary field values (as a forger sends)."""
    body = msgpack.ExtType(1, msgpack.packb([tag, *fields], use_bin_type=True))
    return msgpack.packb([WIRE_VERSION, body], use_bin_type=True)


MALFORMED_ENTRIES: list[tuple[str, bytes]] = [
    ("garbage bytes", b"\xc1\xff garbage"),
    ("not a message", raw({"a": 1})),
    ("unknown tag", forged(9999, "x")),
    ("Put under container/", encode(Put("container/x", "junk"))),
    ("Put under egroup/", encode(Put("egroup/eg-1", {"replicas": 3}))),
    ("Put with no prefix", encode(Put("x", 1))),
    ("Put of NaN", encode(Put("kv/x", float("nan")))),
    ("Delete of a container", encode(Delete("container/c"))),
    ("Batch hiding a bad Put", encode(Batch((Put("kv/ok", 1), Put("vdisk/vd-1", 2))))),
    ("a string where a size belongs", forged(32, "vd-2", "w", "c", "big", 1.0)),
    ("a negative size", forged(32, "vd-2", "w", "c", -5, 1.0)),
    ("a bool where a size belongs", forged(32, "vd-2", "w", "c", True, 1.0)),
    ("too few fields", forged(32, "vd-2")),
    ("a bad policy", encode(CreateContainer("d", {"rf": 9}, 1.0))),
    ("an unknown policy field", encode(CreateContainer("d", {"rf": 1, "evil": 1}, 1.0))),
    ("a bad container name", encode(CreateContainer("../x", {"rf": 1}, 1.0))),
    ("an unknown node state", encode(SetNodeState("n1", "ZOMBIE", 1.0))),
    (
        "an image born ACTIVE",
        encode(CreateImage(ImageRecord("img-1", "i", "c", "ACTIVE", "DISK", 1.0))),
    ),
    (
        "an image of an unknown type",
        encode(CreateImage(ImageRecord("img-1", "i", "c", "PENDING", "TAPE", 1.0))),
    ),
    (
        "an image declared in an unknown format",
        encode(
            CreateImage(
                ImageRecord("img-1", "i", "c", "PENDING", "DISK", 1.0, declared_format="tape")
            )
        ),
    ),
    (
        "an image padded by a whole sector",
        encode(
            CreateImage(ImageRecord("img-1", "i", "c", "PENDING", "DISK", 1.0, padded_bytes=512))
        ),
    ),
    (
        "a task with progress 7",
        encode(UpdateTask(TaskRecord("t", "image_import", "img-1", "RUNNING", "n1", 7.0), "x")),
    ),
]


@pytest.mark.parametrize("label,data", MALFORMED_ENTRIES, ids=[m[0] for m in MALFORMED_ENTRIES])
def test_a_malformed_entry_is_refused_and_changes_nothing(label: str, data: bytes) -> None:
    s = fresh()
    before = s.snapshot()
    _, result = s.apply_entry(3, data)
    assert not result.ok and result.code == "bad_command", f"{label}: {result}"
    assert s.refused_malformed == 1
    after = MetadataState.restore(s.snapshot())
    after.applied_index = 2
    assert after.snapshot() == before, f"{label} changed the state"
    # ... and the state machine goes on.
    assert s.apply(4, Put("kv/next", 1)).ok


def test_an_illegal_image_move_is_a_refusal_and_the_first_of_two_racers_wins() -> None:
    s = fresh()
    image = ImageRecord("img-1", "i", "c", "PENDING", "DISK", 1.0, node="n2")
    assert s.apply(3, CreateImage(image)).ok
    active = UpdateImage(ImageRecord("img-1", "i", "c", "ACTIVE", "DISK", 1.0), "PENDING")
    swept = UpdateImage(
        ImageRecord("img-1", "i", "c", "ERROR", "DISK", 1.0, error="node n2 went down"), "PENDING"
    )
    assert s.apply(4, active).ok
    refused = s.apply(5, swept)
    assert not refused.ok and refused.code == "conflict"
    found = s.image("img-1")
    assert found is not None and found.state == "ACTIVE"
    # An ACTIVE image never goes back, whatever the update expects.
    back = UpdateImage(ImageRecord("img-1", "i", "c", "PENDING", "DISK", 1.0), "ACTIVE")
    assert not s.apply(6, back).ok


def test_a_new_image_takes_the_name_of_one_that_failed_and_only_of_such_one() -> None:
    s = fresh()
    first = ImageRecord("img-1", "i", "c", "PENDING", "DISK", 1.0)
    again = ImageRecord("img-2", "i", "c", "PENDING", "DISK", 2.0)
    assert s.apply(3, CreateImage(first)).ok
    refused = s.apply(4, CreateImage(again))
    assert not refused.ok and refused.code == "conflict"  # PENDING blocks its name
    failed = ImageRecord("img-1", "i", "c", "ERROR", "DISK", 1.0, error="not qcow2")
    assert s.apply(5, UpdateImage(failed, "PENDING")).ok
    assert s.apply(6, CreateImage(again)).ok
    assert s.image("img-1") is None and s.image_by_ref("i") == again
    assert [i.id for i in s.images()] == ["img-2"]
    # An ACTIVE image keeps its name.
    active = ImageRecord("img-2", "i", "c", "ACTIVE", "DISK", 2.0)
    assert s.apply(7, UpdateImage(active, "PENDING")).ok
    third = ImageRecord("img-3", "i", "c", "PENDING", "DISK", 3.0)
    assert not s.apply(8, CreateImage(third)).ok and s.image_by_ref("i") == active


def test_a_failed_image_that_still_names_a_vdisk_is_not_replaced() -> None:
    """Its vdisk would be left with no record pointing at it: the node drops it first."""
    s = fresh()
    assert s.apply(3, CreateImage(ImageRecord("img-1", "i", "c", "PENDING", "DISK", 1.0))).ok
    stuck = ImageRecord("img-1", "i", "c", "ERROR", "DISK", 1.0, vdisk_id="vd-1")
    assert s.apply(4, UpdateImage(stuck, "PENDING")).ok
    again = ImageRecord("img-2", "i", "c", "PENDING", "DISK", 2.0)
    refused = s.apply(5, CreateImage(again))
    assert not refused.ok and "still has data" in refused.message


def test_a_commit_whose_claim_expired_is_refused() -> None:
    s = fresh()
    eg = NewEgroup("eg-1", "c", ("n1",), "n1")
    intent = EgroupIntent("eg-1", "c", (StripMember("eg-1", "n1"),), "n1")
    write = WriteExtents(
        "vd-1",
        (eg,),
        (NewExtent("e1", "eg-1", 0, 10, 100, True, 7),),
        (MapWrite(0, None, "e1"),),
        claimed=True,
    )
    refused = s.apply(3, write)
    assert not refused.ok and refused.code == "egroup_sealed"
    assert s.apply(4, RegisterIntents((intent,))).ok
    assert s.apply(5, write).ok
    assert s.get("egroup-intent/eg-1") is None, "the commit ends the claim"
    assert s.map_entry("vd-1", 0) == "e1"


def test_typed_snapshot_round_trips_and_restores_its_indexes() -> None:
    s = fresh()
    eg = NewEgroup("eg-1", "c", ("n1",), "n1")
    ext = NewExtent("e1", "eg-1", 0, 10, 100, True, 7)
    assert s.apply(3, WriteExtents("vd-1", (eg,), (ext,), (MapWrite(0, None, "e1"),))).ok
    r = MetadataState.restore(s.snapshot())
    assert r.snapshot() == s.snapshot()
    assert r.extents_in("eg-1") == s.extents_in("eg-1")
    assert r.map_entry("vd-1", 0) == "e1"
    assert r.idx.open_egroups == {"eg-1"}
    vd = r.vdisk("vd-1")
    assert vd is not None and vd.mapped_extents == 1 and vd.logical_bytes == 100


def test_a_release_0_1_snapshot_restores_into_typed_records() -> None:
    s = MetadataState.restore((FIXTURES / "metadata-snapshot-v1.bin").read_bytes())
    assert s.applied_index == 21
    gold = s.container("gold")
    assert gold is not None and gold.policy.dedup and gold.policy.compression == "zstd"
    assert gold.stats.logical_bytes == 14 * 65536
    image = s.image_by_ref("tiny")
    assert image is not None and image.state == "ACTIVE" and image.source_format == "qcow2"
    vm1 = s.vdisk_by_ref("vm1")
    assert vm1 is not None and len(s.block_map(vm1.id)) == 14
    assert s.nodes()["n1"].state == "UP"
    assert s.value("kv/owner") == "storage-team"
    # Restored once, it snapshots in today's format and restores identically.
    again = MetadataState.restore(s.snapshot())
    assert again.snapshot() == s.snapshot()


def test_user_data_in_kv_may_be_any_json_even_inside_a_batch() -> None:
    s = fresh()
    batch = Batch((Put("kv/a", -5), Put("kv/b", {"x": -1.5, "y": [None, True]})))
    assert s.apply(3, batch).ok
    assert s.value("kv/a") == -5 and s.value("kv/b") == {"x": -1.5, "y": [None, True]}


@pytest.mark.parametrize(
    "key,value",
    [
        (
            "vdisk/vd-1",
            {"id": "vd-1", "name": "v", "container": "c", "size": "big", "created": 1.0},
        ),
        ("vdisk/vd-1", {"id": "vd-1", "name": "v", "container": "c", "size": True, "created": 1.0}),
        ("node/n1", {"id": "n1", "address": 7, "disks": ["d"], "labels": {}}),
        ("egroup/eg", {"egid": "eg", "container": "c", "replicas": [1], "owner": "n1"}),
    ],
)
def test_a_release_0_1_record_of_the_wrong_shape_is_refused(key: str, value: Any) -> None:
    from fabric.errors import BadRequest
    from fabric.metadata import legacy

    with pytest.raises(BadRequest, match=r"not a release-0\.1 record"):
        legacy.convert(key, value)
