"""The history checkers on known histories: the classic linearizable and
non-linearizable ones, stale and wrong reads, unknown operations that must or must not
be assumed applied."""

from __future__ import annotations

from typing import Any

from fabric.checkers import check_availability, check_blocks, check_linearizable_kv
from fabric.history import Op


def op(
    process: int,
    kind: str,
    value: Any,
    invoke: float,
    complete: float,
    outcome: str = "ok",
    key: str = "k",
) -> Op:
    return Op(process, kind, key, value, invoke, complete, outcome)


def w(value: Any, invoke: float, complete: float, outcome: str = "ok", key: str = "v/0") -> Op:
    return op(0, "write", value, invoke, complete, outcome, key)


def r(value: Any, invoke: float, complete: float, key: str = "v/0") -> Op:
    return op(1, "read", value, invoke, complete, "ok", key)


# --- blocks ----------------------------------------------------------------------------------
def test_blocks_sequential_history_passes() -> None:
    ops = [r("zero", 0, 1), w("a", 2, 3), r("a", 4, 5), w("b", 6, 7), r("b", 8, 9)]
    verdict = check_blocks(ops)
    assert verdict.ok, verdict.detail
    assert verdict.stats["reads_checked"] == 3
    assert verdict.culprit is None


def test_blocks_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in ("a", "b"):
        assert check_blocks([w("a", 0, 1), w("b", 2, 5), r(seen, 3, 4)]).ok


def test_blocks_writes_that_overlapped_may_each_be_last() -> None:
    assert check_blocks([w("a", 0, 2), w("b", 1, 3), r("a", 4, 5)]).ok
    assert check_blocks([w("a", 0, 2), w("b", 1, 3), r("b", 4, 5)]).ok


def test_blocks_stale_read_is_a_lost_acknowledged_write() -> None:
    lost = w("b", 2, 3)
    verdict = check_blocks([w("a", 0, 1), lost, r("a", 4, 5)])
    assert not verdict.ok
    assert verdict.culprit == lost
    assert "acknowledged write lost on block v/0" in verdict.detail
    assert verdict.stats["lost_writes"] == 1 and verdict.stats["wrong_reads"] == 0


def test_blocks_zeros_after_an_acknowledged_write_is_a_lost_write() -> None:
    written = w("a", 0, 1)
    verdict = check_blocks([written, r("zero", 2, 3)])
    assert not verdict.ok and verdict.culprit == written
    assert check_blocks([written, r("zeros!", 2, 3)], initial="zeros!").culprit == written


def test_blocks_unknown_write_may_land_at_any_later_time() -> None:
    ops = [w("a", 0, 1), w("b", 2, 3, "unknown"), r("a", 4, 5), r("b", 10, 11)]
    assert check_blocks(ops).ok


def test_blocks_value_never_written_is_a_wrong_read() -> None:
    bad = r("x", 2, 3)
    verdict = check_blocks([w("a", 0, 1), bad])
    assert not verdict.ok and verdict.culprit == bad
    assert verdict.detail.startswith("wrong read of block v/0")


def test_blocks_value_from_the_future_or_a_failed_write_is_a_wrong_read() -> None:
    future = r("b", 2, 3)
    assert check_blocks([w("a", 0, 1), future, w("b", 4, 5)]).culprit == future
    failed = r("b", 4, 5)
    assert check_blocks([w("a", 0, 1), w("b", 2, 3, "fail"), failed]).culprit == failed


def test_blocks_are_independent_and_the_first_anomaly_is_named() -> None:
    first = w("a", 0, 1, key="v/1")
    ops = [first, r("zero", 2, 3, key="v/1"), w("b", 0, 1), r("x", 5, 6), r("zero", 0, 1, "v/2")]
    verdict = check_blocks(ops)
    assert verdict.culprit == first
    assert verdict.stats["blocks"] == 3
    assert verdict.stats["lost_writes"] == 1 and verdict.stats["wrong_reads"] == 1
    assert [a["kind"] for a in verdict.stats["anomalies"]] == ["lost-write", "wrong-read"]


def test_blocks_ignores_other_kinds_and_unanswered_reads() -> None:
    ops = [w("a", 0, 1), op(1, "read", None, 2, 3, "unknown", "v/0"), op(2, "kv-read", 1, 0, 1)]
    assert check_blocks(ops).ok


# --- kv linearizability ----------------------------------------------------------------------
def kw(value: Any, invoke: float, complete: float, outcome: str = "ok", p: int = 0) -> Op:
    return op(p, "kv-write", value, invoke, complete, outcome)


def kr(value: Any, invoke: float, complete: float, p: int = 1) -> Op:
    return op(p, "kv-read", value, invoke, complete)


def cas(old: Any, new: Any, invoke: float, complete: float, outcome: str = "ok", p: int = 2) -> Op:
    return op(p, "kv-cas", [old, new], invoke, complete, outcome)


def test_kv_empty_and_sequential_histories_are_linearizable() -> None:
    assert check_linearizable_kv([]).ok
    ops = [kr(None, 0, 1), kw(1, 2, 3), kr(1, 4, 5), cas(1, 2, 6, 7), kr(2, 8, 9)]
    verdict = check_linearizable_kv(ops)
    assert verdict.ok, verdict.detail
    assert verdict.stats["ops"] == 5 and verdict.stats["keys"] == 1
    assert verdict.stats["states_explored"] >= 5


def test_kv_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    stale = kr(1, 4, 5)
    verdict = check_linearizable_kv([kw(1, 0, 1), kw(2, 2, 3), stale])
    assert not verdict.ok and verdict.stats["valid"] is False
    assert verdict.culprit == stale
    assert "not linearizable: key 'k'" in verdict.detail


def test_kv_lost_update_two_cas_from_the_same_value_both_succeed() -> None:
    verdict = check_linearizable_kv([kw(0, 0, 1), cas(0, 1, 2, 4, p=2), cas(0, 2, 3, 5, p=3)])
    assert not verdict.ok
    assert verdict.culprit is not None and verdict.culprit.kind == "kv-cas"


def test_kv_concurrent_operations_that_can_be_ordered() -> None:
    # A long write; a read during it sees the old value, a later one the new.
    assert check_linearizable_kv([kw(1, 0, 10), kr(None, 1, 2), kr(1, 3, 4)]).ok
    # Two concurrent writes read back in either order by overlapping reads.
    ops = [kw(1, 0, 5, p=0), kw(2, 0, 5, p=1), kr(2, 1, 6, p=2), kr(1, 6.5, 7, p=3)]
    assert check_linearizable_kv(ops).ok
    # ...but once the new value was seen, a later read cannot go back.
    back = kr(None, 3, 4)
    verdict = check_linearizable_kv([kw(1, 0, 10), kr(1, 1, 2), back])
    assert not verdict.ok and verdict.culprit == back


def test_kv_unknown_write_must_be_assumed_applied_when_it_is_read() -> None:
    ops = [kw(1, 0, 1), kw(2, 2, 3, "unknown"), kr(1, 4, 5), kr(2, 10, 11)]
    assert check_linearizable_kv(ops).ok  # it landed late


def test_kv_unknown_write_must_not_be_assumed_applied_twice() -> None:
    # Seen, then overwritten, then seen again: an unknown write takes effect once.
    again = kr(2, 8, 9)
    ops = [kw(1, 0, 1), kw(2, 2, 3, "unknown"), kr(2, 4, 5), kw(3, 6, 7), again]
    verdict = check_linearizable_kv(ops)
    assert not verdict.ok and verdict.culprit == again


def test_kv_unknown_write_cannot_take_effect_before_its_invoke() -> None:
    early = kr(2, 0, 1)
    verdict = check_linearizable_kv([early, kw(2, 2, 3, "unknown")])
    assert not verdict.ok and verdict.culprit == early


def test_kv_unknown_cas_applies_only_where_its_expected_value_is() -> None:
    assert check_linearizable_kv([kw(0, 0, 1), cas(0, 1, 2, 3, "unknown"), kr(1, 5, 6)]).ok
    assert check_linearizable_kv([kw(0, 0, 1), cas(0, 1, 2, 3, "unknown"), kr(0, 5, 6)]).ok
    ops = [kw(5, 0, 1), cas(0, 1, 2, 3, "unknown"), kr(1, 5, 6)]
    assert not check_linearizable_kv(ops).ok


def test_kv_failed_cas_took_no_effect_and_unknown_reads_say_nothing() -> None:
    assert not check_linearizable_kv([kw(0, 0, 1), cas(0, 1, 2, 3, "fail"), kr(1, 4, 5)]).ok
    unknown_read = op(1, "kv-read", 42, 2, 3, "unknown")
    assert check_linearizable_kv([kw(0, 0, 1), unknown_read, kr(0, 4, 5)]).ok


def test_kv_keys_are_checked_apart_and_values_may_be_any_json() -> None:
    ops = [
        op(0, "kv-write", {"b": [1, 2], "a": 1}, 0, 1, key="x"),
        op(1, "kv-read", {"a": 1, "b": [1, 2]}, 2, 3, key="x"),
        op(0, "kv-write", 1, 0, 1, key="y"),
        op(1, "kv-read", None, 2, 3, key="y"),
    ]
    verdict = check_linearizable_kv(ops)
    assert not verdict.ok
    assert verdict.stats["keys"] == 2 and verdict.stats["keys_not_linearizable"] == ["y"]


def test_kv_search_past_its_bound_says_unknown() -> None:
    def history(n: int) -> list[Op]:
        # n concurrent unknown writes, each value read by a concurrent read, then a read
        # of a value none wrote: every subset and order must be tried before saying no.
        writes = [kw(i, 0, 1, "unknown", p=i) for i in range(n)]
        reads = [kr(i, 0, 1, p=n + i) for i in range(n)]
        return [*writes, *reads, kr(99, 2, 3)]

    verdict = check_linearizable_kv(history(10), max_states=100)
    assert not verdict.ok
    assert verdict.stats["valid"] == "unknown"
    assert verdict.detail.startswith("unknown: search too large")
    small = check_linearizable_kv(history(3))  # within the default bound it finishes
    assert not small.ok and small.stats["valid"] is False


def test_kv_unknown_writes_nobody_observed_are_left_out() -> None:
    ops = [kw(i, 0, 1, "unknown", p=i) for i in range(40)] + [kr(None, 2, 3)]
    verdict = check_linearizable_kv(ops)
    assert verdict.ok and verdict.stats["searched"] == 1


# --- availability ----------------------------------------------------------------------------
def test_availability_windows_need_ops_in_flight_and_no_ok_answer() -> None:
    steady = [kw(i, i * 0.5, i * 0.5 + 0.1) for i in range(20)]
    assert check_availability(steady).ok
    idle = [kw(0, 0, 0.1), kw(1, 5, 5.1)]  # nobody asked in between: not unavailable
    assert check_availability(idle).ok
    stalled = [kw(0, 0, 0.1), kw(1, 1, 3, "unknown"), kw(2, 3, 4.5, "fail"), kw(3, 4.6, 4.7)]
    verdict = check_availability(stalled, window_s=1.0)
    assert not verdict.ok
    assert verdict.stats["windows"] == [[1.0, 4.5]]  # idle from 4.5 to 4.6
    assert verdict.stats["unavailable_s"] == 3.5
    assert verdict.culprit == stalled[1]
