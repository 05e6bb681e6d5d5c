"""Metadata quotas hold in the state machine itself: a forged or racing proposal that
reached the log is refused on apply, on every node alike.

Each test feeds the pure state machine the commands a client (or a forger) could get
committed and checks the refusal, that nothing changed, and that freeing room lets the
next write through.
"""

from __future__ import annotations

from itertools import count

import pytest

from fabric import limits
from fabric.extents.policy import ContainerPolicy
from fabric.metadata import keys
from fabric.metadata.commands import (
    Batch,
    Command,
    CreateContainer,
    CreateImage,
    Delete,
    ExpireImage,
    Put,
    UpdateImage,
)
from fabric.metadata.records import ImageRecord
from fabric.metadata.state import MetadataState, Result
from fabric.wire.codec import decode, encode


class Log:
    """A state machine and the next log index to apply at."""

    def __init__(self) -> None:
        self.state = MetadataState()
        self._index = count(1)
        assert self.apply(CreateContainer("c", ContainerPolicy(rf=1).to_dict(), 1.0)).ok

    def apply(self, command: Command) -> Result:
        # Through the codec, as a committed entry arrives on every node.
        return self.state.apply_entry(next(self._index), encode(command))[1]


def image(n: int) -> ImageRecord:
    return ImageRecord(f"img-{n}", f"image-{n}", "c", "PENDING", "DISK", 1.0)


# --- kv: per value and in total -----------------------------------------------------------
def test_a_kv_value_over_the_limit_is_refused_on_apply() -> None:
    log = Log()
    big = "x" * limits.MAX_VALUE_BYTES  # its JSON text adds two quotes
    result = log.apply(Put("kv/big", big))
    assert not result.ok and result.code == "too_large", result
    assert log.state.get("kv/big") is None
    assert log.state.idx.kv_bytes == 0


def test_the_kv_total_is_a_quota_and_deleting_frees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "KV_TOTAL_BYTES", 10_000)
    log = Log()
    value = "v" * 1000
    entry = keys.kv_entry_bytes("kv/k0", value)
    fits = limits.KV_TOTAL_BYTES // entry
    for i in range(fits):
        assert log.apply(Put(f"kv/k{i}", value)).ok
    used = log.state.idx.kv_bytes
    assert used == fits * entry
    refused = log.apply(Put(f"kv/k{fits}", value))
    assert not refused.ok and refused.code == "insufficient_storage"
    assert "quota" in refused.message
    assert log.state.get(f"kv/k{fits}") is None and log.state.idx.kv_bytes == used
    # A write that does not grow the space applies even at the quota.
    assert log.apply(Put("kv/k0", "small")).ok
    assert log.apply(Delete("kv/k1")).ok
    assert log.apply(Put(f"kv/k{fits}", value)).ok


def test_a_batch_is_measured_as_a_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "KV_TOTAL_BYTES", 3000)
    log = Log()
    value = "v" * 1000
    assert log.apply(Put("kv/a", value)).ok
    # Replacing one key with another of the same size does not grow the space...
    assert log.apply(Batch((Delete("kv/a"), Put("kv/b", value)))).ok
    # ...writing three of them does, and none applies.
    three = Batch(tuple(Put(f"kv/c{i}", value) for i in range(3)))
    assert not log.apply(three).ok
    assert [k for k, _ in log.state.scan(keys.KV)] == ["kv/b"]


def test_kv_use_is_rebuilt_from_a_snapshot_and_counts_json_null() -> None:
    log = Log()
    assert log.apply(Put("kv/none", None)).ok
    assert log.apply(Put("kv/doc", {"a": [1, 2.5, "é"]})).ok
    used = log.state.idx.kv_bytes
    assert used == keys.kv_entry_bytes("kv/none", None) + keys.kv_entry_bytes(
        "kv/doc", {"a": [1, 2.5, "é"]}
    )
    restored = MetadataState.restore(log.state.snapshot())
    assert restored.idx.kv_bytes == used and restored.idx.kv_sizes == log.state.idx.kv_sizes


# --- images: PENDING cap, catalog cap, expiry ---------------------------------------------
def test_pending_images_are_capped_on_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_PENDING_IMAGES", 3)
    log = Log()
    for n in range(3):
        assert log.apply(CreateImage(image(n))).ok
    refused = log.apply(CreateImage(image(3)))
    assert not refused.ok and refused.code == "too_many_requests"
    assert "PENDING" in refused.message
    assert log.state.image("img-3") is None
    # One ends (ERROR): room for the next.
    done = ImageRecord("img-0", "image-0", "c", "ERROR", "DISK", 1.0, error="gave up")
    assert log.apply(UpdateImage(done, "PENDING")).ok
    assert log.apply(CreateImage(image(3))).ok


def test_the_catalog_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_IMAGES", 2)
    log = Log()
    for n in range(2):
        assert log.apply(CreateImage(image(n))).ok
    refused = log.apply(CreateImage(image(2)))
    assert not refused.ok and refused.code == "insufficient_storage"


def test_expiry_applies_only_to_the_version_the_leader_watched() -> None:
    log = Log()
    assert log.apply(CreateImage(image(1))).ok
    version = log.state.version(keys.image_key("img-1"))
    # An upload claims the image: its version moves, the expiry proposed before is refused.
    claimed = ImageRecord("img-1", "image-1", "c", "PENDING", "DISK", 1.0, node="n2")
    assert log.apply(UpdateImage(claimed, "PENDING")).ok
    stale = log.apply(ExpireImage("img-1", version, "upload never arrived within 1 s"))
    assert not stale.ok and stale.code == "conflict"
    still = log.state.image("img-1")
    assert still is not None and still.state == "PENDING"
    # An image nobody claimed expires.
    assert log.apply(CreateImage(image(2))).ok
    version = log.state.version(keys.image_key("img-2"))
    assert log.apply(ExpireImage("img-2", version, "upload never arrived within 1 s")).ok
    expired = log.state.image("img-2")
    assert expired is not None and expired.state == "ERROR"
    assert expired.error == "upload never arrived within 1 s"
    assert "img-2" not in log.state.idx.pending_images


def test_expire_image_round_trips_the_codec() -> None:
    command = ExpireImage("img-1", 7, "why")
    assert decode(encode(command)) == command
