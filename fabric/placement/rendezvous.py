"""Weighted rendezvous (highest-random-weight) placement across fault domains.

Each candidate node gets a score for a key, ``-weight / ln(u)`` with ``u`` a uniform
hash of (key, node) in (0, 1): the node with the highest score wins, and a node wins a
share of keys proportional to its weight (free space). Scores of one node never depend
on the others, so adding a node moves only the keys it now wins and removing one moves
only the keys it held: placement is stable as nodes come and go.

Replicas must not share a fault domain: each domain is represented by its best-scoring
node, domains are ranked by that score, and the first ``count`` win. The writer's own
node can be asked to come first (locality), when it is a candidate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

from fabric.errors import Unavailable

_SPAN = float(1 << 64)


@dataclass(frozen=True, slots=True)
class Candidate:
    node: str
    domain: str
    weight: float = 1.0
    """Relative share of placements, e.g. the node's free bytes. Must be positive."""


class NotEnoughDomains(Unavailable):
    """Fewer healthy fault domains than the policy needs (a 503: retry when healed)."""


def score(key: str, node: str, weight: float) -> float:
    h = xxhash.xxh3_64_intdigest(f"{key}\x00{node}".encode())
    u = (h + 1) / (_SPAN + 1)  # in (0, 1): ln(u) < 0, never ln(0)
    return -weight / math.log(u)


def place(
    key: str, candidates: Sequence[Candidate], count: int, prefer: str | None = None
) -> list[str]:
    """``count`` nodes for ``key``, each in a different fault domain."""
    assert count >= 1, "placement of nothing"
    best: dict[str, tuple[float, str]] = {}
    for c in candidates:
        assert c.weight > 0, f"candidate {c.node} has weight {c.weight}"
        s = math.inf if c.node == prefer else score(key, c.node, c.weight)
        if c.domain not in best or (s, c.node) > best[c.domain]:
            best[c.domain] = (s, c.node)
    if len(best) < count:
        raise NotEnoughDomains(
            f"placement needs {count} fault domains, only {len(best)} healthy "
            f"({', '.join(sorted(best)) or 'none'})"
        )
    ranked = sorted(best.values(), reverse=True)
    chosen = [node for _, node in ranked[:count]]
    assert len({c.domain for c in candidates if c.node in chosen}) == count
    return chosen
