"""The replicated metadata state machine.

Theory of operation
-------------------
The state is a versioned key space: each key maps to ``(version, value)`` where
``value`` is a typed record (``fabric.metadata.records``; the prefix of the key says
which, see ``fabric.metadata.keys``) and ``version`` is the Raft index of the command
that last wrote it. Commands (``fabric.metadata.commands``) are translated into
key-space writes by their handlers (``datapath``, ``catalog`` and the small ones here),
so a snapshot is just the key space and every node that applies the same log holds
byte-identical state. Beside the key space it keeps ``Indexes`` (derived, rebuilt on
restore) so readers never scan everything.

``apply`` is total. A command is checked (``validate.problem``) before its handler
runs; a malformed or unknown command, or an entry that does not decode, is refused
with code ``bad_command`` like any other refusal (a version conflict, an unknown
node): the refusal is the command's *result*, returned to whoever proposed it. Only a
broken invariant of our own code raises, as ``InvariantBroken`` naming the index.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from fabric import limits
from fabric.errors import BadRequest
from fabric.metadata import access, catalog, healing, keys, legacy, validate
from fabric.metadata.commands import (
    Batch,
    CatalogCommand,
    Command,
    DataCommand,
    Delete,
    HealCommand,
    Put,
    RegisterNode,
    SetNodeState,
    SetToken,
)
from fabric.metadata.datapath import DataPath
from fabric.metadata.indexes import Indexes
from fabric.metadata.records import (
    ContainerRecord,
    EgroupRecord,
    EventRecord,
    ExtentRecord,
    ImageRecord,
    NodeRecord,
    StripRecord,
    TaskRecord,
    VdiskRecord,
)
from fabric.metadata.refusal import Refused
from fabric.wire.codec import Recent, WireError, decode, loads, pack

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 2
"""1: release 0.1, records as plain maps; 2: typed records through the wire codec."""


class InvariantBroken(AssertionError):
    """Our own code broke an invariant while applying a command: stop, never go on."""


_COMMANDS = Recent(4096)
_COMMAND_MAX_BYTES = 16 << 10
"""Bigger commands are decoded every time (the memo stays under 64 MiB)."""


def _checked_command(data: bytes) -> tuple[Command, str | None]:
    """An entry's command and what is wrong with it (None: nothing), remembered for the
    latest entries: every node applies every entry, and in a simulated cluster they all
    share this process (commands are frozen; the two with a dict inside are copied or
    converted where applied). Raises WireError for bytes that are not a command."""
    known: tuple[Command, str | None] | None = _COMMANDS.get(data)
    if known is not None:
        return known
    command = decode(data)
    checked = (command, validate.problem(command))
    if len(data) <= _COMMAND_MAX_BYTES:
        _COMMANDS.put(data, checked)
    return checked


@dataclass(frozen=True, slots=True)
class Result:
    """What applying one command produced: a value, or a refusal with a code."""

    ok: bool
    value: Any = None
    code: str = ""
    message: str = ""

    @staticmethod
    def refuse(code: str, message: str) -> Result:
        return Result(ok=False, code=code, message=message)


@dataclass(frozen=True, slots=True)
class Item:
    version: int
    value: Any


class MetadataState:
    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._spaces: dict[str, dict[str, Item]] = {}
        """namespace -> its keys: a prefix scan looks at one namespace, not everything."""
        self.applied_index = 0
        self.idx = Indexes()
        self.refused_malformed = 0
        """Entries refused as malformed (a forged or corrupt command)."""
        self._nodes: dict[str, NodeRecord] | None = None
        """Cache of ``nodes()``: replaced by a copy when a known node's record changes,
        dropped when a node comes or goes."""
        self._up: frozenset[str] | None = None
        """Cache of ``up_nodes()``; dropped whenever a node record changes."""

    # --- generic reads ----------------------------------------------------------------------
    def get(self, key: str) -> Item | None:
        return self._items.get(key)

    def value(self, key: str) -> Any:
        """The value at ``key``, or None."""
        item = self._items.get(key)
        return None if item is None else item.value

    def version(self, key: str) -> int:
        item = self._items.get(key)
        return 0 if item is None else item.version

    def scan(self, prefix: str) -> Iterator[tuple[str, Item]]:
        """Keys under ``prefix`` in sorted order (deterministic for every caller).

        Costs the size of the prefix's namespace. Callers may await between items, and
        commands may apply meanwhile: a key deleted since the scan began is skipped.
        """
        space = self._spaces.get(keys.namespace(prefix), {})
        for key in sorted(k for k in space if k.startswith(prefix)):
            item = self._items.get(key)
            if item is not None:
                yield key, item

    def count(self, prefix: str) -> int:
        """How many keys a whole namespace (``prefix`` ends at its first "/") holds."""
        assert keys.namespace(prefix) == prefix, f"{prefix!r} is not a namespace"
        return len(self._spaces.get(prefix, ()))

    # --- typed reads ------------------------------------------------------------------------
    def nodes(self) -> dict[str, NodeRecord]:
        """Node records by id (read on every replica choice: cached, not scanned)."""
        if self._nodes is None:
            self._nodes = {key[len(keys.NODE) :]: item.value for key, item in self.scan(keys.NODE)}
        return self._nodes

    def up_nodes(self) -> frozenset[str]:
        """Ids of the nodes the leader last recorded as UP (cached like ``nodes``: every
        node's rebuild watch asks each sample, and a big cluster has thousands)."""
        if self._up is None:
            self._up = frozenset(n for n, rec in self.nodes().items() if rec.state == "UP")
        return self._up

    def container(self, name: str) -> ContainerRecord | None:
        value: ContainerRecord | None = self.value(keys.container_key(name))
        return value

    def containers(self) -> list[ContainerRecord]:
        return [item.value for _, item in self.scan(keys.CONTAINER)]

    def vdisk(self, vdisk_id: str) -> VdiskRecord | None:
        value: VdiskRecord | None = self.value(keys.vdisk_key(vdisk_id))
        return value

    def vdisk_by_ref(self, ref: str) -> VdiskRecord | None:
        """A vdisk by id, else by name."""
        found = self.vdisk(ref)
        if found is None:
            vdisk_id = self.value(keys.vdisk_name_key(ref))
            found = self.vdisk(vdisk_id) if isinstance(vdisk_id, str) else None
        return found

    def vdisks(self) -> list[VdiskRecord]:
        return [item.value for _, item in self.scan(keys.VDISK)]

    def map_entry(self, vdisk_id: str, index: int) -> str:
        """The extent id mapped at ``index`` ("" for a hole)."""
        return self.idx.block_maps.get(vdisk_id, {}).get(index, "")

    def block_map(self, vdisk_id: str) -> dict[int, str]:
        return dict(self.idx.block_maps.get(vdisk_id, {}))

    def extent(self, container: str, extent_id: str) -> ExtentRecord | None:
        value: ExtentRecord | None = self.value(keys.extent_key(container, extent_id))
        return value

    def extents_in(self, egid: str) -> list[tuple[str, ExtentRecord]]:
        """(extent id, record) of the live extents stored in extent group ``egid``."""
        out = []
        for key in sorted(self.idx.extents_in.get(egid, ())):
            _, extent_id = keys.extent_ref(key)
            out.append((extent_id, self._items[key].value))
        return out

    def egroup(self, egid: str) -> EgroupRecord | None:
        value: EgroupRecord | None = self.value(keys.egroup_key(egid))
        return value

    def egroups(self, egids: Any) -> list[EgroupRecord]:
        """The records of ``egids`` that exist, in egid order."""
        found = (self.egroup(g) for g in sorted(egids))
        return [eg for eg in found if eg is not None]

    def strip(self, strip_id: str) -> StripRecord | None:
        value: StripRecord | None = self.value(keys.strip_key(strip_id))
        return value

    def image(self, image_id: str) -> ImageRecord | None:
        value: ImageRecord | None = self.value(keys.image_key(image_id))
        return value

    def image_by_ref(self, ref: str) -> ImageRecord | None:
        found = self.image(ref)
        if found is None:
            image_id = self.value(keys.image_name_key(ref))
            found = self.image(image_id) if isinstance(image_id, str) else None
        return found

    def images(self) -> list[ImageRecord]:
        return [item.value for _, item in self.scan(keys.IMAGE)]

    def task(self, task_id: str) -> TaskRecord | None:
        value: TaskRecord | None = self.value(keys.task_key(task_id))
        return value

    # --- applying commands ------------------------------------------------------------------
    def apply_entry(self, index: int, data: bytes) -> tuple[Command | None, Result]:
        """Decode and apply a log entry's bytes; an entry that does not decode is refused."""
        try:
            command, reason = _checked_command(data)
        except WireError as exc:
            self._advance(index)
            return None, self._malformed(index, f"undecodable command: {exc}")
        return command, self._apply(index, command, reason)

    def apply(self, index: int, command: Command) -> Result:
        return self._apply(index, command, validate.problem(command))

    def _apply(self, index: int, command: Command, reason: str | None) -> Result:
        self._advance(index)
        if reason is not None:
            return self._malformed(index, reason)
        try:
            return self._dispatch(index, command)
        except Refused as r:
            return Result.refuse(r.code, r.message)
        except BadRequest as exc:
            return self._malformed(index, exc.message)
        except Exception as exc:
            raise InvariantBroken(
                f"applying index {index} ({type(command).__name__}) broke an invariant: {exc!r}"
            ) from exc

    def skip(self, index: int) -> None:
        """An entry with no command (a new leader's no-op) was applied at ``index``."""
        self._advance(index)

    def _advance(self, index: int) -> None:
        if index <= self.applied_index:
            raise InvariantBroken(f"apply {index} after {self.applied_index}")
        self.applied_index = index

    def _malformed(self, index: int, reason: str) -> Result:
        self.refused_malformed += 1
        log.warning("metadata entry %d refused as malformed: %s", index, reason)
        return Result.refuse("bad_command", reason)

    def _dispatch(self, index: int, command: Command) -> Result:
        match command:
            case Put() | Delete():
                return self._apply_batch(index, (command,))
            case Batch(commands):
                return self._apply_batch(index, commands)
            case RegisterNode():
                return self._register_node(index, command)
            case SetNodeState():
                return self._set_node_state(index, command)
        if isinstance(command, CatalogCommand):
            return Result(ok=True, value=catalog.apply(self, index, command))
        if isinstance(command, DataCommand):
            return Result(ok=True, value=DataPath(self).apply(index, command))
        if isinstance(command, HealCommand):
            return Result(ok=True, value=healing.apply(self, index, command))
        if isinstance(command, SetToken):
            return Result(ok=True, value=access.apply(self, index, command))
        raise BadRequest(f"unknown command {type(command).__name__}")

    # --- low-level writes, for command handlers ---------------------------------------------
    def put(self, index: int, key: str, value: Any) -> None:
        """``key`` now holds ``value`` at ``index``."""
        space = keys.namespace(key)
        expected = keys.VALUE_TYPES.get(space)
        assert space in keys.VALUE_TYPES, f"no key space for {key!r}"
        assert expected is None or isinstance(value, expected), f"{key!r}: {type(value)}"
        old = self._items.get(key)
        item = Item(index, value)
        self._items[key] = item
        self._spaces.setdefault(space, {})[key] = item
        self.idx.update(space, key, None if old is None else old.value, value)
        if space == keys.NODE:
            node_id = key[len(keys.NODE) :]
            if self._nodes is not None and node_id in self._nodes:
                # A new dict, not the cached one changed: a caller may be iterating it
                # across an await. Copying is far cheaper than scanning the key space,
                # and a known node keeps its place (a new one is placed by the scan).
                self._nodes = {**self._nodes, node_id: value}
            else:
                self._nodes = None
            self._up = None
        elif space == keys.KV:
            self.idx.kv_set(key, value)

    def delete(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is None:
            return
        space = keys.namespace(key)
        self._spaces[space].pop(key, None)
        self.idx.update(space, key, old.value, None)
        if space == keys.NODE:
            self._nodes = self._up = None
        elif space == keys.KV:
            self.idx.kv_drop(key)

    # --- the small commands -----------------------------------------------------------------
    def _check(self, op: Put | Delete) -> tuple[Put | Delete, Any]:
        """Refuse ``op`` if its precondition fails; else (op, the value to store)."""
        if op.expect_version is not None and self.version(op.key) != op.expect_version:
            raise Refused(
                "conflict",
                f"{op.key}: version is {self.version(op.key)}, expected {op.expect_version}",
            )
        if keys.namespace(op.key) == keys.KV or isinstance(op, Delete):
            return op, op.value if isinstance(op, Put) else None
        # A release-0.1 catalog write: typed, and held to today's state moves.
        value = legacy.convert(op.key, op.value)
        catalog.check_legacy_move(self, op.key, value)
        return op, value

    def _apply_batch(self, index: int, ops: tuple[Put | Delete, ...]) -> Result:
        checked = [self._check(op) for op in ops]
        self._check_kv_quota(ops)
        for op, value in checked:
            if isinstance(op, Put):
                self.put(index, op.key, value)
            else:
                self.delete(op.key)
        return Result(ok=True, value=index)

    def _check_kv_quota(self, ops: tuple[Put | Delete, ...]) -> None:
        """Refuse a write whose kv value is too large, or that grows the user's kv space
        past its quota (a write that does not grow it always applies). Measured from the
        values themselves, so every node refuses alike, whoever proposed the write."""
        sizes: dict[str, int] = {}
        for op in ops:
            if keys.namespace(op.key) != keys.KV:
                continue
            if isinstance(op, Delete):
                sizes[op.key] = 0
                continue
            value_bytes = keys.kv_value_bytes(op.value)
            if value_bytes > limits.MAX_VALUE_BYTES:
                raise Refused(
                    "too_large",
                    f"{op.key}: value of {value_bytes} bytes as JSON; "
                    f"at most {limits.MAX_VALUE_BYTES} bytes",
                )
            sizes[op.key] = keys.kv_entry_bytes(op.key, op.value)
        if not sizes:
            return
        before = self.idx.kv_bytes
        after = before + sum(size - self.idx.kv_sizes.get(k, 0) for k, size in sizes.items())
        if after > limits.KV_TOTAL_BYTES and after > before:
            raise Refused(
                "insufficient_storage",
                f"the kv space would hold {after} bytes, over its quota of "
                f"{limits.KV_TOTAL_BYTES} bytes ({before} in use); delete keys to make room",
            )

    def _register_node(self, index: int, cmd: RegisterNode) -> Result:
        key = keys.node_key(cmd.node_id)
        old: NodeRecord | None = self.value(key)
        fields: dict[str, Any] = {
            "address": cmd.address,
            "disks": cmd.disks,
            "labels": dict(cmd.labels),
        }
        record = replace(old, **fields) if old is not None else NodeRecord(id=cmd.node_id, **fields)
        self.put(index, key, record)
        return Result(ok=True, value=index)

    def _set_node_state(self, index: int, cmd: SetNodeState) -> Result:
        key = keys.node_key(cmd.node_id)
        old: NodeRecord | None = self.value(key)
        if old is None:
            return Result.refuse("not_found", f"node {cmd.node_id} never registered")
        self.put(
            index,
            key,
            replace(old, state=cmd.state, state_since=cmd.at_wall, reason=cmd.reason),
        )
        if old.state != cmd.state:
            why = f" ({cmd.reason})" if cmd.reason else ""
            healing.record_event(
                self,
                index,
                EventRecord(
                    0,
                    cmd.at_wall,
                    "node_state",
                    cmd.node_id,
                    cmd.node_id,
                    f"node {cmd.node_id}: {old.state} -> {cmd.state}{why}",
                    "info" if cmd.state == "UP" else "warning",
                ),
            )
        return Result(ok=True, value=index)

    # --- snapshots --------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        items = [[k, self._items[k].version, self._items[k].value] for k in sorted(self._items)]
        return pack([SNAPSHOT_FORMAT, self.applied_index, items])

    @classmethod
    def restore(cls, data: bytes) -> MetadataState:
        """A state from ``snapshot()`` bytes of this release or of release 0.1."""
        decoded = loads(data)
        if isinstance(decoded, list) and len(decoded) == 2 and isinstance(decoded[1], list):
            decoded = decoded[1]  # [wire version, body]: format 2 and later
        fmt, applied, items = decoded
        if fmt not in (1, SNAPSHOT_FORMAT):
            raise ValueError(f"metadata snapshot format {fmt}, expected {SNAPSHOT_FORMAT}")
        state = cls()
        state.applied_index = applied
        for key, version, value in items:
            typed = legacy.convert(key, value) if fmt == 1 else value
            state.put(version, key, typed)
        state.applied_index = applied
        return state
