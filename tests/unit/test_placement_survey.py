"""What failed nodes do to groups placed by the fabric's placement (``survey``)."""

from __future__ import annotations

import pytest

from fabric.placement.rendezvous import NotEnoughDomains, place
from fabric.placement.survey import Layout, Shape, survey

KEYS = [f"eg-{i}" for i in range(200)]
MIB = 1 << 20


def test_nothing_failed_nothing_lost_and_overhead_is_the_policys() -> None:
    layout = Layout.of(6, 3)
    rf = survey(KEYS, Shape.replicated(3, MIB), layout, [])
    assert (rf.lost, rf.reduced, rf.repair_across_racks_bytes) == (0, 0, 0)
    assert rf.physical_bytes / rf.logical_bytes == 3
    ec = survey(KEYS, Shape.coded(4, 2, MIB), Layout.of(6, 0), [])
    assert ec.physical_bytes / ec.logical_bytes == 1.5


def test_a_rack_failure_loses_nothing_of_rack_aware_rf2_and_its_repair_crosses_racks() -> None:
    layout = Layout.of(6, 3)  # r1: n1 n4, r2: n2 n5, r3: n3 n6
    e = survey(KEYS, Shape.replicated(2, MIB), layout, ["n1", "n4"])
    assert e.lost == 0
    on_r1 = sum(1 for k in KEYS if {"n1", "n4"} & set(place(k, layout.candidates(), 2)))
    assert e.reduced == on_r1 > 0
    # One copy each, read from the surviving rack into the third: never inside a rack.
    assert (e.repair_inside_racks_bytes, e.repair_across_racks_bytes) == (0, on_r1 * MIB)


def test_rack_unaware_placement_loses_data_in_the_same_rack_failure() -> None:
    """The survey catches what rack-aware placement guards against: placed as if every
    node were its own domain, both copies of some groups sit in r1 and die with it."""
    aware = Layout.of(6, 3)
    unaware = Layout(aware.nodes, {})
    assert survey(KEYS, Shape.replicated(2, MIB), aware, ["n1", "n4"]).lost == 0
    assert survey(KEYS, Shape.replicated(2, MIB), unaware, ["n1", "n4"]).lost > 0


def test_lost_groups_are_exactly_those_with_every_copy_on_failed_nodes() -> None:
    layout = Layout.of(8, 0)
    failed = {"n2", "n5"}
    e = survey(KEYS, Shape.replicated(2, MIB), layout, failed)
    expected = sum(1 for k in KEYS if set(place(k, layout.candidates(), 2)) <= failed)
    assert e.lost == expected > 0


def test_an_ec_stripe_survives_m_losses_and_its_repair_reads_k_strips() -> None:
    layout = Layout.of(3, 3)
    e = survey(KEYS, Shape.coded(2, 1, MIB), layout, ["n1"])
    # Width 3 on 3 racks: every stripe had a strip on n1; none is lost, none can be rebuilt
    # (no third rack left to hold it).
    assert (e.lost, e.reduced, e.unrepaired) == (0, len(KEYS), len(KEYS))
    wide = Layout.of(8, 4)
    e = survey(KEYS, Shape.coded(2, 1, MIB), wide, ["n1"])
    assert e.lost == 0 and e.unrepaired == 0
    assert e.repair_across_racks_bytes + e.repair_inside_racks_bytes == e.reduced * 2 * MIB
    worse = survey(KEYS, Shape.coded(2, 1, MIB), wide, ["n1", "n2"])
    assert worse.lost > 0, "two racks down: stripes with strips in both are lost"


def test_too_few_fault_domains_for_the_width_is_an_error() -> None:
    with pytest.raises(NotEnoughDomains, match="needs 6 fault domains, only 3"):
        survey(KEYS, Shape.coded(4, 2, MIB), Layout.of(9, 3), [])
