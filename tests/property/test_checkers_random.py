"""The checkers against histories made by a real sequential register (hypothesis).

Each operation takes effect at a distinct instant (its linearization point) and its
interval is stretched around it at random, so the operations overlap in every way. Such a
history is linearizable by construction, whatever the overlap, and both checkers must
say so; with one ok read's value swapped for a value nobody wrote it is not, and both
must say that too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.checkers import check_blocks, check_linearizable_kv
from fabric.history import Op

NEVER_WRITTEN = "never written"


@st.composite
def register_histories(draw: st.DrawFn, kinds: tuple[str, ...], initial: Any) -> list[Op]:
    n = draw(st.integers(1, 24))
    keys = [f"v/{k}" for k in range(draw(st.integers(1, 3)))]
    prefix = "" if kinds == ("write", "read") else "kv-"
    state = dict.fromkeys(keys, initial)
    written: dict[str, list[Any]] = {k: [initial] for k in keys}
    ops: list[Op] = []
    for point in range(n):
        key = draw(st.sampled_from(keys))
        kind = draw(st.sampled_from(kinds))
        invoke = point - draw(st.integers(0, 30)) / 10
        complete = point + draw(st.integers(0, 30)) / 10
        fate = draw(st.sampled_from(("ok", "ok", "ok", "unknown", "lost")))
        if kind == "read":
            # An unknown read says nothing; it is recorded as it would be, value None.
            outcome, value = ("ok", state[key]) if fate == "ok" else ("unknown", None)
            ops.append(Op(point, prefix + "read", key, value, invoke, complete, outcome))
            continue
        new = f"{key}#{point}"
        if kind == "write":
            applies, value = fate != "lost", new
        else:
            expected = draw(st.sampled_from((state[key], *written[key])))
            applies, value = fate != "lost" and expected == state[key], [expected, new]
        if applies:
            state[key] = new
            written[key].append(new)
        outcome = "ok" if applies and fate == "ok" else "unknown" if fate != "ok" else "fail"
        ops.append(Op(point, prefix + kind, key, value, invoke, complete, outcome))
    return ops


def _swap_a_read(ops: list[Op], data: st.DataObject) -> list[Op] | None:
    reads = [i for i, o in enumerate(ops) if o.kind.endswith("read") and o.outcome == "ok"]
    if not reads:
        return None
    i = data.draw(st.sampled_from(reads))
    return [*ops[:i], replace(ops[i], value=NEVER_WRITTEN), *ops[i + 1 :]]


@settings(max_examples=400, deadline=None)
@given(register_histories(("read", "write", "cas"), None), st.data())
def test_kv_histories_of_a_register_are_linearizable(ops: list[Op], data: st.DataObject) -> None:
    verdict = check_linearizable_kv(ops)
    assert verdict.ok, verdict.detail
    swapped = _swap_a_read(ops, data)
    if swapped is not None:
        verdict = check_linearizable_kv(swapped)
        assert not verdict.ok and verdict.stats["valid"] is False, verdict.detail
        assert verdict.culprit is not None


@settings(max_examples=400, deadline=None)
@given(register_histories(("write", "read"), "zero"), st.data())
def test_block_histories_of_a_register_pass(ops: list[Op], data: st.DataObject) -> None:
    verdict = check_blocks(ops)
    assert verdict.ok, verdict.detail
    swapped = _swap_a_read(ops, data)
    if swapped is not None:
        verdict = check_blocks(swapped)
        assert not verdict.ok and verdict.stats["wrong_reads"] == 1, verdict.detail
        assert verdict.culprit is not None and verdict.culprit.value == NEVER_WRITTEN
