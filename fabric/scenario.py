"""An experiment's scenario (``fabric run SCENARIO.toml``): the cluster, the workloads, the
faults and the checks, parsed from TOML; and the seeded nemesis schedule.

Parsing is pure (text in, frozen dataclasses out), like ``fabric.config``: every error
names the file, the line and the key. The nemesis schedule is a pure function of the
spec and a seed (``schedule``): the same seed gives the same faults at the same times,
so a run that found something can be run again.

A scenario::

    name = "node-loss"
    duration_s = 30

    [cluster]                 # or: config = "my-cluster.toml" (relative to the scenario)
    nodes = 5
    racks = 0                 # > 1: nodes spread over racks, replicas never share one
    voters = 3

    [[containers]]
    name = "bench"
    rf = 2

    [[workloads]]
    kind = "vdisk-writer"     # vdisk-reader, kv-cas, image-upload, image-import
    container = "bench"
    concurrency = 2
    block_bytes = 65536

    [[faults.at]]             # a script ...
    at_s = 5
    kind = "node-kill"
    target = { select = "follower" }
    duration_s = 10

    [faults.nemesis]          # ... and/or a seeded random nemesis
    kinds = ["node-pause", "net-delay"]
    mean_interval_s = 8

    [checks]
    max_unavailability_s = 5
"""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fabric import limits
from fabric.config import TIMINGS, ConfigError, _Source
from fabric.failures import FailureSpec, failure_schedule, fault_steps, parse_failures
from fabric.hardware import HardwareSpec, parse_hardware

FAULT_KINDS = (
    "node-kill",
    "node-pause",
    "node-resume",
    "node-restart",
    "net-partition",
    "net-delay",
    "net-loss",
    "net-duplicate",
    "net-bandwidth",
    "net-reset",
    "disk-fail",
    "disk-slow",
    "disk-corrupt",
    "disk-full",
    "disk-lose-unsynced",
    "clock-skew",
    "clock-strobe",
)
"""Contract 2 of issue 12: what ``POST /api/v1/faults`` takes."""
API_SELECTS = ("one", "minority", "majority", "leader", "all")
"""Targets the faults API resolves itself (and ``rack:R``)."""
RUNNER_SELECTS = ("follower",)
"""Targets the runner resolves from its last view of the cluster before it injects:
``follower`` is one node that is not the leader (a seeded choice)."""
WORKLOAD_KINDS = ("vdisk-writer", "vdisk-reader", "kv-cas", "image-upload", "image-import")
CHECKERS = ("blocks", "kv-linearizable", "images")
MAX_DURATION_S = 24 * 3600.0
MAX_CONCURRENCY = 64
MAX_NEMESIS_FAULTS = 10_000
"""A nemesis with a tiny mean interval over a long run stops here (a limit, not a loop
that runs until memory ends)."""
MAX_BLOCK_BYTES = 16 << 20
MAX_IMAGE_BYTES = 1 << 30
MAX_DROP_PROBABILITY = 0.5
"""A node resumes an import at most ``limits.IMPORT_MAX_RESUMES`` times: a source that
drops more often than this fails imports for that, not for a fault of the fabric."""


class ScenarioError(ConfigError):
    """The scenario is malformed (the user's input): the message names key and line."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: int = 3
    racks: int = 0
    """0 or 1: no racks (fault domain: node); more: nodes spread round robin over racks
    ``r1..rN`` and replicas never share one."""
    voters: int = 3
    extent_bytes: int = 1 << 20
    config: str = ""
    """A cluster config file to run instead (its path relative to the scenario); its own
    nodes, racks and voters then hold, and the runner only moves it to free ports."""
    down_after_ms: int = 0
    """Overrides ``[timeouts] down_after_ms`` (0: the default) for faster detection."""
    rebuild_delay_s: float = -1.0
    """Overrides ``[rebuild] delay_s`` (negative: the default)."""
    scrub_cycle_s: float = -1.0
    """Overrides ``[scrub] cycle_s`` (negative: the default): how soon each node re-reads
    its extent groups again, so a bit-rot experiment sees the scrubber at work."""
    scrub_bytes_per_s: int = -1
    """Overrides ``[scrub] bytes_per_s`` (negative: the default; 0: no limit)."""
    rebuild_bytes_per_s: int = -1
    """Overrides ``[rebuild] bytes_per_s`` (negative: the default; 0: no limit)."""
    timing: str = "default"
    """A named ``[timeouts]`` set (``fabric.config.TIMINGS``): ``long-run`` for long
    simulated runs, ``large-cluster`` for hundreds of nodes over a simulated day;
    ``down_after_ms`` still overrides its own."""


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    name: str
    rf: int = 2
    ec: str = ""
    dedup: bool = False
    compression: str = "none"
    ec_delay_s: float | None = None
    """How long a group stays unchanged before it is erasure coded (None: the default)."""


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    kind: str
    name: str
    container: str = ""
    concurrency: int = 1
    rate: float = 0.0
    """Operations per second over all its clients (open loop); 0: closed loop, each
    client starts its next operation when the last one ended."""
    block_bytes: int = 65536
    vdisk_bytes: int = 4 << 20
    pattern: str = "random"
    """``random`` or ``sequential`` block choice (vdisk writers and readers)."""
    payload: str = "random"
    """What a vdisk writer's blocks hold: ``random`` bytes (incompressible), or
    ``stamped``: a random 16-byte stamp repeated over the block, which a compressing
    container stores in a few hundred bytes. Every byte still crosses every layer and
    is hashed and checked; only what the disks keep shrinks, so a simulated hour of
    steady writes fits in memory."""
    verify: bool = True
    """Writers read each acknowledged block back; uploads download the image again."""
    keys: int = 3
    """kv-cas: how many keys its clients share."""
    image_bytes: int = 1 << 20
    timeout_s: float = 10.0
    """A client gives up on one operation after this long (its outcome is unknown)."""
    drop_probability: float = 0.0
    """image-import: the chance that the runner's source server breaks off a response
    part way through its body (the node's import must resume it with Range)."""


@dataclass(frozen=True, slots=True)
class FaultStep:
    """One fault to inject ``at_s`` seconds into the run, cleared after ``duration_s``
    (None: left to the end of the run)."""

    at_s: float
    kind: str
    target: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    source: str = "script"
    """``script`` (``[[faults.at]]``), ``nemesis`` or ``failures`` (the failure model)."""


@dataclass(frozen=True, slots=True)
class NemesisSpec:
    kinds: tuple[str, ...]
    mean_interval_s: float = 10.0
    """Mean quiet time between one fault's end and the next one's start (exponential)."""
    targets: tuple[dict[str, Any], ...] = ({"select": "one"},)
    duration_s: float = 5.0
    start_s: float = 2.0
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Parameters per fault kind (``[faults.nemesis.params.net-delay]``)."""


@dataclass(frozen=True, slots=True)
class ChecksSpec:
    checkers: tuple[str, ...] = CHECKERS
    max_unavailability_s: float | None = None
    """Longest allowed stretch in which a workload completed no operation successfully."""
    max_reduced_resiliency_s: float | None = None
    max_error_fraction: float | None = None
    """Highest allowed share of operations that failed or ended unknown."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    duration_s: float
    cluster: ClusterSpec
    containers: tuple[ContainerSpec, ...]
    workloads: tuple[WorkloadSpec, ...]
    script: tuple[FaultStep, ...] = ()
    nemesis: NemesisSpec | None = None
    checks: ChecksSpec = ChecksSpec()
    seed: int = 0
    """The default seed (``--seed`` overrides it)."""
    origin: str = "<scenario>"
    hardware: HardwareSpec = field(default_factory=HardwareSpec)
    """``[hardware]``: what simulated disks and links cost (``fabric.hardware``)."""
    failures: FailureSpec = field(default_factory=FailureSpec)
    """``[failures]``: failure processes (``fabric.failures``); the default schedules none."""
    sample_every_s: float = 1.0
    """How often the runner samples the cluster for the timeline (every node's metrics
    each time): a simulated day of a big cluster wants minutes, not seconds."""


# --- parsing --------------------------------------------------------------------------------
class _Reader:
    """Typed reads from one TOML table, errors pointing at the line of the key."""

    def __init__(self, src: _Source, raw: Any, table: str, nth: int = 0, where: str = "") -> None:
        self.src = src
        self.table = table
        self.nth = nth
        self.where = where or (f"{table}." if table else "")
        if not isinstance(raw, dict):
            raise self.error("", "must be a table")
        self.raw: dict[str, Any] = raw
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ScenarioError:
        full = f"{self.where}{key}".rstrip(".")
        err = str(self.src.error(full, problem, self.table, self.nth))
        if err.startswith(f"{self.src.origin}: "):
            # A sub-table with its own header ([hardware.disk]), else a key not written (a
            # required one): point at the sub-table's header, else at its table's.
            sub = f"{self.table}.{key}" if self.table else key
            line = _header_line(self.src, sub, 0) if key else None
            if line is None and self.table:
                line = _header_line(self.src, self.table, self.nth)
            if line is not None:
                err = f"{self.src.origin}:{line}: {full}: {problem}"
        return ScenarioError(err)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.raw:
            if default is _REQUIRED:
                raise self.error(key, "is required")
            return default
        value = self.raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"must be {_kind_name(kinds)}, not {value!r}")
        if not isinstance(value, kinds):
            raise self.error(key, f"must be {_kind_name(kinds)}, not {value!r}")
        return value

    def number(self, key: str, default: Any, low: float, high: float, integer: bool = False) -> Any:
        value = self.get(key, int if integer else (int, float), default)
        if value is not None and value is not _REQUIRED and not low <= value <= high:
            raise self.error(key, f"must be {low:g}..{high:g}, not {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any) -> Any:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown setting")


_REQUIRED = object()


def _header_line(src: _Source, table: str, nth: int) -> int | None:
    header = re.compile(r"^\s*\[\[?\s*" + re.escape(table) + r"\s*\]\]?")
    seen = -1
    for number, text in enumerate(src.lines, start=1):
        if header.match(text):
            seen += 1
            if seen == nth:
                return number
    return None


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    names.update({list: "a list", dict: "a table"})
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_scenario(text: str, origin: str = "<scenario>") -> Scenario:
    """Parse and validate a scenario; raise ScenarioError naming key and line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{origin}: not valid TOML: {exc}") from exc
    src = _Source(text, origin)
    top = _Reader(src, raw, "")
    name = top.get("name", str, _stem(origin))
    duration = top.number("duration_s", _REQUIRED, 1, MAX_DURATION_S)
    seed = top.number("seed", 0, 0, 2**63 - 1, integer=True)
    sample_every_s = float(top.number("sample_every_s", 1.0, 1, 3600))
    cluster = _parse_cluster(_Reader(src, top.get("cluster", dict, {}), "cluster"))
    containers = tuple(
        _parse_container(_Reader(src, c, "containers", i, f"containers[{i}]."))
        for i, c in enumerate(_tables(top, "containers"))
    )
    _check_unique(top, "containers", [c.name for c in containers])
    workloads = tuple(
        _parse_workload(_Reader(src, w, "workloads", i, f"workloads[{i}]."), i, containers)
        for i, w in enumerate(_tables(top, "workloads"))
    )
    if not workloads:
        raise top.error("workloads", "at least one [[workloads]] entry is required")
    _check_unique(top, "workloads", [w.name for w in workloads])
    faults = _Reader(src, top.get("faults", dict, {}), "faults")
    script = tuple(
        _parse_step(_Reader(src, s, "faults.at", i, f"faults.at[{i}]."), duration)
        for i, s in enumerate(_tables(faults, "at"))
    )
    nemesis_raw = faults.get("nemesis", dict, None)
    nemesis = (
        None
        if nemesis_raw is None
        else _parse_nemesis(_Reader(src, nemesis_raw, "faults.nemesis"), duration)
    )
    faults.done()
    checks = _parse_checks(_Reader(src, top.get("checks", dict, {}), "checks"))
    hardware = parse_hardware(
        top.get("hardware", dict, {}), lambda raw, table: _Reader(src, raw, table)
    )
    failures = parse_failures(_Reader(src, top.get("failures", dict, {}), "failures"))
    top.done()
    return Scenario(
        name,
        float(duration),
        cluster,
        containers,
        workloads,
        tuple(sorted(script, key=lambda s: s.at_s)),
        nemesis,
        checks,
        seed,
        origin,
        hardware,
        failures=failures,
        sample_every_s=sample_every_s,
    )


def scaled(scenario: Scenario, factor: float) -> Scenario:
    """The same experiment with its schedule ``factor`` times as long: the duration, when
    each scripted fault starts and how long it lasts, the nemesis's start, gaps and fault
    length. The cluster's own timeouts and the checks' thresholds stay as they are: they
    measure how fast the fabric reacts (an election, a rebuild), which a shorter story
    does not change."""
    assert factor > 0, "a time scale is positive"

    def t(x: float) -> float:
        return round(x * factor, 3)

    def opt(x: float | None) -> float | None:
        return None if x is None else t(x)

    nemesis = scenario.nemesis
    if nemesis is not None:
        nemesis = replace(
            nemesis,
            mean_interval_s=t(nemesis.mean_interval_s),
            duration_s=t(nemesis.duration_s),
            start_s=t(nemesis.start_s),
        )
    script = tuple(
        replace(s, at_s=t(s.at_s), duration_s=opt(s.duration_s)) for s in scenario.script
    )
    return replace(scenario, duration_s=t(scenario.duration_s), script=script, nemesis=nemesis)


def _stem(origin: str) -> str:
    base = re.split(r"[\\/]", origin)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base or "scenario"


def _tables(reader: _Reader, key: str) -> list[Any]:
    items = reader.get(key, list, [])
    if not all(isinstance(i, dict) for i in items):
        raise reader.error(key, f"must be a list of [[{reader.where}{key}]] tables")
    return list(items)


def _check_unique(reader: _Reader, key: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ScenarioError(
                str(reader.src.error(f"{key}[{i}].name", f"duplicate name {n!r}", key, i))
            )
        seen.add(n)


def _parse_cluster(r: _Reader) -> ClusterSpec:
    config = r.get("config", str, "")
    nodes = r.number("nodes", 3, 1, limits.MAX_NODES, integer=True)
    racks = r.number("racks", 0, 0, limits.MAX_NODES, integer=True)
    voters = r.number("voters", min(3, nodes), 1, 7, integer=True)
    if voters > nodes:
        raise r.error("voters", f"{voters} voters but only {nodes} nodes")
    if racks > nodes:
        raise r.error("racks", f"{racks} racks but only {nodes} nodes")
    extent = r.number("extent_bytes", 1 << 20, 64 << 10, 4 << 20, integer=True)
    if extent & (extent - 1):
        raise r.error("extent_bytes", "must be a power of two")
    down = r.number("down_after_ms", 0, 0, 600_000, integer=True)
    delay = r.number("rebuild_delay_s", -1.0, -1, 86_400)
    rebuild_rate = r.number("rebuild_bytes_per_s", -1, -1, 1 << 40, integer=True)
    scrub_cycle = r.number("scrub_cycle_s", -1.0, -1, 86_400 * 365)
    if 0 <= scrub_cycle < 1:
        raise r.error("scrub_cycle_s", "must be at least 1 s (or negative: the default)")
    scrub_rate = r.number("scrub_bytes_per_s", -1, -1, 1 << 40, integer=True)
    timing = r.get("timing", str, "default")
    if timing not in TIMINGS:
        raise r.error("timing", f"{timing!r} is not one of {', '.join(TIMINGS)}")
    r.done()
    return ClusterSpec(
        nodes,
        racks,
        voters,
        extent,
        config,
        down,
        float(delay),
        float(scrub_cycle),
        scrub_rate,
        rebuild_rate,
        timing,
    )


def _parse_container(r: _Reader) -> ContainerSpec:
    name = r.get("name", str, _REQUIRED)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", name):
        raise r.error("name", f"{name!r} is not a valid container name")
    rf = r.number("rf", 2, 1, 3, integer=True)
    ec = r.get("ec", str, "")
    if ec and not re.fullmatch(r"[0-9]{1,2}\+[0-9]", ec):
        raise r.error("ec", f"{ec!r} is not k+m (e.g. 4+2)")
    dedup = r.get("dedup", bool, False)
    compression = r.get("compression", (str, bool), "none")
    if isinstance(compression, bool):
        compression = "zstd" if compression else "none"
    if compression not in ("none", "zstd"):
        raise r.error("compression", "must be none or zstd")
    ec_delay = r.number("ec_delay_s", None, 0, MAX_DURATION_S)
    if ec_delay is not None and not ec:
        raise r.error("ec_delay_s", "only an erasure-coded container (ec = ...) has one")
    r.done()
    return ContainerSpec(name, rf, ec, dedup, compression, _opt_float(ec_delay))


def _parse_workload(r: _Reader, nth: int, containers: tuple[ContainerSpec, ...]) -> WorkloadSpec:
    kind = r.choice("kind", WORKLOAD_KINDS, _REQUIRED)
    name = r.get("name", str, f"{kind}-{nth + 1}")
    names = [c.name for c in containers]
    needs_container = kind != "kv-cas"
    container = r.get("container", str, names[0] if names and needs_container else "")
    if needs_container and container not in names:
        known = ", ".join(names) or "none: add a [[containers]] table"
        raise r.error("container", f"{container!r} is not a container of the scenario ({known})")
    w = WorkloadSpec(
        kind=kind,
        name=name,
        container=container,
        concurrency=r.number("concurrency", 1, 1, MAX_CONCURRENCY, integer=True),
        rate=float(r.number("rate", 0.0, 0, 100_000)),
        block_bytes=r.number("block_bytes", 65536, 512, MAX_BLOCK_BYTES, integer=True),
        vdisk_bytes=r.number("vdisk_bytes", 4 << 20, 512, 1 << 40, integer=True),
        pattern=r.choice("pattern", ("random", "sequential"), "random"),
        payload=r.choice("payload", ("random", "stamped"), "random"),
        verify=r.get("verify", bool, True),
        keys=r.number("keys", 3, 1, 1000, integer=True),
        image_bytes=r.number("image_bytes", 1 << 20, 512, MAX_IMAGE_BYTES, integer=True),
        timeout_s=float(r.number("timeout_s", 10.0, 0.1, 3600)),
        drop_probability=float(r.number("drop_probability", 0.0, 0, MAX_DROP_PROBABILITY)),
    )
    if w.drop_probability and kind != "image-import":
        raise r.error("drop_probability", "only an image-import workload has a flaky source")
    if w.payload != "random" and kind != "vdisk-writer":
        raise r.error("payload", "only a vdisk-writer chooses what its blocks hold")
    if w.vdisk_bytes < w.block_bytes:
        raise r.error("vdisk_bytes", f"must hold at least one block of {w.block_bytes} bytes")
    r.done()
    return w


def _parse_target(r: _Reader, key: str, default: Any) -> dict[str, Any]:
    target = r.get(key, (dict, str), default)
    if isinstance(target, str):  # a shorthand: target = "leader"
        target = {"select": target}
    problem = target_problem(target)
    if problem:
        raise r.error(key, problem)
    return dict(target)


def target_problem(target: dict[str, Any]) -> str | None:
    """Why a fault target is not one (None: it is)."""
    unknown = sorted(set(target) - {"nodes", "select", "from", "to"})
    if unknown:
        return f"unknown target key {unknown[0]!r} (nodes, select, from, to)"
    if "from" in target:
        for end in ("from", "to"):
            sub = target.get(end)
            if end == "to" and sub == "clients":
                continue
            if not isinstance(sub, dict):
                return f"{end}: must be a target table"
            problem = target_problem(sub)
            if problem:
                return f"{end}: {problem}"
        return None
    if ("nodes" in target) == ("select" in target):
        return "give either nodes = [...] or select = ..."
    if "nodes" in target:
        nodes = target["nodes"]
        if not nodes or not all(isinstance(n, str) and n for n in nodes):
            return "nodes must be a non-empty list of node ids"
        return None
    select = target["select"]
    if not isinstance(select, str) or not (
        select in API_SELECTS or select in RUNNER_SELECTS or select.startswith("rack:")
    ):
        known = ", ".join((*API_SELECTS, *RUNNER_SELECTS, "rack:R"))
        return f"select {select!r} is not one of {known}"
    return None


def _parse_step(r: _Reader, duration: float) -> FaultStep:
    at = float(r.number("at_s", _REQUIRED, 0, duration))
    kind = r.choice("kind", FAULT_KINDS, _REQUIRED)
    target = _parse_target(r, "target", {"select": "one"})
    params = r.get("params", dict, {})
    lasts = r.number("duration_s", None, 0, MAX_DURATION_S)
    r.done()
    return FaultStep(at, kind, target, dict(params), None if lasts is None else float(lasts))


def _parse_nemesis(r: _Reader, duration: float) -> NemesisSpec:
    kinds = r.get("kinds", list, _REQUIRED)
    if not kinds:
        raise r.error("kinds", "must name at least one fault kind")
    for k in kinds:
        if k not in FAULT_KINDS:
            raise r.error("kinds", f"{k!r} is not a fault kind ({', '.join(FAULT_KINDS)})")
    mean = float(r.number("mean_interval_s", 10.0, 0.1, MAX_DURATION_S))
    raw_targets = r.get("targets", list, ["one"])
    targets = []
    for t in raw_targets:
        target = {"select": t} if isinstance(t, str) else t
        problem = target_problem(target) if isinstance(target, dict) else "not a target"
        if problem:
            raise r.error("targets", f"{t!r}: {problem}")
        targets.append(dict(target))
    if not targets:
        raise r.error("targets", "must name at least one target")
    lasts = float(r.number("duration_s", 5.0, 0, MAX_DURATION_S))
    start = float(r.number("start_s", 2.0, 0, duration))
    params = r.get("params", dict, {})
    for kind, p in params.items():
        if kind not in FAULT_KINDS or not isinstance(p, dict):
            raise r.error("params", f"{kind!r}: params are tables named after a fault kind")
    r.done()
    return NemesisSpec(tuple(kinds), mean, tuple(targets), lasts, start, dict(params))


def _parse_checks(r: _Reader) -> ChecksSpec:
    checkers = r.get("checkers", list, list(CHECKERS))
    for c in checkers:
        if c not in CHECKERS:
            raise r.error("checkers", f"{c!r} is not a checker ({', '.join(CHECKERS)})")
    spec = ChecksSpec(
        tuple(checkers),
        _opt_float(r.number("max_unavailability_s", None, 0, MAX_DURATION_S)),
        _opt_float(r.number("max_reduced_resiliency_s", None, 0, MAX_DURATION_S)),
        _opt_float(r.number("max_error_fraction", None, 0, 1)),
    )
    r.done()
    return spec


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def load_scenario(path: str) -> Scenario:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_scenario(text, path)


# --- the fault schedule ---------------------------------------------------------------------
def schedule(
    scenario: Scenario,
    seed: int,
    racks: Mapping[str, str] | None = None,
    disk_names: Mapping[str, Sequence[str]] | None = None,
) -> list[FaultStep]:
    """Every fault of the run in start order: the script's, the nemesis's and the
    failure model's.

    The nemesis draws from its own ``random.Random(seed)``: one quiet gap
    (exponential, mean ``mean_interval_s``), then a kind and a target, then the fault
    for ``duration_s``; its faults never overlap each other and all end before the
    run does. ``[failures]`` draws its schedule over the run (``failure_schedule``) and
    plays it as node kills and restarts and disk failures (``fault_steps``): ``racks``
    maps each node of the cluster to its rack (default: the nodes and racks ``[cluster]``
    makes) and ``disk_names`` each node to its disks' names as its fault agent knows
    them (their number is the disks per node the model fails).
    """
    steps = list(scenario.script)
    if scenario.nemesis is not None:
        steps += nemesis_steps(scenario.nemesis, scenario.duration_s, seed)
    if scenario.failures.active:
        steps += failure_steps(scenario, seed, racks, disk_names)
    return sorted(steps, key=lambda s: (s.at_s, s.source))


def failure_steps(
    scenario: Scenario,
    seed: int,
    racks: Mapping[str, str] | None = None,
    disk_names: Mapping[str, Sequence[str]] | None = None,
) -> list[FaultStep]:
    """The ``[failures]`` part of ``schedule`` (same arguments)."""
    spec = scenario.failures
    if racks is None:
        from fabric.reliability.layout import cluster  # numpy: only when asked

        racks = cluster(scenario.cluster.nodes, scenario.cluster.racks)[1]
    if disk_names:
        spec = replace(spec, disks_per_node=min(len(d) for d in disk_names.values()))
    events = failure_schedule(spec, list(racks), racks, scenario.duration_s, seed)
    return fault_steps(events, racks, disk_names)


def nemesis_steps(spec: NemesisSpec, duration_s: float, seed: int) -> list[FaultStep]:
    rng = random.Random(f"nemesis:{seed}")
    out: list[FaultStep] = []
    t = spec.start_s
    while len(out) < MAX_NEMESIS_FAULTS:
        t += rng.expovariate(1.0 / spec.mean_interval_s)
        if t + spec.duration_s > duration_s:
            break
        kind = rng.choice(spec.kinds)
        target = rng.choice(spec.targets)
        params = dict(spec.params.get(kind, {}))
        out.append(FaultStep(round(t, 3), kind, dict(target), params, spec.duration_s, "nemesis"))
        t += spec.duration_s
    return out
