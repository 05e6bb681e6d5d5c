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
