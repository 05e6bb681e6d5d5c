"""URL import on virtual time: a source that drops midway is resumed with Range requests.

The nodes fetch through the runtime's ``Fetcher`` port; here that is ``SimHttp``, whose
sources drop the connection after a scripted number of bytes. The import must resume
where it stopped, convert on the fly, and end ACTIVE with bytes identical to qemu-img's
own conversion; a source that keeps dropping fails the task and leaves no vdisk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fabric.sim.http import SimSource
from nodes.simcluster import SimCluster
from tests.imagekit import convert, make_mixed_raw, qemu_raw
from tests.sim.conftest import started

pytestmark = pytest.mark.qemu
URL = "http://127.0.0.1:8080/images/disk.qcow2"
ALLOW = ("127.0.0.1/32",)
"""The sources listen on loopback, which URL import refuses unless the config allows it."""


IMPORT_DEADLINE_S = 600.0
"""Virtual seconds an import may take, its resumes and their backoff included."""


async def import_and_wait(
    sim: SimCluster, name: str, via: str = "n2", **extra: Any
) -> dict[str, Any]:
    svc = sim.nodes[via].images
    image = await svc.create({"name": name, "source_url": URL, **extra})
    task_id = image["task_id"]
    assert task_id, f"seed {sim.seed}: no task"

    def ended() -> bool:
        task = sim.nodes[via].metadata.state.task(task_id)
        return task is not None and task.state != "RUNNING"

    await sim.wait_for(ended, IMPORT_DEADLINE_S, f"the import of {name} to end")
    return await svc.task(task_id)


async def download(sim: SimCluster, name: str) -> bytes:
    node = sim.nodes["n3"]
    image = await node.images.get(name)
    record = node.images.image(image["id"])
    assert record.vdisk_id is not None and record.virtual_size is not None
    _, _, stream = await node.reader.read(record.vdisk_id, 0, record.virtual_size)
    return b"".join([c async for c in stream])


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    tmp = tmp_path_factory.mktemp("url")
    raw = tmp / "disk.raw"
    make_mixed_raw(raw, 6 << 20, seed=8)
    image = convert(raw, tmp / "disk.qcow2", "qcow2")
    return Path(image).read_bytes(), qemu_raw(Path(image), tmp)


def test_a_dropping_source_is_resumed_and_converted_exactly(qcow2: tuple[bytes, bytes]) -> None:
    source, expected = qcow2
    sim = started(nodes=3, seed=41, import_allow=ALLOW)
    try:
        cut = len(source) // 3
        sim.http.serve(URL, SimSource(source, drops=[cut, cut + 4096]))
        task = sim.run(import_and_wait(sim, "web"))
        assert task["state"] == "SUCCEEDED", f"seed {sim.seed}: {task}"
        assert task["bytes_done"] == task["bytes_expected"] == len(source)
        offsets = [offset for _, offset in sim.http.requests]
        assert offsets[0] == 0 and len(offsets) == 3 and offsets[1] == cut, offsets
        assert sim.run(download(sim, "web")) == expected
    finally:
        sim.close()


def test_a_source_that_keeps_dropping_fails_the_task_and_leaves_nothing(
    qcow2: tuple[bytes, bytes],
) -> None:
    source, _ = qcow2
    sim = started(nodes=3, seed=42, import_allow=ALLOW)
    try:
        sim.http.serve(URL, SimSource(source, drops=[100_000 * (i + 1) for i in range(20)]))
        task = sim.run(import_and_wait(sim, "flaky"))
        assert task["state"] == "FAILED" and "failed 6 times" in task["error"], task
        image = sim.run(sim.nodes["n1"].images.get("flaky"))
        assert image["state"] == "ERROR"
        vdisks = sim.run(sim.nodes["n1"].catalog.vdisks())
        assert not [v for v in vdisks if v.name.startswith("image-")]
    finally:
        sim.close()


def test_a_server_without_range_support_cannot_be_resumed(qcow2: tuple[bytes, bytes]) -> None:
    source, _ = qcow2
    sim = started(nodes=3, seed=43, import_allow=ALLOW)
    try:
        sim.http.serve(URL, SimSource(source, drops=[500_000], ranges=False))
        task = sim.run(import_and_wait(sim, "norange"))
        assert task["state"] == "FAILED" and "Range" in task["error"], task
    finally:
        sim.close()


def test_an_import_records_its_size_from_the_start_and_to_the_end(
    qcow2: tuple[bytes, bytes],
) -> None:
    """The size the source announced is on the task while it runs (the CLI's bar needs
    it), and a failed import still says how far it got of how much."""
    source, _ = qcow2
    sim = started(nodes=3, seed=44, import_allow=ALLOW)
    try:
        sim.http.serve(URL, SimSource(source, drops=[len(source) // 2]))
        svc = sim.nodes["n2"].images
        image = sim.run(svc.create({"name": "sized", "source_url": URL}))
        task_id = image["task_id"]

        def sized_while_running() -> bool:
            task = svc.metadata.state.task(task_id)
            assert task is not None and task.state == "RUNNING", f"seed {sim.seed}: {task}"
            return task.bytes_expected == len(source)

        sim.run(sim.wait_for(sized_while_running, 60, "the size on the running task"))

        # Declared qcow2, served a raw disk: refused at the first bytes, naming both.
        sim.http.serve(URL, SimSource(b"\x01" * 700_001))
        task = sim.run(import_and_wait(sim, "liar", source_format="qcow2"))
        assert task["state"] == "FAILED", f"seed {sim.seed}: {task}"
        assert "declared source_format qcow2, but the content is raw" in task["error"]
        assert task["bytes_expected"] == 700_001 and 0 < task["bytes_done"] <= 700_001
        assert sim.run(svc.get("liar"))["state"] == "ERROR"
    finally:
        sim.close()
