"""docs/METRICS.md lists exactly the families a node exports: users read it to write
their queries and dashboards."""

from __future__ import annotations

import re
from pathlib import Path

from nodes.metrics import SECTIONS

DOC = Path(__file__).parents[2] / "docs" / "METRICS.md"


def test_the_metrics_doc_lists_every_family_and_no_other() -> None:
    rows = re.findall(r"^\| `(fabric_[a-z0-9_]+)` \| (counter|gauge) \|", DOC.read_text(), re.M)
    declared = [
        (f"{name}_total" if kind == "counter" else name, kind)
        for section in SECTIONS
        for name, kind in section.families.items()
    ]
    assert sorted(rows) == sorted(declared)
