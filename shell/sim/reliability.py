"""``fabric sim SCENARIO --model reliability``: the reliability model of a scenario.

Reads the scenario's ``[failures]`` table, its containers (each a policy: RF r, or EC
k+m) and its cluster (or a size given here: the model runs 10,000 nodes where the
cluster runs 15), runs the Monte Carlo (``fabric.reliability.model``) per container,
and writes ``summary.json`` and ``report.md`` into the output folder, with the
closed-form estimate beside every figure. Run it by hand with::

    python -m shell.sim.reliability configs/reliability/rf3-vs-ec.toml --nodes 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fabric.failures import FailureSpec
from fabric.reliability.layout import Layout, cluster, rendezvous_layout
from fabric.reliability.model import Summary, simulate
from fabric.reliability.stats import Estimate
from fabric.scenario import ContainerSpec, Scenario, ScenarioError, load_scenario

GROUPS_PER_NODE = 9
"""Members per node the model places: the scatter width a node's rebuild can use grows
with it, and so does the cost of placing (groups x nodes scores)."""


@dataclass(frozen=True)
class Policy:
    name: str
    width: int
    tolerance: int
    data_members: int

    @staticmethod
    def of(container: ContainerSpec) -> Policy:
        if container.ec:
            k, m = (int(x) for x in container.ec.split("+"))
            return Policy(f"EC {k}+{m}", k + m, m, k)
        return Policy(f"RF{container.rf}", container.rf, container.rf - 1, 1)


def run(
    scenario_path: str,
    seed: int,
    out_dir: str,
    years: float = 10.0,
    trials: int = 100,
    nodes: int | None = None,
    racks: int | None = None,
    groups_per_node: int = GROUPS_PER_NODE,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the model for every container of the scenario; 0 on success, 2 on bad input."""
    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as exc:
        echo(f"error: {exc}")
        return 2
    spec = scenario.failures
    if not spec.active:
        echo(f"error: {scenario_path}: no [failures] table with a failure rate: nothing to model")
        return 2
    n = nodes or scenario.cluster.nodes
    r = scenario.cluster.racks if racks is None else racks
    ids, rack_of = cluster(n, r)
    rows: list[dict[str, Any]] = []
    echo(HEADER)
    for container in scenario.containers:
        policy = Policy.of(container)
        domains = r if r > 1 else n
        if domains < policy.width:
            echo(f"error: {container.name}: {policy.name} needs {policy.width} fault domains")
            return 2
        started = time.perf_counter()
        layout = _layout(ids, rack_of, policy, n, groups_per_node)
        placed = time.perf_counter()
        summary = simulate(layout, spec, years, trials, seed, progress=_bar(trials, container.name))
        done = time.perf_counter()
        rows.append(
            {
                "container": container.name,
                "policy": policy.name,
                "placement_s": round(placed - started, 3),
                "model_s": round(done - placed, 3),
                **summary.as_dict(),
            }
        )
        echo(_line(container.name, policy.name, summary, done - started))
    _write(out_dir, scenario.name, seed, spec, n, r, rows)
    echo(f"wrote {os.path.join(out_dir, 'summary.json')} and report.md")
    return 0


SWEEP_YEARS = 10.0
"""What one run of a sweep is: one trial of the cluster's life over this many years (the
sweep's seeds are its trials, and its intervals are over them)."""


def metrics(scenario: Scenario, seed: int) -> dict[str, float]:
    """``fabric sim --sweep --model reliability``: one trial per container, its figures
    named ``CONTAINER.FIGURE`` (the closed form beside each as ``...closed``)."""
    spec = scenario.failures
    if not spec.active:
        raise ValueError("the reliability model needs a [failures] table with a failure rate")
    n, r = scenario.cluster.nodes, scenario.cluster.racks
    ids, rack_of = cluster(n, r)
    out: dict[str, float] = {}
    for container in scenario.containers:
        policy = Policy.of(container)
        if (r if r > 1 else n) < policy.width:
            raise ValueError(f"{container.name}: {policy.name} needs {policy.width} fault domains")
        layout = _layout(ids, rack_of, policy, n, GROUPS_PER_NODE)
        summary = simulate(layout, spec, SWEEP_YEARS, 1, seed)
        name = container.name
        out[f"{name}.loss_incidents_per_year"] = summary.loss_incidents_per_year.value
        out[f"{name}.loss_incidents_per_year.closed"] = summary.closed.loss_incidents_per_year
        out[f"{name}.groups_lost_per_year"] = summary.groups_lost_per_year.value
        out[f"{name}.bytes_lost_per_year"] = summary.bytes_lost_per_year.value
        out[f"{name}.repair_bytes_per_year"] = float(summary.repair_bytes_per_year)
    return out


def _layout(
    ids: list[str], rack_of: dict[str, str], policy: Policy, n: int, per_node: int
) -> Layout:
    groups = max(1, round(n * per_node / policy.width))
    return rendezvous_layout(
        ids, rack_of, groups, policy.width, policy.tolerance, policy.data_members
    )


def _bar(total: int, name: str) -> Callable[[int], None] | None:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=name, unit="trial", leave=False)
    return lambda done: bar.update(done - bar.n)


def _ci(e: Estimate, fmt: str = "{:.3g}") -> str:
    return f"{fmt.format(e.value)} [{fmt.format(e.low)}, {fmt.format(e.high)}]"


HEADER = (
    f"{'container':<12} {'policy':<8} {'P(loss)/yr [95% CI]':<34} {'closed':>9} "
    f"{'MTTDL yr [95% CI]':<34} {'closed':>9} {'wall s':>7}"
)


def _line(name: str, policy: str, s: Summary, wall_s: float) -> str:
    return (
        f"{name:<12} {policy:<8} {_ci(s.p_loss_per_year):<34} {s.closed.p_loss_per_year:>9.3g} "
        f"{_ci(s.mttdl_years):<34} {s.closed.mttdl_years:>9.3g} {wall_s:>7.1f}"
    )


def _write(
    out_dir: str,
    name: str,
    seed: int,
    spec: FailureSpec,
    nodes: int,
    racks: int,
    rows: list[dict[str, Any]],
) -> None:
    os.makedirs(out_dir, exist_ok=True)
    from dataclasses import asdict

    doc = {
        "scenario": name,
        "model": "reliability",
        "seed": seed,
        "nodes": nodes,
        "racks": racks,
        "failures": asdict(spec),
        "containers": rows,
    }
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(_markdown(name, seed, nodes, racks, rows))


def _markdown(name: str, seed: int, nodes: int, racks: int, rows: list[dict[str, Any]]) -> str:
    def ci(d: dict[str, float]) -> str:
        return f"{d['value']:.3g} [{d['low']:.3g}, {d['high']:.3g}]"

    lines = [
        f"# Reliability of `{name}` (seed {seed})",
        "",
        f"{nodes} nodes, {racks or 'no'} racks; Monte Carlo with 95% confidence intervals, "
        "next to the binomial per-stripe closed form (docs/RELIABILITY.md).",
        "",
        "| container | policy | trials x years | P(loss)/yr | closed | MTTDL (yr) | closed "
        "| groups lost/yr | closed | bytes at risk | closed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c = r["closed_form"]
        lines.append(
            f"| {r['container']} | {r['policy']} | {r['trials']} x {r['years']:g} "
            f"| {ci(r['p_loss_per_year'])} | {c['p_loss_per_year']:.3g} "
            f"| {ci(r['mttdl_years'])} | {c['mttdl_years']:.3g} "
            f"| {ci(r['groups_lost_per_year'])} | {c['groups_lost_per_year']:.3g} "
            f"| {ci(r['bytes_at_risk'])} | {c['bytes_at_risk']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shell.sim.reliability", description=__doc__)
    p.add_argument("scenario")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--out", default="reliability-report")
    p.add_argument("--years", type=float, default=10.0)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--nodes", type=int, default=None)
    p.add_argument("--racks", type=int, default=None)
    p.add_argument("--groups-per-node", type=int, default=GROUPS_PER_NODE)
    a = p.parse_args(argv)
    return run(a.scenario, a.seed, a.out, a.years, a.trials, a.nodes, a.racks, a.groups_per_node)


if __name__ == "__main__":
    sys.exit(main())
