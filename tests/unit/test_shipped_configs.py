"""Every config shipped in configs/ parses: users copy them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.config import load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_parses(path: Path) -> None:
    cfg = load_config(str(path))
    assert cfg.voters and set(cfg.voters) <= {n.id for n in cfg.nodes}
    assert not cfg.debug.enabled(), "a [debug] setting breaks a cluster on purpose: tests only"


def test_there_are_shipped_configs() -> None:
    assert len(CONFIGS) >= 2
