"""A node's ``/metrics``: its live numbers, read at scrape time, in sections.

Each section is a collector that declares the families it yields, so a scrape naming
families (``/metrics?name[]=fabric_degraded_reads_total``, prometheus_client's own
filter) runs only the sections that hold them. That matters at scale: the membership
section has a line per node and the container section walks the container views, and
an experiment's sampler scrapes every node for five counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import ClassVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nodes.node import Node
from nodes.services.accounting import container_views

DISK_STATE_CODES = {"UP": 0, "FULL": 1, "FAILED": 2}
Family = GaugeMetricFamily | CounterMetricFamily


class Section(Collector):
    """A group of families; ``families`` maps each name to its type, for ``describe``."""

    families: ClassVar[dict[str, str]]

    def __init__(self, node: Node) -> None:
        self.node = node

    def describe(self) -> Iterable[Metric]:
        return [Metric(name, "", kind) for name, kind in self.families.items()]

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(name, doc, labels=["node"])
        c.add_metric([self.node.id], value)
        return c


CONSENSUS_GAUGES: tuple[tuple[str, str, Callable[[Node], float]], ...] = (
    (
        "fabric_raft_term",
        "Current Raft term",
        lambda n: n.metadata.raft.term if n.metadata.raft else 0,
    ),
    (
        "fabric_raft_commit_index",
        "Raft commit index",
        lambda n: n.metadata.raft.commit_index if n.metadata.raft else 0,
    ),
    (
        "fabric_metadata_applied_index",
        "Metadata index applied on this node",
        lambda n: n.metadata.state.applied_index,
    ),
    (
        "fabric_is_leader",
        "1 if this node is the metadata leader",
        lambda n: int(n.metadata.is_leader) if n.metadata.raft else 0,
    ),
)


class Consensus(Section):
    families: ClassVar[dict[str, str]] = {
        **{name: "gauge" for name, _, _ in CONSENSUS_GAUGES},
        "fabric_metadata_commands_applied": "counter",
    }

    def collect(self) -> Iterator[Family]:
        node = self.node
        for name, doc, read in CONSENSUS_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["node"])
            g.add_metric([node.id], read(node))
            yield g
        yield self._counter(
            "fabric_metadata_commands_applied", "Metadata commands applied", node.metadata.commits
        )


class Peers(Section):
    families: ClassVar[dict[str, str]] = {
        "fabric_peer_requests_refused": "counter",
        "fabric_peer_messages_refused": "counter",
    }

    def collect(self) -> Iterator[Family]:
        node = self.node
        refused = CounterMetricFamily(
            "fabric_peer_requests_refused",
            "Node-to-node requests refused by authentication, by the check that failed",
            labels=["node", "check"],
        )
        for failed, count in sorted(getattr(node.runtime.transport, "refused", {}).items()):
            refused.add_metric([node.id, failed], count)
        yield refused
        c = CounterMetricFamily(
            "fabric_peer_messages_refused",
            "Messages from other nodes refused before any handler saw them, by reason",
            labels=["node", "reason"],
        )
        for reason, n in node.transport.refusals.by_reason.items():
            c.add_metric([node.id, reason], n)
        yield c


class Members(Section):
    families: ClassVar[dict[str, str]] = {"fabric_node_up": "gauge"}

    def collect(self) -> Iterator[Family]:
        states = GaugeMetricFamily(
            "fabric_node_up", "1 if the node is UP in the replicated metadata", labels=["node"]
        )
        # ``node`` names the node the figure is about (as everywhere): here each member.
        for member, record in self.node.metadata.state.nodes().items():
            states.add_metric([member], int(record.state == "UP"))
        yield states


CONTAINER_FIELDS = (
    ("logical_bytes", "Bytes written by users, holes excluded"),
    ("unique_bytes", "Logical bytes after dedup"),
    ("stored_bytes", "Unique bytes after compression"),
    ("physical_bytes", "Bytes on disks, every copy and unreclaimed space counted"),
    ("dedup_savings_bytes", "Logical bytes not stored thanks to dedup"),
    ("compression_savings_bytes", "Unique bytes not stored thanks to compression"),
    ("ec_savings_bytes", "Bytes erasure coding saves over full replicas of the same data"),
    ("resiliency", "Further node failures every extent group survives now"),
)


class Containers(Section):
    families: ClassVar[dict[str, str]] = {
        **{f"fabric_container_{field}": "gauge" for field, _ in CONTAINER_FIELDS},
        "fabric_container_reduced_resiliency_bytes": "gauge",
        "fabric_container_rebuilt_bytes": "counter",
        "fabric_container_reduced_resiliency_seconds": "counter",
    }

    def collect(self) -> Iterator[Family]:
        views = container_views(self.node.metadata.state)
        for field, doc in CONTAINER_FIELDS:
            g = GaugeMetricFamily(f"fabric_container_{field}", doc, labels=["container"])
            for v in views:
                g.add_metric([v["name"]], v[field])
            yield g
        rebuild = self.node.rebuild
        progress = rebuild.progress()
        g = GaugeMetricFamily(
            "fabric_container_reduced_resiliency_bytes",
            "Bytes with a copy or strip member on a node that is not UP",
            labels=["container"],
        )
        for v in views:
            g.add_metric([v["name"]], progress[v["name"]]["reduced_resiliency_bytes"])
        yield g
        c = CounterMetricFamily(
            "fabric_container_rebuilt_bytes",
            "Bytes copied or recomputed to restore lost copies and strip members",
            labels=["container"],
        )
        for v in views:
            c.add_metric([v["name"]], v["rebuilt_bytes"])
        yield c
        c = CounterMetricFamily(
            "fabric_container_reduced_resiliency_seconds",
            "Seconds this node saw some of the container's data at reduced resiliency",
            labels=["node", "container"],
        )
        for name, watch in sorted(rebuild.watch.items()):
            c.add_metric([self.node.id, name], watch.reduced_seconds)
        yield c


DISK_GAUGES = (
    ("fabric_disk_state", "This node's disks: 0 UP, 1 FULL, 2 FAILED", None),
    ("fabric_disk_used_bytes", "Bytes used on this node's disks", "used_bytes"),
    ("fabric_disk_capacity_bytes", "Capacity of this node's disks", "capacity_bytes"),
)


class Healing(Section):
    families: ClassVar[dict[str, str]] = {
        "fabric_scrub_last_pass_end_timestamp_seconds": "gauge",
        **{name: "gauge" for name, _, _ in DISK_GAUGES},
        "fabric_rebuild_pulled_bytes": "counter",
        "fabric_rebuild_leader_copies": "counter",
        "fabric_rebuild_leader_copies_failed": "counter",
    }

    def collect(self) -> Iterator[Family]:
        node = self.node
        g = GaugeMetricFamily(
            "fabric_scrub_last_pass_end_timestamp_seconds",
            "When this node's last full scrub pass ended (Unix time; 0: never)",
            labels=["node"],
        )
        g.add_metric([node.id], node.scrubber.stats.last_pass_end_wall)
        yield g
        status = node.disk_watch.status
        for name, doc, attr in DISK_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["node", "disk"])
            for disk, st in status.items():
                number = DISK_STATE_CODES[st.state] if attr is None else getattr(st, attr)
                g.add_metric([node.id, disk], number)
            yield g
        pulled = CounterMetricFamily(
            "fabric_rebuild_pulled_bytes",
            "Bytes this node read from each source node to make rebuild copies",
            labels=["node", "source"],
        )
        for source, count in sorted(node.copier.stats.bytes_from.items()):
            pulled.add_metric([node.id, source], count)
        yield pulled
        if node.metadata.is_leader:
            stats = node.rebuild.stats
            yield self._counter(
                "fabric_rebuild_leader_copies", "Rebuild copies committed (leader)", stats.copies
            )
            yield self._counter(
                "fabric_rebuild_leader_copies_failed", "Rebuild copies that failed", stats.failed
            )


IO_COUNTERS: tuple[tuple[str, str, Callable[[Node], float]], ...] = (
    ("fabric_write_batches", "Write batches committed", lambda n: n.writer.stats.batches),
    (
        "fabric_write_retries",
        "Write batches redone after a conflict",
        lambda n: n.writer.stats.retries,
    ),
    (
        "fabric_dedup_hits",
        "Extents stored as a reference to existing content",
        lambda n: n.writer.stats.dedup_hits,
    ),
    (
        "fabric_degraded_reads",
        "Extent reads that skipped an unreachable replica",
        lambda n: n.reader.stats.degraded_reads,
    ),
    (
        "fabric_replica_repairs",
        "Bad extent copies rewritten from a good one",
        lambda n: n.reader.stats.repairs,
    ),
    (
        "fabric_ec_converted_bytes",
        "Data bytes of extent groups converted to erasure-coded strips",
        lambda n: n.ec.stats.converted_bytes,
    ),
    (
        "fabric_ec_convert_seconds",
        "Seconds spent converting groups to strips (committed or rolled back)",
        lambda n: n.ec.stats.convert_seconds,
    ),
    (
        "fabric_rebuild_copied_bytes",
        "Bytes this node copied as the target of a rebuild",
        lambda n: n.copier.stats.bytes_copied,
    ),
    (
        "fabric_rebuild_copies_failed",
        "Rebuild copies this node failed to make as a target",
        lambda n: n.copier.stats.failed,
    ),
    (
        "fabric_rebuild_bad_ranges",
        "Extents a rebuild found bad on one source and read from another",
        lambda n: n.copier.stats.bad_ranges,
    ),
    (
        "fabric_scrub_bytes",
        "Bytes re-read and verified by the scrubber",
        lambda n: n.scrubber.stats.bytes_scrubbed,
    ),
    (
        "fabric_scrub_errors",
        "Extents the scrubber found failing their checksum",
        lambda n: n.scrubber.stats.errors_found,
    ),
    (
        "fabric_scrub_repaired",
        "Bad extents the scrubber rewrote from a good copy",
        lambda n: n.scrubber.stats.repaired,
    ),
    (
        "fabric_scrub_passes",
        "Full scrub passes over this node's groups",
        lambda n: n.scrubber.stats.passes,
    ),
    (
        "fabric_scanner_reclaimed_bytes",
        "Bytes freed by collecting extent groups",
        lambda n: n.scanner.stats.bytes_reclaimed,
    ),
)
"""Per-node counters: name, help, how to read it (one table for families and collect)."""


DISK_COUNTERS: tuple[tuple[str, str, Callable[[Node], Mapping[str, int]]], ...] = (
    (
        "fabric_storage_written_bytes",
        "Bytes appended to extent groups on each of this node's disks",
        lambda n: n.storage.bytes_written,
    ),
    (
        "fabric_storage_read_bytes",
        "Bytes read from extent groups on each of this node's disks",
        lambda n: n.storage.bytes_read,
    ),
)
"""Per-disk counters: name, help, how to read the runtime's disk name -> count."""


class Io(Section):
    families: ClassVar[dict[str, str]] = {
        name: "counter" for name, _, _ in (*IO_COUNTERS, *DISK_COUNTERS)
    }

    def collect(self) -> Iterator[Family]:
        for name, doc, read in IO_COUNTERS:
            yield self._counter(name, doc, read(self.node))
        shown = self.node.disk_watch.names  # the runtime's disk names -> the config's
        for name, doc, read_disks in DISK_COUNTERS:
            c = CounterMetricFamily(name, doc, labels=["node", "disk"])
            for disk, count in sorted(read_disks(self.node).items()):
                c.add_metric([self.node.id, shown[disk]], count)
            yield c


SECTIONS: tuple[type[Section], ...] = (Consensus, Peers, Members, Containers, Healing, Io)


def node_registry(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry()
    for section in SECTIONS:
        registry.register(section(node))
    return registry


def exposition(registry: CollectorRegistry, names: Sequence[str] = ()) -> bytes:
    """The text format; only the named series (sample names: ``_total`` on counters)."""
    if names:
        return generate_latest(registry.restricted_registry(names))
    return generate_latest(registry)
