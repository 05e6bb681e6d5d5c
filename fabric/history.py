"""An experiment's history: every client operation, when it was invoked and completed,
and what came of it (Jepsen's history, one JSON object per line in ``history.jsonl``).

An operation's ``outcome`` is what the client can know:

* ``ok``      — the fabric acknowledged it (a write is durable; a read returned ``value``);
* ``fail``    — the fabric refused it and nothing changed (a 4xx, a refused CAS);
* ``unknown`` — no answer (timeout, connection reset, 5xx mid-way): it may or may not
  have taken effect, and a checker must allow both.

Times are seconds since the experiment started (the runner's monotonic clock), so an
operation's ``[invoke, complete]`` interval can be compared with another's. ``complete``
of an ``unknown`` operation is when the client gave up (the operation may take effect
at any later time: a checker treats its end as open).

Pure: records in, lines out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

OUTCOMES = ("ok", "fail", "unknown")
KINDS = (
    "write",  # vdisk block write: key = "vdisk/block", value = digest of the bytes written
    "read",  # vdisk block read: value = digest of the bytes read (ok only)
    "kv-read",  # key = kv key, value = the value read (None: absent)
    "kv-write",  # value = the value written
    "kv-cas",  # value = [expected, new]
    "upload",  # key = image name, value = source sha256
    "import",  # key = image name, value = source sha256
    "download",  # key = image name, value = sha256 of what came back
)


@dataclass(frozen=True)
class Op:
    process: int
    """The client that ran it (one process runs one operation at a time)."""
    kind: str
    key: str
    value: Any
    invoke: float
    complete: float
    outcome: str
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything a workload wants to keep (bytes moved, node asked, latency parts)."""

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"unknown operation kind {self.kind!r}"
        assert self.outcome in OUTCOMES, f"unknown outcome {self.outcome!r}"
        assert self.complete >= self.invoke, "an operation completes after it is invoked"


def dump(ops: Iterable[Op]) -> Iterator[str]:
    """One JSON line per operation."""
    for op in ops:
        yield json.dumps(asdict(op), separators=(",", ":"), sort_keys=True)


def load(lines: Iterable[str]) -> list[Op]:
    """The operations of ``history.jsonl`` lines (blank lines skipped)."""
    return [Op(**json.loads(line)) for line in lines if line.strip()]
