"""The shipped scenarios (configs/scenarios/), each run in its short form: real node
processes on loopback, like tests/integration (and marked the same way)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "scenarios" in item.path.parts:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.scenarios)
