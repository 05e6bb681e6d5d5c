"""BUGGIFY: seeded points inside the node's code where a simulated run misbehaves on purpose.

FoundationDB's idea: a fault injected at the network or disk reaches a code path only
as often as that fault happens to line up with it, so rare paths (a copy that fails
half way, a commit that lands late, an alarm that turns out false) stay untested.
A BUGGIFY point sits in such a path and, in simulation only, makes it happen.

Each run enables a point or not, once, from the seed and the point's name (so one seed
always exercises the same set, whatever order the code reaches them in); an enabled
point then fires on a fraction of its passes, drawn from the node's own seeded
generator. What a point does when it fires must be something the real system has to
survive anyway (a delay, a peer that does not answer, a read that must be checked
again): a run with BUGGIFY on still has to pass every checker.

Real nodes get ``OFF``, which never fires: nothing here changes a real process.
"""

from __future__ import annotations

import random
from collections import Counter

SITES: dict[str, tuple[str, float]] = {
    "write.slow-commit": (
        "a write's metadata commit waits after its bytes reached every replica",
        0.1,
    ),
    "write.replica-timeout": ("a replica append is reported unanswered (the writer moves on)", 0.1),
    "rebuild.pull-fails": ("a rebuild's pull of a group from its source breaks off", 0.1),
    "ec.slow-commit": (
        "an EC conversion waits between storing parity and committing the strip",
        0.3,
    ),
    "scrub.false-alarm": ("a scrubbed extent is mended from a replica though it was good", 0.05),
    "image.slow-batch": ("an image ingest batch waits before it is written", 0.5),
}
"""Every point: what it does when it fires, and the chance that an enabled point fires
each time the code passes it (higher where the code passes rarely: an image has few
batches, a conversion commits once per strip)."""

SITE_PROBABILITY = 0.5
"""The chance a point is enabled in a run (FoundationDB uses 25%; with few points, a half
gives each seed a useful mix)."""
MAX_DELAY_S = 0.5
"""The longest wait a delaying point adds (virtual seconds)."""


class Buggify:
    """One node's BUGGIFY points: ``fires(site)`` says whether to misbehave this time."""

    def __init__(self, seed: int, rng: random.Random, active: bool = True) -> None:
        self.seed = seed
        self.rng = rng
        self.active = active
        self.fired: Counter[str] = Counter()
        """How often each point fired."""
        self._enabled: dict[str, bool] = {}

    def enabled(self, site: str) -> bool:
        """Whether ``site`` may fire in this run: a function of the seed and the name."""
        if site not in SITES:
            raise KeyError(f"unknown BUGGIFY point {site!r}")
        if site not in self._enabled:
            draw = random.Random(f"buggify:{self.seed}:{site}").random()
            self._enabled[site] = self.active and draw < SITE_PROBABILITY
        return self._enabled[site]

    def fires(self, site: str) -> bool:
        if not self.active or not self.enabled(site):
            return False
        if self.rng.random() >= SITES[site][1]:
            return False
        self.fired[site] += 1
        return True

    def delay_s(self, site: str) -> float:
        """How long to wait at a delaying point: 0 unless it fires."""
        return self.rng.uniform(0.0, MAX_DELAY_S) if self.fires(site) else 0.0


OFF = Buggify(seed=0, rng=random.Random(0), active=False)
"""What every real node has: no point ever fires."""


def for_node(seed: int, node_id: str) -> Buggify:
    """A simulated node's points: enabled by the run's seed, firing on a generator of its
    own (so one node's passes do not shift another's draws)."""
    return Buggify(seed=seed, rng=random.Random(f"buggify-fire:{seed}:{node_id}"))


def fired_total(nodes: list[Buggify]) -> dict[str, int]:
    """How often each point fired, over ``nodes``, sorted by name."""
    total: Counter[str] = Counter()
    for b in nodes:
        total.update(b.fired)
    return dict(sorted(total.items()))
