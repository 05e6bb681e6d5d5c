"""API tokens: their format, and the one table of which role each request needs."""

from __future__ import annotations

import pytest

from fabric import tokens
from fabric.config import ConfigError, default_config_text, parse_config, render_config
from fabric.keys import ClusterKeys


def test_a_minted_token_parses_and_matches_only_its_own_hash() -> None:
    token = tokens.mint("a1b2", b"\x07" * 32)
    parsed = tokens.parse(token)
    assert parsed.id == "a1b2"
    stored = tokens.secret_hash(parsed)
    assert tokens.matches(parsed, stored)
    assert not tokens.matches(tokens.parse(tokens.mint("a1b2", b"\x08" * 32)), stored)
    assert stored not in token  # metadata keeps the hash, which reveals nothing of it


def test_a_secret_holding_underscores_parses_whole() -> None:
    # urlsafe base64 uses "_" and "-": half of all secrets hold one, so the id ends at the
    # first "_" after the prefix and the secret is all the rest.
    token = tokens.mint("c3", bytes([0xFF] * 32))
    assert "_" in token.split("_", 2)[2] and "-" not in token[:10]
    parsed = tokens.parse(token)
    assert (parsed.id, f"fabric_c3_{parsed.secret}") == ("c3", token)


@pytest.mark.parametrize(
    "bad", ["", "fabric_", "fabric_x_short", "Bearer fabric_a_" + "A" * 43, "fabric_A_" + "A" * 43]
)
def test_malformed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(tokens.TokenError):
        tokens.parse(bad)


def test_the_admin_token_comes_from_the_cluster_secret() -> None:
    a = tokens.admin_token(ClusterKeys(b"a" * 32).admin_token_key)
    assert tokens.parse(a).id == "admin"
    assert a != tokens.admin_token(ClusterKeys(b"b" * 32).admin_token_key)


@pytest.mark.parametrize(
    "method, path, role",
    [
        ("GET", "/api/v1/cluster", "read-only"),
        ("GET", "/api/v1/images", "read-only"),
        ("GET", "/metrics", "read-only"),
        ("GET", "/api/v1/openapi.json", None),
        ("PUT", "/api/v1/kv/a", "operator"),
        ("POST", "/api/v1/images", "operator"),
        ("PUT", "/api/v1/vdisks/v/data", "operator"),
        ("DELETE", "/api/v1/images/i", "operator"),
        ("POST", "/api/v1/containers", "admin"),
        ("DELETE", "/api/v1/containers/c", "admin"),
        ("POST", "/api/v1/nodes/n2/drain", "admin"),
        ("PUT", "/api/v1/rebuild", "admin"),
        ("GET", "/api/v1/tokens", "admin"),
        ("POST", "/api/v1/faults", "admin"),
        # The console: its pages are reads, its forms need what their API call needs.
        ("GET", "/", "read-only"),
        ("GET", "/containers", "read-only"),
        ("GET", "/console/stream", "read-only"),
        ("POST", "/containers", "admin"),
        ("GET", "/login", None),
        ("POST", "/login", None),
        ("GET", "/static/console.css", None),
    ],
)
def test_each_request_needs_the_role_of_the_table(method: str, path: str, role: str | None) -> None:
    assert tokens.required_role(method, path) == role


def test_only_health_and_metrics_may_be_opened() -> None:
    opened = frozenset({"/metrics", "/api/v1/health", "/api/v1/cluster"})
    assert tokens.required_role("GET", "/metrics", opened) is None
    assert tokens.required_role("GET", "/api/v1/cluster", opened) == "read-only"
    text = default_config_text() + '\n[auth]\npublic = ["/metrics"]\n'
    cfg = parse_config(text)
    assert cfg.public_paths == ("/metrics",)
    assert parse_config(render_config(cfg)).public_paths == ("/metrics",)
    with pytest.raises(ConfigError, match="only /metrics, /api/v1/health may be opened"):
        parse_config(default_config_text() + '\n[auth]\npublic = ["/api/v1/cluster"]\n')


def test_roles_are_ordered() -> None:
    assert tokens.allows("admin", "operator") and tokens.allows("operator", "read-only")
    assert not tokens.allows("read-only", "operator") and not tokens.allows("nobody", "read-only")


def test_the_shell_and_the_node_agree_on_the_secret_file_name() -> None:
    from nodes import secretfile
    from shell import launcher

    assert launcher.SECRET_NAME == secretfile.SECRET_NAME
