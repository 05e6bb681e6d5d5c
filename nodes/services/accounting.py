"""What the cluster reports about its containers: bytes, savings, resiliency.

* logical: bytes users wrote that are not holes (what the vdisks hold);
* unique: logical after dedup (each content stored once);
* stored: unique after compression;
* physical: bytes on disks, every replica counted, dead space not yet reclaimed included;
* resiliency: how many more node failures every extent group of the container survives
  right now (replicas on UP nodes minus one; the lowest over its groups).
"""

from __future__ import annotations

from typing import Any

from fabric.config import ClusterConfig
from fabric.metadata.state import MetadataState


def _ratio(a: int, b: int) -> float:
    return round(a / b, 3) if b else 1.0


def resiliency(state: MetadataState, container: str, rf: int) -> int:
    up = state.up_nodes()
    worst = rf - 1
    for _, item in state.scan("egroup/"):
        eg = item.value
        if eg["container"] != container or not eg["extents"] or eg.get("strip"):
            continue
        worst = min(worst, sum(1 for r in eg["replicas"] if r in up) - 1)
    for _, item in state.scan("strip/"):
        strip = item.value
        if strip["container"] == container:
            alive = sum(1 for _, n in strip["data"] + strip["parity"] if n in up)
            worst = min(worst, alive - strip["k"])
    return worst


def pending_ec(state: MetadataState, container: str) -> int:
    """Extent groups of an EC container still held as replicas (not in a strip yet)."""
    return sum(
        1
        for _, item in state.scan("egroup/")
        if item.value["container"] == container
        and not item.value.get("strip")
        and item.value["extents"]
    )


def container_views(state: MetadataState, config: ClusterConfig) -> list[dict[str, Any]]:
    out = []
    for _, item in state.scan("container/"):
        c = item.value
        p, st = c["policy"], c["stats"]
        ec = f"{p['ec_k']}+{p['ec_m']}" if p.get("ec_k") else None
        out.append(
            {
                "name": c["name"],
                "rf": p["rf"],
                "ec": ec,
                "dedup": p["dedup"],
                "compression": p["compression"],
                "vdisks": st["vdisks"],
                "logical_bytes": st["logical_bytes"],
                "unique_bytes": st["unique_bytes"],
                "stored_bytes": st["stored_bytes"],
                "physical_bytes": st["physical_bytes"],
                "dedup_ratio": _ratio(st["logical_bytes"], st["unique_bytes"]),
                "compression_ratio": _ratio(st["unique_bytes"], st["stored_bytes"]),
                "savings_bytes": max(0, st["logical_bytes"] * p["rf"] - st["physical_bytes"]),
                "dedup_savings_bytes": st["logical_bytes"] - st["unique_bytes"],
                "compression_savings_bytes": st["unique_bytes"] - st["stored_bytes"],
                "ec_strips": st.get("ec_strips", 0),
                "ec_data_bytes": st.get("ec_data_bytes", 0),
                "ec_parity_bytes": st.get("ec_parity_bytes", 0),
                "ec_savings_bytes": st.get("ec_data_bytes", 0) * (p["rf"] - 1)
                - st.get("ec_parity_bytes", 0),
                "ec_pending_groups": pending_ec(state, c["name"]) if ec else 0,
                "resiliency": resiliency(state, c["name"], p["rf"]),
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
