"""What a checker says about a history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fabric.history import Op


@dataclass(frozen=True)
class Verdict:
    ok: bool
    """True only when the history passed: a violation and an undecided search are both
    False (``stats["valid"]`` tells them apart: ``True``, ``False`` or ``"unknown"``)."""
    name: str
    """Which check: ``blocks``, ``linearizable-kv``, ``availability``."""
    detail: str
    """One line a report can print: what broke, or what was checked."""
    culprit: Op | None = None
    """The operation that broke the property (None when it held)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Counts of what was checked and found; JSON-ready."""
