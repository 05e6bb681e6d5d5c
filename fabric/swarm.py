"""Swarm testing: a different fault mix for every seed (Groce et al., "Swarm Testing",
ISSTA 2012; FoundationDB's simulation does the same with its workloads and knobs).

One nemesis that draws every kind of fault at once tends to mask bugs: a partition that
would expose a stale read is cut short by the node kill that follows it. A swarm run
instead draws, per seed, *which* kinds take part (each with probability one half, one
at least), how often faults come, how long they last, which targets they pick and
whether the BUGGIFY points are on. Across a thousand seeds every combination gets
its turn, and each seed's mix is written into its report so a failure says what it
ran under.

Pure: a function of the seed and the kinds allowed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from fabric.scenario import NemesisSpec

TARGETS = ("one", "minority", "leader", "follower")
"""What a swarm's faults may pick (``majority`` and ``all`` stop every run's progress,
which a liveness check then blames on the mix rather than on the code)."""
INTERVAL_RANGE_S = (1.0, 30.0)
"""Mean quiet time between faults, drawn log-uniformly: from a storm to a trickle."""
DURATION_RANGE_S = (0.5, 15.0)


@dataclass(frozen=True, slots=True)
class SwarmMix:
    nemesis: NemesisSpec
    buggify: bool

    def describe(self) -> str:
        n = self.nemesis
        return (
            f"kinds {', '.join(n.kinds)}; targets {', '.join(t['select'] for t in n.targets)}; "
            f"a fault every {n.mean_interval_s:.1f} s on average for {n.duration_s:.1f} s; "
            f"BUGGIFY {'on' if self.buggify else 'off'}"
        )


def mix(seed: int, kinds: tuple[str, ...], start_s: float = 2.0) -> SwarmMix:
    """The fault mix of run ``seed``, drawn from ``kinds`` (the kinds the runtime can
    inject; at least one)."""
    if not kinds:
        raise ValueError("a swarm needs at least one fault kind to draw from")
    rng = random.Random(f"swarm:{seed}")
    chosen = tuple(k for k in kinds if rng.random() < 0.5) or (rng.choice(kinds),)
    targets = tuple(t for t in TARGETS if rng.random() < 0.5) or (rng.choice(TARGETS),)
    interval = _log_uniform(rng, *INTERVAL_RANGE_S)
    duration = _log_uniform(rng, *DURATION_RANGE_S)
    nemesis = NemesisSpec(
        kinds=chosen,
        mean_interval_s=round(interval, 3),
        targets=tuple({"select": t} for t in targets),
        duration_s=round(duration, 3),
        start_s=start_s,
    )
    return SwarmMix(nemesis, buggify=rng.random() < 0.5)


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))
