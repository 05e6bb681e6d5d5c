"""The vdisk checker: every block is a register, and every ok read must return a value
some write could have left there.

Theory of operation
-------------------
A block's writes (kind ``write``, key ``"vdisk/block"``, value the digest of the bytes)
and reads (kind ``read``, value the digest read) are judged against a register that is
linearizable per block. A read ``R`` invoked at ``ri`` and completed at ``rc`` may return:

* a write ``W`` acknowledged before ``ri`` that no other write acknowledged before
  ``ri`` supersedes (one invoked after ``W`` completed): with the ok writes that
  completed before ``ri``, and ``X`` the latest invoke among them, these are the ones
  that completed at or after ``X``;
* a write concurrent with ``R``: ok, invoked by ``rc`` and completed at or after ``ri``;
* a write whose outcome is unknown, invoked by ``rc`` (it may land at any later time);
* the initial value (zeros: ``initial``), while no ok write completed before ``ri``.

Failed writes took no effect and are not sources. A read that returns anything else is
an anomaly: a **lost write** when the value is older (the initial value, or a value a
write invoked by ``rc`` put there) — the culprit is the newest acknowledged write the
read should have seen; a **wrong read** when no write could have put the value there
by then (never written to this block, or only by a write invoked after the read
completed, or only by writes that failed) — the culprit is the read.

Each block's ok writes are sorted by completion with the running maximum of their
invokes, and each (block, value) keeps its ok writes sorted by invoke (with the running
maximum completion) and by completion, plus its earliest unknown invoke, so each read
costs a few binary searches: 100k operations take well under a second.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from fabric import limits
from fabric.checkers.verdict import Verdict
from fabric.history import Op

INITIAL = "zero"
"""The digest a workload records for a block never written (all zeros)."""


@dataclass
class _ValueWrites:
    """One block's writes of one value."""

    ok: list[Op] = field(default_factory=list)
    unknown_first_invoke: float = math.inf
    failed: int = 0
    invokes: list[float] = field(default_factory=list)
    """ok writes' invokes, sorted."""
    max_complete: list[float] = field(default_factory=list)
    """The latest completion among the ok writes up to each position of ``invokes``."""
    completes: list[float] = field(default_factory=list)
    """ok writes' completions, sorted."""

    def index(self) -> None:
        self.ok.sort(key=lambda w: w.invoke)
        self.invokes = [w.invoke for w in self.ok]
        self.max_complete = list(accumulate((w.complete for w in self.ok), max))
        self.completes = sorted(w.complete for w in self.ok)

    def first_invoke(self) -> float:
        return min(self.invokes[0] if self.invokes else math.inf, self.unknown_first_invoke)


@dataclass
class _Block:
    acked: list[Op] = field(default_factory=list)
    """ok writes, sorted by completion once indexed."""
    completes: list[float] = field(default_factory=list)
    max_invoke: list[float] = field(default_factory=list)
    """The latest invoke among ``acked[: i + 1]``."""
    values: dict[Any, _ValueWrites] = field(default_factory=lambda: defaultdict(_ValueWrites))
    reads: list[Op] = field(default_factory=list)

    def index(self) -> None:
        self.acked.sort(key=lambda w: w.complete)
        self.completes = [w.complete for w in self.acked]
        self.max_invoke = list(accumulate((w.invoke for w in self.acked), max))
        for vw in self.values.values():
            vw.index()


@dataclass(frozen=True)
class Anomaly:
    kind: str
    """``lost-write`` or ``wrong-read``."""
    block: str
    read: Op
    lost: Op | None = None
    """For a lost write: the acknowledged write the read should have seen."""

    def describe(self) -> str:
        r = self.read
        when = f"[{r.invoke:.3f}, {r.complete:.3f}]"
        seen = f"read by process {r.process} at {when} returned {r.value!r}"
        if self.lost is None:
            return f"wrong read of block {self.block}: {seen}, a value no write could have left"
        w = self.lost
        return (
            f"acknowledged write lost on block {self.block}: write of {w.value!r} by process "
            f"{w.process} acknowledged at {w.complete:.3f}, but a later {seen}"
        )

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "block": self.block, "read": _op_json(self.read)}
        if self.lost is not None:
            out["lost"] = _op_json(self.lost)
        return out


def _op_json(op: Op) -> dict[str, Any]:
    return {"process": op.process, "invoke": op.invoke, "complete": op.complete, "value": op.value}


def check_blocks(ops: list[Op], initial: Any = INITIAL) -> Verdict:
    """Judge the ``write`` and ``read`` operations of ``ops`` (other kinds are ignored)."""
    blocks: dict[str, _Block] = defaultdict(_Block)
    writes = 0
    for op in ops:
        if op.kind == "write":
            writes += 1
            block = blocks[op.key]
            vw = block.values[op.value]
            if op.outcome == "ok":
                block.acked.append(op)
                vw.ok.append(op)
            elif op.outcome == "unknown":
                vw.unknown_first_invoke = min(vw.unknown_first_invoke, op.invoke)
            else:
                vw.failed += 1
        elif op.kind == "read" and op.outcome == "ok":
            blocks[op.key].reads.append(op)
    anomalies: list[Anomaly] = []
    reads = 0
    for key, block in blocks.items():
        block.index()
        reads += len(block.reads)
        anomalies += (a for r in block.reads if (a := _judge(key, block, r, initial)) is not None)
    anomalies.sort(key=lambda a: (a.read.complete, a.read.invoke, a.block))
    lost = {id(a.lost): a.lost for a in anomalies if a.lost is not None}
    wrong = sum(1 for a in anomalies if a.lost is None)
    stats: dict[str, Any] = {
        "valid": not anomalies,
        "ops": len(ops),
        "blocks": len(blocks),
        "writes": writes,
        "reads_checked": reads,
        "lost_writes": len(lost),
        "wrong_reads": wrong,
        "anomalies": [a.as_json() for a in anomalies[: limits.CHECKER_ANOMALIES_LISTED]],
    }
    if not anomalies:
        detail = (
            f"{reads} reads of {len(blocks)} blocks each returned a value a write could have left"
        )
        return Verdict(True, "blocks", detail, None, stats)
    first = anomalies[0]
    more = f" ({len(lost)} acknowledged writes lost, {wrong} wrong reads in all)"
    return Verdict(False, "blocks", first.describe() + more, first.lost or first.read, stats)


def _judge(key: str, block: _Block, read: Op, initial: Any) -> Anomaly | None:
    """None if ``read`` returned a value some write could have left, else the anomaly."""
    ri, rc = read.invoke, read.complete
    done = bisect_left(block.completes, ri)  # ok writes completed strictly before ri
    if read.value == initial and done == 0:
        return None
    latest_invoke = block.max_invoke[done - 1] if done else -math.inf
    vw = block.values.get(read.value)
    if vw is not None and _could_leave(vw, ri, rc, latest_invoke):
        return None
    if read.value == initial or (vw is not None and vw.first_invoke() <= rc):
        # An older value came back: the newest acknowledged write before the read is
        # gone (with done == 0 every such value would have been allowed above).
        assert done > 0, "a stale read needs a write acknowledged before it"
        return Anomaly("lost-write", key, read, block.acked[done - 1])
    return Anomaly("wrong-read", key, read)


def _could_leave(vw: _ValueWrites, ri: float, rc: float, latest_invoke: float) -> bool:
    if vw.unknown_first_invoke <= rc:
        return True
    started = bisect_right(vw.invokes, rc)  # ok writes invoked by the read's end
    if started and vw.max_complete[started - 1] >= ri:
        return True  # one of them was still running when the read began
    i = bisect_left(vw.completes, latest_invoke)
    return i < len(vw.completes) and vw.completes[i] < ri
