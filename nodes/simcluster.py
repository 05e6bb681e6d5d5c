"""A whole cluster of real ``Node`` objects inside the deterministic simulator.

Every node runs the same code as a real process, but on one ``VirtualLoop``, with a
``SimNetwork`` between them and ``SimDisk``s under them, all drawing randomness from
one seed. ``crash`` is a power loss (tasks gone, unsynced appends gone), ``restart``
builds the node again from what its disks kept.

    with SimCluster(config, seed=7) as sim:
        sim.run(sim.start_all())
        sim.run(sim.sleep(5.0))        # five virtual seconds, a few ms of CPU
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fabric.config import ClusterConfig
from fabric.consensus.types import Role
from fabric.sim.disk import SimDisk
from fabric.sim.http import SimHttp
from fabric.sim.loop import SimClock, VirtualLoop
from fabric.sim.network import SimNetwork
from nodes.node import Node
from nodes.services.metadata import RaftObserver

T = TypeVar("T")


class SimCluster:
    def __init__(
        self,
        config: ClusterConfig,
        seed: int,
        observer: RaftObserver | None = None,
        snapshot_every_entries: int | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        self.loop = VirtualLoop()
        self.net = SimNetwork(random.Random(self.rng.getrandbits(64)))
        self.clock = SimClock()
        self.observer = observer
        self.snapshot_every_entries = snapshot_every_entries
        self.disks = {n.id: [SimDisk(f"{n.id}/{d}") for d in n.disks] for n in config.nodes}
        self.http = SimHttp(self.clock)
        """The URL sources every node's imports read from."""
        self.nodes: dict[str, Node] = {}

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node_id in list(self.nodes):
            self.crash(node_id)
        # Cancel whatever a test left running (client tasks too), let it unwind, close.
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    # --- membership -------------------------------------------------------------------------
    async def start_node(self, node_id: str) -> Node:
        assert node_id not in self.nodes, f"{node_id} is already running"
        holder: list[Node] = []
        transport = self.net.transport(node_id, lambda coro: holder[0].spawn(coro, "rpc"))
        node = Node(
            self.config,
            node_id,
            self.clock,
            random.Random(self.rng.getrandbits(64)),
            transport,
            list(self.disks[node_id]),
            self.observer,
            self.snapshot_every_entries,
            fetcher=self.http,
        )
        holder.append(node)
        await node.start()
        self.nodes[node_id] = node
        return node

    async def start_all(self) -> None:
        for n in self.config.nodes:
            await self.start_node(n.id)

    def crash(self, node_id: str) -> None:
        """Power loss on ``node_id``: tasks, memory and unsynced writes are gone."""
        node = self.nodes.pop(node_id)
        node.kill()
        self.net.detach(node_id)
        for disk in self.disks[node_id]:
            disk.crash()

    async def restart(self, node_id: str) -> Node:
        return await self.start_node(node_id)

    # --- time and observation ---------------------------------------------------------------
    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float, what: str = "condition"
    ) -> None:
        deadline = self.loop.time() + timeout_s
        while not predicate():
            if self.loop.time() >= deadline:
                raise AssertionError(
                    f"seed {self.seed}: {what} not reached within {timeout_s} virtual s"
                )
            await asyncio.sleep(0.01)

    def leader(self) -> str | None:
        """The running node that believes it leads with the highest term."""
        best: tuple[int, str] | None = None
        for node_id, node in self.nodes.items():
            raft = node.metadata.raft
            is_leader = raft is not None and raft.role == Role.LEADER
            if raft is not None and is_leader and (best is None or raft.term > best[0]):
                best = (raft.term, node_id)
        return best[1] if best else None
