"""``fabric sim SCENARIO --swarm --seeds 1-1000`` and ``fabric sim SCENARIO --seed N --shrink``.

A swarm run replaces the scenario's nemesis, per seed, by a fault mix drawn from that
seed (``fabric.swarm.mix``: which kinds, targets, pace and length, BUGGIFY on or off),
runs the full model, and says per seed whether every check passed. A seed that fails
is replayed exactly by ``--swarm --seeds N``.

Shrinking takes a failing run (with ``--swarm``, the seed's mix), writes its whole fault
schedule out as scripted steps, and reruns it on subsets (``fabric.shrink.ddmin``, same
seed) until no step can be dropped without the failure going away. "The failure" is
the set of checks that failed first (or a safety checker), so a shrink does not wander
to another bug. The 1-minimal schedule is written as a scenario file that replays it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import io
import json
import os
import shlex
import sys
from dataclasses import dataclass, replace
from typing import Any, TextIO

from fabric import swarm
from fabric.scenario import FaultStep, Scenario, ScenarioError, load_scenario, scaled, schedule
from fabric.shrink import ddmin
from fabric.sweep import SweepError, parse_seeds
from shell.experiment.runner import Progress

SWARM_PARAMS: dict[str, dict[str, Any]] = {
    "net-delay": {"ms": 50},
    "net-loss": {"probability": 0.2},
    "net-bandwidth": {"bytes_per_s": 10_000_000},
    "disk-slow": {"ms": 20},
    "clock-skew": {"offset_s": 5},
}
"""What a swarm's faults of each kind do, where a kind needs a parameter."""
SWARM_KINDS = (
    "node-kill",
    "node-restart",
    "node-pause",
    "net-partition",
    "net-delay",
    "net-loss",
    "net-duplicate",
    "net-reset",
    "disk-slow",
    "disk-fail",
    "clock-skew",
)
"""The kinds a swarm draws from: each one the simulator applies and the fabric is meant
to ride out without a check failing (``disk-corrupt`` on a single copy or ``disk-full``
belong in scenarios of their own, where the checks expect them)."""
MAX_SHRINK_RUNS = 200


@dataclass(frozen=True)
class SeedOutcome:
    seed: int
    passed: bool
    failure: tuple[str, ...]
    """What failed: the names of the failed checks, or ``("safety",)``."""
    mix: str
    out: str


def swarmed(scenario: Scenario, seed: int) -> tuple[Scenario, bool, str]:
    """The scenario under seed's fault mix: (scenario, BUGGIFY on, the mix in words)."""
    m = swarm.mix(seed, SWARM_KINDS)
    nemesis = replace(
        m.nemesis, params={k: dict(v) for k, v in SWARM_PARAMS.items() if k in m.nemesis.kinds}
    )
    return replace(scenario, nemesis=nemesis), m.buggify, m.describe()


def run_one(
    scenario: Scenario,
    seed: int,
    out: str,
    replay: str,
    buggify: bool,
    mix: str = "",
    liveness_s: float | None = None,
) -> SeedOutcome:
    """One full-model run, quiet (its report in ``out``, without plots: the replay line
    draws them): passed, and what failed."""
    import logging

    from shell.sim.runner import run_scenario

    # The nodes' warnings (faults, BUGGIFY, unreachable peers) are each run's own story,
    # in its report; on the terminal they would bury the one line per run.
    logging.getLogger().setLevel(logging.ERROR)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        result = run_scenario(
            scenario, seed, out, replay, Progress(stream=quiet), buggify, liveness_s, plots=False
        )
    return SeedOutcome(seed, result.code == 0, failure_of(out, result.code), mix, out)


def failure_of(out: str, code: int) -> tuple[str, ...]:
    if code == 0:
        return ()
    path = os.path.join(out, "summary.json")
    if not os.path.exists(path):
        return ("safety",)  # a safety checker ended the run before any report
    with open(path, encoding="utf-8") as f:
        checks = json.load(f)["checks"]
    return tuple(sorted(c["name"] for c in checks if c["status"] == "fail"))


def _swarm_seed(
    path: str, time_scale: float, seed: int, out_dir: str, liveness_s: float | None
) -> SeedOutcome:
    scenario = load_scenario(path)
    if time_scale != 1.0:
        scenario = scaled(scenario, time_scale)
    mixed, buggify, mix = swarmed(scenario, seed)
    replay = swarm_replay(path, seed, time_scale, liveness_s)
    out = os.path.join(out_dir, f"seed-{seed}")
    return run_one(mixed, seed, out, replay, buggify, mix, liveness_s)


def swarm_replay(path: str, seed: int, time_scale: float, liveness_s: float | None = None) -> str:
    scale = "" if time_scale == 1.0 else f" --time-scale {time_scale:g}"
    live = "" if liveness_s is None else f" --liveness {liveness_s:g}"
    return f"fabric sim {shlex.quote(path)} --swarm --seeds {seed}{scale}{live}"


def run_swarm(
    path: str,
    seeds: str,
    out_dir: str,
    time_scale: float = 1.0,
    workers: int | None = None,
    liveness_s: float | None = None,
    stream: TextIO | None = None,
) -> int:
    """Every seed under its own mix, ``workers`` at once; 0 if all passed, 1 if one
    failed, 2 for a bad scenario or seed list."""
    err = stream or sys.stderr
    try:
        seed_list = parse_seeds(seeds)
        load_scenario(path)
    except (SweepError, ScenarioError) as exc:
        print(f"fabric sim: {exc}", file=err)
        return 2
    os.makedirs(out_dir, exist_ok=True)
    failed: list[SeedOutcome] = []
    with (
        cf.ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool,
        open(os.path.join(out_dir, "swarm.jsonl"), "w", encoding="utf-8") as log,
    ):
        outcomes = pool.map(
            _swarm_seed,
            [path] * len(seed_list),
            [time_scale] * len(seed_list),
            seed_list,
            [out_dir] * len(seed_list),
            [liveness_s] * len(seed_list),
        )
        for o in outcomes:
            verdict = "passed" if o.passed else "FAILED: " + ", ".join(o.failure)
            print(f"seed {o.seed}: {verdict} ({o.mix})", file=err, flush=True)
            row = {"seed": o.seed, "passed": o.passed, "failure": o.failure, "mix": o.mix}
            log.write(json.dumps(row) + "\n")
            if not o.passed:
                failed.append(o)
    print(f"swarm: {len(seed_list)} seeds, {len(failed)} failed; runs in {out_dir}", file=err)
    for o in failed[:10]:
        print(f"  replay: {swarm_replay(path, o.seed, time_scale, liveness_s)}", file=err)
    return 1 if failed else 0


def run_shrink(
    path: str,
    seed: int | None,
    out_dir: str,
    time_scale: float = 1.0,
    use_swarm: bool = False,
    buggify: bool = False,
    max_runs: int = MAX_SHRINK_RUNS,
    stream: TextIO | None = None,
) -> int:
    """Shrink the run's fault schedule to a 1-minimal one that fails the same way; 0
    when shrunk (the file written), 1 when the run does not fail, 2 for bad input."""
    err = stream or sys.stderr
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        print(f"fabric sim: {exc}", file=err)
        return 2
    if time_scale != 1.0:
        scenario = scaled(scenario, time_scale)
    seed = scenario.seed if seed is None else seed
    if use_swarm:
        scenario, buggify, _ = swarmed(scenario, seed)
    steps = schedule(scenario, seed)
    fixed = replace(scenario, nemesis=None)
    os.makedirs(out_dir, exist_ok=True)

    def attempt(subset: list[FaultStep], label: str) -> SeedOutcome:
        trial = replace(fixed, script=tuple(subset))
        return run_one(trial, seed, os.path.join(out_dir, label), "", buggify)

    first = attempt(steps, "full")
    if first.passed:
        print(f"seed {seed}: the run passes; nothing to shrink ({len(steps)} faults)", file=err)
        return 1
    print(
        f"seed {seed}: fails ({', '.join(first.failure)}) under {len(steps)} faults; shrinking",
        file=err,
    )
    counter = iter(range(1, max_runs + 1))

    def fails(subset: list[FaultStep]) -> bool:
        if len(subset) == len(steps):
            return True  # the whole schedule: the run above
        n = next(counter, max_runs)
        return attempt(subset, f"try-{n}").failure == first.failure

    def said(tests: int, failed: bool) -> None:
        print(f"  run {tests}: {'still fails' if failed else 'passes'}", file=err, flush=True)

    shrunk = ddmin(steps, fails, max_runs, said)
    target = os.path.join(out_dir, "shrunk.toml")
    with open(target, "w", encoding="utf-8") as f:
        f.write(shrunk_toml(path, seed, shrunk.steps, first.failure))
    print(
        f"{len(steps)} faults -> {len(shrunk.steps)} in {shrunk.tests} runs; the schedule: "
        f"{target}\n  replay: fabric sim {shlex.quote(target)} --seed {seed}"
        + (" --buggify" if buggify else "")
        + (f" --time-scale {time_scale:g}" if time_scale != 1.0 else ""),
        file=err,
    )
    return 0


def shrunk_toml(path: str, seed: int, steps: list[FaultStep], failure: tuple[str, ...]) -> str:
    """The original scenario with its fault schedule replaced by ``steps``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    kept = _without_faults(text)
    lines = [
        f"# Shrunk by fabric sim --shrink from {os.path.basename(path)} at seed {seed}:",
        f"# {len(steps)} fault(s) that still fail {', '.join(failure)}.",
        kept.rstrip(),
        "",
    ]
    for s in steps:
        lines += ["[[faults.at]]", f"at_s = {s.at_s!r}", f"kind = {json.dumps(s.kind)}"]
        lines.append(f"target = {_inline(s.target)}")
        if s.params:
            lines.append(f"params = {_inline(s.params)}")
        if s.duration_s is not None:
            lines.append(f"duration_s = {s.duration_s!r}")
        lines.append("")
    return "\n".join(lines)


def _without_faults(text: str) -> str:
    """The scenario's text without its ``[faults...]`` tables (top-level tables only)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        head = line.strip()
        if head.startswith("["):
            name = head.strip("[]").split("]")[0].strip()
            skipping = name == "faults" or name.startswith("faults.")
        if not skipping:
            out.append(line)
    return "\n".join(out)


def _inline(value: dict[str, Any]) -> str:
    parts = []
    for k, v in value.items():
        if isinstance(v, dict):
            text = _inline(v)
        elif isinstance(v, list | tuple):
            text = "[" + ", ".join(json.dumps(x) for x in v) + "]"
        else:
            text = json.dumps(v)
        parts.append(f"{k} = {text}")
    return "{ " + ", ".join(parts) + " }"
