"""The replicated metadata state machine.

Theory of operation
-------------------
The state is a versioned key space: each key maps to ``(version, value)`` where
``value`` is plain data (dicts, lists, str, int, bytes) and ``version`` is the Raft
index of the command that last wrote it. Typed commands (``RegisterNode``,
``SetNodeState``, and later containers, vdisks, extents, images) are translated into
key-space writes here, so a snapshot is just the key space and every node that applies
the same log holds byte-identical state.

``apply`` never raises for a command that is merely refused (a version conflict, an
unknown node): the refusal is the command's *result*, returned to whoever proposed it.
It raises only for a bug (an index going backwards).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from fabric.metadata.commands import Batch, Command, Delete, Put, RegisterNode, SetNodeState
from fabric.metadata.datapath import (
    CommitStrip,
    CreateContainer,
    CreateVdisk,
    DataPath,
    DeleteContainer,
    DeleteVdisk,
    DropEgroup,
    DropStrip,
    MoveStripMember,
    RelocateExtents,
    ResizeVdisk,
    SealEgroups,
    WriteExtents,
)

SNAPSHOT_FORMAT = 1
NODE_PREFIX = "node/"


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
        self.applied_index = 0
        self._nodes: dict[str, dict[str, Any]] | None = None
        """Cache of ``nodes()``; dropped whenever a node record changes."""

    # --- reads ----------------------------------------------------------------------------
    def get(self, key: str) -> Item | None:
        return self._items.get(key)

    def scan(self, prefix: str) -> Iterator[tuple[str, Item]]:
        """Keys under ``prefix`` in sorted order (deterministic for every caller).

        Callers may await between items, and commands may apply meanwhile: a key deleted
        since the scan began is skipped, not an error.
        """
        for key in sorted(k for k in self._items if k.startswith(prefix)):
            item = self._items.get(key)
            if item is not None:
                yield key, item

    def extents_in(self, container: str, egid: str) -> list[tuple[str, dict[str, Any]]]:
        """(extent id, record) of the live extents stored in extent group ``egid``."""
        prefix = f"extent/{container}/"
        return [
            (key[len(prefix) :], item.value)
            for key, item in self.scan(prefix)
            if item.value["egroup"] == egid
        ]

    def value(self, key: str) -> Any:
        """The value at ``key``, or None."""
        item = self._items.get(key)
        return None if item is None else item.value

    def up_nodes(self) -> set[str]:
        """Ids of the nodes the leader last recorded as UP."""
        return {n for n, rec in self.nodes().items() if rec.get("state") == "UP"}

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Node records by id (read on every replica choice: kept apart, not scanned)."""
        if self._nodes is None:
            self._nodes = {
                key[len(NODE_PREFIX) :]: item.value for key, item in self.scan(NODE_PREFIX)
            }
        return self._nodes

    # --- writes ---------------------------------------------------------------------------
    def apply(self, index: int, command: Command) -> Result:
        assert index > self.applied_index, f"apply {index} after {self.applied_index}"
        self.applied_index = index
        match command:
            case Put() | Delete():
                return self._apply_batch(index, (command,))
            case Batch(commands):
                return self._apply_batch(index, commands)
            case RegisterNode():
                return self._register_node(index, command)
            case SetNodeState():
                return self._set_node_state(index, command)
            case (
                CreateContainer()
                | DeleteContainer()
                | CreateVdisk()
                | DeleteVdisk()
                | WriteExtents()
                | SealEgroups()
                | DropEgroup()
                | RelocateExtents()
                | CommitStrip()
                | MoveStripMember()
                | DropStrip()
                | ResizeVdisk()
            ):
                return DataPath(self).apply(index, command)
        raise AssertionError(f"unknown command {command!r}")

    def put(self, index: int, key: str, value: Any) -> None:
        """Low-level write for command handlers: ``key`` now holds ``value`` at ``index``."""
        self._items[key] = Item(index, value)
        if key.startswith(NODE_PREFIX):
            self._nodes = None

    def delete(self, key: str) -> None:
        self._items.pop(key, None)
        if key.startswith(NODE_PREFIX):
            self._nodes = None

    def skip(self, index: int) -> None:
        """An entry with no command (a new leader's no-op) was applied at ``index``."""
        assert index > self.applied_index, f"skip {index} after {self.applied_index}"
        self.applied_index = index

    def _check(self, op: Put | Delete) -> Result | None:
        if op.expect_version is None:
            return None
        current = self._items.get(op.key)
        have = current.version if current else 0
        if have != op.expect_version:
            return Result.refuse(
                "conflict", f"{op.key}: version is {have}, expected {op.expect_version}"
            )
        return None

    def _apply_batch(self, index: int, ops: tuple[Put | Delete, ...]) -> Result:
        for op in ops:
            refusal = self._check(op)
            if refusal:
                return refusal
        for op in ops:
            if isinstance(op, Put):
                self.put(index, op.key, op.value)
            else:
                self.delete(op.key)
        return Result(ok=True, value=index)

    def _register_node(self, index: int, cmd: RegisterNode) -> Result:
        key = NODE_PREFIX + cmd.node_id
        old = self._items.get(key)
        record = dict(old.value) if old else {"state": "UP", "state_since": 0.0, "reason": ""}
        record.update(
            {
                "id": cmd.node_id,
                "address": cmd.address,
                "disks": list(cmd.disks),
                "labels": dict(cmd.labels),
            }
        )
        self._items[key] = Item(index, record)
        self._nodes = None
        return Result(ok=True, value=index)

    def _set_node_state(self, index: int, cmd: SetNodeState) -> Result:
        key = NODE_PREFIX + cmd.node_id
        old = self._items.get(key)
        if old is None:
            return Result.refuse("not_found", f"node {cmd.node_id} never registered")
        record = dict(old.value)
        record.update({"state": cmd.state, "state_since": cmd.at_wall, "reason": cmd.reason})
        self._items[key] = Item(index, record)
        self._nodes = None
        return Result(ok=True, value=index)

    # --- snapshots ------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        items = [[k, self._items[k].version, self._items[k].value] for k in sorted(self._items)]
        out: bytes = msgpack.packb([SNAPSHOT_FORMAT, self.applied_index, items], use_bin_type=True)
        return out

    @classmethod
    def restore(cls, data: bytes) -> MetadataState:
        fmt, applied, items = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if fmt != SNAPSHOT_FORMAT:
            raise ValueError(f"metadata snapshot format {fmt}, expected {SNAPSHOT_FORMAT}")
        state = cls()
        state.applied_index = applied
        state._items = {k: Item(v, val) for k, v, val in items}
        return state
