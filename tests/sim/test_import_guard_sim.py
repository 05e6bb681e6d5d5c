"""The URL import guard on virtual time: refused targets end the import in ERROR with the
reason and store nothing, redirects are checked hop by hop, and URL secrets never reach
the replicated metadata, the API or the logs.

``SimHttp`` resolves names through its own table (``resolve``) and checks each address
with the node's guard before it "connects", exactly where the real fetcher does.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fabric.errors import BadRequest
from fabric.sim.http import SimSource
from nodes.simcluster import SimCluster
from tests.sim.conftest import started

DISK = bytes(range(256)) * 8192  # 2 MiB: no format's signature, so a raw image
PUBLIC = "93.184.215.14"
DEADLINE_S = 120.0


async def start_import(sim: SimCluster, name: str, url: str) -> dict[str, Any]:
    return await sim.nodes["n2"].images.create({"name": name, "source_url": url})


async def import_and_wait(sim: SimCluster, name: str, url: str) -> dict[str, Any]:
    image = await start_import(sim, name, url)
    task_id = image["task_id"]

    def ended() -> bool:
        task = sim.nodes["n2"].metadata.state.task(task_id)
        return task is not None and task.state != "RUNNING"

    await sim.wait_for(ended, DEADLINE_S, f"the import of {name} to end")
    return await sim.nodes["n2"].images.task(task_id)


def image_vdisks(sim: SimCluster) -> list[str]:
    vdisks = sim.run(sim.nodes["n1"].catalog.vdisks())
    return [v.name for v in vdisks if v.name.startswith("image-")]


def assert_refused(sim: SimCluster, name: str, task: dict[str, Any], fragment: str) -> None:
    assert task["state"] == "FAILED" and fragment in task["error"], f"seed {sim.seed}: {task}"
    image = sim.run(sim.nodes["n3"].images.get(name))
    assert image["state"] == "ERROR" and fragment in image["error"], f"seed {sim.seed}: {image}"
    assert not image_vdisks(sim), f"seed {sim.seed}: an image vdisk was left"


def test_a_name_that_resolves_to_a_private_address_is_refused_unfetched() -> None:
    sim = started(nodes=3, seed=71)
    try:
        sim.http.resolve("mirror.example", "10.1.2.3")
        sim.http.serve("http://mirror.example/disk.img", SimSource(DISK))
        task = sim.run(import_and_wait(sim, "private", "http://mirror.example/disk.img"))
        assert_refused(
            sim,
            "private",
            task,
            "refusing 10.1.2.3 (private); allow it with [import] allow in the config",
        )
        assert sim.http.requests == []  # never reached the source
    finally:
        sim.close()


def test_the_allow_list_opens_the_same_source() -> None:
    sim = started(nodes=3, seed=72, import_allow=("10.0.0.0/8",))
    try:
        sim.http.resolve("mirror.example", "10.1.2.3")
        sim.http.serve("http://mirror.example/disk.img", SimSource(DISK))
        task = sim.run(import_and_wait(sim, "private", "http://mirror.example/disk.img"))
        assert task["state"] == "SUCCEEDED", f"seed {sim.seed}: {task}"
    finally:
        sim.close()


@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        ("http://127.0.0.1:7101/metrics", "refusing 127.0.0.1:7101 (node n1 of this cluster)"),
        ("http://127.0.0.1:7102/api/v1/cluster", "(node n2 of this cluster)"),
        ("http://internal.example/disk.img", "refusing 192.168.0.9 (private)"),
        ("http://[::ffff:169.254.169.254]/latest/meta-data/", "(link-local, in IPv6 form)"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
def test_a_redirect_from_an_allowed_source_to_a_refused_one_is_refused(
    location: str, fragment: str
) -> None:
    # The own nodes stay refused although the allow-list opens all of loopback.
    sim = started(nodes=3, seed=73, import_allow=("127.0.0.0/8",))
    try:
        sim.http.resolve("images.example.com", PUBLIC)
        sim.http.resolve("internal.example", "192.168.0.9")
        sim.http.serve("http://internal.example/disk.img", SimSource(DISK))
        sim.http.serve(
            "http://images.example.com/disk.img", SimSource(b"", status=302, location=location)
        )
        task = sim.run(import_and_wait(sim, "hop", "http://images.example.com/disk.img"))
        assert_refused(sim, "hop", task, fragment)
        assert [url for url, _ in sim.http.requests] == ["http://images.example.com/disk.img"]
    finally:
        sim.close()


def test_a_redirect_to_an_allowed_place_is_followed() -> None:
    sim = started(nodes=3, seed=74)
    try:
        sim.http.resolve("images.example.com", PUBLIC)
        sim.http.resolve("cdn.example.net", "2606:4700::6810:84e5")
        sim.http.serve(
            "http://images.example.com/disk.img",
            SimSource(b"", status=302, location="http://cdn.example.net/d/disk.img"),
        )
        sim.http.serve("http://cdn.example.net/d/disk.img", SimSource(DISK))
        task = sim.run(import_and_wait(sim, "cdn", "http://images.example.com/disk.img"))
        assert task["state"] == "SUCCEEDED", f"seed {sim.seed}: {task}"
        assert len(sim.http.requests) == 2
    finally:
        sim.close()


def test_literal_refused_addresses_and_own_nodes_are_refused_at_once() -> None:
    sim = started(nodes=3, seed=75, import_allow=("127.0.0.0/8",))
    try:
        for url, fragment in [
            ("http://10.1.2.3/disk.img", "refusing 10.1.2.3 (private)"),
            ("http://[fe80::1]/disk.img", "(link-local)"),
            ("http://127.0.0.1:7101/metrics", "(node n1 of this cluster)"),
        ]:
            with pytest.raises(BadRequest) as err:
                sim.run(start_import(sim, "now", url))
            assert fragment in err.value.message, (url, err.value.message)
        assert sim.run(sim.nodes["n1"].images.listing()) == []
    finally:
        sim.close()


def test_url_credentials_and_query_values_are_used_but_never_stored_or_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = ("alice", "s3cret-pw", "tok-9f8e7d")
    url = "http://alice:s3cret-pw@images.example.com/disk.img?token=tok-9f8e7d"
    sim = started(nodes=3, seed=76)
    try:
        sim.http.resolve("images.example.com", PUBLIC)
        # One drop, so the import logs a resume naming its source.
        source = SimSource(DISK, drops=[len(DISK) // 2])
        sim.http.serve("http://images.example.com/disk.img?token=tok-9f8e7d", source)
        task = sim.run(import_and_wait(sim, "secret", url))
        assert task["state"] == "SUCCEEDED", f"seed {sim.seed}: {task}"
        assert sim.http.requests[0][0] == url  # the fetch had them
        shown = "http://images.example.com/disk.img?token=REDACTED"
        for node in sim.nodes.values():
            [image] = sim.run(node.images.listing())
            assert image["source_url"] == shown
            state = node.metadata.state.snapshot()
            assert not [s for s in secrets if s.encode() in state], f"seed {sim.seed}"
        assert "interrupted at" in caplog.text and shown in caplog.text
        assert not [s for s in secrets if s in caplog.text]
    finally:
        sim.close()


def test_errors_do_not_echo_secrets() -> None:
    url = "http://bob:pw-4242@nowhere.example/disk.img?sig=sig-1234"
    sim = started(nodes=3, seed=77)
    try:
        task = sim.run(import_and_wait(sim, "gone", url))
        assert task["state"] == "FAILED" and "cannot resolve nowhere.example" in task["error"]
        image = sim.run(sim.nodes["n1"].images.get("gone"))
        for text in (str(task), str(image)):
            assert "pw-4242" not in text and "sig-1234" not in text and "bob" not in text
        with pytest.raises(BadRequest) as err:
            sim.run(start_import(sim, "bad", "ftp://bob:pw-4242@x.example/a?sig=sig-1234"))
        assert "pw-4242" not in err.value.message and "sig-1234" not in err.value.message
    finally:
        sim.close()
