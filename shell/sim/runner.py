"""``fabric sim SCENARIO.toml [--seed N] [-o DIR] [--time-scale X]``: an experiment of
``fabric run`` on the deterministic simulator.

The scenario file is the one ``fabric run`` takes, unchanged. The cluster it asks for
runs as real ``Node`` objects on one ``VirtualLoop`` (``nodes.simcluster``), every node
with the fault wrappers of a real process; the workloads, the sampler, the fault applier
and the report are those of ``fabric run`` (``shell/experiment/``), given an in-process
client (``shell.sim.client``) and the virtual clock. The phases are the same:

1. *cluster*: the scenario's cluster started, a leader elected, every node registered;
2. *setup*: containers and the writers' vdisks;
3. *load*: ``duration_s`` virtual seconds of workloads, fault schedule and sampling;
4. *collect*: faults cleared, the event log read;
5. *report*: the checkers judge the history, every file of ``fabric run``'s report is
   written, and the trace hash (``shell.sim.trace``) goes into ``summary.json``.

Everything comes from the seed, and nothing in the folder depends on the wall clock
(times are virtual seconds), so the same seed and code write the same bytes. The wall
time and the speed-up are for the caller to print (``shell.cli``), never in the report.
A run that fails prints the command that replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
from dataclasses import dataclass

from fabric.buggify import fired_total
from fabric.config import ClusterConfig
from fabric.scenario import Scenario, load_scenario, scaled, schedule
from fabric.sim.checkers import SafetyViolation
from fabric.timeline import FaultBand
from nodes.simcluster import SimCluster
from shell.client import ApiError, Unreachable
from shell.experiment.api import ClusterApi
from shell.experiment.runner import (
    SETTLE_S,
    Outcome,
    Progress,
    all_events,
    create_containers,
    finish,
    has_imports,
    print_verdict,
    scenario_config,
)
from shell.experiment.sampler import Sampler
from shell.experiment.verdicts import CheckResult
from shell.experiment.workloads import Context, Recorder, RunClock, run_client, setup
from shell.sim.client import IMPORT_BASE_URL, Plane, SimClient
from shell.sim.faults import SimFaultApplier
from shell.sim.trace import TraceHash

TIME_EPSILON_S = 1e-6
START_TIMEOUT_S = 60.0
"""Virtual seconds for the cluster to elect a leader and register every node."""


@dataclass(frozen=True)
class SimResult:
    code: int
    """0: every check passed; 1: one failed (or a safety checker fired)."""
    simulated_s: float
    """Virtual seconds the whole run took (start, setup, load, collection)."""
    trace: str
    out: str


def replay_command(
    path: str,
    seed: int,
    time_scale: float,
    buggify: bool = False,
    liveness_s: float | None = None,
) -> str:
    scale = "" if time_scale == 1.0 else f" --time-scale {time_scale:g}"
    bug = " --buggify" if buggify else ""
    live = "" if liveness_s is None else f" --liveness {liveness_s:g}"
    return f"fabric sim {shlex.quote(path)} --seed {seed}{scale}{bug}{live}"


def run(
    scenario_path: str,
    seed: int | None,
    out_dir: str | None,
    time_scale: float = 1.0,
    progress: Progress | None = None,
    buggify: bool = False,
    liveness_s: float | None = None,
) -> SimResult:
    """Run the experiment on virtual time and write its report (see the module doc);
    ``buggify``: the nodes' BUGGIFY points are on (``fabric.buggify``), chosen by the seed."""
    scenario = load_scenario(scenario_path)
    if time_scale != 1.0:
        scenario = scaled(scenario, time_scale)
    seed = scenario.seed if seed is None else seed
    out = out_dir or os.path.join("fabric-runs", f"{scenario.name}-seed{seed}-sim")
    replay = replay_command(scenario_path, seed, time_scale, buggify, liveness_s)
    show = progress or Progress(prefix="[fabric sim]")
    return run_scenario(scenario, seed, out, replay, show, buggify, liveness_s)


def run_scenario(
    scenario: Scenario,
    seed: int,
    out_dir: str,
    replay: str,
    show: Progress,
    buggify: bool = False,
    liveness_s: float | None = None,
    plots: bool = True,
) -> SimResult:
    """One run of a parsed scenario into ``out_dir``; ``replay`` is printed on failure.
    ``liveness_s``: after the load the faults stop, and the cluster must be back at full
    resiliency and take a write within this many virtual seconds (the ``liveness``
    check)."""
    out = os.path.abspath(out_dir)
    os.makedirs(out, exist_ok=True)
    cfg = scenario_config(scenario)
    sim = SimCluster(cfg, seed, faults=True, hardware=scenario.hardware, buggify=buggify)
    trace = TraceHash()
    sim.net.taps.append(trace.message)
    try:
        outcome = sim.run(_experiment(sim, scenario, seed, out, cfg, show, liveness_s))
        simulated_s = sim.loop.time()
    except SafetyViolation as exc:
        show.done()
        print(f"{scenario.name} (seed {seed}): FAILED: {exc}")
        print(f"replay: {replay}")
        return SimResult(1, sim.loop.time(), trace.hexdigest(), out)
    finally:
        sim.close()
    trace.lines(_history_lines(outcome))
    digest = trace.hexdigest()
    show("judging the history")
    extra = {
        "trace": digest,
        "model": "full",
        "messages": trace.messages,
        # What the simulated network carried, by family, inside and across racks: the
        # repair traffic a placement policy costs (a real run cannot count it this way).
        "network_bytes": sim.net.traffic(),
    }
    if buggify:
        extra["buggify_fired"] = fired_total(list(sim.buggify.values()))
    summary = finish(out, scenario, seed, outcome, cfg, simulated_s, extra, plots)
    show.done()
    print_verdict(scenario, seed, summary, out)
    print(f"trace {digest}")
    if not summary["passed"]:
        print(f"replay: {replay}")
    return SimResult(0 if summary["passed"] else 1, simulated_s, digest, out)


def metrics(scenario: Scenario, seed: int) -> dict[str, float]:
    """``fabric sim --sweep --model full``: one run of the full model, its summary's
    figures as a sweep's metrics (the report itself goes to a folder dropped after)."""
    import io
    import json
    import math
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fabric-sweep-") as out:
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet):
            result = run_scenario(scenario, seed, out, "", Progress(stream=quiet), plots=False)
        path = os.path.join(out, "summary.json")
        if not os.path.exists(path):  # a safety checker ended the run: no report
            return {"passed": 0.0, "safety_violation": 1.0}
        with open(path, encoding="utf-8") as f:
            s = json.load(f)
    rebuild = s.get("rebuild") or {}
    degraded = s.get("degraded_reads") or {}
    across = s.get("network_bytes", {}).get("across", {})
    inside = s.get("network_bytes", {}).get("inside", {})

    def num(value: object) -> float:
        return float(value) if isinstance(value, int | float) else math.nan

    return {
        "passed": 1.0 if result.code == 0 else 0.0,
        "safety_violation": 0.0,
        "acknowledged_writes_lost": num(s.get("acknowledged_writes_lost")),
        "wrong_reads": num(s.get("wrong_reads")),
        "reduced_resiliency_s": num(s.get("reduced_resiliency_s")),
        "rebuild_s": num(rebuild.get("time_s")),
        "rebuilt_bytes": num(rebuild.get("rebuilt_bytes")),
        "repair_across_racks_bytes": float(across.get("repair", 0)),
        "repair_inside_racks_bytes": float(inside.get("repair", 0)),
        "degraded_read_p99_ms": num(degraded.get("degraded_p99_ms")),
        "simulated_s": result.simulated_s,
    }


def _history_lines(outcome: Outcome) -> list[str]:
    from fabric import history

    return list(history.dump(outcome.ops))


@dataclass
class _Setup:
    plane: Plane
    main: SimClient
    sampling: dict[str, SimClient]
    ctx: Context
    vdisks: dict[str, list[str]]


async def _setup(
    sim: SimCluster, scenario: Scenario, seed: int, workdir: str, show: Progress
) -> _Setup:
    """Phases 1 and 2: the cluster up with a leader, the containers and vdisks made."""
    show("starting the cluster")
    await sim.start_all()
    await sim.wait_for(
        lambda: sim.leader() is not None and all(n.registered for n in sim.nodes.values()),
        START_TIMEOUT_S,
        "a leader and every node registered",
    )
    timeout_s = max(w.timeout_s for w in scenario.workloads) + 5
    ids = [n.id for n in sim.config.nodes]
    os.makedirs(workdir, exist_ok=True)
    plane = Plane(sim, workdir, random.Random(f"flaky:{seed}"))
    main = SimClient(plane, ids, timeout_s)
    per_node: list[ClusterApi] = [SimClient(plane, [n], timeout_s) for n in ids]
    show("setting up")
    await create_containers(main, scenario)
    clock = RunClock(sim.loop.time)
    ctx = Context(Recorder(clock), main, per_node, seed, f"s{seed}", workdir)
    if has_imports(scenario):
        ctx.import_base_url = IMPORT_BASE_URL
    vdisks = {w.name: await setup(ctx, w) for w in scenario.workloads}
    sampling = {n: SimClient(plane, [n], 2.0) for n in ids}
    return _Setup(plane, main, sampling, ctx, vdisks)


def check(scenario_path: str, seed: int | None, workdir: str) -> None:
    """Parse the scenario, refuse kinds that are not simulated, start its cluster and set
    up its workloads, then stop: what a scenario needs to run at all (no load, no report)."""
    scenario = load_scenario(scenario_path)
    seed = scenario.seed if seed is None else seed
    with SimCluster(scenario_config(scenario), seed, faults=True) as sim:
        sim.run(_setup(sim, scenario, seed, workdir, Progress(prefix="[fabric sim]")))


async def _experiment(
    sim: SimCluster,
    scenario: Scenario,
    seed: int,
    out: str,
    cfg: ClusterConfig,
    show: Progress,
    liveness_s: float | None = None,
) -> Outcome:
    begun = sim.loop.time()
    ready = await _setup(sim, scenario, seed, os.path.join(out, "work"), show)
    plane, main, ctx, vdisks = ready.plane, ready.main, ready.ctx, ready.vdisks
    clock = ctx.recorder.clock
    ids = [n.id for n in cfg.nodes]
    sampler = Sampler(SimClient(plane, ids, 2.0), ready.sampling, clock)
    faults = SimFaultApplier(
        main,
        None,
        cfg,
        clock,
        random.Random(f"targets:{seed}"),
        lambda: sampler.last_view,
        show.say,
        sim=sim,
    )
    clock.start()
    sampling_task = asyncio.create_task(sampler.run(scenario.sample_every_s))
    clients = [
        asyncio.create_task(run_client(ctx, w, i, vdisks[w.name]))
        for w in scenario.workloads
        for i in range(w.concurrency)
    ]
    # A simulated node's disks are named by node, as its fault agent knows them.
    disks = {n.id: [f"{n.id}/{d}" for d in n.disks] for n in cfg.nodes}
    steps = schedule(scenario, seed, cfg.racks(), disks)
    fault_tasks = [asyncio.create_task(faults.run(s)) for s in steps]
    total = scenario.duration_s
    try:
        # Virtual time is a float: a remainder below the loop's resolution never elapses.
        while (left := total - clock.now()) > TIME_EPSILON_S:
            show(
                "load",
                left,
                f"({total - left:.0f}/{total:g} virtual s, {len(ctx.recorder.ops)} ops)",
            )
            crashed = [t for t in clients if t.done()]
            if crashed:
                crashed[0].result()  # a client stopped: its bug ends the run here
            await sim.clock.sleep(min(1.0, left))
    finally:
        show("collecting")
        for task in [*clients, *fault_tasks]:
            task.cancel()
        await asyncio.wait([*clients, *fault_tasks], timeout=SETTLE_S)
        sampling_task.cancel()
        await asyncio.wait([sampling_task])
    faults.resume_all()  # first: a paused node answers no clear
    with contextlib.suppress(ApiError, Unreachable):
        await main.clear_faults()
    more = []
    if liveness_s is not None:
        show("liveness: recovering")
        more.append(await _recovery(sim, main, faults.bands, liveness_s))
    events = await all_events(main, 0)
    ops = sorted(ctx.recorder.ops, key=lambda op: (op.invoke, op.process))
    return Outcome(
        ops,
        sampler.samples,
        sampler.raw,
        faults.bands,
        events,
        sim.loop.time() - begun,
        dict(plane.source_stats) if plane.source_stats["responses"] else {},
        more,
    )


async def _recovery(
    sim: SimCluster, main: SimClient, bands: list[FaultBand], bound_s: float
) -> CheckResult:
    """The liveness check: the faults have stopped; every node not killed for good is
    started again, and within ``bound_s`` virtual seconds every container must be back
    at full resiliency and the metadata must take a write."""
    started = sim.loop.time()
    gone = {n for b in bands if b.kind == "node-kill" and b.end is None for n in b.nodes}
    for node in (n.id for n in sim.config.nodes):
        if node not in sim.nodes and node not in gone:
            await sim.restart(node)
    last = "no answer yet"
    while True:
        try:
            rf = {c["name"]: int(c.get("rf", 1)) for c in (await main.cluster())["containers"]}
            reduced = [
                c["name"]
                for c in (await main.rebuild())["containers"]
                if (c.get("reduced_resiliency_bytes") or 0) > 0
                or (c.get("resiliency") is not None and c["resiliency"] < rf.get(c["name"], 1) - 1)
            ]
            if not reduced:
                await main.kv_put("liveness/probe", round(sim.loop.time(), 3))
                took = sim.loop.time() - started
                detail = (
                    f"full resiliency and a metadata write {took:.1f} s after the faults "
                    f"stopped (at most {bound_s:g} s)"
                )
                return CheckResult("liveness", "pass", detail)
            last = "at reduced resiliency: " + ", ".join(reduced)
        except (ApiError, Unreachable) as exc:
            last = str(exc)
        if sim.loop.time() - started >= bound_s:
            detail = f"not recovered {bound_s:g} s after the faults stopped: {last}"
            return CheckResult("liveness", "fail", detail)
        await sim.clock.sleep(1.0)
