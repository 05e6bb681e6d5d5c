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
        self._at: tuple[object, int, object] = (None, -1, None)
        """The (state object, index, config) the last answer was read at."""
        self._members: dict[str, MemberRecord] = {}
        self._nodes: tuple[NodeConfig, ...] = ()
        self._urls: tuple[tuple[NodeConfig, ...], dict[str, str]] = ((), {})

    def nodes(self) -> tuple[NodeConfig, ...]:
        # Every node asks this several times a second and the answer changes only with a
        # membership command: building it from every node each time made a big cluster
        # quadratic. A new index costs a scan of the (few) runtime member records.
        state = self.metadata.state
        at = self._at
        same = at[0] is state and at[2] is self.config
        if same and at[1] == state.applied_index:
            return self._nodes
        members = healing.members(state)
        if not same or members != self._members:
            self._nodes = self._read_nodes(members)
            self._members = members
        self._at = (state, state.applied_index, self.config)
        return self._nodes

    def _read_nodes(self, members: dict[str, MemberRecord]) -> tuple[NodeConfig, ...]:
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
        """Each node's base URL (the same dict object while the membership stays)."""
        nodes = self.nodes()
        if self._urls[0] is not nodes:
            self._urls = (nodes, {n.id: n.url for n in nodes})
        return self._urls[1]
