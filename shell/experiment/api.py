"""What an experiment asks of the cluster: the part of ``FabricClient`` the workloads,
the sampler and the fault applier use.

``fabric run`` hands them a ``FabricClient`` (HTTP to real nodes); ``fabric sim`` an
in-process ``shell.sim.client.SimClient`` that calls the simulated nodes' own services.
Either raises the same errors (``ApiError`` with the status, ``Unreachable``,
``BrokenStream``), so an operation's outcome is decided the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO, Protocol


class ClusterApi(Protocol):
    def pass_over_first(self) -> None: ...

    async def cluster(self) -> dict[str, Any]: ...

    async def rebuild(self, **settings: Any) -> dict[str, Any]: ...

    async def metrics_text(self, names: Sequence[str] = ()) -> str: ...

    async def events(
        self, since: int | None = None, limit: int | None = None, kind: str | None = None
    ) -> dict[str, Any]: ...

    async def inject_fault(
        self,
        kind: str,
        target: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        duration_s: float | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]: ...

    async def clear_faults(self, id: str | None = None) -> None: ...

    async def kv_get(self, key: str) -> dict[str, Any]: ...

    async def kv_put(self, key: str, value: Any, expect_version: int | None = None) -> int: ...

    async def create_container(self, name: str, **policy: Any) -> dict[str, Any]: ...

    async def create_vdisk(self, name: str, container: str, size: int) -> dict[str, Any]: ...

    async def write_vdisk_bytes(self, ref: str, data: bytes, offset: int = 0) -> int: ...

    async def read_vdisk_bytes(
        self, ref: str, offset: int = 0, length: int | None = None
    ) -> bytes: ...

    async def create_image(self, name: str, **fields: Any) -> dict[str, Any]: ...

    async def image(self, ref: str) -> dict[str, Any]: ...

    async def task(self, task_id: str) -> dict[str, Any]: ...

    async def upload_image(self, ref: str, path: str) -> dict[str, Any]: ...

    async def download_image(self, ref: str, out: BinaryIO) -> int: ...
