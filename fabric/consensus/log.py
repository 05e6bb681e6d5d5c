"""The Raft log of one node: a snapshot, the entries after it, and four cursors.

Theory of operation
-------------------
Indexes start at 1; index 0 with term 0 is the empty prefix every log shares. The log
holds the entries ``offset+1 .. last_index`` in memory. ``offset`` is the newest index
whose term is still known without its entry (``offset_term``): the snapshot index, or a
little below it when a leader kept a short tail for a slightly lagging follower.
Everything at or below the snapshot index is in ``snapshot``.

Four cursors move forward through the log, and this order always holds once the driver
has taken a ``Ready``::

    applied <= commit <= stable <= last_index

* ``stable``: entries up to here were handed out for persistence (``take_unstable``).
  A follower that truncates a conflicting suffix moves it back.
* ``commit``: known committed; never decreases, never truncated.
* ``applied``: handed out to the state machine (``take_committed``).

Between a ``step`` and the next ``ready`` a follower may hold ``commit > stable`` (it
learnt both the entries and the commit from one message); ``ready`` hands out the
entries before the committed ones, and persistence precedes apply, so that is safe.

Log terms never decrease along the index, which lets ``reject_hint`` bisect.

The log also keeps which configuration each of its parts puts in force
(``ConfigHistory``, see ``membership.py``): every change to the entries (an append, a
truncated suffix, a restored or compacted snapshot) updates it in the same step, so
``membership`` is always the latest configuration in the log, committed or not.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from operator import attrgetter

from fabric.consensus import membership
from fabric.consensus.membership import ConfigHistory
from fabric.consensus.types import Entry, EntryKind, Membership, Restored, Snapshot

_term_of = attrgetter("term")


class RaftLog:
    def __init__(self, restored: Restored, initial: Membership) -> None:
        """``initial``: the configuration in force before any entry, used where no
        snapshot says otherwise (a snapshot written before memberships were recorded)."""
        snap = restored.snapshot
        self.snapshot: Snapshot | None = snap
        self.offset = snap.index if snap else 0
        self.offset_term = snap.term if snap else 0
        self._initial = initial
        self._entries: list[Entry] = [e for e in restored.entries if e.index > self.offset]
        self._check_contiguous(self._entries, self.offset)
        self._drop_stale_suffix()
        self._configs = ConfigHistory(self.offset, self._snapshot_membership(snap))
        for e in self._entries:
            self._note_config(e)
        self.commit = max(restored.hard_state.commit, self.offset)
        if self.commit > self.last_index:
            raise ValueError(f"restored commit {self.commit} beyond last index {self.last_index}")
        self.applied = self.offset
        """The driver's state machine starts from the snapshot."""
        self.stable = self.last_index
        self._pending_snapshot: Snapshot | None = None

    @staticmethod
    def _check_contiguous(entries: Sequence[Entry], offset: int) -> None:
        for k, e in enumerate(entries):
            if e.index != offset + 1 + k:
                raise ValueError(f"restored entries not contiguous at index {e.index}")

    def _drop_stale_suffix(self) -> None:
        """A driver that installed a leader's snapshot may still hold the entries after
        its index that our old, divergent log had (``Ready`` only replaces the log up to
        the snapshot). Where terms go backwards such entries begin; none is committed."""
        term = self.offset_term
        for k, e in enumerate(self._entries):
            if e.term < term:
                del self._entries[k:]
                return
            term = e.term

    def _snapshot_membership(self, snap: Snapshot | None) -> Membership:
        if snap is None or snap.membership is None:
            return self._initial
        return snap.membership

    def _note_config(self, entry: Entry) -> None:
        if entry.kind is EntryKind.CONFIG:
            try:
                m = membership.decode(entry.data)
            except ValueError as exc:
                # Entries reach the log checked (``Raft`` drops an append carrying a bad
                # one; the WAL refuses to load one): this one came in some other way.
                raise ValueError(f"configuration entry {entry.index}: {exc}") from None
            self._configs.append(entry.index, m)

    # -- reading ---------------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        """The latest configuration in the log, committed or not: the one in force."""
        return self._configs.current

    @property
    def membership_index(self) -> int:
        """Index of the entry that put ``membership`` in force (at most the offset if
        no entry in memory did: then it is committed)."""
        return self._configs.index

    def membership_at(self, index: int) -> Membership:
        """The configuration in force at ``index`` (offset <= index <= last_index)."""
        assert index <= self.last_index, f"configuration beyond the log at {index}"
        return self._configs.at(index)

    @property
    def last_index(self) -> int:
        return self.offset + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.offset_term

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    def term_at(self, index: int) -> int | None:
        """The term of ``index``, or None when it is compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        if self.offset < index <= self.last_index:
            return self._entries[index - self.offset - 1].term
        return None

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log at least as up to date as ours."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def slice(self, lo: int, max_count: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from ``lo`` (> offset): at most ``max_count`` and about ``max_bytes``,
        but at least one if there is one (a big entry must still make progress)."""
        assert lo > self.offset, f"slice from compacted index {lo}"
        start = lo - self.offset - 1
        batch = self._entries[start : start + max_count]
        size = 0
        for k, e in enumerate(batch):
            size += len(e.data)
            if size > max_bytes and k > 0:
                return tuple(batch[:k])
        return tuple(batch)

    def entries_between(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo .. hi`` inclusive; all must be in memory."""
        assert lo > self.offset or lo > hi, f"entries from compacted index {lo}"
        return self._entries[lo - self.offset - 1 : hi - self.offset]

    def reject_hint(self, prev_index: int) -> int:
        """Where the leader should probe next after ``prev_index`` did not match: just past
        our end, or the first index of our conflicting term (never a committed index)."""
        if prev_index > self.last_index:
            return self.last_index + 1
        term = self.term_at(prev_index)
        assert term is not None, f"hint for compacted index {prev_index}"
        first = self.offset + 1 + bisect_left(self._entries, term, key=_term_of)
        return max(self.commit + 1, min(first, prev_index))

    # -- writing ---------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """A leader's own new entry."""
        assert entry.index == self.last_index + 1, f"append {entry.index} after {self.last_index}"
        assert entry.term >= self.last_term, f"term {entry.term} after {self.last_term}"
        self._entries.append(entry)
        self._note_config(entry)

    def try_append(self, prev_index: int, prev_term: int, entries: Sequence[Entry]) -> int | None:
        """A follower's append: the highest index now known to match the leader, or None
        when our log does not contain ``(prev_index, prev_term)``. Entries up to the
        commit index are known to match already and are skipped."""
        if prev_index < self.commit:
            skip = self.commit - prev_index
            if skip >= len(entries):
                return self.commit
            prev_index, prev_term = self.commit, entries[skip - 1].term
            entries = entries[skip:]
        if not self.matches(prev_index, prev_term):
            return None
        self._merge(entries)
        return prev_index + len(entries)

    def _merge(self, entries: Sequence[Entry]) -> None:
        for k, e in enumerate(entries):
            ours = self.term_at(e.index)
            if ours == e.term:
                continue
            if ours is not None:
                assert e.index > self.commit, f"conflict at committed index {e.index}"
                del self._entries[e.index - self.offset - 1 :]
                self.stable = min(self.stable, e.index - 1)
                self._configs.truncate(e.index)  # the previous configuration is back
            self._entries.extend(entries[k:])
            for new in entries[k:]:
                self._note_config(new)
            return

    def commit_to(self, index: int) -> None:
        if index > self.commit:
            assert index <= self.last_index, f"commit {index} beyond last {self.last_index}"
            self.commit = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a leader's snapshot (ours does not contain it)."""
        assert snapshot.index > self.commit, f"restore {snapshot.index} <= commit {self.commit}"
        self.snapshot = self._pending_snapshot = snapshot
        self.offset, self.offset_term = snapshot.index, snapshot.term
        self._entries = []
        self.commit = self.stable = snapshot.index
        self._configs.reset(snapshot.index, self._snapshot_membership(snapshot))

    def compact(self, snapshot: Snapshot, keep_from: int) -> None:
        """The driver applied through ``snapshot.index`` and saved its state; drop entries
        up to ``keep_from`` (at most the snapshot index)."""
        assert snapshot.index <= self.applied, "compaction beyond applied"
        new_offset = max(self.offset, min(snapshot.index, keep_from))
        term = self.term_at(new_offset)
        assert term is not None
        self._entries = self._entries[new_offset - self.offset :]
        self.offset, self.offset_term = new_offset, term
        self.snapshot = snapshot
        self._configs.compact(new_offset)

    # -- handing out -----------------------------------------------------------------

    def has_pending(self) -> bool:
        return (
            self._pending_snapshot is not None
            or self.stable < self.last_index
            or self.applied < self.commit
        )

    def take_snapshot(self) -> Snapshot | None:
        snap, self._pending_snapshot = self._pending_snapshot, None
        if snap is not None:
            self.applied = snap.index
        return snap

    def take_unstable(self) -> list[Entry]:
        out = self.entries_between(self.stable + 1, self.last_index)
        self.stable = self.last_index
        return out

    def take_committed(self) -> list[Entry]:
        assert self.commit <= self.stable, f"commit {self.commit} not yet persisted"
        out = self.entries_between(self.applied + 1, self.commit)
        self.applied = self.commit
        return out
