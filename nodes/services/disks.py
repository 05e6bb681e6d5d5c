"""Disk health on one node: each disk is UP, FULL or FAILED, and the cluster knows it.

Theory of operation
-------------------
Every ``limits.DISK_PROBE_EVERY_S`` (and at once when the storage service saw an I/O
error) each disk is probed: a small file written atomically (write, fsync, rename) and
the disk's usage read. A probe or any storage call that fails with an I/O error
(EIO, the directory gone, a read-only file system) marks the disk **FAILED** for good
(until the node restarts): storage forgets the groups it held, and the node commits
``MarkCopiesLost`` for them, so they leave their groups' replicas and the rebuild makes
them again elsewhere; the node keeps serving from its other disks. A disk at
``limits.DISK_HIGH_WATER`` of its capacity is **FULL** (no new group is placed on it,
nor on its node if all its disks are full) until it is below ``DISK_LOW_WATER``.

Each change is committed as ``SetDiskState`` (which records a ``disk_state`` event), so
placement on every node sees it. A commit that fails (no leader) is retried on the next
probe, as is a ``MarkCopiesLost`` not yet committed: what the metadata says this node
holds converges on what its disks hold.

At start (``check_held``, after registration) the node compares what the metadata says
it holds with the files its disks have: a disk that came back empty, was replaced or
could not be read does not count as holding its old copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from fabric import limits
from fabric.errors import FabricError
from fabric.metadata import keys
from fabric.metadata.commands import MarkCopiesLost, SetDiskState
from fabric.metadata.records import DiskRecord
from fabric.ports import Clock, Disk, DiskFault, DiskFull, PeerUnreachable
from nodes.services.metadata import MetadataService
from nodes.services.storage import StorageService

log = logging.getLogger(__name__)

PROBE_FILE = "probe"
PROBE_BYTES = b"fabric disk probe\n"


@dataclass
class DiskStatus:
    state: str = "UP"
    reason: str = ""
    used_bytes: int = 0
    capacity_bytes: int = 0


class DiskWatch:
    def __init__(
        self,
        node_id: str,
        clock: Clock,
        disks: list[Disk],
        names: tuple[str, ...],
        storage: StorageService,
        metadata: MetadataService,
        background_scale: int = 1,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.background_scale = background_scale
        self.disks = disks
        self.names = {d.name: name for d, name in zip(disks, names, strict=True)}
        """A runtime's disk name -> the disk's name in the config (what users see)."""
        self.storage = storage
        self.metadata = metadata
        self.status: dict[str, DiskStatus] = {name: DiskStatus() for name in names}
        self._lost: list[str] = []
        """Groups of failed disks whose loss is not committed yet."""
        self._lost_why: dict[str, str] = {}

    @property
    def all_failed(self) -> bool:
        return all(s.state == "FAILED" for s in self.status.values())

    def report(self) -> list[dict[str, object]]:
        return [
            {
                "name": name,
                "state": st.state,
                "used_bytes": st.used_bytes,
                "capacity_bytes": st.capacity_bytes,
                **({"error": st.reason} if st.reason else {}),
            }
            for name, st in self.status.items()
        ]

    async def run_forever(self) -> None:
        while True:
            self.storage.fault_seen.clear()  # before probing: a fault meanwhile wakes us
            await self.probe_all()
            if set(self.storage.faults) <= self._failed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.storage.fault_seen.wait(),
                        limits.DISK_PROBE_EVERY_S * self.background_scale,
                    )

    def _failed(self) -> set[str]:
        return {d.name for d in self.disks if self.status[self.names[d.name]].state == "FAILED"}

    async def probe_all(self) -> None:
        for disk in self.disks:
            await self._probe(disk)
        await self._commit()

    async def _probe(self, disk: Disk) -> None:
        st = self.status[self.names[disk.name]]
        if st.state == "FAILED":
            return
        fault = self.storage.faults.get(disk.name)
        if fault is not None:
            self._fail(disk, fault)
            return
        try:
            used, capacity = await disk.usage()
            st.used_bytes, st.capacity_bytes = used, capacity
            await disk.write_atomic(PROBE_FILE, PROBE_BYTES)
        except DiskFull as exc:
            self._set(disk, "FULL", str(exc))
            return
        except DiskFault as exc:
            self._fail(disk, str(exc))
            return
        fill = used / capacity if capacity else 0.0
        # Storage may have seen a write fail for want of space since the last probe.
        full_now = self.storage.disk_state.get(disk.name) == "FULL" or st.state == "FULL"
        if fill >= limits.DISK_HIGH_WATER or (full_now and fill >= limits.DISK_LOW_WATER):
            self._set(disk, "FULL", f"{fill:.0%} used")
        else:
            self._set(disk, "UP", f"{fill:.0%} used")

    def _set(self, disk: Disk, state: str, reason: str) -> None:
        st = self.status[self.names[disk.name]]
        if st.state != state:
            log.warning("disk %s: %s -> %s (%s)", self.names[disk.name], st.state, state, reason)
        st.state, st.reason = state, (reason if state != "UP" else "")
        self.storage.disk_state[disk.name] = state

    def _fail(self, disk: Disk, reason: str) -> None:
        self._set(disk, "FAILED", reason)
        lost = self.storage.forget_disk(disk.name)
        self._lost += lost
        why = f"disk {self.names[disk.name]} failed: {reason}"
        self._lost_why.update((egid, why) for egid in lost)

    async def _commit(self) -> None:
        """Tell the cluster what changed (again, if an earlier commit did not make it)."""
        try:
            for name, st in self.status.items():
                known: DiskRecord | None = self.metadata.state.value(
                    keys.disk_key(self.node_id, name)
                )
                if (known.state if known else "UP") != st.state:
                    await self.metadata.propose(
                        SetDiskState(
                            self.node_id,
                            name,
                            st.state,
                            self.clock.wall(),
                            st.reason,
                            st.used_bytes,
                            st.capacity_bytes,
                        )
                    )
            while self._lost:
                batch = self._lost[: limits.MAX_LOST_COPIES_PER_COMMAND]
                why = self._lost_why.get(batch[0], "disk failed")
                await self.metadata.propose(
                    MarkCopiesLost(self.node_id, tuple(batch), why, self.clock.wall())
                )
                del self._lost[: len(batch)]
        except (FabricError, PeerUnreachable) as exc:
            log.info("disk states not committed yet: %s", exc)

    async def check_held(self) -> int:
        """Copies the metadata lists here that no disk holds: committed as lost. (After
        registration, so this node's metadata is current; see the module docstring.)"""
        await self.metadata.read_index()
        state = self.metadata.state
        held = set(self.storage.egroups())
        listed = state.idx.egroups_on.get(self.node_id, set())
        missing = sorted(e for e in listed if e not in held)
        if missing:
            log.warning("%d copies the metadata lists here are on no disk", len(missing))
            self._lost += missing
            self._lost_why.update((e, "no file on any disk at start") for e in missing)
            await self._commit()
        return len(missing)
