"""``fabric run SCENARIO.toml [--seed N] [-o DIR] [--dir CLUSTER]``: one experiment.

The phases, in order (the progress line names them):

1. *cluster*: a cluster config rendered from the scenario's ``[cluster]`` on free
   loopback ports, started with ``fabric up`` into ``DIR/cluster`` — or, with ``--dir``,
   the running cluster there (the runner leaves it as it found it, faults cleared and
   killed nodes started again);
2. *setup*: the scenario's containers, the writers' vdisks, the local HTTP server the
   image imports read from (127.0.0.1 only; the rendered config allows it);
3. *load*: ``duration_s`` of workloads while the fault schedule (``fabric.scenario.
   schedule``) is applied and the sampler watches the cluster; the run's clock starts
   here, and every time in the outputs counts from it;
4. *collect*: faults cleared, the event log fetched, the cluster stopped (if ours);
5. *report*: the checkers judge the history, and every file is written.

The exit code is 0 when every check passed (skipped ones do not count), 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

from fabric import limits, timeline
from fabric.config import (
    TIMINGS,
    ClusterConfig,
    default_config_text,
    load_config,
    parse_config,
    render_config,
    sized_config,
)
from fabric.history import Op
from fabric.scenario import Scenario, ScenarioError, load_scenario, scaled, schedule
from fabric.timeline import Sample
from shell.client import ApiError, FabricClient
from shell.experiment import report, verdicts
from shell.experiment.api import ClusterApi
from shell.experiment.faults import FaultApplier
from shell.experiment.sampler import Sampler
from shell.experiment.workloads import Context, Recorder, RunClock, run_client, setup
from shell.launcher import ClusterDir, down, up, write_private

IMPORT_ALLOW = "127.0.0.1/32"
SETTLE_S = 5.0
"""How long cancelled clients may take to hand back their last operations."""


class Progress:
    """One line: the phase and the time left; plain lines (every few seconds) when the
    output is not a terminal."""

    def __init__(self, stream: Any = None, prefix: str = "[fabric run]") -> None:
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.phase = ""
        self.last_plain = -1e9

    def __call__(self, phase: str, left_s: float | None = None, note: str = "") -> None:
        text = f"{self.prefix} {phase}" + (f", {left_s:.0f} s left" if left_s is not None else "")
        text += f" {note}" if note else ""
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            if phase != self.phase and self.phase:
                pass
            self.stream.flush()
        elif phase != self.phase or time.monotonic() - self.last_plain >= 5:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_plain = time.monotonic()
        self.phase = phase

    def say(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cluster_config(scenario: Scenario) -> ClusterConfig:
    """The config of the cluster the scenario asks for, on free loopback ports."""
    cfg = scenario_config(scenario)
    ports = free_ports(len(cfg.nodes))
    return replace(
        cfg, nodes=tuple(replace(n, port=p) for n, p in zip(cfg.nodes, ports, strict=True))
    )


def scenario_config(scenario: Scenario) -> ClusterConfig:
    """The config of the cluster the scenario asks for, on the ports it names (``fabric
    sim`` runs it as it is: its network needs no ports)."""
    spec = scenario.cluster
    if spec.config:
        base_dir = os.path.dirname(os.path.abspath(scenario.origin))
        cfg = load_config(os.path.join(base_dir, spec.config))
    else:
        cfg = sized_config(parse_config(default_config_text()), spec.nodes)
        racks = spec.racks if spec.racks > 1 else 0
        nodes = tuple(
            replace(n, labels={"rack": f"r{i % racks + 1}"} if racks else {})
            for i, n in enumerate(cfg.nodes)
        )
        cfg = replace(
            cfg,
            name=f"run-{scenario.name}"[:40],
            nodes=nodes,
            voters=tuple(n.id for n in nodes[: spec.voters]),
            extent_bytes=spec.extent_bytes,
            fault_domain="rack" if racks else "node",
        )
    cfg = replace(cfg, id="")
    if spec.timing != "default":
        cfg = replace(cfg, timeouts=TIMINGS[spec.timing])
    if spec.down_after_ms:
        t = cfg.timeouts
        degraded = min(t.degraded_after_ms, spec.down_after_ms // 2)
        cfg = replace(
            cfg, timeouts=replace(t, down_after_ms=spec.down_after_ms, degraded_after_ms=degraded)
        )
    if spec.rebuild_delay_s >= 0:
        cfg = replace(cfg, rebuild=replace(cfg.rebuild, delay_s=spec.rebuild_delay_s))
    if spec.rebuild_bytes_per_s >= 0:
        cfg = replace(cfg, rebuild=replace(cfg.rebuild, bytes_per_s=spec.rebuild_bytes_per_s))
    if spec.scrub_cycle_s >= 0:
        cfg = replace(cfg, scrub=replace(cfg.scrub, cycle_s=spec.scrub_cycle_s))
    if spec.scrub_bytes_per_s >= 0:
        cfg = replace(cfg, scrub=replace(cfg.scrub, bytes_per_s=spec.scrub_bytes_per_s))
    if any(w.kind == "image-import" for w in scenario.workloads):
        cfg = replace(cfg, import_allow=tuple(sorted({*cfg.import_allow, IMPORT_ALLOW})))
    return cfg


@dataclass
class Outcome:
    ops: list[Op]
    samples: list[Sample]
    raw_samples: list[dict[str, Any]]
    faults: list[timeline.FaultBand]
    events: list[dict[str, Any]]
    elapsed_s: float
    source: dict[str, int]
    """What the flaky import source did (``flaky.handler``'s counts; empty: not used)."""
    more_checks: list[verdicts.CheckResult] = field(default_factory=list)
    """Checks the runner judged itself (``fabric sim --liveness``: recovery after the
    faults stopped)."""


def run(
    scenario_path: str,
    seed: int | None,
    out_dir: str | None,
    cluster_dir: str | None,
    progress: Progress | None = None,
    time_scale: float = 1.0,
) -> int:
    """Run the experiment (its schedule ``time_scale`` times as long: ``scaled``); its
    exit code (0: every check passed)."""
    started = time.monotonic()
    scenario = load_scenario(scenario_path)
    if time_scale != 1.0:
        scenario = scaled(scenario, time_scale)
    seed = scenario.seed if seed is None else seed
    if not scenario.cluster.config and scenario.cluster.nodes > limits.MAX_LOCAL_NODES:
        raise ScenarioError(
            f"{scenario_path}: {scenario.cluster.nodes} nodes; `fabric run` starts at most "
            f"{limits.MAX_LOCAL_NODES} node processes on one machine (`fabric sim` runs it)"
        )
    out = os.path.abspath(out_dir or os.path.join("fabric-runs", f"{scenario.name}-seed{seed}"))
    os.makedirs(out, exist_ok=True)
    show = progress or Progress()
    ours = cluster_dir is None
    root = os.path.join(out, "cluster") if ours else os.path.abspath(str(cluster_dir))
    if ours:
        if ClusterDir(root).exists():
            raise FileExistsError(f"{root} holds a cluster already: choose another -o DIR")
        cfg = cluster_config(scenario)
        config_path = os.path.join(out, "cluster-config.toml")
        write_private(config_path, render_config(cfg))
        show("starting the cluster")
        up(root, config_path, None, say=show.say)
    cdir = ClusterDir(root)
    cfg = cdir.config()
    try:
        outcome = asyncio.run(_experiment(scenario, seed, out, cdir, cfg, ours, show))
    finally:
        if ours:
            show("stopping the cluster")
            down(root, say=lambda _: None)
    show("judging the history")
    summary = finish(out, scenario, seed, outcome, cfg, time.monotonic() - started)
    show.done()
    print_verdict(scenario, seed, summary, out)
    return 0 if summary["passed"] else 1


def finish(
    out: str,
    scenario: Scenario,
    seed: int,
    outcome: Outcome,
    cfg: ClusterConfig,
    elapsed_s: float,
    extra: dict[str, Any] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Judge the history and write every file of the report into ``out``; the summary
    (``extra``: more top-level fields for it)."""
    checks = verdicts.run_checks(scenario.checks.checkers, outcome.ops) + outcome.more_checks
    racks = {n.id: n.labels["rack"] for n in cfg.nodes if "rack" in n.labels}
    summary = report.summarize(
        scenario, seed, outcome.ops, outcome.samples, outcome.faults, checks, racks, elapsed_s
    )
    summary["observed"] = report.observed(
        outcome.ops, outcome.raw_samples, outcome.events, outcome.faults
    )
    if outcome.source.get("responses"):
        summary["observed"]["import_source"] = dict(outcome.source)
    summary.update(extra or {})
    rows = timeline.rows(outcome.ops, outcome.samples, outcome.faults, scenario.duration_s)
    culprits = {c.name: c.culprit for c in checks}
    culprits.update(
        {
            c.name: c.culprit
            for c in report.threshold_checks(
                scenario,
                outcome.ops,
                timeline.unavailability(outcome.ops, scenario.duration_s),
                summary["reduced_resiliency_s"],
            )
        }
    )
    report.write(out, summary, outcome.ops, outcome.events, rows, outcome.faults, culprits, plots)
    with open(os.path.join(out, "samples.jsonl"), "w") as f:
        for raw in outcome.raw_samples:
            f.write(json.dumps(raw, sort_keys=True) + "\n")
    return summary


def print_verdict(scenario: Scenario, seed: int, summary: dict[str, Any], out: str) -> None:
    ops = summary["ops"]
    print(
        f"{scenario.name} (seed {seed}): {'PASSED' if summary['passed'] else 'FAILED'}; "
        f"{ops['total']} operations ({ops['ok']} ok, {ops['fail']} failed, "
        f"{ops['unknown']} unknown); report: {os.path.join(out, 'report.md')}"
    )
    for c in summary["checks"]:
        print(f"  {c['name']}: {c['status']} - {c['detail']}")


async def _experiment(
    scenario: Scenario,
    seed: int,
    out: str,
    cdir: ClusterDir,
    cfg: ClusterConfig,
    ours: bool,
    show: Progress,
) -> Outcome:
    begun = time.monotonic()
    timeout_s = max(w.timeout_s for w in scenario.workloads) + 5
    token, ssl_context = cdir.admin_token(), cdir.ssl_context(cfg)
    urls = [n.url for n in cfg.nodes]

    def client(u: list[str], t: float = timeout_s) -> FabricClient:
        return FabricClient(u, t, cfg.id, token, ssl_context)

    workdir = os.path.join(out, "work")
    os.makedirs(workdir, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        main = await stack.enter_async_context(client(urls))
        per_node = {n.id: await stack.enter_async_context(client([n.url])) for n in cfg.nodes}
        sampling = {n.id: await stack.enter_async_context(client([n.url], 2.0)) for n in cfg.nodes}
        sample_client = await stack.enter_async_context(client(urls, 2.0))
        show("setting up")
        first_event = 0 if ours else int((await main.events(limit=1)).get("last_seq", 0))
        await create_containers(main, scenario)
        source: dict[str, int] = {}
        import_url = (
            await _import_server(stack, workdir, seed, source) if has_imports(scenario) else ""
        )
        run_id = f"s{seed}-{int(time.time()) % 100000}"
        clock = RunClock()
        ctx = Context(Recorder(clock), main, list(per_node.values()), seed, run_id, workdir)
        ctx.import_base_url = import_url
        vdisks = {w.name: await setup(ctx, w) for w in scenario.workloads}
        sampler = Sampler(sample_client, sampling, clock)
        faults = FaultApplier(
            main,
            cdir,
            cfg,
            clock,
            random.Random(f"targets:{seed}"),
            lambda: sampler.last_view,
            show.say,
        )
        clock.start()  # the run's time starts with the load
        sampling_task = asyncio.create_task(sampler.run(scenario.sample_every_s))
        clients = [
            asyncio.create_task(run_client(ctx, w, i, vdisks[w.name]))
            for w in scenario.workloads
            for i in range(w.concurrency)
        ]
        steps = schedule(scenario, seed, cfg.racks(), {n.id: list(n.disks) for n in cfg.nodes})
        fault_tasks = [asyncio.create_task(faults.run(s)) for s in steps]
        try:
            while (left := scenario.duration_s - clock.now()) > 0:
                active = sum(1 for f in faults.bands if f.end is None or f.end > clock.now())
                show("load", left, f"({len(ctx.recorder.ops)} ops, {active} faults on)")
                crashed = [t for t in clients if t.done()]
                if crashed:
                    crashed[0].result()  # a client stopped: its bug ends the run here
                await asyncio.sleep(min(1.0, left))
        finally:
            show("collecting")
            for task in [*clients, *fault_tasks]:
                task.cancel()
            await asyncio.wait([*clients, *fault_tasks], timeout=SETTLE_S)
            sampling_task.cancel()
            await asyncio.wait([sampling_task])
        with contextlib.suppress(ApiError):
            if not faults.api_missing:
                await main.clear_faults()
        faults.restore(restart_killed=not ours)
        events = await all_events(main, first_event)
        faults.reap()
    ops = sorted(ctx.recorder.ops, key=lambda op: (op.invoke, op.process))
    return Outcome(
        ops,
        sampler.samples,
        sampler.raw,
        faults.bands,
        events,
        time.monotonic() - begun,
        source,
    )


def has_imports(scenario: Scenario) -> bool:
    return any(w.kind == "image-import" for w in scenario.workloads)


async def create_containers(client: ClusterApi, scenario: Scenario) -> None:
    for c in scenario.containers:
        try:
            await client.create_container(
                c.name,
                rf=c.rf,
                ec=c.ec or None,
                ec_delay_s=c.ec_delay_s,
                dedup=c.dedup,
                compression=c.compression,
            )
        except ApiError as exc:
            if exc.status != 409:  # an existing container (--dir) is used as it is
                raise


async def _import_server(
    stack: contextlib.AsyncExitStack, workdir: str, seed: int, stats: dict[str, int]
) -> str:
    """Serve ``workdir`` on 127.0.0.1 (a free port) for the image imports; its base URL.

    ``/img/NAME`` serves a file as it is; ``/flaky/NAME?drop=P`` is the same file from a
    source that, with probability P per request, breaks the connection part way through
    the body (``flaky.serve``)."""
    from aiohttp import web

    from shell.experiment import flaky

    app = web.Application()
    app.router.add_static("/img", workdir)
    app.router.add_get(
        "/flaky/{name}", flaky.handler(workdir, random.Random(f"flaky:{seed}"), stats)
    )
    runner = web.AppRunner(app)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}"


async def all_events(client: ClusterApi, since: int) -> list[dict[str, Any]]:
    """Every event after ``since``, page by page (bounded by the event log's own size)."""
    out: list[dict[str, Any]] = []
    for _ in range(limits.EVENTS_KEPT // limits.EVENTS_PAGE + 1):
        try:
            page = await client.events(since=since, limit=limits.EVENTS_PAGE)
        except Exception as exc:  # the report is still worth writing without the events
            out.append({"error": f"events unavailable: {exc}"})
            break
        out += page["events"]
        if not page["events"] or page["last_seq"] <= since:
            break
        since = page["last_seq"]
    return out
