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
* commit durability: an entry a node counts as committed is on the disks of a majority of
  voters (a leader that pipelines its own write must not count its copy before it is
  written);
* optionally, state digests: every node's state machine is identical after index i.

Entries count as committed once any node applied them. The checker keeps one record per
index ever applied, so a harness should bound its run length.

``check_disks`` compares the bytes on the simulated disks with what metadata references
(read through ``fabric.sim.records``): every copy of an extent group in use exists on its
node and each of its extents hashes to its checksum. Files no record references (and no
open intent claims) are returned, or fail the check in strict mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fabric.consensus.types import Entry, Message, VoteResponse
from fabric.extents.codec import checksum
from fabric.sim.disk import SimDisk
from fabric.sim.records import GroupCopies, Referenced


class SafetyViolation(AssertionError):
    """A Raft safety property was broken; the message names the node, index and term."""


class DiskMismatch(AssertionError):
    """The simulated disks do not hold what metadata references."""


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

    def check_commit_durable(
        self, node: str, index: int, term: int, disks: Mapping[str, tuple[int, Mapping[int, Entry]]]
    ) -> None:
        """Commit durability: ``node`` counts ``index`` (an entry of ``term``) as committed;
        ``disks`` maps every voter to what a crash would leave of its log: its snapshot
        index and its entries after it by index. A majority must hold the entry."""
        holders = sorted(
            voter
            for voter, (snapshot_index, entries) in disks.items()
            if index <= snapshot_index or _term(entries.get(index)) == term
        )
        if len(holders) <= len(disks) // 2:
            raise SafetyViolation(
                f"commit durability: {node} counts index {index} (term {term}) as committed, "
                f"but only {holders or 'no voter'} of {sorted(disks)} have it on disk"
            )


def _term(entry: Entry | None) -> int | None:
    return None if entry is None else entry.term


def _describe(entry: Entry) -> str:
    return f"term {entry.term} {entry.kind.name} {entry.data[:32]!r}"


# --- bytes on disk against metadata ----------------------------------------------------------
MAX_PROBLEMS_SHOWN = 12
"""A failure lists this many problems in full and counts the rest."""


@dataclass(frozen=True, slots=True)
class DiskAudit:
    copies: int
    """Copies of extent groups in use that were checked."""
    extents: int
    """Extent copies whose bytes were checked against their checksum."""
    unreferenced: tuple[str, ...]
    """``node:disk:path`` of group files that no record places on that node and no open
    intent claims: garbage."""
    claimed: tuple[str, ...]
    """``node:disk:path`` of group files only an open intent accounts for (a write in
    flight, or a dead writer's, collected once the claim times out)."""


def check_disks(
    referenced: Referenced,
    disks: Mapping[str, Sequence[SimDisk]],
    file_of: Callable[[str], str],
    is_group_file: Callable[[str], bool],
    strict: bool = False,
) -> DiskAudit:
    """Check every copy that ``referenced`` places on a node of ``disks`` (node id -> its
    disks; ``file_of(egid)`` names a group's file); raise ``DiskMismatch`` listing every
    problem. Call it once a run has settled: a write or a collection in flight is not a
    problem, but the files it leaves are reported as unreferenced."""
    problems = [f"{e.key} is in {e.egid}, which has no record" for e in referenced.dangling]
    placed: set[tuple[str, str]] = set()
    copies = extents = 0
    for group in referenced.groups:
        for node in group.replicas:
            placed.add((node, file_of(group.egid)))
            if not group.in_use:
                continue
            if node not in disks:
                problems.append(f"{group.egid} has a copy on {node}, not a node of the cluster")
                continue
            copies += 1
            extents += len(group.extents)
            problems.extend(_check_copy(group, node, disks[node], file_of(group.egid)))
    claims = {(node, file_of(egid)) for egid, node in referenced.claimed}
    unplaced = [
        (f"{node}:{disk.name}:{path}", (node, path) in claims)
        for node, node_disks in sorted(disks.items())
        for disk in node_disks
        if not disk.failed
        for path in disk.files()
        if is_group_file(path) and (node, path) not in placed
    ]
    unreferenced = tuple(where for where, claimed in unplaced if not claimed)
    if strict:
        problems.extend(f"{where} is referenced by no record" for where in unreferenced)
    if problems:
        shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise DiskMismatch(f"{len(problems)} disk problem(s):\n  {shown}{tail}")
    return DiskAudit(copies, extents, unreferenced, tuple(w for w, claimed in unplaced if claimed))


def _check_copy(group: GroupCopies, node: str, disks: Sequence[SimDisk], path: str) -> list[str]:
    # A failed disk holds nothing as far as the cluster is concerned, whatever is left on it.
    found = [
        (disk, data)
        for disk in disks
        if not disk.failed and (data := disk.contents(path)) is not None
    ]
    if not found:
        return [f"{group.egid} has no file on {node}"]
    if len(found) > 1:
        return [f"{group.egid} has a file on {len(found)} disks of {node}"]
    disk, data = found[0]
    where = f"{group.egid} on {disk.name}"
    if len(data) < group.min_bytes:
        return [f"{where} is {len(data)} bytes, metadata needs {group.min_bytes}"]
    return [
        f"{where}: {e.key} at {e.offset}+{e.stored_len} does not match its checksum"
        for e in group.extents
        if checksum(data[e.offset : e.offset + e.stored_len]) != e.checksum
    ]
