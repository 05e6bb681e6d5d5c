"""What the cluster reports about its containers: bytes, savings, resiliency.

* logical: bytes users wrote that are not holes (what the vdisks hold);
* unique: logical after dedup (each content stored once);
* stored: unique after compression;
* physical: bytes on disks, every replica counted, dead space not yet reclaimed included;
* resiliency: how many more node failures every extent group of the container survives
  right now (replicas on UP nodes minus one; the lowest over its groups).

Totals are kept by the state machine as data changes, and resiliency comes from its
indexes: a view costs the number of containers plus the groups on nodes that are not
UP, never the number of groups.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fabric.metadata.state import MetadataState


def _ratio(a: int, b: int) -> float:
    return round(a / b, 3) if b else 1.0


def resiliency(state: MetadataState) -> dict[str, int]:
    """container -> further node failures all of its data survives now (absent: no data)."""
    idx = state.idx
    worst: dict[str, int] = {}
    for container, counts in idx.replica_counts.items():
        if counts:
            worst[container] = min(counts) - 1
    for container, widths in idx.strip_widths.items():
        if widths:
            floor = min(members - k for members, k in widths)
            worst[container] = min(worst.get(container, floor), floor)
    for eg in state.egroups(sorted(idx.short_egroups)):
        strip = state.strip(eg.strip) if eg.strip else None
        if strip is not None:  # a member lost with its disk: one member fewer
            left = len(strip.members) - strip.k - 1
            worst[strip.container] = min(worst.get(strip.container, left), left)
    up = state.up_nodes()
    lost = sorted(
        {n for n in idx.egroups_on if n not in up} | {n for n in idx.strips_on if n not in up}
    )
    if len(lost) == 1:
        # One node lost: each of its groups has one copy fewer; no group need be visited.
        for container, counts in idx.replica_counts_on.get(lost[0], {}).items():
            if counts:
                left = min(counts) - 2
                worst[container] = min(worst.get(container, left), left)
        for container, widths in idx.strip_widths_on.get(lost[0], {}).items():
            if widths:
                left = min(members - k for members, k in widths) - 1
                worst[container] = min(worst.get(container, left), left)
        return worst
    down_replicas: defaultdict[str, int] = defaultdict(int)
    down_members: defaultdict[str, int] = defaultdict(int)
    for node in [n for n in idx.egroups_on if n not in up]:
        for egid in idx.egroups_on[node]:
            down_replicas[egid] += 1
    for node in [n for n in idx.strips_on if n not in up]:
        for strip_id in idx.strips_on[node]:
            down_members[strip_id] += 1
    for eg in state.egroups(down_replicas):
        if eg.extents and not eg.strip and not eg.parity:
            left = len(eg.replicas) - down_replicas[eg.egid] - 1
            worst[eg.container] = min(worst.get(eg.container, left), left)
    for strip_id, down in sorted(down_members.items()):
        strip = state.strip(strip_id)
        if strip is not None:
            left = len(strip.members) - down - strip.k
            worst[strip.container] = min(worst.get(strip.container, left), left)
    return worst


def container_views(state: MetadataState) -> list[dict[str, Any]]:
    out = []
    worst = resiliency(state)
    for c in state.containers():
        p, st = c.policy, c.stats
        out.append(
            {
                "name": c.name,
                "rf": p.rf,
                "ec": p.ec,
                "dedup": p.dedup,
                "compression": p.compression,
                "vdisks": st.vdisks,
                "logical_bytes": st.logical_bytes,
                "unique_bytes": st.unique_bytes,
                "stored_bytes": st.stored_bytes,
                "physical_bytes": st.physical_bytes,
                "dedup_ratio": _ratio(st.logical_bytes, st.unique_bytes),
                "compression_ratio": _ratio(st.unique_bytes, st.stored_bytes),
                "savings_bytes": max(0, st.logical_bytes * p.rf - st.physical_bytes),
                "dedup_savings_bytes": st.logical_bytes - st.unique_bytes,
                "compression_savings_bytes": st.unique_bytes - st.stored_bytes,
                "ec_strips": st.ec_strips,
                "ec_data_bytes": st.ec_data_bytes,
                "ec_parity_bytes": st.ec_parity_bytes,
                "ec_savings_bytes": st.ec_data_bytes * (p.rf - 1) - st.ec_parity_bytes,
                "ec_pending_groups": len(state.idx.ec_pending.get(c.name, ())) if p.ec else 0,
                "rebuilt_bytes": st.rebuilt_bytes,
                "resiliency": min(p.rf - 1, worst.get(c.name, p.rf - 1)),
            }
        )
    return out


def cluster_usage(containers: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Cluster-wide totals: bytes, savings, disk capacity, the weakest resiliency."""
    total = {
        k: sum(c[k] for c in containers)
        for k in (
            "logical_bytes",
            "unique_bytes",
            "stored_bytes",
            "physical_bytes",
            "dedup_savings_bytes",
            "compression_savings_bytes",
            "ec_savings_bytes",
        )
    }
    disks = [d for n in nodes for d in n.get("disks", []) if isinstance(d, dict)]
    total["disk_used_bytes"] = sum(d.get("used_bytes", 0) for d in disks)
    total["disk_capacity_bytes"] = sum(d.get("capacity_bytes", 0) for d in disks)
    total["resiliency"] = min((c["resiliency"] for c in containers), default=None)
    return total
