"""Raft membership: how a configuration is encoded, which changes are allowed, and which
configuration a log puts in force at each of its indexes.

Theory of operation
-------------------
Membership changes one server at a time (§4.1-4.4 of Ongaro's thesis). A change is a log
entry of kind ``CONFIG`` holding the *whole* new configuration (``encode``), and every
node uses the latest configuration in its log, committed or not: appending the entry puts
it in force; a new leader truncating it away puts the previous one back. Any two
configurations that differ by one voter have overlapping majorities, so a leader elected
under either one knows every entry committed under the other, provided a leader never
starts a change before the previous one is committed and before it has committed an
entry of its own term (the second rule closes the gap Ongaro found in 2015: a leader
elected under the older of two competing uncommitted changes could otherwise overwrite
an entry the other one committed).

``check_change`` holds the rules on the new configuration itself:

* it is well formed (``problem``): at least one voter (the last voter cannot be removed),
  no id twice, nobody both voter and learner;
* it differs from the current one, and in at most one voter (added, removed or demoted to
  learner); learners may come and go any number at a time, since they count in no quorum;
* a new voter must be a learner of the current configuration (add it as a learner first,
  let it catch up, then promote it), and caught up: the leader knows it holds every entry
  committed so far, so that promoting it never makes a quorum wait for a laggard.

``ConfigHistory`` is what ``RaftLog`` keeps beside its entries: the configuration in
force at the log's offset (from the snapshot, else the ``RaftConfig`` the node started
with), then one change per ``CONFIG`` entry after it. It answers "which configuration
is in force now" and "which was in force at index i" (a snapshot records the latter).
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack

from fabric import limits
from fabric.consensus.types import Membership, MembershipChangeRefused

_FORMAT = 1


def encode(m: Membership) -> bytes:
    """The ``data`` of a ``CONFIG`` entry."""
    out: bytes = msgpack.packb([_FORMAT, list(m.voters), list(m.learners)], use_bin_type=True)
    return out


def decode(data: bytes) -> Membership:
    """A ``CONFIG`` entry's configuration; ValueError if it is not a well-formed one."""
    try:
        record = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise ValueError(f"undecodable configuration: {exc}") from None
    match record:
        case [1, list(voters), list(learners)] if all(
            isinstance(i, str) for i in (*voters, *learners)
        ):
            m = Membership(tuple(voters), tuple(learners))
        case _:
            raise ValueError("not a configuration record")
    why = problem(m)
    if why is not None:
        raise ValueError(why)
    return m


def problem(m: Membership) -> str | None:
    """What makes ``m`` unusable as a configuration, or None."""
    ids = (*m.voters, *m.learners)
    if not m.voters:
        return "a configuration needs at least one voter"
    if len(m.voters) > limits.MAX_VOTERS or len(ids) > limits.MAX_NODES:
        return f"at most {limits.MAX_VOTERS} voters and {limits.MAX_NODES} members"
    if not all(isinstance(i, str) and 0 < len(i) <= limits.MAX_NODE_ID_CHARS for i in ids):
        return f"member ids are strings of 1..{limits.MAX_NODE_ID_CHARS} characters"
    if len(set(ids)) != len(ids):
        return "a member appears twice (or is both voter and learner)"
    return None


def check_change(current: Membership, new: Membership, caught_up: Callable[[str], bool]) -> None:
    """Raise ``MembershipChangeRefused`` unless going from ``current`` to ``new`` follows
    the rules in this module's docstring; ``caught_up(id)`` says whether a learner holds
    every committed entry."""
    why = problem(new)
    if why is not None:
        raise MembershipChangeRefused(why)
    if new.same_as(current):
        raise MembershipChangeRefused("the configuration is unchanged")
    added = set(new.voters) - set(current.voters)
    removed = set(current.voters) - set(new.voters)
    if len(added) + len(removed) > 1:
        raise MembershipChangeRefused(
            f"one voter at a time: this adds {sorted(added)} and removes {sorted(removed)}"
        )
    for voter in added:
        if voter not in current.learners:
            raise MembershipChangeRefused(f"add {voter} as a learner first, then promote it")
        if not caught_up(voter):
            raise MembershipChangeRefused(
                f"learner {voter} has not caught up with the commit index yet", retryable=True
            )


class ConfigHistory:
    def __init__(self, base_index: int, base: Membership) -> None:
        self._changes: list[tuple[int, Membership]] = [(base_index, base)]
        """(index, configuration) in index order; the first is in force at the log's
        offset, each later one comes from the CONFIG entry at its index."""

    @property
    def current(self) -> Membership:
        return self._changes[-1][1]

    @property
    def index(self) -> int:
        """Index of the entry that put the current configuration in force (the log's
        offset when no entry after it did)."""
        return self._changes[-1][0]

    def at(self, index: int) -> Membership:
        assert index >= self._changes[0][0], f"configuration at compacted index {index}"
        for at, m in reversed(self._changes):
            if at <= index:
                return m
        raise AssertionError("unreachable: the base is at or below every index asked")

    def append(self, index: int, m: Membership) -> None:
        assert index > self.index, f"configuration at {index} after {self.index}"
        self._changes.append((index, m))

    def truncate(self, first: int) -> None:
        """Entries from ``first`` on left the log: their configurations are no more."""
        assert first > self._changes[0][0], f"truncating the base configuration at {first}"
        while self._changes[-1][0] >= first:
            self._changes.pop()

    def compact(self, offset: int) -> None:
        """The log now starts after ``offset``: keep what was in force there as the base."""
        base = self.at(offset)
        self._changes = [(offset, base), *((i, m) for i, m in self._changes if i > offset)]

    def reset(self, offset: int, base: Membership) -> None:
        self._changes = [(offset, base)]
