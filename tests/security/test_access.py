"""API tokens on a real cluster: no token, a wrong one, a revoked one, a role too low."""

from __future__ import annotations

import pytest

from tests.security.conftest import Cluster, call, urls


def test_without_a_token_nothing_is_read_or_deleted(cluster: Cluster) -> None:
    url = urls(cluster)[0]
    cluster.fabric("container", "create", "keep", "--rf", "2")
    for method, path in (
        ("GET", "/api/v1/cluster"),
        ("GET", "/api/v1/images"),
        ("GET", "/metrics"),
        ("DELETE", "/api/v1/containers/keep"),
        ("PUT", "/api/v1/kv/x"),
    ):
        status, answer = call(url + path, method, body={"value": 1} if method == "PUT" else None)
        assert status == 401, (method, path, answer)
        assert answer["error"]["code"] == "unauthorized"
    status, _ = call(url + "/api/v1/containers/keep", token=cluster.token)
    assert status == 200, "the container outlived the unauthenticated DELETE"
    # The API's description stays open: it says nothing about this cluster.
    assert call(url + "/api/v1/openapi.json")[0] == 200


@pytest.mark.parametrize(
    "token", ["nonsense", "fabric_admin_" + "A" * 43, "fabric_abc123_" + "A" * 43]
)
def test_a_wrong_token_proves_nothing(cluster: Cluster, token: str) -> None:
    status, answer = call(urls(cluster)[0] + "/api/v1/cluster", token=token)
    assert status == 401, answer


def test_roles_limit_what_a_token_may_do_and_revocation_is_immediate(cluster: Cluster) -> None:
    first, second, third = urls(cluster)
    made = {}
    for role in ("read-only", "operator"):
        out = cluster.fabric("token", "create", f"ci {role}", "--role", role)
        made[role] = out.stdout.strip()
        assert "shown only now" in out.stderr
    reader, operator = made["read-only"], made["operator"]

    # A token works on every node as soon as it is created, not only on the one asked.
    assert call(third + "/api/v1/cluster", token=reader)[0] == 200
    status, answer = call(second + "/api/v1/kv/k", "PUT", {"value": 1}, token=reader)
    assert (status, answer["error"]["code"]) == (403, "forbidden")
    assert "needs operator" in answer["error"]["message"]
    assert call(second + "/api/v1/kv/k", "PUT", {"value": 1}, token=operator)[0] == 200
    status, _ = call(first + "/api/v1/containers", "POST", {"name": "x", "rf": 1}, token=operator)
    assert status == 403
    assert call(first + "/api/v1/tokens", token=operator)[0] == 403

    listed = cluster.fabric("token", "list", "--json").stdout
    assert "ci operator" in listed and operator.split("_", 2)[2] not in listed
    token_id = operator.split("_")[1]
    cluster.fabric("token", "revoke", token_id)
    for url in (first, second, third):
        status, answer = call(url + "/api/v1/kv/k", token=operator)
        assert status == 401 and "revoked" in answer["error"]["message"], url
    events = cluster.fabric("events", "--json").stdout
    assert f"token {token_id} (ci operator) revoked" in events
    assert operator not in events


def test_metrics_and_health_can_be_opened_only_by_config(cluster: Cluster) -> None:
    """Not opened here: the default config keeps every path but the API's description
    behind a token (see tests/unit/test_tokens.py for what [auth] public opens)."""
    for path in ("/metrics", "/api/v1/health"):
        assert call(urls(cluster)[0] + path)[0] == 401
