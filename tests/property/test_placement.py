"""Placement invariants over thousands of random topologies (hypothesis)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.placement.rendezvous import Candidate, NotEnoughDomains, place
from fabric.placement.strips import pack_extents


@st.composite
def topologies(draw: st.DrawFn) -> list[Candidate]:
    n = draw(st.integers(1, 15))
    racks = draw(st.integers(1, n))
    return [
        Candidate(
            f"n{i}",
            f"r{draw(st.integers(0, racks - 1))}",
            draw(st.sampled_from((1.0, 1.0, 2.0, 0.5))),
        )
        for i in range(n)
    ]


@settings(max_examples=2000)
@given(topologies(), st.integers(1, 5), st.text(min_size=1, max_size=12))
def test_replicas_never_share_a_domain(cands: list[Candidate], rf: int, key: str) -> None:
    domains = {c.domain for c in cands}
    if rf > len(domains):
        with pytest.raises(NotEnoughDomains, match=f"needs {rf} fault domains"):
            place(key, cands, rf)
        return
    chosen = place(key, cands, rf)
    by_node = {c.node: c.domain for c in cands}
    assert len(chosen) == rf
    assert len({by_node[n] for n in chosen}) == rf


@settings(max_examples=300)
@given(topologies(), st.text(min_size=1, max_size=12))
def test_preferred_node_comes_first(cands: list[Candidate], key: str) -> None:
    me = cands[0].node
    assert place(key, cands, 1, prefer=me) == [me]


def test_balance_within_ten_percent_of_weight_share() -> None:
    """Equal weights, 8 nodes, 40k keys: each node's share within 10% of 1/8."""
    cands = [Candidate(f"n{i}", f"n{i}") for i in range(8)]
    counts = Counter(place(f"eg{k}", cands, 1)[0] for k in range(40_000))
    for node, n in counts.items():
        assert abs(n - 5000) < 500, (node, n)


def test_weights_shift_share_proportionally() -> None:
    cands = [Candidate("big", "big", 3.0), Candidate("small", "small", 1.0)]
    counts = Counter(place(f"k{k}", cands, 1)[0] for k in range(20_000))
    assert 0.70 < counts["big"] / 20_000 < 0.80  # 3/(3+1) = 0.75


@settings(max_examples=200)
@given(st.integers(2, 14), st.integers(1, 3))
def test_adding_a_node_only_moves_keys_to_it(n: int, rf: int) -> None:
    before = [Candidate(f"n{i}", f"n{i}") for i in range(n)]
    after = [*before, Candidate("new", "new")]
    rf = min(rf, n)
    moved = 0
    for k in range(300):
        a, b = place(f"k{k}", before, rf), place(f"k{k}", after, rf)
        gone = set(a) - set(b)
        assert set(b) - set(a) <= {"new"}, "a key moved between old nodes"
        assert len(gone) <= 1
        moved += len(gone)
    # The new node takes about rf/(n+1) of the replicas, not more.
    assert moved <= 300 * rf / (n + 1) * 1.5 + 10


@st.composite
def group_sets(draw: st.DrawFn) -> tuple[list[tuple[str, list[tuple[str, str]]]], int]:
    domains = draw(st.integers(1, 8))
    groups = []
    for g in range(draw(st.integers(0, 10))):
        replicas = draw(st.lists(st.integers(0, domains - 1), min_size=1, max_size=3, unique=True))
        groups.append((f"g{g}", [(f"n{d}", f"d{d}") for d in replicas]))
    return groups, draw(st.integers(1, 6))


def _brute_force_possible(groups: list[tuple[str, list[tuple[str, str]]]], k: int) -> bool:
    from itertools import combinations, product

    for combo in combinations(groups, k):
        for pick in product(*(g[1] for g in combo)):
            if len({d for _, d in pick}) == k:
                return True
    return False


@settings(max_examples=500)
@given(group_sets())
def test_strip_matching_finds_k_distinct_domains_whenever_possible(
    case: tuple[list[tuple[str, list[tuple[str, str]]]], int],
) -> None:
    from fabric.placement.strips import match_groups

    groups, k = case
    got = match_groups(groups, k)
    assert (got is not None) == _brute_force_possible(groups, k)
    if got is not None:
        options = dict(groups)
        domains = [dict(options[g])[n] for g, n in got]
        assert len(got) == k and len(set(domains)) == k
        assert len({g for g, _ in got}) == k


def test_strip_matching_beats_greedy() -> None:
    from fabric.placement.strips import match_groups

    # Greedy would give g0 domain a (its first), then g1 has nothing left.
    groups = [("g0", [("n1", "a"), ("n2", "b")]), ("g1", [("n1", "a")])]
    assert sorted(match_groups(groups, 2) or []) == [("g0", "n2"), ("g1", "n1")]


def _best_max(sizes: list[int], k: int) -> int:
    """The least largest run over every way to cut ``sizes`` into k contiguous runs."""
    best = sum(sizes)
    for cuts in itertools.combinations(range(1, len(sizes)), k - 1):
        bounds = (0, *cuts, len(sizes))
        best = min(best, max(sum(sizes[a:b]) for a, b in itertools.pairwise(bounds)))
    return best


@settings(max_examples=1000)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=9), st.data())
def test_packed_strip_members_are_contiguous_non_empty_and_as_short_as_can_be(
    sizes: list[int], data: st.DataObject
) -> None:
    k = data.draw(st.integers(1, len(sizes)))
    runs = pack_extents(sizes, k)
    assert len(runs) == k and all(len(r) > 0 for r in runs)
    assert [i for r in runs for i in r] == list(range(len(sizes))), "order kept, none lost"
    assert max(sum(sizes[i] for i in r) for r in runs) == _best_max(sizes, k)
