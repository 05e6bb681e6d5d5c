"""One run of a sweep: a scenario at one point, one seed, through one model.

``evaluate`` is what the executor ships to a worker process (local or Dask), so it is a
module-level function of plain arguments. Models are found by name in ``MODELS``; each
entry names its function as ``module:function`` and is imported only in the process that
runs it, so a worker pays for the models it runs and every process sees the same table
(a registration made at run time in the parent would not reach a spawned worker).
"""

from __future__ import annotations

import functools
import importlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fabric.scenario import Scenario, load_scenario
from fabric.sweep import Value, apply

if TYPE_CHECKING:  # a worker that only runs models need not import scipy
    from fabric.sweepstats import Kind

ModelFn = Callable[[Scenario, int], Mapping[str, float]]
"""A model: the scenario at its point and a seed -> metric name -> value (NaN: not
measured in this run)."""


@dataclass(frozen=True, slots=True)
class Model:
    target: str
    """``package.module:function``, a ``ModelFn``."""
    about: str
    kinds: Mapping[str, Kind] = field(default_factory=dict)
    """How each metric is summarized over seeds; a metric not named here is a mean."""
    keys: tuple[str, ...] = ()
    """The sweep keys it responds to (empty: all); sweeping another would give the same
    row at every value, so the sweep refuses it."""

    def function(self) -> ModelFn:
        module, _, name = self.target.partition(":")
        fn: ModelFn = getattr(importlib.import_module(module), name)
        return fn


MODELS: dict[str, Model] = {
    "placement": Model(
        "shell.sim.placement_model:run",
        "the fabric's placement of RF groups and EC stripes under the scenario's permanent "
        "node kills: data lost, resiliency reduced, repair reads, storage overhead",
        {"data_lost": "proportion"},
        ("rf", "ec", "policy", "nodes", "racks"),
    ),
    "full": Model(
        "shell.sim.runner:metrics",
        "the scenario on the simulated cluster (real node code on virtual time): checks "
        "passed, data lost, time at reduced resiliency, rebuild, repair traffic",
        {"passed": "proportion", "safety_violation": "proportion"},
        ("rf", "ec", "policy", "rebuild_rate", "rebuild_delay_s", "nodes", "racks"),
    ),
    "reliability": Model(
        "shell.sim.reliability:metrics",
        "the scenario's [failures] over a 10-year trial per seed (Monte Carlo of the "
        "layout's critical sets), with the closed form beside each figure",
        {},
        ("rf", "ec", "policy", "nodes", "racks", "node_afr"),
    ),
}
"""Sweepable models: a function of (scenario at a point, seed) -> metrics."""


class UnknownModel(ValueError):
    pass


def find_model(name: str) -> Model:
    """A model of the table, or a researcher's own as ``package.module:function`` (its
    metrics summarized as means; it must be importable on every worker)."""
    if ":" in name:
        return Model(name, "a model named by its function")
    found = MODELS.get(name)
    if found is None:
        raise UnknownModel(f"unknown model {name!r} ({', '.join(sorted(MODELS))})")
    return found


def evaluate(
    scenario_path: str, point: dict[str, Value], seed: int, model: str
) -> dict[str, float]:
    """The metrics of one run; any exception is the run's error (the sweep goes on)."""
    scenario = apply(_scenario(scenario_path, os.stat(scenario_path).st_mtime_ns), point)
    raw = find_model(model).function()(scenario, seed)
    return _checked(raw, model)


@functools.lru_cache(maxsize=8)
def _scenario(path: str, mtime_ns: int) -> Scenario:
    # A worker runs many seeds of one file: parse it once (again if the file changed).
    return load_scenario(path)


def _checked(raw: Any, model_name: str) -> dict[str, float]:
    # A model's bug must fail its run loudly, not turn into a strange column.
    if not isinstance(raw, Mapping):
        raise TypeError(f"model {model_name!r} returned {type(raw).__name__}, not a mapping")
    out: dict[str, float] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or isinstance(value, bool):
            raise TypeError(f"model {model_name!r}: metric {name!r} = {value!r}")
        number = float(value)
        if math.isinf(number):
            raise ValueError(f"model {model_name!r}: metric {name!r} is infinite")
        out[name] = number
    return out
