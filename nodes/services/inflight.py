"""Extent groups a leader job is rewriting right now, so that no other job races it.

The EC job (converting or packing groups) and the rebuild (copying a group to a new
node) both run on the leader, and each commits a change of a group's replicas whose
precondition the other would break halfway: a rebuild copy arriving on the node where
a conversion is making its own copy of the group, say. Each job holds the groups it
works on here and skips those another job holds; the commits' own preconditions still
guard against a job of an earlier leader.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class GroupsInFlight:
    def __init__(self) -> None:
        self._held: dict[str, str] = {}

    def held_by_other(self, egid: str, job: str) -> bool:
        holder = self._held.get(egid)
        return holder is not None and holder != job

    def take(self, egid: str, job: str) -> None:
        self._held.setdefault(egid, job)

    def release(self, egid: str, job: str) -> None:
        if self._held.get(egid) == job:
            del self._held[egid]

    @contextmanager
    def hold(self, egids: Iterable[str], job: str) -> Iterator[None]:
        mine = [e for e in egids if e not in self._held]
        for egid in mine:
            self._held[egid] = job
        try:
            yield
        finally:
            for egid in mine:
                self._held.pop(egid, None)
