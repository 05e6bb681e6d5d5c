"""Invariant checkers that any simulation harness calls after every step.

``RaftChecker`` watches a Raft group from outside, through what the nodes do (who leads
which term, which entries each node applies, which snapshots it installs), and raises
``SafetyViolation`` the moment one of Raft's safety properties (§5.2 and Figure 3 of the
Raft paper) is broken:

* election safety: at most one leader per term, and each node grants at most one vote
  per term (``observe_sent``, across restarts: a vote must be durable);
* state-machine safety: no two nodes apply different entries at one index;
* in-order apply: each node applies index after index, with no gap, except that
  installing a snapshot (or restarting from one) moves it to the snapshot index;
* leader completeness: a leader's log holds every entry known to be committed;
* optionally, state digests: every node's state machine is identical after index i.

Entries count as committed once any node applied them. The checker keeps one record per
index ever applied, so a harness should bound its run length.
"""

from __future__ import annotations

from collections.abc import Mapping

from fabric.consensus.types import Entry, Message, VoteResponse


class SafetyViolation(AssertionError):
    """A Raft safety property was broken; the message names the node, index and term."""


class RaftChecker:
    def __init__(self) -> None:
        self._leaders: dict[int, str] = {}
        """term -> the node that led it."""
        self._committed: dict[int, tuple[str, Entry]] = {}
        """index -> (first node that applied it, the entry)."""
        self._applied: dict[str, int] = {}
        """node -> the last index it applied (or its snapshot index)."""
        self._digests: dict[int, tuple[str, bytes]] = {}
        self._max_committed = 0
        self._votes: dict[tuple[str, int], str] = {}
        """(voter, term) -> the candidate it granted its vote to."""

    @property
    def committed_index(self) -> int:
        """The highest index that some node applied."""
        return self._max_committed

    def committed_entry(self, index: int) -> Entry | None:
        """The entry some node applied at ``index``, if any did."""
        known = self._committed.get(index)
        return known[1] if known else None

    def observe_leader(self, node: str, term: int) -> None:
        """Election safety: ``node`` is leader in ``term``."""
        other = self._leaders.setdefault(term, node)
        if other != node:
            raise SafetyViolation(f"two leaders in term {term}: {other} and {node}")

    def observe_sent(self, msg: Message) -> None:
        """A node sent ``msg`` (call it for every message a Ready hands out)."""
        if isinstance(msg, VoteResponse) and msg.granted and not msg.pre_vote:
            other = self._votes.setdefault((msg.frm, msg.term), msg.to)
            if other != msg.to:
                raise SafetyViolation(
                    f"{msg.frm} voted twice in term {msg.term}: for {other} and {msg.to}"
                )

    def observe_snapshot(self, node: str, index: int) -> None:
        """``node``'s state machine now starts from a snapshot at ``index`` (installed from
        a leader, or restored at restart: then call it, with 0 if there is no snapshot)."""
        self._applied[node] = index

    def observe_applied(self, node: str, entry: Entry) -> None:
        """``node`` applied ``entry`` to its state machine."""
        expected = self._applied.get(node, 0) + 1
        if entry.index != expected:
            raise SafetyViolation(
                f"{node} applied index {entry.index} (term {entry.term}), expected {expected}"
            )
        self._applied[node] = entry.index
        self._max_committed = max(self._max_committed, entry.index)
        first, known = self._committed.setdefault(entry.index, (node, entry))
        if known != entry:
            raise SafetyViolation(
                f"state-machine safety at index {entry.index}: {node} applied "
                f"{_describe(entry)}, {first} applied {_describe(known)}"
            )

    def observe_state(self, node: str, index: int, digest: bytes) -> None:
        """``node``'s state machine, having applied through ``index``, hashes to
        ``digest``; all nodes must agree at every index (snapshots included)."""
        first, known = self._digests.setdefault(index, (node, digest))
        if known != digest:
            raise SafetyViolation(
                f"state diverged at index {index}: {node} has {digest.hex()[:16]}, "
                f"{first} has {known.hex()[:16]}"
            )

    def check_leader_log(
        self, node: str, term: int, entries: Mapping[int, Entry], snapshot_index: int = 0
    ) -> None:
        """Leader completeness: the log of ``node``, leader in ``term``, holds every
        committed entry. Indexes up to ``snapshot_index`` are in its snapshot; so are
        indexes below the first key of ``entries`` (compacted)."""
        floor = max(snapshot_index, min(entries, default=snapshot_index + 1) - 1)
        for index in range(floor + 1, self.committed_index + 1):
            if index not in self._committed:
                continue  # only ever seen inside snapshots
            first, known = self._committed[index]
            ours = entries.get(index)
            if ours != known:
                have = _describe(ours) if ours else "nothing"
                raise SafetyViolation(
                    f"leader completeness: {node}, leader in term {term}, has {have} at "
                    f"committed index {index}, where {first} applied {_describe(known)}"
                )


def _describe(entry: Entry) -> str:
    return f"term {entry.term} {entry.kind.name} {entry.data[:32]!r}"
