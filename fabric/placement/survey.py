"""What a set of failed nodes does to data placed by the fabric's own placement.

Groups are placed as the nodes place them: an RF group on ``rf`` fault domains
(``place(egid, ...)``, as the catalog does), an erasure-coded stripe on ``k + m``
(``place("pack/...", ...)``, as the EC packer does). Then a set of nodes fails at once.
A group that keeps fewer members than it needs to read (1 copy; ``k`` strips) is lost;
one that lost members but can still be read is at reduced resiliency and is repaired:
each lost member is rebuilt on a node the rebuild would choose (``place(".../rebuild")``,
never in a domain the group still uses), reading one copy (RF) or ``k`` strips (EC),
from the target's own rack when a survivor is there. Those reads are the repair traffic,
split into reads inside a rack and across racks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fabric.placement.rendezvous import Candidate, NotEnoughDomains, place


@dataclass(frozen=True, slots=True)
class Layout:
    """Nodes ``n1..nN``, spread round robin over racks ``r1..rR`` as ``fabric run``
    lays out a scenario's cluster (no racks: each node is its own fault domain)."""

    nodes: tuple[str, ...]
    racks: Mapping[str, str]

    @staticmethod
    def of(nodes: int, racks: int) -> Layout:
        ids = tuple(f"n{i + 1}" for i in range(nodes))
        spread = racks if racks > 1 else 0
        return Layout(ids, {n: f"r{i % spread + 1}" for i, n in enumerate(ids)} if spread else {})

    def domain(self, node: str) -> str:
        return self.racks.get(node, node)

    def candidates(
        self, without: Iterable[str] = (), domains: Iterable[str] = ()
    ) -> list[Candidate]:
        skip, used = set(without), set(domains)
        return [
            Candidate(n, self.domain(n))
            for n in self.nodes
            if n not in skip and self.domain(n) not in used
        ]


@dataclass(frozen=True, slots=True)
class Shape:
    """A redundancy scheme: ``width`` members, any ``reads`` of which rebuild the data."""

    width: int
    reads: int
    member_bytes: int

    @staticmethod
    def replicated(rf: int, group_bytes: int) -> Shape:
        return Shape(rf, 1, group_bytes)

    @staticmethod
    def coded(k: int, m: int, member_bytes: int) -> Shape:
        return Shape(k + m, k, member_bytes)

    @property
    def logical_bytes(self) -> int:
        # A copy holds the group; a stripe holds k data strips.
        return self.reads * self.member_bytes


@dataclass(frozen=True, slots=True)
class Exposure:
    groups: int
    lost: int
    """Groups left with fewer members than it takes to read them."""
    reduced: int
    """Groups still readable that lost members."""
    unrepaired: int
    """Reduced groups with no fault domain left to rebuild a member in."""
    logical_bytes: int
    physical_bytes: int
    repair_inside_racks_bytes: int
    repair_across_racks_bytes: int


def survey(keys: Sequence[str], shape: Shape, layout: Layout, failed: Iterable[str]) -> Exposure:
    """Place a group for each key, fail ``failed``, and count what is lost and repaired.

    Raises NotEnoughDomains when the cluster has fewer fault domains than ``shape.width``.
    """
    down = set(failed)
    everyone = layout.candidates()
    lost = reduced = unrepaired = inside = across = 0
    for key in keys:
        prefix = "pack/" if shape.reads > 1 else ""
        members = place(f"{prefix}{key}", everyone, shape.width)
        alive = [n for n in members if n not in down]
        gone = len(members) - len(alive)
        if gone == 0:
            continue
        if len(alive) < shape.reads:
            lost += 1
            continue
        reduced += 1
        used = {layout.domain(n) for n in alive}
        for i in range(gone):
            try:
                target = place(f"{key}/rebuild/{i}", layout.candidates(down, used), 1)[0]
            except NotEnoughDomains:
                unrepaired += 1
                break
            used.add(layout.domain(target))
            rack = layout.racks.get(target)
            # Read from the target's own rack first: that is the traffic a rebuild saves.
            sources = sorted(alive, key=lambda n: (layout.racks.get(n) != rack, n))
            for source in sources[: shape.reads]:
                if rack is not None and layout.racks.get(source) == rack:
                    inside += shape.member_bytes
                else:
                    across += shape.member_bytes
    count = len(keys)
    return Exposure(
        count,
        lost,
        reduced,
        unrepaired,
        count * shape.logical_bytes,
        count * shape.width * shape.member_bytes,
        inside,
        across,
    )
