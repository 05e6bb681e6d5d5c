"""A node's ``/metrics`` in sections: each declares what it yields, and a scrape that
names series runs only the sections holding them (what keeps a sample of a big cluster
cheap). The HTTP side of ``name[]`` is in tests/integration/test_observability.py."""

from __future__ import annotations

import random
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from fabric.extents.policy import ContainerPolicy
from nodes.metrics import SECTIONS, Family, Members, exposition, node_registry
from nodes.simcluster import SimCluster
from shell.experiment.sampler import SERIES
from tests.metric_conventions import violations
from tests.sim.conftest import chunks

MiB = 1 << 20


def test_every_section_declares_exactly_the_families_it_yields(sim: SimCluster) -> None:
    leader = sim.nodes[sim.leader() or ""]
    follower = next(n for n in sim.nodes.values() if n.id != leader.id)
    for node in (leader, follower):
        for section in SECTIONS:
            yielded = {family.name for family in section(node).collect()}
            declared = {m.name for m in section(node).describe()}
            # Leader-only families are absent on followers, never undeclared.
            assert yielded <= declared, (section.__name__, yielded - declared)
            if node is leader:
                assert yielded == declared, (section.__name__, declared - yielded)


def test_a_narrowed_scrape_holds_only_the_named_series(sim: SimCluster) -> None:
    node = next(iter(sim.nodes.values()))
    whole = exposition(node_registry(node)).decode()
    narrow = exposition(node_registry(node), SERIES).decode()
    names = {s.name for f in text_string_to_metric_families(narrow) for s in f.samples}
    assert names and names <= set(SERIES)
    assert "fabric_node_up{" in whole and "fabric_node_up" not in narrow
    assert len(narrow) < len(whole) / 4


def test_a_narrowed_scrape_does_not_compute_the_other_sections(sim: SimCluster) -> None:
    node = next(iter(sim.nodes.values()))
    registry = node_registry(node)
    called: list[str] = []
    members = next(c for c in registry._collector_to_names if isinstance(c, Members))
    wrapped = members.collect

    def counting() -> Iterator[Family]:
        called.append("members")
        return wrapped()

    members.collect = counting  # type: ignore[method-assign]
    exposition(registry, SERIES)
    assert called == []
    exposition(registry, ["fabric_node_up"])
    assert called == ["members"]


def test_every_family_follows_the_prometheus_naming_conventions(sim: SimCluster) -> None:
    """Every node, leader-only families included, with data in a container (so the
    per-container and per-disk series have samples to check)."""

    async def fill() -> None:
        g = sim.nodes["n1"]
        await g.catalog.create_container("c", ContainerPolicy(rf=2, compression="zstd"))
        await g.catalog.create_vdisk("v", "c", 2 * MiB)
        await g.writer.write("v", 0, 2 * MiB, chunks(random.Random(1).randbytes(2 * MiB)))

    sim.run(fill())
    for node in sim.nodes.values():
        text = exposition(node_registry(node)).decode()
        assert 'container="c"' in text
        assert violations(text) == [], node.id


def test_storage_traffic_is_counted_per_disk(sim: SimCluster) -> None:
    async def fill() -> None:
        g = sim.nodes["n1"]
        await g.catalog.create_container("c", ContainerPolicy(rf=3))
        for i in range(4):
            await g.catalog.create_vdisk(f"v{i}", "c", MiB)
            await g.writer.write(f"v{i}", 0, MiB, chunks(random.Random(i).randbytes(MiB)))

    sim.run(fill())
    counted: dict[tuple[str, str], float] = {}
    for node in sim.nodes.values():
        text = exposition(node_registry(node), ["fabric_storage_written_bytes_total"]).decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                counted[s.labels["node"], s.labels["disk"]] = s.value
    on_disks: dict[tuple[str, str], float] = {}
    for node in sim.nodes.values():
        for disk in node.storage.disks:
            groups = [f for f in disk.files() if f.endswith(".eg")]  # type: ignore[attr-defined]
            size = sum(len(disk.contents(f) or b"") for f in groups)  # type: ignore[attr-defined]
            on_disks[node.id, node.disk_watch.names[disk.name]] = size
    # Every configured disk has its series (by the config's name), and each counts what
    # its extent group files hold: nothing was deleted or rebuilt yet.
    assert counted == on_disks
    assert sum(counted.values()) >= 3 * 4 * MiB  # rf=3 copies of every MiB written
