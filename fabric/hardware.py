"""Hardware models of a scenario (``[hardware]``): what the simulated disks and links cost.

Pure: frozen dataclasses and their parser. The simulator (``fabric.sim.disk``,
``fabric.sim.network``) turns them into virtual time. A missing table means no model:
the simulator then behaves exactly as it did before models existed (disks take no
time, links draw a latency uniformly from 0.2..2 ms and have no bandwidth limit).

    [hardware.disk]
    capacity_bytes = 4_000_000_000_000   # a disk's size unless the cluster config sets one
    read_latency_ms = 0.1                # per operation, before its bytes move
    write_latency_ms = 0.1
    sync_latency_ms = 2.0
    bandwidth_mb_s = 500                 # 0: no limit

    [hardware.network]
    latency_ms = 0.2                     # one way, every message
    jitter_ms = 1.8                      # plus a draw from 0..jitter_ms (see ``jitter``)
    jitter = "uniform"                   # or "exponential" (mean jitter_ms)
    bandwidth_mb_s = 1250                # per directed link; 0: no limit
    cross_rack_latency_ms = 0.5          # links between racks; unset: as inside one
    cross_rack_bandwidth_mb_s = 125

One MB is 10**6 bytes (as drive and link vendors count). Racks come from the nodes'
``rack`` labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

MB = 1_000_000
JITTERS = ("uniform", "exponential")
MAX_LATENCY_MS = 60_000.0
MAX_BANDWIDTH_MB_S = 1_000_000.0
"""A terabyte a second: beyond any device, so a bigger number is a typo."""
DEFAULT_DISK_BYTES = 1 << 40
"""The simulator's disk size when neither the config nor the scenario gives one."""


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """One device: operations are served one at a time, in arrival order; each costs its
    kind's latency plus its bytes over the bandwidth."""

    capacity_bytes: int = DEFAULT_DISK_BYTES
    read_latency_ms: float = 0.0
    write_latency_ms: float = 0.0
    sync_latency_ms: float = 0.0
    bandwidth_mb_s: float = 0.0
    """0: bytes move in no time (only the latencies count)."""

    def service_s(self, op: str, nbytes: int) -> float:
        """Seconds the device is busy with one ``read``, ``write`` or ``sync`` of
        ``nbytes``."""
        latency_ms = {
            "read": self.read_latency_ms,
            "write": self.write_latency_ms,
            "sync": self.sync_latency_ms,
        }[op]
        return latency_ms / 1000 + _transfer_s(nbytes, self.bandwidth_mb_s)


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """Every directed link: a message waits for the link to finish the ones sent before
    it (FIFO), takes its bytes over the bandwidth to go out, then the latency to arrive."""

    latency_ms: float = 0.2
    jitter_ms: float = 1.8
    jitter: str = "uniform"
    """``uniform``: 0..jitter_ms; ``exponential``: mean jitter_ms (a long tail)."""
    bandwidth_mb_s: float = 0.0
    """0: no limit."""
    cross_rack_latency_ms: float | None = None
    """Between nodes of different racks; None: ``latency_ms``."""
    cross_rack_bandwidth_mb_s: float | None = None
    """Between nodes of different racks; None: ``bandwidth_mb_s``."""

    def link(self, cross_rack: bool) -> tuple[float, float]:
        """(base latency in seconds, bandwidth in bytes/s or 0) of one kind of link."""
        latency = self.latency_ms
        bandwidth = self.bandwidth_mb_s
        if cross_rack:
            if self.cross_rack_latency_ms is not None:
                latency = self.cross_rack_latency_ms
            if self.cross_rack_bandwidth_mb_s is not None:
                bandwidth = self.cross_rack_bandwidth_mb_s
        return latency / 1000, bandwidth * MB


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    disk: DiskSpec | None = None
    """None: disks take no time and hold ``DEFAULT_DISK_BYTES``."""
    network: NetworkSpec | None = None
    """None: the simulator's original network (0.2..2 ms uniform, no bandwidth limit)."""


def _transfer_s(nbytes: int, bandwidth_mb_s: float) -> float:
    return nbytes / (bandwidth_mb_s * MB) if bandwidth_mb_s > 0 else 0.0


class TableReader(Protocol):
    """Typed reads from one table whose errors name the file, line and key (the
    scenario's reader)."""

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any: ...

    def number(
        self, key: str, default: Any, low: float, high: float, integer: bool = False
    ) -> Any: ...

    def choice(self, key: str, choices: tuple[str, ...], default: Any) -> Any: ...

    def error(self, key: str, problem: str) -> Exception: ...

    def done(self) -> None: ...


def parse_hardware(
    table: Mapping[str, Any], reader: Callable[[Any, str], TableReader]
) -> HardwareSpec:
    """``table``: the ``[hardware]`` table as TOML gave it; ``reader(raw, name)`` reads
    the table called ``name`` (``hardware``, ``hardware.disk``, ...)."""
    top = reader(table, "hardware")
    disk_raw = top.get("disk", dict, None)
    network_raw = top.get("network", dict, None)
    top.done()
    return HardwareSpec(
        None if disk_raw is None else _parse_disk(reader(disk_raw, "hardware.disk")),
        None if network_raw is None else _parse_network(reader(network_raw, "hardware.network")),
    )


def _float(r: TableReader, key: str, default: float, high: float) -> float:
    return float(r.number(key, default, 0, high))


def _unset_or_float(r: TableReader, key: str, high: float) -> float | None:
    value = r.number(key, None, 0, high)
    return None if value is None else float(value)


def _parse_disk(r: TableReader) -> DiskSpec:
    d = DiskSpec()
    spec = DiskSpec(
        capacity_bytes=r.number("capacity_bytes", d.capacity_bytes, 1 << 20, 1 << 60, True),
        read_latency_ms=_float(r, "read_latency_ms", d.read_latency_ms, MAX_LATENCY_MS),
        write_latency_ms=_float(r, "write_latency_ms", d.write_latency_ms, MAX_LATENCY_MS),
        sync_latency_ms=_float(r, "sync_latency_ms", d.sync_latency_ms, MAX_LATENCY_MS),
        bandwidth_mb_s=_float(r, "bandwidth_mb_s", d.bandwidth_mb_s, MAX_BANDWIDTH_MB_S),
    )
    r.done()
    return spec


def _parse_network(r: TableReader) -> NetworkSpec:
    d = NetworkSpec()
    spec = NetworkSpec(
        latency_ms=_float(r, "latency_ms", d.latency_ms, MAX_LATENCY_MS),
        jitter_ms=_float(r, "jitter_ms", d.jitter_ms, MAX_LATENCY_MS),
        jitter=r.choice("jitter", JITTERS, d.jitter),
        bandwidth_mb_s=_float(r, "bandwidth_mb_s", d.bandwidth_mb_s, MAX_BANDWIDTH_MB_S),
        cross_rack_latency_ms=_unset_or_float(r, "cross_rack_latency_ms", MAX_LATENCY_MS),
        cross_rack_bandwidth_mb_s=_unset_or_float(
            r, "cross_rack_bandwidth_mb_s", MAX_BANDWIDTH_MB_S
        ),
    )
    r.done()
    return spec
