"""The catalog on this node: containers and vdisks, and where new extent groups may go.

Lookups read the local replica of the metadata (callers take a read index first when
they need it linearizable); changes are commands through Raft. Placement lives here
because it reads the same things: the cluster's fault domains and which nodes are UP.
"""

from __future__ import annotations

from typing import Any

from fabric import limits
from fabric.config import ClusterConfig
from fabric.errors import BadRequest, InsufficientStorage, NotFound, from_code
from fabric.extents.policy import ContainerPolicy, check_name
from fabric.metadata import healing
from fabric.metadata.commands import (
    CreateContainer,
    CreateVdisk,
    DeleteContainer,
    DeleteVdisk,
    NewEgroup,
)
from fabric.metadata.records import ContainerRecord, VdiskRecord
from fabric.placement.rendezvous import Candidate, NotEnoughDomains, place
from fabric.ports import Clock
from nodes.services.membership import Membership
from nodes.services.metadata import MetadataService


class Catalog:
    def __init__(
        self,
        node_id: str,
        config: ClusterConfig,
        clock: Clock,
        rng: Any,
        metadata: MetadataService,
        membership: Membership,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.membership = membership
        self.clock = clock
        self.rng = rng
        self.metadata = metadata
        self.extent_bytes = config.extent_bytes

    # --- lookups (callers did a read_index first) -------------------------------------------
    def container(self, name: str) -> ContainerRecord:
        record = self.metadata.state.container(name)
        if record is None:
            raise NotFound(f"no container {name!r}")
        return record

    def policy(self, container: str) -> ContainerPolicy:
        return self.container(container).policy

    def vdisk(self, ref: str) -> VdiskRecord:
        """A vdisk by id or by name."""
        record = self.metadata.state.vdisk_by_ref(ref)
        if record is None:
            raise NotFound(f"no vdisk {ref!r}")
        return record

    def fault_domains(self) -> dict[str, str]:
        """node id -> its fault domain at the configured level."""
        level = self.config.fault_domain
        return {
            n.id: (n.id if level == "node" else n.labels.get(level, n.id))
            for n in self.membership.nodes()
        }

    # --- containers -------------------------------------------------------------------------
    async def create_container(self, name: str, policy: ContainerPolicy) -> ContainerRecord:
        check_name("container", name)
        domains = len(set(self.fault_domains().values()))
        if policy.rf > domains:
            raise BadRequest(
                f"rf {policy.rf} needs {policy.rf} fault domains "
                f"({self.config.fault_domain}s); the cluster has {domains}"
            )
        if policy.ec_k and policy.ec_k + policy.ec_m > domains:
            raise BadRequest(
                f"ec {policy.ec} needs {policy.ec_k + policy.ec_m} fault domains "
                f"({self.config.fault_domain}s); the cluster has {domains}"
            )
        result = await self.metadata.propose(
            CreateContainer(name, policy.to_dict(), self.clock.wall())
        )
        if not result.ok:
            raise from_code(result.code, result.message)
        await self.metadata.wait_applied(self.metadata.state.applied_index)
        return self.container(name)

    async def delete_container(self, name: str) -> None:
        result = await self.metadata.propose(DeleteContainer(name))
        if not result.ok:
            raise from_code(result.code, result.message)

    async def containers(self) -> list[ContainerRecord]:
        await self.metadata.read_index()
        return self.metadata.state.containers()

    # --- vdisks -----------------------------------------------------------------------------
    async def create_vdisk(self, name: str, container: str, size: int) -> VdiskRecord:
        check_name("vdisk", name)
        top = limits.MAX_VDISK_BYTES
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= top:
            raise BadRequest(f"size must be 1..{top} bytes")
        vdisk_id = f"vd-{self.rng.getrandbits(64):016x}"
        result = await self.metadata.propose(
            CreateVdisk(vdisk_id, name, container, size, self.clock.wall())
        )
        if not result.ok:
            raise from_code(result.code, result.message)
        return self.vdisk(vdisk_id)

    async def delete_vdisk(self, ref: str) -> None:
        await self.metadata.read_index()
        vd = self.vdisk(ref)
        result = await self.metadata.propose(DeleteVdisk(vd.id))
        if not result.ok:
            raise from_code(result.code, result.message)

    async def vdisks(self) -> list[VdiskRecord]:
        await self.metadata.read_index()
        return self.metadata.state.vdisks()

    async def get_vdisk(self, ref: str) -> VdiskRecord:
        await self.metadata.read_index()
        return self.vdisk(ref)

    def check_range(self, vd: VdiskRecord, offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise BadRequest(f"offset and length must not be negative ({offset}, {length})")
        if offset + length > vd.size:
            raise BadRequest(
                f"{offset + length} bytes is past the end of vdisk {vd.name!r} ({vd.size} bytes)"
            )

    # --- placement ---------------------------------------------------------------------------
    def candidates(
        self, excluded_nodes: set[str] | None = None, excluded_domains: set[str] | None = None
    ) -> list[Candidate]:
        """UP nodes with room, not draining, with their fault domains: where new copies
        may go."""
        domains = self.fault_domains()
        skip_nodes = (
            (excluded_nodes or set())
            | set(self.no_room())
            | healing.draining_nodes(self.metadata.state)
        )
        skip_domains = excluded_domains or set()
        # ``domains`` holds the members only: a node removed while still running is not.
        return [
            Candidate(n, domains[n])
            for n in sorted(self.metadata.state.up_nodes())
            if n in domains and n not in skip_nodes and domains[n] not in skip_domains
        ]

    def no_room(self) -> dict[str, str]:
        """UP nodes that take no new extent group (every disk FULL or FAILED) -> why."""
        state = self.metadata.state
        out = {}
        for node in sorted(state.up_nodes()):
            record = state.nodes().get(node)
            if record is None:
                continue
            unusable = healing.unusable_disks(state, node, record.disks)
            if unusable and len(unusable) == len(record.disks):
                out[node] = ", ".join(f"{d} {unusable[d]}" for d in record.disks)
        return out

    def place_egroup(self, container: str, rf: int, excluded: set[str]) -> NewEgroup:
        """A new extent group on ``rf`` healthy fault domains with room, this node first if
        it can; ``InsufficientStorage`` (507) when only full disks stand in the way."""
        candidates = self.candidates(excluded_nodes=excluded)
        egid = f"eg-{self.node_id}-{self.rng.getrandbits(48):012x}"
        prefer = self.node_id if any(c.node == self.node_id for c in candidates) else None
        try:
            replicas = place(egid, candidates, rf, prefer=prefer)
        except NotEnoughDomains as exc:
            full = self.no_room()
            if full:
                what = "; ".join(f"{n}: {why}" for n, why in full.items())
                raise InsufficientStorage(
                    f"container {container!r}: no room on {rf} fault domains ({what})"
                ) from exc
            raise
        return NewEgroup(egid, container, tuple(replicas), self.node_id)
