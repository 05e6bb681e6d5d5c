"""A node's ``/metrics`` in sections: each declares what it yields, and a scrape that
names series runs only the sections holding them (what keeps a sample of a big cluster
cheap). The HTTP side of ``name[]`` is in tests/integration/test_observability.py."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from nodes.metrics import SECTIONS, Family, Members, exposition, node_registry
from nodes.simcluster import SimCluster
from shell.experiment.sampler import SERIES


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
