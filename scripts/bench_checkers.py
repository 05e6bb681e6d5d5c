"""How long the history checkers take on histories the size of a long experiment.

    .venv/bin/python scripts/bench_checkers.py

Histories come from a real register: each client runs one operation at a time, and each
operation takes effect at a random instant inside its interval, so clients overlap as
they would against a cluster. Timed: ``check_blocks`` on 100,000 block operations over
1,000 blocks with 16 clients, and ``check_linearizable_kv`` on 1,000 kv operations (one
key, then ten) with five clients and 5% unknown outcomes; each also with one read changed
to a value never written, which the checker must reject.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace

from fabric.checkers import Verdict, check_blocks, check_linearizable_kv
from fabric.history import Op

Event = tuple[float, int, float, float, int, str, float]


def intervals(n: int, clients: int, keys: int, kinds: str, rng: random.Random) -> list[Event]:
    """(instant it takes effect, client, invoke, complete, key, kind, a draw), by instant."""
    free = [0.0] * clients
    events = []
    for i in range(n):
        c = i % clients
        invoke = free[c] + rng.random() * 0.01
        instant = invoke + rng.random() * 0.02
        free[c] = complete = instant + rng.random() * 0.02
        events.append(
            (instant, c, invoke, complete, rng.randrange(keys), rng.choice(kinds), rng.random())
        )
    return sorted(events)


def blocks_history(n: int, blocks: int, clients: int, rng: random.Random) -> list[Op]:
    state: dict[int, str] = {}
    ops = []
    for k, (_, c, invoke, complete, b, kind, _) in enumerate(
        intervals(n, clients, blocks, "rw", rng)
    ):
        if kind == "w":
            state[b] = f"d{k}"
        value = state.get(b, "zero")
        ops.append(
            Op(c, "write" if kind == "w" else "read", f"v/{b}", value, invoke, complete, "ok")
        )
    return ops


def kv_history(n: int, keys: int, clients: int, rng: random.Random) -> list[Op]:
    state: dict[int, object] = {}
    ops = []
    for k, (_, c, invoke, complete, key, kind, u) in enumerate(
        intervals(n, clients, keys, "rwc", rng)
    ):
        current = state.get(key)
        outcome = "unknown" if u < 0.05 else "ok"
        name = f"k{key}"
        if kind == "r":
            ops.append(Op(c, "kv-read", name, current, invoke, complete, "ok"))
        elif kind == "w":
            state[key] = k
            ops.append(Op(c, "kv-write", name, k, invoke, complete, outcome))
        elif u < 0.7:
            state[key] = k
            ops.append(Op(c, "kv-cas", name, [current, k], invoke, complete, outcome))
        else:
            ops.append(Op(c, "kv-cas", name, [-1, k], invoke, complete, "fail"))
    return ops


def with_wrong_read(ops: list[Op], kind: str) -> list[Op]:
    i = next(i for i in range(len(ops) // 2, len(ops)) if ops[i].kind == kind)
    return [*ops[:i], replace(ops[i], value="never written"), *ops[i + 1 :]]


def timed(what: str, check: Callable[[list[Op]], Verdict], ops: list[Op]) -> None:
    start = time.perf_counter()
    verdict = check(ops)
    took = time.perf_counter() - start
    states = verdict.stats.get("states_explored")
    extra = f", {states} states" if states is not None else ""
    print(f"{what:62s} {took:6.2f} s  ok={verdict.ok}{extra}")


def main() -> None:
    ops = blocks_history(100_000, 1000, 16, random.Random(1))
    timed("check_blocks: 100k ops, 1k blocks, 16 clients", check_blocks, ops)
    timed("  ... one read of a value never written", check_blocks, with_wrong_read(ops, "read"))
    for keys in (1, 10):
        ops = kv_history(1000, keys, 5, random.Random(2))
        what = f"check_linearizable_kv: 1k ops, {keys} keys, 5 clients, 5% unknown"
        timed(what, check_linearizable_kv, ops)
        timed(
            "  ... one read of a value never written",
            check_linearizable_kv,
            with_wrong_read(ops, "kv-read"),
        )


if __name__ == "__main__":
    main()
