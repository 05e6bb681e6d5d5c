"""Sweeps (``fabric sim SCENARIO --sweep ... --seeds ...``): which points and seeds to run.

Theory of operation. ``--sweep 'rf=2,3 ec=none,4+2 rebuild_rate=50,200'`` names, per
sweepable key, the values to try; ``parse_sweep`` types each value through the key's row
in ``SWEEP_KEYS`` (the one table of what can be swept), and ``points`` is the cartesian
product, the first key varying slowest. ``parse_seeds`` reads ``7``, ``1-1000`` or
``1,5,9`` (and mixes: ``1-3,9``). ``apply`` turns a scenario and one point into a new
scenario, so every model runs the point from a plain ``Scenario``. ``policy=rf3,4+2,6+3``
sets ``rf`` and ``ec`` together: replication against erasure codes on one axis.

Pure: text in, values out; a user's mistake is a ``SweepError`` naming the key.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from fabric import limits
from fabric.scenario import ClusterSpec, Scenario

Value = int | float | str
Point = dict[str, Value]
"""One point of a sweep: key -> value, in the order the keys were given."""

MAX_POINTS = 10_000
MAX_SEEDS = 1_000_000
MAX_SEED = 2**63 - 1
MB = 1_000_000
"""``rebuild_rate`` is in MB/s (powers of 1000, as ``fabric rebuild --rate``)."""


class SweepError(ValueError):
    """The ``--sweep`` or ``--seeds`` text, or a point of it, is not one (the user's input)."""


@dataclass(frozen=True, slots=True)
class SweepKey:
    name: str
    means: str
    """What the key sets, and its values, for help and error messages."""
    parse: Callable[[str], Value]
    """A value's text -> the value; ValueError with the problem otherwise."""
    apply: Callable[[Scenario, Value], Scenario]


def _int_in(low: int, high: int) -> Callable[[str], Value]:
    def parse(text: str) -> Value:
        if not re.fullmatch(r"[0-9]+", text):
            raise ValueError(f"{text!r} is not an integer")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"{value} is not in {low}..{high}")
        return value

    return parse


def _number_in(low: float, high: float) -> Callable[[str], Value]:
    def parse(text: str) -> Value:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            raise ValueError(f"{text!r} is not a number")
        value = float(text)
        if not low <= value <= high:
            raise ValueError(f"{text} is not in {low:g}..{high:g}")
        return value

    return parse


def _ec(text: str) -> Value:
    if text in ("none", "0"):
        return "none"
    m = re.fullmatch(r"([0-9]+)\+([0-9]+)", text)
    # The bounds of ``fabric.extents.policy.parse_ec``: what a container accepts.
    if not m or not (1 <= int(m.group(1)) <= 16 and 1 <= int(m.group(2)) <= 8):
        raise ValueError(f"{text!r} is not k+m with k 1..16 and m 1..8 (e.g. 4+2), nor none")
    return f"{int(m.group(1))}+{int(m.group(2))}"


def _policy(text: str) -> Value:
    m = re.fullmatch(r"rf([1-3])", text)
    if m:
        return text
    try:
        coded = _ec(text)
    except ValueError:
        raise ValueError(f"{text!r} is not rf1..rf3 nor k+m (e.g. rf3, 4+2)") from None
    if coded == "none":
        raise ValueError(f"{text!r} is not rf1..rf3 nor k+m (e.g. rf3, 4+2)")
    return coded


def _set_policy(s: Scenario, v: Value) -> Scenario:
    text = str(v)
    if text.startswith("rf"):
        return _containers(s, "policy", rf=int(text[2:]), ec="")
    return _containers(s, "policy", ec=text)


def _containers(s: Scenario, key: str, **changes: object) -> Scenario:
    if not s.containers:
        raise SweepError(f"{key}: the scenario has no [[containers]] to set it on")
    return replace(s, containers=tuple(replace(c, **changes) for c in s.containers))  # type: ignore[arg-type]


def _cluster(s: Scenario, key: str, **changes: object) -> Scenario:
    if s.cluster.config and key in ("nodes", "racks"):
        raise SweepError(
            f"{key}: the scenario's cluster comes from {s.cluster.config!r}; "
            "its nodes and racks are set there"
        )
    cluster: ClusterSpec = replace(s.cluster, **changes)  # type: ignore[arg-type]
    return replace(s, cluster=cluster)


def _set_nodes(s: Scenario, v: Value) -> Scenario:
    # Fewer nodes than voters: every node votes (a point must not fail for a default).
    return _cluster(s, "nodes", nodes=v, voters=min(s.cluster.voters, int(v)))


SWEEP_KEYS: dict[str, SweepKey] = {
    k.name: k
    for k in (
        SweepKey(
            "rf",
            "every container's replication factor, 1..3",
            _int_in(1, 3),
            lambda s, v: _containers(s, "rf", rf=v),
        ),
        SweepKey(
            "ec",
            "every container's erasure code: k+m (e.g. 4+2) or none",
            _ec,
            lambda s, v: _containers(s, "ec", ec="" if v == "none" else v),
        ),
        SweepKey(
            "policy",
            "every container's redundancy, one axis: rf1..rf3 (replicas only) or k+m",
            _policy,
            _set_policy,
        ),
        SweepKey(
            "rebuild_rate",
            "the cluster-wide rebuild rate in MB/s (0: no limit)",
            _number_in(0, 1e6),
            lambda s, v: _cluster(s, "rebuild_rate", rebuild_bytes_per_s=round(float(v) * MB)),
        ),
        SweepKey(
            "rebuild_delay_s",
            "seconds a DOWN node waits before its data is rebuilt",
            _number_in(0, 86_400),
            lambda s, v: _cluster(s, "rebuild_delay_s", rebuild_delay_s=float(v)),
        ),
        SweepKey(
            "nodes",
            f"the number of nodes, 1..{limits.MAX_NODES}",
            _int_in(1, limits.MAX_NODES),
            _set_nodes,
        ),
        SweepKey(
            "node_afr",
            "a node's annual failure rate in [failures], 0..1 (the reliability model)",
            _number_in(0, 1),
            lambda s, v: replace(s, failures=replace(s.failures, node_afr=float(v))),
        ),
        SweepKey(
            "racks",
            "racks the nodes are spread over (0 or 1: none, fault domain node)",
            _int_in(0, limits.MAX_NODES),
            lambda s, v: _cluster(s, "racks", racks=v),
        ),
    )
}


def parse_sweep(text: str) -> dict[str, tuple[Value, ...]]:
    """``'rf=2,3 ec=4+2,none'`` -> {"rf": (2, 3), "ec": ("4+2", "none")}."""
    grid: dict[str, tuple[Value, ...]] = {}
    for word in text.split():
        key, eq, values = word.partition("=")
        if not eq or not key:
            raise SweepError(f"{word!r}: write key=value,value (e.g. rf=2,3)")
        row = SWEEP_KEYS.get(key)
        if row is None:
            raise SweepError(f"{key}: not a sweepable key ({', '.join(SWEEP_KEYS)})")
        if key in grid:
            raise SweepError(f"{key}: given twice")
        typed: list[Value] = []
        for raw in values.split(","):
            try:
                value = row.parse(raw.strip())
            except ValueError as exc:
                raise SweepError(f"{key}: {exc} ({row.means})") from None
            if value in typed:
                raise SweepError(f"{key}: {raw.strip()} given twice")
            typed.append(value)
        grid[key] = tuple(typed)
    if not grid:
        raise SweepError("an empty sweep: give at least one key=value,... (e.g. rf=2,3)")
    count = math.prod(len(vs) for vs in grid.values())
    if count > MAX_POINTS:
        raise SweepError(f"{count} points: a sweep has at most {MAX_POINTS}")
    return grid


def points(grid: Mapping[str, Sequence[Value]]) -> list[Point]:
    """Every combination, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def parse_seeds(text: str) -> list[int]:
    """``7``, ``1-1000``, ``1,5,9`` or a mix (``1-3,9``) -> the seeds, in order given."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part)
        if not m:
            raise SweepError(f"seeds: {part.strip()!r} is not N or A-B (e.g. 7, 1-1000, 1,5,9)")
        low = int(m.group(1))
        high = low if m.group(2) is None else int(m.group(2))
        if high < low:
            raise SweepError(f"seeds: {part.strip()} runs backwards")
        if high > MAX_SEED:
            raise SweepError(f"seeds: {high} is past {MAX_SEED}")
        if len(seeds) + high - low + 1 > MAX_SEEDS:
            raise SweepError(f"seeds: more than {MAX_SEEDS}")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        raise SweepError("seeds: a seed is given twice")
    return seeds


def apply(scenario: Scenario, point: Mapping[str, Value]) -> Scenario:
    """The scenario with the point's settings; SweepError if the point cannot be one."""
    for key, value in point.items():
        row = SWEEP_KEYS.get(key)
        if row is None:
            raise SweepError(f"{key}: not a sweepable key ({', '.join(SWEEP_KEYS)})")
        scenario = row.apply(scenario, value)
    cluster = scenario.cluster
    if cluster.racks > cluster.nodes:
        raise SweepError(f"{label(point)}: {cluster.racks} racks but only {cluster.nodes} nodes")
    return scenario


def format_value(value: Value) -> str:
    """A value as the user would write it (``50`` rather than ``50.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def label(point: Mapping[str, Value]) -> str:
    """``rf=2 ec=4+2``: a point as it appears in tables and plots."""
    return " ".join(f"{k}={format_value(v)}" for k, v in point.items())
