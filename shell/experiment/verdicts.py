"""The one door from the runner to the history checkers (``fabric.checkers``).

The checkers are pure functions ``check_blocks(ops)`` and ``check_linearizable_kv(ops)``
returning a ``Verdict(ok, name, detail, culprit, stats)`` (issue 12's contract 3). A
build without ``fabric.checkers`` runs the experiment all the same: each check is then
reported as *skipped* (checker not available), never as passed or failed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from fabric.history import Op

CHECKER_FUNCTIONS = {"blocks": "check_blocks", "kv-linearizable": "check_linearizable_kv"}
KINDS_CHECKED = {
    "blocks": frozenset({"write", "read"}),
    "kv-linearizable": frozenset({"kv-read", "kv-write", "kv-cas"}),
}


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    """``pass``, ``fail`` or ``skipped``."""
    detail: str
    culprit: Op | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def checker(name: str) -> Any:
    """The checker function for ``name``; None when this build has no checkers."""
    try:
        module = importlib.import_module("fabric.checkers")
    except ModuleNotFoundError as exc:
        if exc.name != "fabric.checkers":
            raise
        return None
    return getattr(module, CHECKER_FUNCTIONS[name], None)


def run_checks(names: tuple[str, ...], ops: list[Op]) -> list[CheckResult]:
    out = []
    for name in names:
        mine = [op for op in ops if op.kind in KINDS_CHECKED[name]]
        if not mine:
            continue  # no workload made operations of this kind: nothing to judge
        fn = checker(name)
        if fn is None:
            out.append(CheckResult(name, "skipped", "checker not available in this build"))
            continue
        verdict = fn(mine)
        status = "pass" if verdict.ok else "fail"
        out.append(CheckResult(name, status, verdict.detail, verdict.culprit, dict(verdict.stats)))
    return out
