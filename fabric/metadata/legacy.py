"""Reading what release 0.1 wrote: records as plain maps, catalog writes as raw Puts.

Release 0.1 kept every record as a msgpack map (snapshot format 1) and wrote image and
task records with raw ``Put``s. A node of this release restoring such a snapshot, or
replaying such a log, converts each value here into its typed record. A value that does
not convert is refused as a malformed command would be: replaying an old log never
stops the state machine.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from fabric.errors import BadRequest
from fabric.metadata import keys
from fabric.metadata.records import (
    Checksum,
    ContainerRecord,
    ContainerStats,
    EgroupRecord,
    ExtentRecord,
    ImageRecord,
    NodeRecord,
    StripMember,
    StripRecord,
    TaskRecord,
    VdiskRecord,
)
from fabric.metadata.validate import policy_from_record
from fabric.wire.codec import WireError, pack, unpack

T = TypeVar("T")


def convert(key: str, value: Any) -> Any:
    """The typed value of ``key`` from its release-0.1 form (raises BadRequest)."""
    space = keys.namespace(key)
    try:
        return _CONVERTERS[space](value)
    except KeyError:
        raise BadRequest(f"{key!r}: no such key space in release 0.1") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(f"{key!r}: not a release-0.1 record: {exc}") from None


def _typed(cls: type[T], raw: Any, **overrides: Any) -> T:
    if not isinstance(raw, dict):
        raise TypeError(f"{cls.__name__} must be a map")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in raw.items() if k in names}
    values.update(overrides)
    # Through the wire codec and back: the same field-by-field type checks a peer's
    # bytes get (a bool is no count, a list no string), and ints where floats belong
    # come back as floats.
    try:
        checked: T = unpack(pack(cls(**values)))
    except WireError as exc:
        raise TypeError(str(exc)) from None
    return checked


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


def _node(d: Any) -> NodeRecord:
    return _typed(
        NodeRecord,
        d,
        disks=tuple(map(_str, d["disks"])),
        labels={_str(k): _str(v) for k, v in d.get("labels", {}).items()},
        state_since=float(d.get("state_since", 0.0)),
    )


def _container(d: Any) -> ContainerRecord:
    return _typed(
        ContainerRecord,
        d,
        policy=policy_from_record(d["policy"]),
        stats=_typed(ContainerStats, d["stats"]),
        created=float(d["created"]),
    )


def _vdisk(d: Any) -> VdiskRecord:
    return _typed(VdiskRecord, d, created=float(d["created"]))


def _egroup(d: Any) -> EgroupRecord:
    return _typed(
        EgroupRecord,
        d,
        replicas=tuple(map(_str, d["replicas"])),
        strip=d.get("strip") or "",
        parity=bool(d.get("parity", False)),
    )


def _strip(d: Any) -> StripRecord:
    def members(pairs: Any) -> tuple[StripMember, ...]:
        return tuple(StripMember(_str(g), _str(n)) for g, n in pairs)

    return _typed(StripRecord, d, data=members(d["data"]), parity=members(d["parity"]))


def _image(d: Any) -> ImageRecord:
    checksum = d.get("checksum")
    return _typed(
        ImageRecord,
        d,
        checksum=None if checksum is None else Checksum(checksum["type"], checksum["value"]),
        created=float(d["created"]),
    )


def _task(d: Any) -> TaskRecord:
    return _typed(TaskRecord, d, progress=float(d.get("progress", 0.0)))


def _dropped(value: Any) -> int:
    if value is not True and not (isinstance(value, int) and value >= 0):
        raise TypeError("a tombstone is true or an index")
    return int(value)


def _kv(value: Any) -> Any:
    if not keys.json_like(value):
        raise TypeError("not plain JSON data")
    return value


_CONVERTERS = {
    keys.NODE: _node,
    keys.CONTAINER: _container,
    keys.VDISK: _vdisk,
    keys.VDISK_NAME: _str,
    keys.VMAP: _str,
    keys.EXTENT: lambda d: _typed(ExtentRecord, d),
    keys.EGROUP: _egroup,
    keys.EGROUP_DROPPED: _dropped,
    keys.STRIP: _strip,
    keys.IMAGE: _image,
    keys.IMAGE_NAME: _str,
    keys.TASK: _task,
    keys.KV: _kv,
}
