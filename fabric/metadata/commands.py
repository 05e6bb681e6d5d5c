"""Metadata commands: every change to the replicated state is one of these, in the Raft log.

Commands are frozen dataclasses registered with the wire codec; the leader encodes a
command into a log entry and every node decodes and applies it in log order, so they
must be deterministic: no clock, no randomness, no iteration over unordered sets. Times
that matter (a node's health transition) travel inside the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fabric.metadata.datapath import DataCommand
from fabric.wire.codec import register


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``; with ``expect_version``, only if the key is at it (0: absent)."""

    key: str
    value: Any
    expect_version: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    expect_version: int | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """All-or-nothing: every precondition is checked before anything changes."""

    commands: tuple[Put | Delete, ...]


@dataclass(frozen=True, slots=True)
class RegisterNode:
    """A node announces itself (at every start): address and disks."""

    node_id: str
    address: str
    disks: tuple[str, ...]
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class SetNodeState:
    """The leader's health monitor saw ``node_id`` change to ``state`` ("UP"|"DEGRADED"|"DOWN")."""

    node_id: str
    state: str
    at_wall: float
    reason: str = ""


Command = Put | Delete | Batch | RegisterNode | SetNodeState | DataCommand

register(20)(Put)
register(21)(Delete)
register(22)(Batch)
register(23)(RegisterNode)
register(24)(SetNodeState)
