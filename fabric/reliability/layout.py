"""Placement groups and their members: where the model's data lives.

A group is the unit of placement the model follows: an extent group's ``rf`` replicas,
or an erasure-coded strip's ``k + m`` members. Groups are placed by the fabric's own
rule, ``fabric.placement.rendezvous.place``: each member in a different fault domain
(rack, or node when there are no racks), domains ranked by their best node's
rendezvous score. Up to ``EXACT_PAIRS`` (group, node) scores the model calls ``place``
itself. Beyond that (10,000 nodes) a pure-Python score per pair is too slow, so the same
rule runs vectorised (numpy) with a 64-bit mix hash in place of xxh3: which node wins a
given key differs, the distribution (uniform over nodes, members in distinct domains,
no memory of other keys) is the same. A test holds both to the same properties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import numpy.typing as npt

from fabric.placement.rendezvous import Candidate, place

EXACT_PAIRS = 400_000
"""Above this many (group, node) pairs, placement is vectorised (see the module doc)."""
_CHUNK_PAIRS = 1 << 21
"""Pairs scored at once by the vectorised placement (memory: 8 bytes each, a few times)."""


@dataclass(frozen=True)
class Layout:
    nodes: tuple[str, ...]
    racks: dict[str, str]
    """node -> rack ("" for all when the cluster has no racks)."""
    members: list[tuple[int, ...]]
    """group -> the indexes (into ``nodes``) of its members."""
    tolerance: int
    """Members a group can lose and keep its data: rf - 1, or m."""
    data_members: int = 1
    """Members that carry distinct data: 1 for replicas, k for an EC strip."""
    scheme: str = "rendezvous"
    node_groups: list[list[int]] = field(default_factory=list)
    """node index -> the groups it holds a member of (filled by ``__post_init__``)."""

    def __post_init__(self) -> None:
        if not self.node_groups:
            table: list[list[int]] = [[] for _ in self.nodes]
            for g, ms in enumerate(self.members):
                for n in ms:
                    table[n].append(g)
            self.node_groups.extend(table)

    @property
    def width(self) -> int:
        return len(self.members[0]) if self.members else 0

    def scatter(self) -> list[int]:
        """Per node, how many distinct other nodes share a group with it: the nodes that
        can take part in rebuilding what it held."""
        out = []
        for groups in self.node_groups:
            peers: set[int] = set()
            for g in groups:
                peers.update(self.members[g])
            out.append(max(0, len(peers) - 1))
        return out


def disk_of(group: int, node: int, disks: int) -> int:
    """Which of a node's disks holds its member of ``group`` (spread evenly)."""
    return (group * 31 + node) % disks


Critical = list[tuple[int, ...]]
"""A node's (or disk's) distinct critical sets: for each set of ``tolerance`` peer nodes
that share a group with it, how many distinct disks of each peer hold those groups."""


def critical_sets(layout: Layout, disks: int) -> tuple[list[Critical], list[list[Critical]]]:
    """Per node and per (node, disk): the distinct sets of ``tolerance`` co-members its
    groups have. A failure there loses data exactly when one of those sets is down
    already (the Copysets paper's copysets, seen from one node), so these sets drive
    how often failures turn into losses. A peer is down for a group when the peer node
    is lost or the one disk holding that group's member is, hence the disk counts."""
    t = layout.tolerance
    per_node: list[Critical] = []
    per_disk: list[list[Critical]] = []
    for node, groups in enumerate(layout.node_groups):
        whole: dict[tuple[int, ...], list[set[int]]] = {}
        parts: list[dict[tuple[int, ...], list[set[int]]]] = [{} for _ in range(disks)]
        for g in groups:
            others = sorted(m for m in layout.members[g] if m != node)
            for subset in combinations(others, t):
                for table in (whole, parts[disk_of(g, node, disks)]):
                    used = table.setdefault(subset, [set() for _ in subset])
                    for i, m in enumerate(subset):
                        used[i].add(disk_of(g, m, disks))
        per_node.append([tuple(len(u) for u in used) for used in whole.values()])
        per_disk.append([[tuple(len(u) for u in used) for used in d.values()] for d in parts])
    return per_node, per_disk


def cluster(nodes: int, racks: int) -> tuple[list[str], dict[str, str]]:
    """Node ids ``n1..nN`` spread round robin over racks ``r1..rR`` (as a scenario's
    ``[cluster]`` does); ``racks`` of 0 or 1: no racks, the fault domain is the node."""
    ids = [f"n{i + 1}" for i in range(nodes)]
    if racks <= 1:
        return ids, {n: "" for n in ids}
    return ids, {n: f"r{i % racks + 1}" for i, n in enumerate(ids)}


def rendezvous_layout(
    nodes: Sequence[str],
    racks: dict[str, str],
    groups: int,
    width: int,
    tolerance: int,
    data_members: int = 1,
    exact: bool | None = None,
    salt: str = "",
) -> Layout:
    """``groups`` groups of ``width`` members, placed as the fabric places them.

    ``exact``: force (True) or forbid (False) calling ``place`` itself; None: by size.
    """
    assert 0 <= tolerance < width, "a group must survive fewer losses than it has members"
    domain = [racks.get(n) or n for n in nodes]
    if len(set(domain)) < width:
        raise ValueError(
            f"{width} members need {width} fault domains, there are {len(set(domain))}"
        )
    if exact is None:
        exact = groups * len(nodes) <= EXACT_PAIRS
    if exact:
        index = {n: i for i, n in enumerate(nodes)}
        cands = [Candidate(n, d) for n, d in zip(nodes, domain, strict=True)]
        members = [
            tuple(index[n] for n in place(f"{salt}g{g}", cands, width)) for g in range(groups)
        ]
    else:
        members = _vector_place(domain, groups, width, salt)
    return Layout(tuple(nodes), dict(racks), members, tolerance, data_members)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: a uniform 64-bit hash of a uint64 array (wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    out: npt.NDArray[np.uint64] = x ^ (x >> np.uint64(31))
    return out


def _vector_place(
    domain: Sequence[str], groups: int, width: int, salt: str
) -> list[tuple[int, ...]]:
    """``place``'s rule on equal weights, vectorised: with equal weights the highest
    score is the highest hash, so each domain's best node is its highest hash."""
    names = sorted(set(domain))
    by_domain: list[list[int]] = [[] for _ in names]
    pos = {d: i for i, d in enumerate(names)}
    for i, d in enumerate(domain):
        by_domain[pos[d]].append(i)
    n = len(domain)
    widest = max(len(m) for m in by_domain)
    # A (domains x widest) table of node indexes; the padding points at column n, whose
    # hash is 0 and never wins.
    table = np.full((len(names), widest), n, dtype=np.int64)
    for r, ms in enumerate(by_domain):
        table[r, : len(ms)] = ms
    salt_word = np.uint64(sum(ord(c) << (8 * (i % 8)) for i, c in enumerate(salt)) & (2**64 - 1))
    words = _mix(np.arange(n + 1, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))[table]
    real = table < n
    out: list[tuple[int, ...]] = []
    step = max(1, _CHUNK_PAIRS // table.size)
    with np.errstate(over="ignore"):
        for start in range(0, groups, step):
            g = np.arange(start, min(groups, start + step), dtype=np.uint64)
            keys = _mix(g ^ salt_word)
            vals = _mix(keys[:, None, None] ^ words[None, :, :]) * real  # (groups, domains, widest)
            arg = vals.argmax(axis=2)
            best = np.take_along_axis(vals, arg[:, :, None], axis=2)[:, :, 0]
            top = np.argsort(best, axis=1)[:, ::-1][:, :width]
            chosen = table[top, np.take_along_axis(arg, top, axis=1)]
            out.extend(tuple(int(x) for x in row) for row in chosen.tolist())
    return out
