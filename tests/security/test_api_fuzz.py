"""Schemathesis against a live node: whatever it sends, within the document or just off
it, the node answers as the document says (status, content type, answer schema), with
no 5xx, and refuses every request off the document with a 4xx.

Bounded for CI: a one-node cluster, a few examples per operation and mode, derandomized
so a run is repeatable. ``python -m tests.security.test_api_fuzz N`` runs it wider
(N examples per operation) against a fresh cluster, for local hunting.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from fabric.config import load_config
from tests.integration.conftest import Cluster, free_ports, write_config

CI_EXAMPLES = 6
"""Examples per operation and mode in CI: about 35 operations x 2 modes run in ~20 s."""
CI_BUDGET_S = 60.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
KEEP_IDS = {
    "/api/v1/nodes/{id}": "n1",
    "/api/v1/nodes/{id}/drain": "n1",
    "/api/v1/nodes/{id}/rejoin": "n1",
    "/api/v1/tokens/{id}": "admin",
}
"""Routes that would remove, drain or re-add the one live node, or revoke the token the
run uses, if a case named it: such a case names an absent one instead."""


@pytest.fixture
def live(make_cluster: Callable[[int], Cluster]) -> Cluster:
    cluster = make_cluster(1)
    cluster.fabric("up", "--config", str(cluster.config))
    cluster.fabric("container", "create", "c", "--rf", "1")
    return cluster


@pytest.fixture
def api_headers(live: Cluster) -> dict[str, str]:
    """Headers every request of this file carries: the cluster's admin token."""
    return {"Authorization": f"Bearer {live.token}"}


def node_url(cluster: Cluster) -> str:
    url: str = load_config(str(cluster.dir / "cluster.toml")).nodes[0].url
    return url


def fuzz(base: str, headers: dict[str, str], examples: int) -> tuple[list[str], int]:
    """Run every operation of the node's document: the failures (one line each) and the
    number of requests sent."""
    # The credentials are the fixture's; generated or stripped Authorization headers
    # would test the fuzzer's tokens, not the API.
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_url(
        f"{base}/api/v1/openapi.json", config=config, headers=headers
    )
    closed_port = free_ports(1)[0]
    failures: list[str] = []
    sent = [0]
    session = requests.Session()

    def adjust(case: Case) -> Case | None:
        """Keep a case on the loopback and off the one node it needs; None: skip it."""
        path = case.operation.path
        if (
            path == "/api/v1/images"
            and isinstance(case.body, dict)
            and isinstance(case.body.get("source_url"), str)
        ):
            # An import fetches its URL: never let the node reach past the loopback.
            case.body["source_url"] = f"http://127.0.0.1:{closed_port}/fuzz.img"
        positive = case.meta is None or case.meta.generation.mode.is_positive
        if path == "/api/v1/nodes" and case.method == "POST" and positive:
            # A valid member would make the leader dial a host name made up by the fuzzer.
            return None
        if path in KEEP_IDS and case.path_parameters.get("id") == KEEP_IDS[path]:
            case.path_parameters["id"] = "fuzzabsent"
        return case

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Case) -> None:
                adjusted = adjust(case)
                if adjusted is not None:
                    sent[0] += 1
                    adjusted.call_and_validate(
                        base_url=base,
                        session=session,
                        headers=dict(headers),  # schemathesis adds its own to the dict
                        checks=CHECKS,
                        timeout=30,
                    )

            try:
                run()
            except Unsatisfiable:
                pass  # no parameter or body to make invalid: nothing to send in this mode
            except (Exception, BaseExceptionGroup) as exc:
                text = str(exc).strip().splitlines()
                failures.append(f"{operation.label} [{mode}]: {' | '.join(text[:12])}")
    return failures, sent[0]


def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    live: Cluster, api_headers: dict[str, str]
) -> None:
    began = time.monotonic()
    failures, sent = fuzz(node_url(live), api_headers, CI_EXAMPLES)
    took = time.monotonic() - began
    assert not failures, "\n".join(failures)
    assert sent > 200, f"only {sent} requests sent"
    assert took < CI_BUDGET_S, f"the bounded run took {took:.0f} s"
    log = (live.dir / "nodes" / "n1" / "node.log").read_text()
    assert "internal error serving" not in log, log[-4000:]


def main(examples: int) -> int:
    """A wider run on a fresh cluster; prints what it found."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cluster = Cluster(root / "data", write_config(root / "cluster.toml", 1))
        try:
            cluster.fabric("up", "--config", str(cluster.config))
            cluster.fabric("container", "create", "c", "--rf", "1")
            began = time.monotonic()
            headers = {"Authorization": f"Bearer {cluster.token}"}
            failures, sent = fuzz(node_url(cluster), headers, examples)
            print("\n\n".join(failures) or "no failures")
            print(f"{sent} requests in {time.monotonic() - began:.0f} s")
            log = (cluster.dir / "nodes" / "n1" / "node.log").read_text()
            print(log.count("internal error serving"), "internal errors in the node's log")
        finally:
            cluster.fabric("down", check=False)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
