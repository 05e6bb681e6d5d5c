"""The web console on a real cluster: log in with a token, read every page, create a
container from a form, watch the live summary; and what it refuses (no token, a role too
low, a form sent from another site, its cookie on the API, a form on a node out of
service, a live summary past the node's limit)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.client import HTTPResponse

import pytest

from fabric import limits
from fabric.config import load_config
from shell.client import FabricClient
from tests.integration.conftest import Cluster, make_cluster, running_cluster

__all__ = ["make_cluster"]  # the fixture, for the stream story that needs its own cluster

PAGES = (
    "/",
    "/nodes",
    "/containers",
    "/vdisks",
    "/images",
    "/healing",
    "/tasks",
    "/faults",
    "/events",
)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a 303 is the answer under test, not a hop


_opener = urllib.request.build_opener(_NoRedirect)


class Browser:
    """What a browser does with the console: keeps its cookies, sends forms with the
    page's Origin (or the one given)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookies: dict[str, str] = {}

    def request(
        self,
        path: str,
        form: dict[str, str] | None = None,
        origin: str | None = None,
        multipart: tuple[bytes, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        """GET ``path``, or POST ``form`` (urlencoded) or ``multipart`` (body, type)."""
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif multipart is not None:
            data, headers["Content-Type"] = multipart
        if data is not None:
            headers["Origin"] = self.url if origin is None else origin
        req = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            resp: HTTPResponse = _opener.open(req, timeout=30)
        except urllib.error.HTTPError as exc:
            resp = exc  # type: ignore[assignment]
        with resp:
            status, body = resp.status, resp.read().decode()
            for cookie in resp.headers.get_all("Set-Cookie") or []:
                name, _, rest = cookie.partition("=")
                value = rest.split(";")[0]
                if value in ("", '""') or "Max-Age=0" in cookie:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
            return status, dict(resp.headers), body

    def log_in(self, token: str) -> tuple[int, dict[str, str], str]:
        return self.request("/login", {"token": token, "next": "/"})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path_factory, "console")


def urls(cluster: Cluster) -> list[str]:
    return [n.url for n in load_config(str(cluster.dir / "cluster.toml")).nodes]


def token(cluster: Cluster, role: str) -> str:
    return cluster.fabric("token", "create", f"console {role}", "--role", role).stdout.strip()


def test_a_page_without_a_token_goes_to_the_login_page(cluster: Cluster) -> None:
    browser = Browser(urls(cluster)[0])
    for path in PAGES:
        status, headers, _ = browser.request(path)
        assert (status, headers["Location"]) == (303, "/login?next=" + path.replace("/", "%2F"))
    status, _, body = browser.request("/login")
    assert status == 200 and 'name="token"' in body
    assert browser.request("/static/console.css")[0] == 200  # the login page's style


def test_a_good_token_logs_in_and_the_summary_shows_the_cluster(cluster: Cluster) -> None:
    browser = Browser(urls(cluster)[1])
    status, _, body = browser.log_in("fabric_admin_" + "A" * 43)
    assert status == 401 and "wrong token" in body
    assert "fabric_session" not in browser.cookies

    status, headers, _ = browser.log_in(cluster.token)
    assert (status, headers["Location"]) == (303, "/")
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _, body = browser.request("/")
    assert status == 200
    leader = cluster.status()["leader"]
    assert re.search(rf"data-leader>{leader}<", body), body
    assert 'data-nodes="3"' in body

    browser.request("/logout", {})
    assert browser.request("/")[0] == 303


def test_each_node_shows_its_own_scrub_passes_under_its_own_name(cluster: Cluster) -> None:
    """And names itself as the node serving the page, though the view is the leader's."""
    for node_id, url in zip(("n1", "n2", "n3"), urls(cluster), strict=True):
        browser = Browser(url)
        browser.log_in(cluster.token)
        _, _, body = browser.request("/")
        assert f"<dt data-scrub-node>{node_id}</dt>" in body, (node_id, body)
        assert f"<dd data-served-by>{node_id}</dd>" in body, (node_id, body)


def test_a_revoked_token_ends_its_session(cluster: Cluster) -> None:
    browser = Browser(urls(cluster)[2])
    made = token(cluster, "read-only")
    browser.log_in(made)
    assert browser.request("/nodes")[0] == 200
    cluster.fabric("token", "revoke", made.split("_")[1])
    status, headers, _ = browser.request("/nodes")
    assert (status, headers["Location"]) == (303, "/login?next=%2Fnodes")


def test_the_cookie_never_authorises_the_api(cluster: Cluster) -> None:
    browser = Browser(urls(cluster)[0])
    browser.log_in(cluster.token)
    assert browser.request("/api/v1/cluster")[0] == 401


def test_every_page_renders_for_an_admin(cluster: Cluster) -> None:
    browser = Browser(urls(cluster)[2])
    browser.log_in(cluster.token)
    for path in PAGES:
        status, headers, body = browser.request(path)
        assert status == 200, (path, body)
        assert "<h1>" in body and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    status, headers, body = browser.request("/no-such-page")
    assert status == 404 and headers["Content-Type"].startswith("text/html"), body


def test_only_a_role_that_may_create_containers_can_use_the_form(cluster: Cluster) -> None:
    url = urls(cluster)[0]
    reader, operator = Browser(url), Browser(url)
    reader.log_in(token(cluster, "read-only"))
    operator.log_in(token(cluster, "operator"))
    status, _, body = reader.request("/containers")
    assert status == 200 and "cannot create containers" in body
    # The API lets an operator write data but not make containers: nor does the console.
    for browser in (reader, operator):
        status, _, body = browser.request("/containers", {"name": "denied", "rf": "2"})
        assert status == 403 and "needs admin" in body
    assert "denied" not in cluster.fabric("container", "list", "--json").stdout

    admin = Browser(url)
    admin.log_in(cluster.token)
    status, headers, _ = admin.request("/containers", {"name": "fromweb", "rf": "2", "dedup": "on"})
    assert (status, headers["Location"]) == (303, "/containers")
    status, _, body = admin.request("/containers")
    assert "container fromweb created" in body and 'data-container="fromweb"' in body
    assert "dedup" in body
    assert '"fromweb"' in cluster.fabric("container", "list", "--json").stdout
    # A refusal of the service comes back as the page's message, not a crash.
    admin.request("/containers", {"name": "fromweb", "rf": "2"})
    assert "error:" in admin.request("/containers")[2]


@pytest.mark.parametrize("origin", ["http://127.0.0.2:1", "null", ""])
def test_a_form_sent_from_another_site_is_refused(cluster: Cluster, origin: str) -> None:
    browser = Browser(urls(cluster)[0])
    browser.log_in(cluster.token)
    status, _, body = browser.request("/containers", {"name": "csrf", "rf": "1"}, origin=origin)
    assert status == 403 and "cross-site" in body
    assert '"csrf"' not in cluster.fabric("container", "list", "--json").stdout


def api(
    url: str, path: str, bearer: str, body: object = None, method: str | None = None
) -> tuple[int, dict[str, str], str]:
    """A request to the node's API with a bearer token: (status, headers, body)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    req = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        resp: HTTPResponse = urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as exc:
        resp = exc  # type: ignore[assignment]
    with resp:
        return resp.status, dict(resp.headers), resp.read().decode()


def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not in {timeout_s} s"
        time.sleep(0.2)


async def through_it_first(first: str, every: list[str], bearer: str) -> str:
    async with FabricClient([first, *(u for u in every if u != first)], token=bearer) as c:
        await c.create_container("moved", rf=2)
        return next(x["name"] for x in await c.containers() if x["name"] == "moved")


def test_a_node_out_of_service_shows_its_pages_and_why_but_takes_no_form(
    cluster: Cluster,
) -> None:
    leader = cluster.status()["leader"]
    index, victim = next((i, n) for i, n in enumerate(("n1", "n2", "n3")) if n != leader)
    url, leader_url = urls(cluster)[index], urls(cluster)[int(leader[1:]) - 1]
    # Its disks refuse every write: the next log entry it must persist (a container the
    # leader creates) cannot reach its Raft WAL, and that takes it out of service. Plain
    # requests name the node they test: the leader, or the node out of service.
    cluster.fabric("fault", "inject", "disk-fail", "--nodes", victim, "--param", "ops=write")
    try:
        status, _, _ = api(leader_url, "/api/v1/containers", cluster.token, {"name": "oos"})
        assert status == 201
        until(
            lambda: api(url, "/api/v1/containers", cluster.token)[0] == 503,
            30,
            f"{victim} out of service",
        )
        status, headers, body = api(url, "/api/v1/containers", cluster.token)
        assert headers["Content-Type"].startswith("application/json")
        error = json.loads(body)["error"]
        assert error["code"] == "out_of_service" and "raft WAL cannot" in error["message"]
        # A client that asks it first is refused before any work, and moves on: even a
        # POST, which it would not resend to a node that may have applied it.
        assert asyncio.run(through_it_first(url, urls(cluster), cluster.token)) == "moved"

        browser = Browser(url)
        assert browser.log_in(cluster.token)[0] == 303
        status, headers, body = browser.request("/")
        assert status == 200 and headers["Content-Type"].startswith("text/html"), body
        banner = f"node {victim} is out of service: raft WAL cannot be written"
        assert banner in body and f"data-leader>{leader}<" in body
        assert banner in browser.request("/faults")[2]
        # A page that needs the newest metadata cannot have it here: it says so at once.
        started = time.monotonic()
        status, _, body = browser.request("/containers")
        assert status == 503 and banner in body and time.monotonic() - started < 5, body

        status, headers, body = browser.request("/containers", {"name": "refused", "rf": "2"})
        assert status == 503 and headers["Content-Type"].startswith("text/html"), body
        assert f"node {victim} is out of service: raft WAL cannot be written" in body
        assert '"refused"' not in api(leader_url, "/api/v1/containers", cluster.token)[2]
        assert browser.request("/logout", {})[0] == 303
    finally:
        # Through the leader: the node out of service refuses the API.
        api(leader_url, "/api/v1/faults", cluster.token, method="DELETE")
    until(lambda: api(url, "/api/v1/containers", cluster.token)[0] == 200, 30, f"{victim} back")


def open_stream(url: str, session: str) -> HTTPResponse:
    """``/console/stream`` opened (its headers read); an error's response, if refused."""
    req = urllib.request.Request(
        url + "/console/stream", headers={"Cookie": f"fabric_session={session}"}
    )
    try:
        resp: HTTPResponse = urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as exc:
        return exc  # type: ignore[return-value]
    return resp


def test_a_node_holds_a_bounded_number_of_live_summaries(cluster: Cluster) -> None:
    browser = Browser(urls(cluster)[2])  # no other test streams from it
    browser.log_in(cluster.token)
    session = browser.cookies["fabric_session"]
    streams = [open_stream(browser.url, session) for _ in range(limits.CONSOLE_STREAMS_MAX)]
    try:
        assert [s.status for s in streams] == [200] * limits.CONSOLE_STREAMS_MAX
        with open_stream(browser.url, session) as refused:
            assert refused.status == 503 and int(refused.headers["Retry-After"]) > 0
            assert "live summaries" in refused.read().decode()
        # Closing one frees its place (noticed at the stream's next send at the latest).
        streams.pop().close()

        def one_more() -> bool:
            resp = open_stream(browser.url, session)
            if resp.status == 200:
                streams.append(resp)
                return True
            resp.close()
            return False

        until(one_more, 30, "a place for a new stream")
    finally:
        for resp in streams:
            resp.close()


def first_summary(url: str, session: str) -> tuple[HTTPResponse, str]:
    """Open ``/console/stream`` and read up to its first summary event (30 s at most)."""
    req = urllib.request.Request(
        url + "/console/stream", headers={"Cookie": f"fabric_session={session}"}
    )
    deadline = time.monotonic() + 30
    event: list[str] = []
    resp: HTTPResponse = urllib.request.urlopen(req, timeout=30)
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    for raw in resp:  # events end with a blank line; pings are comments (": ping")
        line = raw.decode().rstrip("\r\n")
        if line:
            event.append(line)
        elif event and event[0] == "event: summary":
            break
        else:
            event = []
        assert time.monotonic() < deadline, "no summary event in 30 s"
    return resp, "\n".join(event)


def test_the_stream_sends_the_summary(cluster: Cluster) -> None:
    browser = Browser(urls(cluster)[1])
    browser.log_in(cluster.token)
    leader = cluster.status()["leader"]
    resp, event = first_summary(browser.url, browser.cookies["fabric_session"])
    resp.close()
    assert f"data-leader>{leader}<" in event, event


def test_an_open_stream_does_not_hold_up_fabric_down(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1)
    cluster.fabric("up", "--config", str(cluster.config))
    browser = Browser(urls(cluster)[0])
    browser.log_in(cluster.token)
    resp, _ = first_summary(browser.url, browser.cookies["fabric_session"])
    with resp:
        started = time.monotonic()
        out = cluster.fabric("down")
        assert "killing" not in out.stdout, out.stdout
        assert time.monotonic() - started < 5
