"""The one door from the runner to the history checkers (``fabric.checkers``).

The checkers are pure functions ``check_blocks(ops)`` and ``check_linearizable_kv(ops)``
returning a ``Verdict(ok, name, detail, culprit, stats)`` (issue 12's contract 3). A
build without ``fabric.checkers`` runs the experiment all the same: each check is then
reported as *skipped* (checker not available), never as passed or failed. The image
check (``check_images``: hashes of what arrived against what was sent) is the runner's
own.
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
    "images": frozenset({"upload", "import", "download"}),
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
        if name == "images":
            out.append(check_images(mine))
            continue
        fn = checker(name)
        if fn is None:
            out.append(CheckResult(name, "skipped", "checker not available in this build"))
            continue
        verdict = fn(mine)
        status = "pass" if verdict.ok else "fail"
        out.append(CheckResult(name, status, verdict.detail, verdict.culprit, dict(verdict.stats)))
    return out


def check_images(ops: list[Op]) -> CheckResult:
    """Every image that arrived is the one sent: an ok import's ``source_sha256`` (the
    node's hash of the bytes as they came, resumes and all) is the source file's, and an
    ok download returns what the upload or import stored. An image is written once, so
    this is a plain comparison, not a register model."""
    # A download is the disk, which ends on a whole sector (the source padded with zeros).
    sent = {
        op.key: op.extra.get("disk_sha256", op.value)
        for op in ops
        if op.kind in ("upload", "import") and op.outcome == "ok"
    }
    checked = 0
    for op in ops:
        if op.outcome != "ok":
            continue
        if op.kind == "import":
            reported = op.extra.get("sha256_reported")
            checked += 1
            if reported != op.value:
                detail = f"{op.key}: the node hashed {reported}, the source is {op.value}"
                return CheckResult("images", "fail", detail, op, {"checked": checked})
        elif op.kind == "download" and op.key in sent:
            checked += 1
            if op.value != sent[op.key]:
                detail = f"{op.key}: downloaded {op.value}, stored {sent[op.key]}"
                return CheckResult("images", "fail", detail, op, {"checked": checked})
    detail = f"{checked} image hashes matched ({len(sent)} images stored)"
    return CheckResult("images", "pass", detail, None, {"checked": checked, "images": len(sent)})
