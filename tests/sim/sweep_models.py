"""Models for the sweep tests, named by ``module:function`` as a researcher's own would be."""

from __future__ import annotations

from fabric.scenario import Scenario


def flaky(scenario: Scenario, seed: int) -> dict[str, float]:
    """A model that breaks on seed 2: the sweep must record it and go on."""
    if seed == 2:
        raise RuntimeError(f"broken on purpose at seed {seed}")
    return {"rf": float(scenario.containers[0].rf), "seed": float(seed)}


def crash(scenario: Scenario, seed: int) -> dict[str, float]:
    """A model whose run at seed 2 ends its worker process, as a segfault or the OOM
    killer would."""
    if seed == 2:
        import os

        os._exit(3)
    return {"seed": float(seed)}
