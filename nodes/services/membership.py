"""Which nodes make up the cluster right now: the config's, changed at runtime.

A cluster starts from its config file. Nodes added later (``fabric node add``) and
nodes removed (``fabric node remove``) are ``MemberRecord``s in the replicated metadata,
so every node, the new one included, agrees on the membership whatever its own copy of
the config says. Voters are Raft's business: ``voters()`` is Raft's current
configuration when this node runs Raft, else the config's.
"""

from __future__ import annotations

from fabric.config import ClusterConfig, NodeConfig
from fabric.metadata import healing
from fabric.metadata.records import MemberRecord
from nodes.services.metadata import MetadataService


def node_config(m: MemberRecord, scheme: str = "http") -> NodeConfig:
    return NodeConfig(m.id, m.host, m.port, m.disks, dict(m.labels), m.disk_capacity, scheme)


class Membership:
    def __init__(self, config: ClusterConfig, metadata: MetadataService) -> None:
        self.config = config
        self.metadata = metadata
        self._nodes: tuple[int, int, tuple[NodeConfig, ...]] | None = None
        """The last answer, with the state object and the index it was read at."""

    def nodes(self) -> tuple[NodeConfig, ...]:
        # Every node asks this several times a second and the answer changes only with a
        # membership command: reading all records each time made a big cluster quadratic.
        state = self.metadata.state
        if self._nodes is not None and self._nodes[:2] == (id(state), state.applied_index):
            return self._nodes[2]
        out = self._read_nodes()
        self._nodes = (id(state), state.applied_index, out)
        return out

    def _read_nodes(self) -> tuple[NodeConfig, ...]:
        members = healing.members(self.metadata.state)
        out = [n for n in self.config.nodes if not (n.id in members and members[n.id].removed)]
        known = {n.id for n in self.config.nodes}
        scheme = "https" if self.config.tls else "http"
        out += [
            node_config(m, scheme) for m in members.values() if not m.removed and m.id not in known
        ]
        return tuple(out)

    def ids(self) -> set[str]:
        return {n.id for n in self.nodes()}

    def voters(self) -> tuple[str, ...]:
        raft = self.metadata.raft
        return tuple(raft.voters) if raft is not None else self.config.voters

    def urls(self) -> dict[str, str]:
        return {n.id: n.url for n in self.nodes()}
