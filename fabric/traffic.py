"""Which family of traffic a message between nodes belongs to, for the byte counters a
researcher reads ("how much repair traffic crossed racks?").

A message's kind says most of it: Raft and the metadata requests are ``metadata``,
``AppendExtents`` is a data ``write``, ``ReadExtent`` a data ``read``, and
``PullEgroup``/``RepairExtent`` are ``repair``. But a rebuild moves its bytes with
the same reads and appends as clients do, so the code that repairs says so:
everything sent inside ``tagged("repair")`` (and by the tasks it starts, which copy
its context) counts as repair, except Raft and metadata messages, which stay
``metadata``. A reply counts in its request's family.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from fabric.consensus import types as raft
from fabric.wire import messages as m

FAMILIES = ("metadata", "write", "read", "repair", "control")
"""``control``: the rest (file stats and listings, deletes, fault control, errors)."""

_TAG: ContextVar[str | None] = ContextVar("traffic_family", default=None)

_METADATA: tuple[type, ...] = (
    raft.VoteRequest,
    raft.VoteResponse,
    raft.AppendRequest,
    raft.AppendResponse,
    raft.SnapshotRequest,
    m.ProposeRequest,
    m.ProposeReply,
    m.ReadIndexRequest,
    m.ReadIndexReply,
    m.NodeReport,
    m.ClusterViewRequest,
    m.ClusterViewReply,
    m.MembershipRequest,
)
_BY_KIND: dict[type, str] = {
    **dict.fromkeys(_METADATA, "metadata"),
    m.AppendExtents: "write",
    m.AppendReply: "write",
    m.ReadExtent: "read",
    m.ExtentData: "read",
    m.PullEgroup: "repair",
    m.PullReply: "repair",
    m.RepairExtent: "repair",
}


def family(message: Any) -> str:
    """The family of ``message`` sent from the current context."""
    kind = _BY_KIND.get(type(message), "control")
    if kind == "metadata":
        return kind
    return _TAG.get() or kind


@contextmanager
def tagged(name: str) -> Iterator[None]:
    """Count what is sent inside (and by tasks started inside) as ``name``."""
    assert name in FAMILIES, f"unknown traffic family {name!r}"
    token = _TAG.set(name)
    try:
        yield
    finally:
        _TAG.reset(token)
