"""The kv checker: is the history of ``kv-read``, ``kv-write`` and ``kv-cas`` operations
linearizable?

Theory of operation
-------------------
Linearizability is compositional (Herlihy and Wing's locality), so each key is checked
on its own, as a register whose value starts absent (``None``). For one key the search
is Wing and Gong's, with Lowe's memoization, as Porcupine and Knossos do it: build a
linearization one operation at a time, always choosing among the *minimal* operations
(those invoked before every not-yet-linearized ok operation completed), apply the
chosen one to the register model, and backtrack when nothing fits. A configuration —
the set of operations linearized and the register's value — that was reached once is
never explored again: whatever order led there, the future is the same.

What each outcome means for the search:

* ``ok``: the operation took effect, once, between its invoke and its completion; the
  search succeeds when every ok operation is linearized;
* ``fail``: it took no effect (a refused CAS, a 4xx) and is left out;
* ``unknown``: it may have taken effect at any time after its invoke, or never: it may
  be linearized anywhere after its invoke (its completion is open) or left out. An
  unknown read observed nothing and is left out; an unknown CAS can only take effect
  where its expected value is the register's; an unknown write or CAS whose value
  nothing observes is left out before the search (``_unobserved_dropped`` says why).

The search is bounded (``limits.LINEARIZABILITY_MAX_STATES`` over all keys): past it the
verdict is "unknown: search too large". When a key has no linearization, the culprit is
the operation the longest partial linearization could not place: the ok operation that
completed first among those left.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fabric import limits
from fabric.checkers.verdict import Verdict
from fabric.history import Op

KINDS = ("kv-read", "kv-write", "kv-cas")
_ABSENT = "null"
"""The canonical form of an absent key (read as ``None``)."""


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Call:
    """One operation as the search sees it: values in canonical JSON, so they compare
    and hash whatever their type."""

    op: Op
    kind: str
    arg: str
    """read: the value read; write: the value written; cas: the expected value."""
    new: str
    """cas: the value written."""
    invoke: float
    complete: float
    """math.inf for an unknown operation: it may take effect at any later time."""
    must: bool
    """An ok operation (must be linearized); else unknown (may be)."""


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _calls(ops: list[Op]) -> dict[str, list[_Call]]:
    keys: dict[str, list[_Call]] = defaultdict(list)
    for op in ops:
        if op.kind not in KINDS or op.outcome == "fail":
            continue
        if op.kind == "kv-read" and op.outcome != "ok":
            continue
        must = op.outcome == "ok"
        complete = op.complete if must else math.inf
        if op.kind == "kv-cas":
            expected, new = op.value
            call = _Call(op, "cas", _canon(expected), _canon(new), op.invoke, complete, must)
        else:
            kind = "read" if op.kind == "kv-read" else "write"
            call = _Call(op, kind, _canon(op.value), "", op.invoke, complete, must)
        keys[op.key].append(call)
    for key, calls in keys.items():
        keys[key] = sorted(_unobserved_dropped(calls), key=lambda c: (c.invoke, c.complete))
    return keys


def _unobserved_dropped(calls: list[_Call]) -> list[_Call]:
    """Leave out the unknown writes and CASes whose value no operation observes.

    Such an operation may as well never have happened: wherever it could be linearized,
    the next operation to take effect after it cannot be a read (none returns its value)
    or a CAS (none expects it), so it is a write that hides it, and the linearization
    without it is one too. Each unknown operation left in doubles the orders to try, so
    this is what keeps a history with timeouts checkable."""
    observed = {c.arg for c in calls if c.kind in ("read", "cas")}
    return [c for c in calls if c.must or c.kind == "read" or _written(c) in observed]


def _written(call: _Call) -> str:
    return call.new if call.kind == "cas" else call.arg


def _step(state: str, call: _Call) -> str | None:
    """The register's value after ``call``, or None if ``call`` cannot happen now."""
    if call.kind == "read":
        return state if call.arg == state else None
    if call.kind == "write":
        return call.arg
    return call.new if call.arg == state else None


@dataclass
class _KeyResult:
    ok: bool
    explored: int
    culprit: Op | None = None


def _check_key(calls: list[_Call], budget: int) -> _KeyResult:
    """Search one key's linearizations; raise ``_TooLarge`` past ``budget`` states."""
    n = len(calls)
    must_total = sum(c.must for c in calls)
    done = bytearray(n)
    mask = 0
    state = _ABSENT
    linearized_must = 0
    seen: set[tuple[int, str]] = set()
    explored = 0
    deepest, culprit = -1, None
    # Each frame: (call index, state before it, the candidates it was chosen from, the
    # position of the next candidate to try after it).
    stack: list[tuple[int, str, list[int], int]] = []
    candidates, pos = _minimal(calls, done), 0
    while linearized_must < must_total:
        advanced = False
        while pos < len(candidates):
            i = candidates[pos]
            pos += 1
            after = _step(state, calls[i])
            if after is None:
                continue
            key = (mask | 1 << i, after)
            if key in seen:
                continue
            seen.add(key)
            explored += 1
            if explored > budget:
                raise _TooLarge
            stack.append((i, state, candidates, pos))
            done[i] = 1
            mask, state = key
            linearized_must += calls[i].must
            candidates, pos = _minimal(calls, done), 0
            advanced = True
            break
        if advanced:
            continue
        if linearized_must > deepest:
            deepest, culprit = linearized_must, _blocking(calls, done)
        if not stack:
            return _KeyResult(False, explored, culprit)
        i, state, candidates, pos = stack.pop()
        done[i] = 0
        mask ^= 1 << i
        linearized_must -= calls[i].must
    return _KeyResult(True, explored)


def _minimal(calls: list[_Call], done: bytearray) -> list[int]:
    """The operations that may be linearized next: not yet linearized, and invoked no
    later than the earliest completion among the ok operations not yet linearized.

    ``calls`` is sorted by invoke, so the scan stops at the first operation invoked after
    that completion (whose own completion is later still)."""
    out = []
    horizon = math.inf
    for i, c in enumerate(calls):
        if done[i]:
            continue
        if c.invoke > horizon:
            break
        out.append(i)
        if c.complete < horizon:
            horizon = c.complete
    return out


def _blocking(calls: list[_Call], done: bytearray) -> Op | None:
    left = [c for i, c in enumerate(calls) if not done[i] and c.must]
    return min(left, key=lambda c: (c.complete, c.invoke)).op if left else None


def check_linearizable_kv(
    ops: list[Op], max_states: int = limits.LINEARIZABILITY_MAX_STATES
) -> Verdict:
    """Judge the kv operations of ``ops`` (other kinds are ignored)."""
    keys = _calls(ops)
    counted = sum(1 for op in ops if op.kind in KINDS)
    searched = sum(len(c) for c in keys.values())
    stats: dict[str, Any] = {
        "ops": counted,
        "searched": searched,
        "keys": len(keys),
        "states_explored": 0,
    }
    name = "linearizable-kv"
    failures: list[tuple[str, _KeyResult]] = []
    for key in sorted(keys):
        try:
            result = _check_key(keys[key], max_states - stats["states_explored"])
        except _TooLarge:
            stats["states_explored"] = max_states
            stats["valid"] = "unknown"
            detail = (
                f"unknown: search too large (more than {max_states} states by key {key!r}); "
                "no violation found before it"
            )
            culprit = failures[0][1].culprit if failures else None
            if failures:
                stats["valid"] = False
                detail = _violation(failures) + "; the search stopped before the last keys"
            return Verdict(False, name, detail, culprit, stats)
        stats["states_explored"] += result.explored
        if not result.ok:
            failures.append((key, result))
    stats["valid"] = not failures
    stats["keys_not_linearizable"] = [k for k, _ in failures]
    if failures:
        return Verdict(False, name, _violation(failures), failures[0][1].culprit, stats)
    detail = f"{counted} operations on {len(keys)} keys are linearizable"
    return Verdict(True, name, detail, None, stats)


def _violation(failures: list[tuple[str, _KeyResult]]) -> str:
    key, result = failures[0]
    op = result.culprit
    what = (
        f"{op.kind} {op.value!r} by process {op.process} at [{op.invoke:.3f}, {op.complete:.3f}]"
        if op
        else "an operation"
    )
    others = f" (and {len(failures) - 1} more keys)" if len(failures) > 1 else ""
    return f"not linearizable: key {key!r}: no order of the operations fits {what}{others}"
