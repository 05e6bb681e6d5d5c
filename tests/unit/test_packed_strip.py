"""CommitPackedStrip on the pure state machine: extents move, totals follow, refusals.

A container's tail (cold groups too few for a strip of k) is packed: its live extents
are copied into new single-copy groups beside parity, and one command moves them.
"""

from __future__ import annotations

import pytest

from fabric.extents.policy import ContainerPolicy
from fabric.metadata.commands import (
    CommitPackedStrip,
    CreateContainer,
    CreateVdisk,
    MapWrite,
    Move,
    NewEgroup,
    NewExtent,
    PackedExtent,
    RegisterIntents,
    WriteExtents,
)
from fabric.metadata.records import EgroupIntent, StripMember
from fabric.metadata.state import MetadataState
from fabric.sim.records import physical_bytes
from fabric.wire.codec import decode, encode

MiB = 1 << 20
DATA = (StripMember("st-1-d0", "n1"), StripMember("st-1-d1", "n2"))
PARITY = (StripMember("st-1-p0", "n3"),)


def tail() -> MetadataState:
    """A 2+1 container holding one sealed RF2 group of four 1 MiB extents."""
    s = MetadataState()
    policy = ContainerPolicy(rf=2, ec_k=2, ec_m=1, ec_delay_s=0.0)
    assert s.apply(1, CreateContainer("c", policy.to_dict(), 1.0)).ok
    assert s.apply(2, CreateVdisk("vd-1", "v", "c", 16 * MiB, 1.0)).ok
    extents = tuple(NewExtent(f"e{i}", "eg-1", i * MiB, MiB, MiB, False, i) for i in range(4))
    write = WriteExtents(
        "vd-1",
        (NewEgroup("eg-1", "c", ("n1", "n4"), "n1"),),
        extents,
        tuple(MapWrite(i, None, f"e{i}") for i in range(4)),
        seal=("eg-1",),
    )
    assert s.apply(3, write).ok
    intent = EgroupIntent("st-1", "c", DATA + PARITY, "n1")
    assert s.apply(4, RegisterIntents((intent,))).ok
    return s


def packed(**overrides: object) -> CommitPackedStrip:
    moves = tuple(
        PackedExtent(i // 2, Move("c", f"e{i}", "eg-1", (i % 2) * MiB, MiB)) for i in range(4)
    )
    fields: dict[str, object] = {
        "strip_id": "st-1",
        "container": "c",
        "chunk_bytes": MiB,
        "length": 2 * MiB,
        "data": DATA,
        "parity": PARITY,
        "parity_bytes": 2 * (MiB + 96),
        "extents": moves,
        "claimed": True,
    }
    fields.update(overrides)
    return CommitPackedStrip(**fields)  # type: ignore[arg-type]


def test_extents_move_into_the_new_members_and_the_old_group_is_left_to_collect() -> None:
    s = tail()
    assert s.container("c").stats.physical_bytes == 8 * MiB  # type: ignore[union-attr]
    assert s.apply(5, packed()).ok
    ext = s.extent("c", "e3")
    assert ext is not None and (ext.egroup, ext.offset) == ("st-1-d1", MiB)
    old = s.egroup("eg-1")
    assert old is not None and old.extents == 0 and old.dead_bytes == 4 * MiB
    assert s.idx.collectable == {"eg-1"}, "the emptied group is the collect job's"
    assert "c" not in s.idx.ec_pending or not s.idx.ec_pending["c"]
    d1 = s.egroup("st-1-d1")
    assert (
        d1 is not None
        and d1.replicas == ("n2",)
        and d1.strip == "st-1"
        and d1.live_bytes == 2 * MiB
    )
    strip = s.strip("st-1")
    assert strip is not None and (strip.k, strip.m, strip.data_bytes) == (2, 1, 4 * MiB)
    assert s.get("egroup-intent/st-1") is None, "the commit ends the claim"
    stats = s.container("c").stats  # type: ignore[union-attr]
    # The old group's two copies stay counted until collected: 8 + 4 + parity.
    assert stats.physical_bytes == physical_bytes(s) == 12 * MiB + 2 * (MiB + 96)
    assert (stats.ec_data_bytes, stats.ec_strips) == (4 * MiB, 1)


def test_an_extent_that_died_meanwhile_leaves_its_copy_as_dead_space() -> None:
    s = tail()
    overwrite = WriteExtents(
        "vd-1",
        (NewEgroup("eg-2", "c", ("n1", "n4"), "n1"),),
        (NewExtent("e9", "eg-2", 0, MiB, MiB, False, 9),),
        (MapWrite(0, "e0", "e9"),),
    )
    assert s.apply(5, overwrite).ok  # e0 is gone: nothing maps it any more
    assert s.apply(6, packed()).ok
    d0 = s.egroup("st-1-d0")
    assert d0 is not None and (d0.live_bytes, d0.dead_bytes, d0.extents) == (MiB, MiB, 1)
    assert s.container("c").stats.physical_bytes == physical_bytes(s)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "why,overrides,code",
    [
        ("claim expired", {"strip_id": "st-9"}, "egroup_sealed"),
        ("member exists", {"data": (StripMember("eg-1", "n1"), DATA[1])}, "conflict"),
        ("a group named twice", {"parity": (DATA[0],)}, "bad_request"),
        ("unknown container", {"container": "nope", "extents": ()}, "not_found"),
    ],
)
def test_a_packed_strip_that_cannot_apply_is_refused_and_changes_nothing(
    why: str, overrides: dict[str, object], code: str
) -> None:
    s = tail()
    before = s.snapshot()
    _, result = s.apply_entry(5, encode(packed(**overrides)))
    assert not result.ok and result.code == code, f"{why}: {result}"
    after = MetadataState.restore(s.snapshot())
    after.applied_index = 4
    assert after.snapshot() == before, f"{why} changed the state"


@pytest.mark.parametrize(
    "why,overrides",
    [
        (
            "a member index out of range",
            {"extents": (PackedExtent(2, Move("c", "e0", "eg-1", 0, MiB)),)},
        ),
        (
            "an extent past the strip",
            {"extents": (PackedExtent(0, Move("c", "e0", "eg-1", 2 * MiB, MiB)),)},
        ),
        (
            "a move across containers",
            {"extents": (PackedExtent(0, Move("x", "e0", "eg-1", 0, MiB)),)},
        ),
        ("a length not in whole chunks", {"length": MiB + 1}),
        (
            "two extents in one place",
            {
                "extents": (
                    PackedExtent(0, Move("c", "e0", "eg-1", 0, MiB)),
                    PackedExtent(0, Move("c", "e1", "eg-1", MiB // 2, MiB)),
                )
            },
        ),
        ("no parity bytes", {"parity_bytes": 0}),
        ("no parity", {"parity": ()}),
    ],
)
def test_a_malformed_packed_strip_is_a_bad_command(why: str, overrides: dict[str, object]) -> None:
    s = tail()
    _, result = s.apply_entry(5, encode(packed(**overrides)))
    assert not result.ok and result.code == "bad_command", why


def test_a_packed_strip_survives_the_log_codec_and_a_snapshot() -> None:
    cmd = packed()
    assert decode(encode(cmd)) == cmd
    s = tail()
    assert s.apply(5, cmd).ok
    r = MetadataState.restore(s.snapshot())
    assert r.snapshot() == s.snapshot()
    assert r.idx.strips_on["n2"] == {"st-1"} and r.idx.collectable == {"eg-1"}
    assert r.extents_in("st-1-d0") == s.extents_in("st-1-d0")
