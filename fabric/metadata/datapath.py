"""Metadata of the data path: containers, vdisks, block maps, extents, extent groups.

Theory of operation
-------------------
Keys (see ``fabric.metadata.keys``; values are ``fabric.metadata.records``):

* ``container/<name>``           ``ContainerRecord``: policy and running totals
* ``vdisk/<id>``, ``vdisk-name/<name>``  a ``VdiskRecord`` and its unique name
* ``vmap/<vdisk>/<index>``       extent id mapped at extent ``index`` (absent: a hole)
* ``extent/<container>/<id>``    ``ExtentRecord``: where its stored bytes are, refcount
* ``egroup/<id>``                ``EgroupRecord``: replicas, live and dead bytes, sealed
* ``egroup-intent/<id>``         ``EgroupIntent``: files claimed before their first byte
* ``egroup-dropped/<id>``        tombstone of a collected group (the index it went at)
* ``strip/<id>``                 ``StripRecord``: an erasure-coded strip

A writer claims a new group's files with ``RegisterIntents`` before its first append,
stores bytes on every replica, and then commits one ``WriteExtents``: new extent groups
it used (ending their claims), new extents, and map changes. Apply checks every
precondition before changing anything (all or nothing): the vdisk exists, each map
entry is still what the writer read (``expect``, for read-modify-write), each referenced
extent exists, and no new extent lands in a sealed or dropped group. A refused write
changes nothing; its bytes are dead space that compaction or GC reclaims.

References are counted per extent; when one drops to zero the extent record goes and
its bytes become dead in its group. Every total in a container's ``stats`` is kept by
the same commands, so accounting is exact and identical on every node.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fabric.metadata import keys
from fabric.metadata.commands import (
    AddReplica,
    CommitPackedStrip,
    CommitStrip,
    CreateContainer,
    CreateVdisk,
    DataCommand,
    DeleteContainer,
    DeleteVdisk,
    DropEgroup,
    DropIntent,
    DropStrip,
    MapWrite,
    MarkCopiesLost,
    MoveStripMember,
    NewEgroup,
    NewExtent,
    PruneTombstones,
    RegisterIntents,
    RelocateExtents,
    ResizeVdisk,
    SealEgroups,
    WriteExtents,
)
from fabric.metadata.healing import record_event
from fabric.metadata.records import (
    ContainerRecord,
    ContainerStats,
    EgroupRecord,
    EventRecord,
    ExtentRecord,
    StripMember,
    StripRecord,
    VdiskRecord,
)
from fabric.metadata.refusal import Refused
from fabric.metadata.validate import policy_from_record

if TYPE_CHECKING:
    from fabric.metadata.state import MetadataState


class DataPath:
    """Applies data-path commands to a ``MetadataState``."""

    def __init__(self, state: MetadataState) -> None:
        self.s = state
        self._moved: dict[str, dict[str, int]] = {}
        """container -> total -> how much this command moved it (put once, at its end)."""

    # --- helpers ----------------------------------------------------------------------------
    def _stats_add(self, index: int, container: str, **deltas: int) -> None:
        # A write moves three totals of its container, and every node applies every
        # write: the container record is rewritten once per command (``_put_totals``,
        # which also finds a missing container), not per total.
        moved = self._moved.setdefault(container, {})
        for name, delta in deltas.items():
            moved[name] = moved.get(name, 0) + delta

    def _put_totals(self, index: int) -> None:
        for container, moved in self._moved.items():
            record = self.s.container(container)
            assert record is not None, f"totals of missing container {container}"
            stats: ContainerStats = record.stats.add(**moved)
            self.s.put(index, keys.container_key(container), replace(record, stats=stats))
        self._moved.clear()

    def _egroup(self, egid: str) -> EgroupRecord:
        eg = self.s.egroup(egid)
        assert eg is not None, f"extent group {egid} missing"
        return eg

    def _put_egroup(self, index: int, eg: EgroupRecord) -> None:
        self.s.put(index, keys.egroup_key(eg.egid), eg)

    # --- dispatch ---------------------------------------------------------------------------
    def apply(self, index: int, cmd: DataCommand) -> Any:
        try:
            return self._dispatch(index, cmd)
        finally:
            self._put_totals(index)

    def _dispatch(self, index: int, cmd: DataCommand) -> Any:
        match cmd:
            case CreateContainer():
                return self._create_container(index, cmd)
            case DeleteContainer():
                return self._delete_container(cmd)
            case CreateVdisk():
                return self._create_vdisk(index, cmd)
            case DeleteVdisk():
                return self._delete_vdisk(index, cmd)
            case ResizeVdisk():
                return self._resize(index, cmd)
            case WriteExtents():
                return self._write(index, cmd)
            case SealEgroups():
                return self._seal(index, cmd.egids)
            case DropEgroup():
                return self._drop(index, cmd)
            case RelocateExtents():
                return self._relocate(index, cmd)
            case CommitStrip():
                return self._commit_strip(index, cmd)
            case CommitPackedStrip():
                return self._commit_packed(index, cmd)
            case MoveStripMember():
                return self._move_member(index, cmd)
            case DropStrip():
                return self._drop_strip(index, cmd)
            case RegisterIntents():
                return self._register_intents(index, cmd)
            case DropIntent():
                return self._drop_intent(index, cmd)
            case PruneTombstones():
                return self._prune(cmd)
            case AddReplica():
                return self._add_replica(index, cmd)
            case MarkCopiesLost():
                return self._lose_copies(index, cmd)

    # --- containers and vdisks --------------------------------------------------------------
    def _create_container(self, index: int, cmd: CreateContainer) -> Any:
        if self.s.container(cmd.name) is not None:
            raise Refused("conflict", f"container {cmd.name!r} already exists")
        record = ContainerRecord(
            cmd.name, policy_from_record(cmd.policy), cmd.at_wall, ContainerStats()
        )
        self.s.put(index, keys.container_key(cmd.name), record)
        return cmd.name

    def _delete_container(self, cmd: DeleteContainer) -> Any:
        record = self.s.container(cmd.name)
        if record is None:
            raise Refused("not_found", f"no container {cmd.name!r}")
        if record.stats.vdisks:
            raise Refused(
                "conflict", f"container {cmd.name!r} still holds {record.stats.vdisks} vdisk(s)"
            )
        self.s.delete(keys.container_key(cmd.name))
        return cmd.name

    def _create_vdisk(self, index: int, cmd: CreateVdisk) -> Any:
        if self.s.container(cmd.container) is None:
            raise Refused("not_found", f"no container {cmd.container!r}")
        if self.s.get(keys.vdisk_name_key(cmd.name)) is not None:
            raise Refused("conflict", f"a vdisk named {cmd.name!r} already exists")
        if self.s.vdisk(cmd.vdisk_id) is not None:
            raise Refused("conflict", f"vdisk id {cmd.vdisk_id} exists")
        record = VdiskRecord(cmd.vdisk_id, cmd.name, cmd.container, cmd.size, cmd.at_wall)
        self.s.put(index, keys.vdisk_key(cmd.vdisk_id), record)
        self.s.put(index, keys.vdisk_name_key(cmd.name), cmd.vdisk_id)
        self._stats_add(index, cmd.container, vdisks=1)
        return cmd.vdisk_id

    def _delete_vdisk(self, index: int, cmd: DeleteVdisk) -> Any:
        vd = self.s.vdisk(cmd.vdisk_id)
        if vd is None:
            raise Refused("not_found", f"no vdisk {cmd.vdisk_id!r}")
        for extent_index, extent_id in sorted(self.s.block_map(cmd.vdisk_id).items()):
            self._unref(index, vd.container, extent_id)
            self.s.delete(keys.map_key(cmd.vdisk_id, extent_index))
        self._stats_add(index, vd.container, vdisks=-1, logical_bytes=-vd.logical_bytes)
        self.s.delete(keys.vdisk_key(cmd.vdisk_id))
        self.s.delete(keys.vdisk_name_key(vd.name))
        return cmd.vdisk_id

    def _resize(self, index: int, cmd: ResizeVdisk) -> Any:
        vd = self.s.vdisk(cmd.vdisk_id)
        if vd is None:
            raise Refused("not_found", f"no vdisk {cmd.vdisk_id!r}")
        if cmd.size <= 0:
            raise Refused("bad_request", "a vdisk size must be positive")
        self.s.put(index, keys.vdisk_key(cmd.vdisk_id), replace(vd, size=cmd.size))
        return cmd.size

    # --- writes -----------------------------------------------------------------------------
    def _check_write(self, cmd: WriteExtents) -> VdiskRecord:
        vd = self.s.vdisk(cmd.vdisk_id)
        if vd is None:
            raise Refused("not_found", f"no vdisk {cmd.vdisk_id!r}")
        declared = {eg.egid for eg in cmd.egroups}
        for eg in cmd.egroups:
            known = self.s.egroup(eg.egid)
            if eg.container != vd.container:
                raise Refused("bad_request", f"egroup {eg.egid} belongs to {eg.container}")
            if not eg.replicas:
                raise Refused("bad_request", f"egroup {eg.egid} has no replica")
            if known is not None and (known.sealed or known.container != vd.container):
                raise Refused("egroup_sealed", f"extent group {eg.egid} is sealed")
            if known is None and self.s.get(keys.dropped_key(eg.egid)) is not None:
                raise Refused("egroup_sealed", f"extent group {eg.egid} was dropped")
        if cmd.claimed:
            for eg in cmd.egroups:
                if self.s.egroup(eg.egid) is None:
                    self._claimed(eg.egid)
        new_ids = {e.extent_id for e in cmd.extents}
        for e in cmd.extents:
            if e.egid not in declared:
                raise Refused("bad_request", f"extent {e.extent_id}: egroup not declared")
            if not e.extent_id or e.stored_len <= 0 or e.raw_len <= 0:
                raise Refused("bad_request", f"extent {e.extent_id!r}: empty")
        for m in cmd.maps:
            if m.expect is not None and self.s.map_entry(cmd.vdisk_id, m.index) != m.expect:
                raise Refused("conflict", f"extent {m.index} changed since it was read")
            ref = m.extent_id
            if ref and ref not in new_ids and self.s.extent(vd.container, ref) is None:
                raise Refused("missing_extent", f"extent {ref} no longer exists")
        return vd

    def _write(self, index: int, cmd: WriteExtents) -> Any:
        vd = self._check_write(cmd)
        for eg in cmd.egroups:
            if self.s.egroup(eg.egid) is None:
                self._new_egroup(index, eg, sealed=False)
        for e in cmd.extents:
            self._add_extent(index, vd.container, e)
        logical = mapped = 0
        for m in cmd.maps:
            dl, dm = self._map(index, vd, m)
            logical += dl
            mapped += dm
        vd = replace(
            vd,
            logical_bytes=vd.logical_bytes + logical,
            mapped_extents=vd.mapped_extents + mapped,
        )
        self.s.put(index, keys.vdisk_key(cmd.vdisk_id), vd)
        if logical:
            self._stats_add(index, vd.container, logical_bytes=logical)
        self._seal(index, cmd.seal)
        return len(cmd.maps)

    def _claimed(self, intent_id: str) -> None:
        if self.s.get(keys.intent_key(intent_id)) is None:
            # The claim expired: the scanner deleted (or will delete) these files.
            raise Refused("egroup_sealed", f"the claim {intent_id} on new files expired")

    def _new_egroup(self, index: int, eg: NewEgroup, sealed: bool) -> EgroupRecord:
        record = EgroupRecord(eg.egid, eg.container, eg.replicas, eg.owner, sealed=sealed)
        self._put_egroup(index, record)
        # The group is in the metadata now: the claim on its files has done its job.
        self.s.delete(keys.intent_key(eg.egid))
        return record

    def _add_extent(self, index: int, container: str, e: NewExtent) -> None:
        eg = self._egroup(e.egid)
        self._stats_add(index, container, physical_bytes=e.stored_len * len(eg.replicas))
        if self.s.extent(container, e.extent_id) is not None:
            # Two writers stored the same content at once: the second copy is dead space.
            self._put_egroup(index, replace(eg, dead_bytes=eg.dead_bytes + e.stored_len))
            return
        extent = ExtentRecord(
            0, e.egid, e.offset, e.stored_len, e.raw_len, e.compressed, e.checksum
        )
        self.s.put(index, keys.extent_key(container, e.extent_id), extent)
        self._put_egroup(
            index, replace(eg, live_bytes=eg.live_bytes + e.stored_len, extents=eg.extents + 1)
        )
        self._stats_add(
            index, container, unique_bytes=e.raw_len, stored_bytes=e.stored_len, extents=1
        )

    def _map(self, index: int, vd: VdiskRecord, m: MapWrite) -> tuple[int, int]:
        """Point extent ``m.index`` at ``m.extent_id``; (logical bytes, mapped) changes."""
        old = self.s.map_entry(vd.id, m.index)
        if old == m.extent_id:
            return 0, 0
        logical = mapped = 0
        if m.extent_id:
            logical += self._ref(index, vd.container, m.extent_id)
            self.s.put(index, keys.map_key(vd.id, m.index), m.extent_id)
            mapped += 1
        else:
            self.s.delete(keys.map_key(vd.id, m.index))
        if old:
            logical -= self._unref(index, vd.container, old)
            mapped -= 1
        return logical, mapped

    def _ref(self, index: int, container: str, extent_id: str) -> int:
        ext = self.s.extent(container, extent_id)
        assert ext is not None, f"reference to missing extent {extent_id}"
        self.s.put(index, keys.extent_key(container, extent_id), replace(ext, refs=ext.refs + 1))
        return ext.raw_len

    def _unref(self, index: int, container: str, extent_id: str) -> int:
        key = keys.extent_key(container, extent_id)
        ext = self.s.extent(container, extent_id)
        assert ext is not None, f"map entry points at missing extent {extent_id}"
        assert ext.refs > 0, f"extent {extent_id} refcount below zero"
        if ext.refs > 1:
            self.s.put(index, key, replace(ext, refs=ext.refs - 1))
            return ext.raw_len
        self.s.delete(key)
        eg = self._egroup(ext.egroup)
        self._put_egroup(
            index,
            replace(
                eg,
                live_bytes=eg.live_bytes - ext.stored_len,
                dead_bytes=eg.dead_bytes + ext.stored_len,
                extents=eg.extents - 1,
            ),
        )
        self._stats_add(
            index,
            container,
            unique_bytes=-ext.raw_len,
            stored_bytes=-ext.stored_len,
            extents=-1,
        )
        return ext.raw_len

    # --- extent group lifecycle -------------------------------------------------------------
    def _seal(self, index: int, egids: tuple[str, ...]) -> int:
        for egid in egids:
            eg = self.s.egroup(egid)
            if eg is not None and not eg.sealed:
                self._put_egroup(index, replace(eg, sealed=True))
        return len(egids)

    def _tombstone(self, index: int, egid: str) -> None:
        self.s.delete(keys.egroup_key(egid))
        self.s.put(index, keys.dropped_key(egid), index)

    def _drop(self, index: int, cmd: DropEgroup) -> Any:
        eg = self.s.egroup(cmd.egid)
        if eg is None:
            raise Refused("not_found", f"no extent group {cmd.egid}")
        if not eg.sealed or eg.extents or eg.strip:
            raise Refused("conflict", f"extent group {cmd.egid} is still in use")
        self._stats_add(index, eg.container, physical_bytes=-eg.size * len(eg.replicas))
        self._tombstone(index, cmd.egid)
        return cmd.egid

    def _add_replica(self, index: int, cmd: AddReplica) -> Any:
        eg = self.s.egroup(cmd.egid)
        if eg is None:
            raise Refused("not_found", f"no extent group {cmd.egid}")
        if not eg.sealed or eg.strip or eg.parity:
            raise Refused("conflict", f"extent group {cmd.egid} is open or erasure coded")
        if cmd.to_node in eg.replicas:
            raise Refused("conflict", f"{cmd.to_node} already holds {cmd.egid}")
        if cmd.lost and cmd.lost not in eg.replicas:
            raise Refused("conflict", f"{cmd.egid} no longer lives on {cmd.lost}")
        if not cmd.lost and not eg.lost_copies:
            raise Refused("conflict", f"{cmd.egid} lost no copy")
        claim = keys.rebuild_claim(cmd.egid)
        self._claimed(claim)
        kept = tuple(n for n in eg.replicas if n != cmd.lost)
        lost_copies = eg.lost_copies if cmd.lost else eg.lost_copies - 1
        self._put_egroup(index, replace(eg, replicas=(*kept, cmd.to_node), lost_copies=lost_copies))
        self.s.delete(keys.intent_key(claim))
        grown = len(kept) + 1 - len(eg.replicas)
        self._stats_add(
            index,
            eg.container,
            physical_bytes=eg.size * grown,
            rebuilt_bytes=cmd.bytes_copied,
        )
        return cmd.egid

    def _lose_copies(self, index: int, cmd: MarkCopiesLost) -> Any:
        lost = lost_bytes = 0
        gone: list[str] = []
        for egid in cmd.egids:
            eg = self.s.egroup(egid)
            if eg is None or cmd.node not in eg.replicas:
                continue
            kept = tuple(n for n in eg.replicas if n != cmd.node)
            self._put_egroup(index, replace(eg, replicas=kept, lost_copies=eg.lost_copies + 1))
            if not eg.strip:
                # A strip's bytes are counted by the strip; a copy of a group by the group.
                self._stats_add(index, eg.container, physical_bytes=-eg.size)
            if not kept and eg.extents and not eg.strip:
                gone.append(egid)
            lost += 1
            lost_bytes += eg.size
        if lost:
            message = f"{cmd.node} lost {lost} copies ({lost_bytes} bytes): {cmd.reason}"
            if gone:
                message += f"; no copy left of {len(gone)} groups ({', '.join(gone[:5])})"
            severity = "error" if gone else "warning"
            record_event(
                self.s,
                index,
                EventRecord(0, cmd.at_wall, "copies_lost", cmd.node, cmd.node, message, severity),
            )
        return lost

    def _relocate(self, index: int, cmd: RelocateExtents) -> Any:
        target = cmd.egroup
        if self.s.egroup(target.egid) is not None:
            raise Refused("conflict", f"extent group {target.egid} already exists")
        if self.s.get(keys.dropped_key(target.egid)) is not None:
            raise Refused("egroup_sealed", f"extent group {target.egid} was dropped")
        if self.s.container(target.container) is None or not target.replicas:
            raise Refused("not_found", f"no container {target.container!r}")
        if cmd.claimed:
            self._claimed(target.egid)
        new = self._new_egroup(index, target, sealed=True)
        live = dead = extents = 0
        for m in cmd.moves:
            ext = self.s.extent(m.container, m.extent_id)
            if ext is None or ext.egroup != m.from_egid or m.container != target.container:
                # Died or moved meanwhile: the copy we made is dead space.
                dead += m.length
                continue
            old = self._egroup(m.from_egid)
            self._put_egroup(
                index,
                replace(
                    old,
                    live_bytes=old.live_bytes - ext.stored_len,
                    dead_bytes=old.dead_bytes + ext.stored_len,
                    extents=old.extents - 1,
                ),
            )
            self.s.put(
                index,
                keys.extent_key(m.container, m.extent_id),
                replace(ext, egroup=target.egid, offset=m.offset),
            )
            live += ext.stored_len
            dead += m.length - ext.stored_len
            extents += 1
        new = replace(new, live_bytes=live, dead_bytes=dead, extents=extents)
        self._put_egroup(index, new)
        self._stats_add(index, target.container, physical_bytes=new.size * len(new.replicas))
        return extents

    # --- erasure-coded strips ---------------------------------------------------------------
    def _commit_strip(self, index: int, cmd: CommitStrip) -> Any:
        if self.s.strip(cmd.strip_id) is not None:
            raise Refused("conflict", f"strip {cmd.strip_id} exists")
        groups = []
        for member in cmd.data:
            eg = self.s.egroup(member.egid)
            # The kept copy may be one the converter made on a new domain (durable before
            # this commit), so the node need not be among the group's replicas.
            if eg is None or not eg.sealed or eg.strip or eg.container != cmd.container:
                raise Refused("conflict", f"extent group {member.egid} changed; strip abandoned")
            groups.append(eg)
        if len({m.egid for m in cmd.data + cmd.parity}) != len(cmd.data) + len(cmd.parity):
            raise Refused("bad_request", f"strip {cmd.strip_id} names a group twice")
        if cmd.claimed:
            self._claimed(cmd.strip_id)
        for member in cmd.parity:
            if self.s.get(keys.egroup_key(member.egid)) is not None:
                raise Refused("conflict", f"parity group {member.egid} exists")
            if self.s.get(keys.dropped_key(member.egid)) is not None:
                raise Refused("conflict", f"parity group {member.egid} was dropped")
        freed = data_bytes = 0
        for member, eg in zip(cmd.data, groups, strict=True):
            freed += eg.size * (len(eg.replicas) - 1)
            data_bytes += eg.size
            self._put_egroup(index, replace(eg, replicas=(member.node,), strip=cmd.strip_id))
        self._put_parity(index, cmd.strip_id, cmd.container, cmd.parity)
        parity = cmd.parity_bytes * len(cmd.parity)
        strip = StripRecord(
            cmd.strip_id,
            cmd.container,
            len(cmd.data),
            len(cmd.parity),
            cmd.chunk_bytes,
            cmd.length,
            cmd.data,
            cmd.parity,
            cmd.parity_bytes,
            data_bytes,
        )
        self.s.put(index, keys.strip_key(cmd.strip_id), strip)
        self.s.delete(keys.intent_key(cmd.strip_id))
        self._stats_add(
            index,
            cmd.container,
            physical_bytes=parity - freed,
            ec_data_bytes=data_bytes,
            ec_parity_bytes=parity,
            ec_strips=1,
        )
        return cmd.strip_id

    def _check_new_members(self, strip_id: str, members: tuple[StripMember, ...]) -> None:
        if self.s.strip(strip_id) is not None:
            raise Refused("conflict", f"strip {strip_id} exists")
        if len({m.egid for m in members}) != len(members):
            raise Refused("bad_request", f"strip {strip_id} names a group twice")
        for member in members:
            if self.s.get(keys.egroup_key(member.egid)) is not None:
                raise Refused("conflict", f"extent group {member.egid} exists")
            if self.s.get(keys.dropped_key(member.egid)) is not None:
                raise Refused("conflict", f"extent group {member.egid} was dropped")

    def _commit_packed(self, index: int, cmd: CommitPackedStrip) -> Any:
        self._check_new_members(cmd.strip_id, cmd.data + cmd.parity)
        if self.s.container(cmd.container) is None:
            raise Refused("not_found", f"no container {cmd.container!r}")
        if cmd.claimed:
            self._claimed(cmd.strip_id)
        live = [0] * len(cmd.data)
        dead = [0] * len(cmd.data)
        count = [0] * len(cmd.data)
        for packed in cmd.extents:
            m, target = packed.move, cmd.data[packed.member].egid
            ext = self.s.extent(m.container, m.extent_id)
            if ext is None or ext.egroup != m.from_egid:
                # Died or moved meanwhile: the copy we made is dead space.
                dead[packed.member] += m.length
                continue
            old = self._egroup(m.from_egid)
            self._put_egroup(
                index,
                replace(
                    old,
                    live_bytes=old.live_bytes - ext.stored_len,
                    dead_bytes=old.dead_bytes + ext.stored_len,
                    extents=old.extents - 1,
                ),
            )
            self.s.put(
                index,
                keys.extent_key(m.container, m.extent_id),
                replace(ext, egroup=target, offset=m.offset),
            )
            live[packed.member] += ext.stored_len
            dead[packed.member] += m.length - ext.stored_len
            count[packed.member] += 1
        for i, member in enumerate(cmd.data):
            group = EgroupRecord(member.egid, cmd.container, (member.node,), "", sealed=True)
            self._put_egroup(
                index,
                replace(
                    group,
                    live_bytes=live[i],
                    dead_bytes=dead[i],
                    extents=count[i],
                    strip=cmd.strip_id,
                ),
            )
        self._put_parity(index, cmd.strip_id, cmd.container, cmd.parity)
        data_bytes = sum(live) + sum(dead)
        parity = cmd.parity_bytes * len(cmd.parity)
        strip = StripRecord(
            cmd.strip_id,
            cmd.container,
            len(cmd.data),
            len(cmd.parity),
            cmd.chunk_bytes,
            cmd.length,
            cmd.data,
            cmd.parity,
            cmd.parity_bytes,
            data_bytes,
        )
        self.s.put(index, keys.strip_key(cmd.strip_id), strip)
        self.s.delete(keys.intent_key(cmd.strip_id))
        self._stats_add(
            index,
            cmd.container,
            physical_bytes=data_bytes + parity,
            ec_data_bytes=data_bytes,
            ec_parity_bytes=parity,
            ec_strips=1,
        )
        return cmd.strip_id

    def _put_parity(
        self, index: int, strip_id: str, container: str, parity: tuple[StripMember, ...]
    ) -> None:
        for member in parity:
            self._put_egroup(
                index,
                EgroupRecord(
                    member.egid,
                    container,
                    (member.node,),
                    "",
                    sealed=True,
                    strip=strip_id,
                    parity=True,
                ),
            )

    def _move_member(self, index: int, cmd: MoveStripMember) -> Any:
        strip = self.s.strip(cmd.strip_id)
        eg = self.s.egroup(cmd.egid)
        if strip is None or eg is None or eg.strip != cmd.strip_id:
            raise Refused("not_found", f"{cmd.egid} is not in strip {cmd.strip_id}")
        if eg.replicas not in ((cmd.from_node,), ()):
            raise Refused("conflict", f"{cmd.egid} no longer lives on {cmd.from_node}")
        if cmd.claimed:
            self._claimed(f"{cmd.strip_id}/{cmd.egid}")

        def moved(members: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(replace(m, node=cmd.to_node) if m.egid == cmd.egid else m for m in members)

        rebuilt = strip.parity_bytes if eg.parity else strip.length
        strip = replace(strip, data=moved(strip.data), parity=moved(strip.parity))
        self.s.put(index, keys.strip_key(cmd.strip_id), strip)
        self._put_egroup(index, replace(eg, replicas=(cmd.to_node,), lost_copies=0))
        self._stats_add(index, strip.container, rebuilt_bytes=rebuilt)
        self.s.delete(keys.intent_key(f"{cmd.strip_id}/{cmd.egid}"))
        return cmd.egid

    def _drop_strip(self, index: int, cmd: DropStrip) -> Any:
        strip = self.s.strip(cmd.strip_id)
        if strip is None:
            raise Refused("not_found", f"no strip {cmd.strip_id}")
        if any(eg.extents for eg in self.s.egroups(m.egid for m in strip.data)):
            raise Refused("conflict", f"strip {cmd.strip_id} still holds live extents")
        for member in strip.members:
            self._tombstone(index, member.egid)
        self.s.delete(keys.strip_key(cmd.strip_id))
        parity = strip.parity_bytes * len(strip.parity)
        self._stats_add(
            index,
            strip.container,
            physical_bytes=-(strip.data_bytes + parity),
            ec_data_bytes=-strip.data_bytes,
            ec_parity_bytes=-parity,
            ec_strips=-1,
        )
        return cmd.strip_id

    # --- claims on files, tombstones --------------------------------------------------------
    def _register_intents(self, index: int, cmd: RegisterIntents) -> Any:
        for intent in cmd.intents:
            if self.s.get(keys.intent_key(intent.id)) is not None:
                raise Refused("conflict", f"intent {intent.id} exists")
            if self.s.container(intent.container) is None:
                raise Refused("not_found", f"no container {intent.container!r}")
            for f in intent.files:
                if self.s.get(keys.dropped_key(f.egid)) is not None:
                    raise Refused("egroup_sealed", f"extent group {f.egid} was dropped")
        for intent in cmd.intents:
            self.s.put(index, keys.intent_key(intent.id), intent)
        return len(cmd.intents)

    def _drop_intent(self, index: int, cmd: DropIntent) -> Any:
        intent = self.s.get(keys.intent_key(cmd.intent_id))
        if intent is None:
            raise Refused("not_found", f"no intent {cmd.intent_id}")
        self.s.delete(keys.intent_key(cmd.intent_id))
        for f in intent.value.files:
            # Files of a group that never made it into the metadata: a tombstone makes
            # a late writer's commit fail and tells every node to delete its copy.
            if self.s.egroup(f.egid) is None and self.s.get(keys.dropped_key(f.egid)) is None:
                self.s.put(index, keys.dropped_key(f.egid), index)
        return cmd.intent_id

    def _prune(self, cmd: PruneTombstones) -> Any:
        pruned = 0
        for egid in cmd.egids:
            if self.s.get(keys.dropped_key(egid)) is not None:
                self.s.delete(keys.dropped_key(egid))
                pruned += 1
        return pruned
