"""The quiet clock that decides when extent groups are idle (seal) or cold (EC)."""

from __future__ import annotations

from nodes.services.quiet import QuietClock


def test_quiet_time_restarts_when_the_version_moves() -> None:
    q = QuietClock()
    assert q.quiet_for("eg1", 5, now=10.0) == 0.0
    assert q.quiet_for("eg1", 5, now=13.5) == 3.5
    assert q.quiet_for("eg1", 6, now=14.0) == 0.0  # written again
    assert q.quiet_for("eg1", 6, now=20.0) == 6.0


def test_forgotten_records_start_over_and_do_not_accumulate() -> None:
    q = QuietClock()
    q.quiet_for("a", 1, now=0.0)
    q.quiet_for("b", 1, now=0.0)
    q.keep_only(["b"])
    assert q.quiet_for("b", 1, now=5.0) == 5.0
    assert q.quiet_for("a", 1, now=5.0) == 0.0  # "a" was dropped, then seen anew
