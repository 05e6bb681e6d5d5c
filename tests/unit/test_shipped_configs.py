"""Every config shipped in configs/ parses: users copy them."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

from fabric.config import default_config_text, load_config, parse_config

SHIPPED = Path(__file__).parents[2] / "configs"
CONFIGS = sorted(SHIPPED.glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_parses(path: Path) -> None:
    cfg = load_config(str(path))
    assert cfg.voters and set(cfg.voters) <= {n.id for n in cfg.nodes}
    assert not cfg.debug.enabled(), "a [debug] setting breaks a cluster on purpose: tests only"


def test_there_are_shipped_configs() -> None:
    assert len(CONFIGS) >= 2


def test_the_prometheus_config_scrapes_the_default_local_cluster() -> None:
    """``fabric up`` on the embedded default, scraped as configs/prometheus.yml says."""
    scrape = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())["scrape_configs"]
    targets = [t for job in scrape for group in job["static_configs"] for t in group["targets"]]
    hosts = {t.rpartition(":")[0] for t in targets}
    assert all(ipaddress.ip_address(h).is_loopback for h in hosts), hosts
    default = parse_config(default_config_text())
    assert sorted(targets) == sorted(f"{n.host}:{n.port}" for n in default.nodes)
    assert default.public_paths == ()  # so /metrics wants a token: the config sends one
    for job in scrape:
        assert job["metrics_path"] == "/metrics" and job["scheme"] == "http"
        auth = job["authorization"]
        assert auth["type"] == "Bearer"
        assert auth["credentials_file"].endswith(".token")
        assert not Path(auth["credentials_file"]).is_absolute()


def test_the_grafana_dashboard_imports_with_any_prometheus() -> None:
    """Its data source is an import input, never one instance's uid; which series it asks
    for is checked against real nodes in tests/integration/test_observability.py."""
    dashboard = json.loads((SHIPPED / "grafana-dashboard.json").read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["schemaVersion"] >= 39  # Grafana 11 and later
    panels = dashboard["panels"]
    sources = [p["datasource"] for p in panels if p["type"] != "row"]
    sources += [t["datasource"] for p in panels for t in p.get("targets", [])]
    sources += [v["datasource"] for v in dashboard["templating"]["list"]]
    assert sources and all(s == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for s in sources)
    assert len({p["id"] for p in panels}) == len(panels)


def test_the_grafana_dashboard_queries_are_well_formed() -> None:
    """Brackets balance, and ``rate``/``increase`` only ever see a counter (``_total``):
    a gauge there gives nonsense, not an error."""
    dashboard = json.loads((SHIPPED / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    for expr in (t["expr"] for p in panels for t in p["targets"]):
        depth = []
        for ch in expr:
            if ch in "([{":
                depth.append("([{".index(ch))
            elif ch in ")]}":
                assert depth and depth.pop() == ")]}".index(ch), expr
        assert not depth, expr
        for series in re.findall(r"\b(?:rate|increase)\((fabric_[a-z0-9_]+)", expr):
            assert series.endswith("_total"), expr
