"""Choosing the data members of an erasure-coded strip: k groups, k distinct domains.

Each candidate extent group has replicas on a few nodes; a strip keeps one replica of
each of ``k`` groups, and those ``k`` copies must lie in ``k`` different fault domains.
That is a bipartite matching between groups and domains; a greedy pick can miss a
matching that exists (two groups sharing their only free domain), so this uses
augmenting paths (Kuhn's algorithm), taking groups in the caller's order of preference.
"""

from __future__ import annotations

from collections.abc import Sequence


def match_groups(
    groups: Sequence[tuple[str, Sequence[tuple[str, str]]]], k: int
) -> list[tuple[str, str]] | None:
    """``groups``: (group id, [(node, domain), ...]) in order of preference.

    Returns ``k`` pairs (group id, node) with pairwise distinct domains, or None.
    """
    owner: dict[str, int] = {}
    """domain -> index (in ``groups``) of the group matched to it."""
    choice: dict[int, tuple[str, str]] = {}
    """group index -> (node, domain) it keeps."""

    def augment(gi: int, seen: set[str]) -> bool:
        for node, domain in groups[gi][1]:
            if domain in seen:
                continue
            seen.add(domain)
            if domain not in owner or augment(owner[domain], seen):
                owner[domain] = gi
                choice[gi] = (node, domain)
                return True
        return False

    for gi in range(len(groups)):
        if augment(gi, set()) and len(choice) == k:
            return [(groups[i][0], choice[i][0]) for i in sorted(choice)]
    return None


def pack_extents(sizes: Sequence[int], k: int) -> list[range]:
    """Cut extents (their sizes, in the order they are to be read) into ``k`` contiguous,
    non-empty runs whose largest total is as small as it can be: the data members of a
    packed strip, whose parity is as long as the longest member.

    Runs keep the extents' order, so a sequential read of the data stays sequential on
    each member. Needs ``1 <= k <= len(sizes)``.
    """
    assert 1 <= k <= len(sizes) and all(s > 0 for s in sizes), "packing needs k extents"

    def runs(cap: int) -> int:
        count, total = 1, 0
        for s in sizes:
            if total + s > cap:
                count, total = count + 1, 0
            total += s
        return count

    lo, hi = max(sizes), sum(sizes)
    while lo < hi:  # the least cap that k runs can keep to
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(mid) <= k else (mid + 1, hi)
    cuts: list[range] = []
    total = start = 0
    for i, s in enumerate(sizes):
        # Cut before extent i when it would overflow the cap, or when every run still to
        # be made needs one of the extents left.
        if i > start and (total + s > lo or len(sizes) - i == k - 1 - len(cuts)):
            cuts.append(range(start, i))
            start, total = i, 0
        total += s
    cuts.append(range(start, len(sizes)))
    assert len(cuts) == k and max(sum(sizes[i] for i in r) for r in cuts) <= lo
    return cuts
