"""An experiment's clients: a kv client stays with a node that answers and moves on from
one that does not (a partitioned node only times out); a client stops when told to."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from fabric.scenario import WorkloadSpec
from shell.client import ApiError
from shell.experiment.api import ClusterApi
from shell.experiment.workloads import Context, Recorder, RunClock, run_client


async def turn() -> None:
    """Let every other ready task run once."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():  # (the client's timeout may have cancelled the wait)
            done.set_result(None)

    loop.call_soon(wake)
    await done


class KvNode:
    """One node's kv API over a store shared by every node; a ``hung`` node never answers
    (its calls end the way a client-side timeout ends them, at once: no test waits on a
    clock, which a loaded machine would make flaky)."""

    def __init__(self, store: dict[str, tuple[Any, int]], hung: bool = False) -> None:
        self.store = store
        self.hung = hung
        self.calls = 0

    async def _answer(self) -> None:
        self.calls += 1
        await turn()  # a real answer takes a turn of the loop
        if self.hung:
            raise TimeoutError

    async def kv_get(self, key: str) -> dict[str, Any]:
        await self._answer()
        if key not in self.store:
            raise ApiError(404, "not_found", key)
        value, version = self.store[key]
        return {"value": value, "version": version}

    async def kv_put(self, key: str, value: Any, expect_version: int | None = None) -> int:
        await self._answer()
        version = self.store.get(key, (None, 0))[1]
        if expect_version is not None and expect_version != version:
            raise ApiError(409, "version_mismatch", key)
        self.store[key] = (value, version + 1)
        return version + 1


async def run_ops(nodes: list[KvNode], count: int, seed: int) -> Recorder:
    recorder = Recorder(RunClock())
    recorder.clock.start()
    ctx = Context(
        recorder,
        cast(ClusterApi, nodes[0]),
        [cast(ClusterApi, n) for n in nodes],
        seed,
        "t",
        "",
    )
    spec = WorkloadSpec(kind="kv-cas", name="kv", keys=1, timeout_s=60.0)
    client = asyncio.create_task(run_client(ctx, spec, 0, []))
    async with asyncio.timeout(30):
        while len(recorder.ops) < count:
            await turn()
        client.cancel()  # and the client stops: the runner ends a run this way
        await asyncio.gather(client, return_exceptions=True)
    return recorder


async def test_a_client_stays_with_a_node_that_answers_even_a_mismatched_compare() -> None:
    for seed in range(5):
        store: dict[str, tuple[Any, int]] = {}
        nodes = [KvNode(store), KvNode(store, hung=True), KvNode(store)]
        recorder = await run_ops(nodes, 200, seed)
        mismatches = [op for op in recorder.ops if op.error.startswith("cas: the value is")]
        assert mismatches, f"seed {seed}: no compare found another value"
        assert {op.extra["node"] for op in recorder.ops} == {0}, f"seed {seed}"
        assert nodes[1].calls == 0, f"seed {seed}: the client walked onto the hung node"


async def test_a_client_moves_on_from_a_node_that_does_not_answer() -> None:
    store: dict[str, tuple[Any, int]] = {}
    nodes = [KvNode(store, hung=True), KvNode(store)]
    recorder = await run_ops(nodes, 20, seed=1)
    first, *rest = recorder.ops
    assert first.extra["node"] == 0 and first.outcome != "ok", first
    assert {op.extra["node"] for op in rest} == {1}


async def test_a_client_stopped_as_its_operation_ends_stops() -> None:
    recorder = Recorder(RunClock())
    loop = asyncio.get_running_loop()
    answers: list[asyncio.Future[int]] = []

    async def call() -> int:
        answers.append(loop.create_future())
        return await answers[-1]

    async def client() -> None:
        while True:
            await recorder.record(1, "kv-read", "k", None, {}, call, 5.0)

    task = asyncio.create_task(client())
    async with asyncio.timeout(5):
        while not answers:
            await turn()
    answers[0].set_result(1)
    task.cancel()  # in the same turn: the answer and the stop arrive together
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done == {task} and task.cancelled(), "the client ran on after it was stopped"
    assert [op.outcome for op in recorder.ops] == ["unknown"]  # stopped in flight
