"""``KEY=VALUE`` fault parameters as the CLI and the console's fault panel read them."""

from __future__ import annotations

import pytest

from fabric.errors import BadRequest
from fabric.faults import parse_params


def test_numbers_lists_and_words() -> None:
    got = parse_params(["ms=200", "jitter_ms=2e1", "ops=append", "to=n1,n2", "v=1.2.3", "m=x"])
    assert got == {
        "ms": 200.0,
        "jitter_ms": 20.0,
        "ops": ["append"],
        "to": ["n1", "n2"],
        "v": "1.2.3",  # looks numeric, is not: kept as typed, never a crash
        "m": "x",
    }


def test_a_pair_without_an_equals_sign_is_refused() -> None:
    with pytest.raises(BadRequest, match="expected KEY=VALUE"):
        parse_params(["ms"])
