"""Metadata of the data path: containers, vdisks, block maps, extents, extent groups.

Theory of operation
-------------------
Keys (all in the one versioned key space of ``MetadataState``):

* ``container/<name>``           policy and running totals (``stats``)
* ``vdisk/<id>``, ``vdisk-name/<name>``  a vdisk and its unique name
* ``vmap/<vdisk>/<index>``       extent id mapped at extent ``index`` (absent: a hole)
* ``extent/<container>/<id>``    where an extent's stored bytes are, and its refcount
* ``egroup/<id>``                an extent group: replicas, live and dead bytes, sealed

A write stores bytes on every replica first and then commits one ``WriteExtents``: new
extent groups it used, new extents, and map changes. Apply checks every precondition
before changing anything (all or nothing): the vdisk exists, each map entry is still
what the writer read (``expect``, for read-modify-write), each referenced extent exists,
and no new extent lands in a sealed or dropped group. A refused write changes nothing;
its bytes are dead space that compaction or GC reclaims.

References are counted per extent; when one drops to zero the extent record goes and
its bytes become dead in its group. Every total in ``stats`` is kept by the same
commands, so accounting is exact and identical on every node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fabric.wire.codec import register

if TYPE_CHECKING:
    from fabric.metadata.state import MetadataState, Result


@register(30)
@dataclass(frozen=True, slots=True)
class CreateContainer:
    name: str
    policy: dict[str, Any]
    at_wall: float


@register(31)
@dataclass(frozen=True, slots=True)
class DeleteContainer:
    name: str


@register(32)
@dataclass(frozen=True, slots=True)
class CreateVdisk:
    vdisk_id: str
    name: str
    container: str
    size: int
    at_wall: float


@register(33)
@dataclass(frozen=True, slots=True)
class DeleteVdisk:
    vdisk_id: str


@register(34)
@dataclass(frozen=True, slots=True)
class NewEgroup:
    egid: str
    container: str
    replicas: tuple[str, ...]
    owner: str


@register(35)
@dataclass(frozen=True, slots=True)
class NewExtent:
    extent_id: str
    egid: str
    offset: int
    stored_len: int
    raw_len: int
    compressed: bool
    checksum: int


@register(36)
@dataclass(frozen=True, slots=True)
class MapWrite:
    index: int
    expect: str | None
    """The extent id the writer read there ("" for a hole), or None for a blind write."""
    extent_id: str
    """The extent to map ("" makes a hole)."""


@register(37)
@dataclass(frozen=True, slots=True)
class WriteExtents:
    vdisk_id: str
    egroups: tuple[NewEgroup, ...]
    extents: tuple[NewExtent, ...]
    maps: tuple[MapWrite, ...]
    seal: tuple[str, ...] = ()
    """Extent groups the writer has filled: no new extent may land in them."""


@register(38)
@dataclass(frozen=True, slots=True)
class SealEgroups:
    egids: tuple[str, ...]


@register(39)
@dataclass(frozen=True, slots=True)
class DropEgroup:
    """Forget a sealed group with no live extent (its files were deleted)."""

    egid: str


@register(60)
@dataclass(frozen=True, slots=True)
class Move:
    container: str
    extent_id: str
    from_egid: str
    offset: int
    """Where the extent now lies in the new group."""
    length: int


@register(61)
@dataclass(frozen=True, slots=True)
class RelocateExtents:
    """Compaction: live extents copied out of a mostly-dead group into ``egroup``.

    A move applies only if the extent still lives in ``from_egid`` (it may have died or
    moved meanwhile); the copy is then dead space in the new group.
    """

    egroup: NewEgroup
    moves: tuple[Move, ...]


@register(62)
@dataclass(frozen=True, slots=True)
class StripMember:
    egid: str
    node: str


@register(63)
@dataclass(frozen=True, slots=True)
class CommitStrip:
    """``k`` sealed data groups (one copy each, on ``node``) and ``m`` parity groups.

    Committed after the parity is durable; surplus data replicas are deleted only after.
    """

    strip_id: str
    container: str
    chunk_bytes: int
    length: int
    """Bytes of each data group covered by the parity (the longest, in whole chunks)."""
    data: tuple[StripMember, ...]
    parity: tuple[StripMember, ...]
    parity_bytes: int
    """Size of each parity group."""


@register(64)
@dataclass(frozen=True, slots=True)
class MoveStripMember:
    """A lost member was rebuilt on ``to_node``."""

    strip_id: str
    egid: str
    from_node: str
    to_node: str


@register(65)
@dataclass(frozen=True, slots=True)
class DropStrip:
    """Forget a strip whose data groups hold no live extent (its files were deleted)."""

    strip_id: str


@register(66)
@dataclass(frozen=True, slots=True)
class ResizeVdisk:
    """Set a vdisk's size (an image whose size was known only at its end, say)."""

    vdisk_id: str
    size: int


DataCommand = (
    ResizeVdisk
    | CreateContainer
    | DeleteContainer
    | CreateVdisk
    | DeleteVdisk
    | WriteExtents
    | SealEgroups
    | DropEgroup
    | RelocateExtents
    | CommitStrip
    | MoveStripMember
    | DropStrip
)

_STATS = (
    "logical_bytes",
    "unique_bytes",
    "stored_bytes",
    "physical_bytes",
    "extents",
    "vdisks",
    "ec_data_bytes",
    "ec_parity_bytes",
    "ec_strips",
)


def container_key(name: str) -> str:
    return f"container/{name}"


def vdisk_key(vdisk_id: str) -> str:
    return f"vdisk/{vdisk_id}"


def vdisk_name_key(name: str) -> str:
    return f"vdisk-name/{name}"


def map_key(vdisk_id: str, index: int) -> str:
    return f"vmap/{vdisk_id}/{index:010d}"


def extent_key(container: str, extent_id: str) -> str:
    return f"extent/{container}/{extent_id}"


def egroup_key(egid: str) -> str:
    return f"egroup/{egid}"


class Refused(Exception):
    """A precondition failed: the command's result is a refusal with this code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DataPath:
    """Applies data-path commands to a ``MetadataState``."""

    def __init__(self, state: MetadataState) -> None:
        self.s = state

    # --- helpers ----------------------------------------------------------------------------
    def _put(self, index: int, key: str, value: Any) -> None:
        self.s.put(index, key, value)

    def _stats_add(self, index: int, container: str, **deltas: int) -> None:
        record = dict(self.s.value(container_key(container)))
        stats = dict(record["stats"])
        for name, delta in deltas.items():
            stats[name] = stats.get(name, 0) + delta
            assert stats[name] >= 0, f"{container}: {name} went negative"
        record["stats"] = stats
        self._put(index, container_key(container), record)

    # --- dispatch ---------------------------------------------------------------------------
    def apply(self, index: int, cmd: DataCommand) -> Result:
        from fabric.metadata.state import Result

        try:
            match cmd:
                case CreateContainer():
                    value = self._create_container(index, cmd)
                case DeleteContainer():
                    value = self._delete_container(cmd)
                case CreateVdisk():
                    value = self._create_vdisk(index, cmd)
                case DeleteVdisk():
                    value = self._delete_vdisk(index, cmd)
                case WriteExtents():
                    value = self._write(index, cmd)
                case SealEgroups():
                    value = self._seal(index, cmd.egids)
                case DropEgroup():
                    value = self._drop(index, cmd)
                case RelocateExtents():
                    value = self._relocate(index, cmd)
                case CommitStrip():
                    value = self._commit_strip(index, cmd)
                case MoveStripMember():
                    value = self._move_member(index, cmd)
                case DropStrip():
                    value = self._drop_strip(index, cmd)
                case ResizeVdisk():
                    value = self._resize(index, cmd)
        except Refused as r:
            return Result.refuse(r.code, r.message)
        return Result(ok=True, value=value)

    # --- containers and vdisks --------------------------------------------------------------
    def _create_container(self, index: int, cmd: CreateContainer) -> Any:
        if self.s.get(container_key(cmd.name)) is not None:
            raise Refused("conflict", f"container {cmd.name!r} already exists")
        self._put(
            index,
            container_key(cmd.name),
            {
                "name": cmd.name,
                "policy": dict(cmd.policy),
                "created": cmd.at_wall,
                "stats": dict.fromkeys(_STATS, 0),
            },
        )
        return cmd.name

    def _delete_container(self, cmd: DeleteContainer) -> Any:
        record = self.s.value(container_key(cmd.name))
        if record is None:
            raise Refused("not_found", f"no container {cmd.name!r}")
        if record["stats"]["vdisks"]:
            raise Refused(
                "conflict",
                f"container {cmd.name!r} still holds {record['stats']['vdisks']} vdisk(s)",
            )
        self.s.delete(container_key(cmd.name))
        return cmd.name

    def _create_vdisk(self, index: int, cmd: CreateVdisk) -> Any:
        if self.s.get(container_key(cmd.container)) is None:
            raise Refused("not_found", f"no container {cmd.container!r}")
        if self.s.get(vdisk_name_key(cmd.name)) is not None:
            raise Refused("conflict", f"a vdisk named {cmd.name!r} already exists")
        assert self.s.get(vdisk_key(cmd.vdisk_id)) is None, f"vdisk id {cmd.vdisk_id} reused"
        self._put(
            index,
            vdisk_key(cmd.vdisk_id),
            {
                "id": cmd.vdisk_id,
                "name": cmd.name,
                "container": cmd.container,
                "size": cmd.size,
                "created": cmd.at_wall,
                "mapped_extents": 0,
            },
        )
        self._put(index, vdisk_name_key(cmd.name), cmd.vdisk_id)
        self._stats_add(index, cmd.container, vdisks=1)
        return cmd.vdisk_id

    def _delete_vdisk(self, index: int, cmd: DeleteVdisk) -> Any:
        vd = self.s.value(vdisk_key(cmd.vdisk_id))
        if vd is None:
            raise Refused("not_found", f"no vdisk {cmd.vdisk_id!r}")
        for key, item in list(self.s.scan(f"vmap/{cmd.vdisk_id}/")):
            self._unref(index, vd["container"], item.value)
            self.s.delete(key)
        self._stats_add(index, vd["container"], vdisks=-1, logical_bytes=-self._logical(vd))
        self.s.delete(vdisk_key(cmd.vdisk_id))
        self.s.delete(vdisk_name_key(vd["name"]))
        return cmd.vdisk_id

    def _logical(self, vd: dict[str, Any]) -> int:
        return int(vd.get("logical_bytes", 0))

    # --- writes -----------------------------------------------------------------------------
    def _check_write(self, cmd: WriteExtents) -> dict[str, Any]:
        vd = self.s.value(vdisk_key(cmd.vdisk_id))
        if vd is None:
            raise Refused("not_found", f"no vdisk {cmd.vdisk_id!r}")
        container = vd["container"]
        for eg in cmd.egroups:
            known = self.s.value(egroup_key(eg.egid))
            if eg.container != container:
                raise Refused("bad_request", f"egroup {eg.egid} belongs to {eg.container}")
            if known is not None and known["sealed"]:
                raise Refused("egroup_sealed", f"extent group {eg.egid} is sealed")
            if known is None and self.s.get(f"egroup-dropped/{eg.egid}") is not None:
                raise Refused("egroup_sealed", f"extent group {eg.egid} was dropped")
        new_ids = {e.extent_id for e in cmd.extents}
        for e in cmd.extents:
            if e.egid not in {eg.egid for eg in cmd.egroups}:
                raise Refused("bad_request", f"extent {e.extent_id}: egroup not declared")
        for m in cmd.maps:
            key = map_key(cmd.vdisk_id, m.index)
            if not 0 <= m.index * 1 < (1 << 40):
                raise Refused("bad_request", f"extent index {m.index}")
            if m.expect is not None and (self.s.value(key) or "") != m.expect:
                raise Refused("conflict", f"extent {m.index} changed since it was read")
            ref = m.extent_id
            if ref and ref not in new_ids and self.s.get(extent_key(container, ref)) is None:
                raise Refused("missing_extent", f"extent {ref} no longer exists")
        return dict(vd)

    def _write(self, index: int, cmd: WriteExtents) -> Any:
        vd = self._check_write(cmd)
        container = vd["container"]
        for eg in cmd.egroups:
            if self.s.get(egroup_key(eg.egid)) is None:
                self._put(
                    index,
                    egroup_key(eg.egid),
                    {
                        "egid": eg.egid,
                        "container": container,
                        "replicas": list(eg.replicas),
                        "owner": eg.owner,
                        "live_bytes": 0,
                        "dead_bytes": 0,
                        "extents": 0,
                        "sealed": False,
                    },
                )
        for e in cmd.extents:
            self._add_extent(index, container, e)
        logical = 0
        for m in cmd.maps:
            logical += self._map(index, cmd.vdisk_id, container, m)
        vd["logical_bytes"] = self._logical(vd) + logical
        self._put(index, vdisk_key(cmd.vdisk_id), vd)
        if logical:
            self._stats_add(index, container, logical_bytes=logical)
        self._seal(index, cmd.seal)
        return len(cmd.maps)

    def _add_extent(self, index: int, container: str, e: NewExtent) -> None:
        eg = dict(self.s.value(egroup_key(e.egid)))
        copies = len(eg["replicas"])
        self._stats_add(index, container, physical_bytes=e.stored_len * copies)
        if self.s.get(extent_key(container, e.extent_id)) is not None:
            # Two writers stored the same content at once: the second copy is dead space.
            eg["dead_bytes"] += e.stored_len
            self._put(index, egroup_key(e.egid), eg)
            return
        self._put(
            index,
            extent_key(container, e.extent_id),
            {
                "refs": 0,
                "egroup": e.egid,
                "offset": e.offset,
                "stored_len": e.stored_len,
                "raw_len": e.raw_len,
                "compressed": e.compressed,
                "checksum": e.checksum,
            },
        )
        eg["live_bytes"] += e.stored_len
        eg["extents"] += 1
        self._put(index, egroup_key(e.egid), eg)
        self._stats_add(
            index, container, unique_bytes=e.raw_len, stored_bytes=e.stored_len, extents=1
        )

    def _map(self, index: int, vdisk_id: str, container: str, m: MapWrite) -> int:
        """Point extent ``m.index`` at ``m.extent_id``; return the logical-bytes change."""
        key = map_key(vdisk_id, m.index)
        old = self.s.value(key) or ""
        if old == m.extent_id:
            return 0
        delta = 0
        if m.extent_id:
            delta += self._ref(index, container, m.extent_id)
            self._put(index, key, m.extent_id)
        else:
            self.s.delete(key)
        if old:
            delta -= self._unref(index, container, old)
        return delta

    def _ref(self, index: int, container: str, extent_id: str) -> int:
        key = extent_key(container, extent_id)
        ext = dict(self.s.value(key))
        ext["refs"] += 1
        self._put(index, key, ext)
        return int(ext["raw_len"])

    def _unref(self, index: int, container: str, extent_id: str) -> int:
        key = extent_key(container, extent_id)
        ext = dict(self.s.value(key))
        ext["refs"] -= 1
        assert ext["refs"] >= 0, f"extent {extent_id} refcount below zero"
        if ext["refs"]:
            self._put(index, key, ext)
            return int(ext["raw_len"])
        self.s.delete(key)
        eg = dict(self.s.value(egroup_key(ext["egroup"])))
        eg["live_bytes"] -= ext["stored_len"]
        eg["dead_bytes"] += ext["stored_len"]
        eg["extents"] -= 1
        self._put(index, egroup_key(ext["egroup"]), eg)
        self._stats_add(
            index,
            container,
            unique_bytes=-ext["raw_len"],
            stored_bytes=-ext["stored_len"],
            extents=-1,
        )
        return int(ext["raw_len"])

    # --- extent group lifecycle -------------------------------------------------------------
    def _seal(self, index: int, egids: tuple[str, ...]) -> int:
        for egid in egids:
            eg = self.s.value(egroup_key(egid))
            if eg is not None and not eg["sealed"]:
                self._put(index, egroup_key(egid), {**eg, "sealed": True})
        return len(egids)

    def _drop(self, index: int, cmd: DropEgroup) -> Any:
        eg = self.s.value(egroup_key(cmd.egid))
        if eg is None:
            raise Refused("not_found", f"no extent group {cmd.egid}")
        if not eg["sealed"] or eg["extents"] or eg.get("strip"):
            raise Refused("conflict", f"extent group {cmd.egid} is still in use")
        copies = len(eg["replicas"])
        self._stats_add(
            index, eg["container"], physical_bytes=-(eg["live_bytes"] + eg["dead_bytes"]) * copies
        )
        self.s.delete(egroup_key(cmd.egid))
        self._put(index, f"egroup-dropped/{cmd.egid}", True)
        return cmd.egid

    def _relocate(self, index: int, cmd: RelocateExtents) -> Any:
        eg = cmd.egroup
        if self.s.get(egroup_key(eg.egid)) is not None:
            raise Refused("conflict", f"extent group {eg.egid} already exists")
        new: dict[str, Any] = {
            "egid": eg.egid,
            "container": eg.container,
            "replicas": list(eg.replicas),
            "owner": eg.owner,
            "live_bytes": 0,
            "dead_bytes": 0,
            "extents": 0,
            "sealed": True,
        }
        moved = 0
        for m in cmd.moves:
            key = extent_key(m.container, m.extent_id)
            ext = self.s.value(key)
            length = m.length
            if ext is None or ext["egroup"] != m.from_egid:
                # Died or moved meanwhile: the copy we made is dead space.
                new["dead_bytes"] += length
                continue
            old = dict(self.s.value(egroup_key(m.from_egid)))
            old["live_bytes"] -= length
            old["dead_bytes"] += length
            old["extents"] -= 1
            self._put(index, egroup_key(m.from_egid), old)
            self._put(index, key, {**ext, "egroup": eg.egid, "offset": m.offset})
            new["live_bytes"] += length
            new["extents"] += 1
            moved += 1
        self._put(index, egroup_key(eg.egid), new)
        copies = len(eg.replicas)
        self._stats_add(
            index, eg.container, physical_bytes=(new["live_bytes"] + new["dead_bytes"]) * copies
        )
        return moved

    # --- erasure-coded strips ---------------------------------------------------------------
    def _commit_strip(self, index: int, cmd: CommitStrip) -> Any:
        if self.s.get(f"strip/{cmd.strip_id}") is not None:
            raise Refused("conflict", f"strip {cmd.strip_id} exists")
        groups = []
        for member in cmd.data:
            eg = self.s.value(egroup_key(member.egid))
            # The kept copy may be one the converter made on a new domain (durable before
            # this commit), so the node need not be among the group's replicas.
            if (
                eg is None
                or not eg["sealed"]
                or eg.get("strip")
                or eg["container"] != cmd.container
            ):
                raise Refused("conflict", f"extent group {member.egid} changed; strip abandoned")
            groups.append(eg)
        for member in cmd.parity:
            if self.s.get(egroup_key(member.egid)) is not None:
                raise Refused("conflict", f"parity group {member.egid} exists")
        freed = data_bytes = 0
        for member, eg in zip(cmd.data, groups, strict=True):
            size = eg["live_bytes"] + eg["dead_bytes"]
            freed += size * (len(eg["replicas"]) - 1)
            data_bytes += size
            self._put(
                index,
                egroup_key(member.egid),
                {**eg, "replicas": [member.node], "strip": cmd.strip_id},
            )
        for member in cmd.parity:
            self._put(
                index,
                egroup_key(member.egid),
                {
                    "egid": member.egid,
                    "container": cmd.container,
                    "replicas": [member.node],
                    "owner": "",
                    "live_bytes": 0,
                    "dead_bytes": 0,
                    "extents": 0,
                    "sealed": True,
                    "strip": cmd.strip_id,
                    "parity": True,
                },
            )
        parity = cmd.parity_bytes * len(cmd.parity)
        self._put(
            index,
            f"strip/{cmd.strip_id}",
            {
                "id": cmd.strip_id,
                "container": cmd.container,
                "k": len(cmd.data),
                "m": len(cmd.parity),
                "chunk_bytes": cmd.chunk_bytes,
                "length": cmd.length,
                "data": [[m.egid, m.node] for m in cmd.data],
                "parity": [[m.egid, m.node] for m in cmd.parity],
                "parity_bytes": cmd.parity_bytes,
                "data_bytes": data_bytes,
            },
        )
        self._stats_add(
            index,
            cmd.container,
            physical_bytes=parity - freed,
            ec_data_bytes=data_bytes,
            ec_parity_bytes=parity,
            ec_strips=1,
        )
        return cmd.strip_id

    def _move_member(self, index: int, cmd: MoveStripMember) -> Any:
        strip = self.s.value(f"strip/{cmd.strip_id}")
        eg = self.s.value(egroup_key(cmd.egid))
        if strip is None or eg is None or eg.get("strip") != cmd.strip_id:
            raise Refused("not_found", f"{cmd.egid} is not in strip {cmd.strip_id}")
        if eg["replicas"] != [cmd.from_node]:
            raise Refused("conflict", f"{cmd.egid} no longer lives on {cmd.from_node}")
        strip = dict(strip)
        for role in ("data", "parity"):
            strip[role] = [[g, cmd.to_node if g == cmd.egid else n] for g, n in strip[role]]
        self._put(index, f"strip/{cmd.strip_id}", strip)
        self._put(index, egroup_key(cmd.egid), {**eg, "replicas": [cmd.to_node]})
        return cmd.egid

    def _drop_strip(self, index: int, cmd: DropStrip) -> Any:
        strip = self.s.value(f"strip/{cmd.strip_id}")
        if strip is None:
            raise Refused("not_found", f"no strip {cmd.strip_id}")
        groups = [self.s.value(egroup_key(g)) for g, _ in strip["data"]]
        if any(eg["extents"] for eg in groups):
            raise Refused("conflict", f"strip {cmd.strip_id} still holds live extents")
        for egid, _ in strip["data"] + strip["parity"]:
            self.s.delete(egroup_key(egid))
            self._put(index, f"egroup-dropped/{egid}", True)
        self.s.delete(f"strip/{cmd.strip_id}")
        parity = strip["parity_bytes"] * len(strip["parity"])
        self._stats_add(
            index,
            strip["container"],
            physical_bytes=-(strip["data_bytes"] + parity),
            ec_data_bytes=-strip["data_bytes"],
            ec_parity_bytes=-parity,
            ec_strips=-1,
        )
        return cmd.strip_id

    def _resize(self, index: int, cmd: ResizeVdisk) -> Any:
        vd = self.s.value(vdisk_key(cmd.vdisk_id))
        if vd is None:
            raise Refused("not_found", f"no vdisk {cmd.vdisk_id!r}")
        if cmd.size <= 0:
            raise Refused("bad_request", "a vdisk size must be positive")
        self._put(index, vdisk_key(cmd.vdisk_id), {**vd, "size": cmd.size})
        return cmd.size
