"""The console's pure parts: where a login may send the browser, which requests count as
same-origin forms, whose paths are the console's, and how numbers read."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from nodes.console import session, units


@pytest.mark.parametrize(
    "target, goes",
    [
        ("/containers", "/containers"),
        ("/events?x=1", "/events?x=1"),
        (None, "/"),
        ("", "/"),
        ("https://127.0.0.2/", "/"),
        ("//127.0.0.2/", "/"),
        ("/\\127.0.0.2/", "/"),
        ("/\t/127.0.0.2/", "/"),
        ("/\r\nSet-Cookie: x=1", "/"),
        ("containers", "/"),
    ],
)
def test_login_sends_the_browser_only_to_a_path_of_this_node(target: str | None, goes: str) -> None:
    assert session.safe_next(target) == goes


@pytest.mark.parametrize(
    "headers, same",
    [
        ({"Origin": "http://127.0.0.1:7101"}, True),
        ({"Referer": "http://127.0.0.1:7101/containers"}, True),
        ({"Origin": "http://127.0.0.2:7101"}, False),
        ({"Origin": "http://127.0.0.1:7102"}, False),
        ({"Origin": "https://127.0.0.1:7101"}, False),
        ({"Origin": "null"}, False),
        ({"Referer": "http://127.0.0.1:7101.evil/"}, False),
        ({}, False),
    ],
)
def test_a_form_counts_as_this_nodes_only_from_its_own_origin(
    headers: dict[str, str], same: bool
) -> None:
    request = make_mocked_request("POST", "/containers", {"Host": "127.0.0.1:7101", **headers})
    assert session.same_origin(request) is same


def test_the_cookie_is_read_on_console_paths_only() -> None:
    cookie = {"Cookie": f"{session.COOKIE}=fabric_admin_x"}
    assert session.token(make_mocked_request("GET", "/nodes", cookie)) == "fabric_admin_x"
    for path in ("/api/v1/cluster", "/internal/v1/call", "/metrics"):
        assert session.token(make_mocked_request("GET", path, cookie)) is None


def test_numbers_read_as_an_operator_expects() -> None:
    assert units.size(0) == "0 B"
    assert units.size(3 << 30) == "3.0 GiB"
    assert units.size(1536) == "1.5 KiB"
    assert units.size(None) == units.NONE
    assert units.iso(1_700_000_000) == "2023-11-14T22:13:20Z"
    assert units.iso(0) == units.NONE
    assert units.percent(0.25) == "25 %"
    assert [units.badge(s) for s in ("UP", "degraded", "FULL", "other")] == [
        "ok",
        "warn",
        "bad",
        "neutral",
    ]
