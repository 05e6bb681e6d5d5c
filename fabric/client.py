"""The Python client of the fabric's HTTP API, used by the CLI, the tests and services.

It knows every node's URL and fails over: a request that cannot reach one node (refused,
timed out) goes to the next. An answer with an error body raises ``ApiError`` carrying
the server's code and message; nothing else in the project speaks raw HTTP to a cluster.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, BinaryIO

import aiohttp


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message


class Unreachable(Exception):
    """No node of the cluster answered."""


class FabricClient:
    def __init__(self, urls: list[str], timeout_s: float = 30.0, cluster_id: str = "") -> None:
        assert urls, "a client needs at least one node URL"
        self.urls = list(urls)
        self.cluster_id = cluster_id
        """When set, nodes of any other cluster refuse our requests (same ports, say)."""
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=2.0)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FabricClient:
        headers = {"X-Fabric-Cluster": self.cluster_id} if self.cluster_id else {}
        self._session = aiohttp.ClientSession(timeout=self.timeout, headers=headers)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use FabricClient in 'async with'"
        return self._session

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON answer of the first node that answers; ApiError for an error answer."""
        errors = []
        for url in self.urls:
            try:
                async with self.session.request(method, url + path, **kwargs) as resp:
                    return await self._answer(resp)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                errors.append(f"{url}: {exc or type(exc).__name__}")
        raise Unreachable("no node answered: " + "; ".join(errors))

    @staticmethod
    async def _answer(resp: aiohttp.ClientResponse) -> Any:
        if resp.status == 204:
            return None
        body = await resp.read()
        try:
            data = await resp.json(content_type=None) if body else None
        except ValueError:
            data = None
        if resp.status >= 400:
            err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            raise ApiError(
                resp.status,
                err.get("code", "http_error"),
                err.get("message", body.decode(errors="replace")[:200]),
            )
        return data

    # --- cluster ----------------------------------------------------------------------------
    async def cluster(self) -> dict[str, Any]:
        view: dict[str, Any] = await self.request("GET", "/api/v1/cluster")
        return view

    async def health(self) -> dict[str, Any]:
        h: dict[str, Any] = await self.request("GET", "/api/v1/health")
        return h

    # --- metadata key space -----------------------------------------------------------------
    async def kv_put(self, key: str, value: Any, expect_version: int | None = None) -> int:
        body: dict[str, Any] = {"value": value}
        if expect_version is not None:
            body["expect_version"] = expect_version
        answer = await self.request("PUT", f"/api/v1/kv/{key}", json=body)
        return int(answer["version"])

    async def kv_get(self, key: str) -> dict[str, Any]:
        item: dict[str, Any] = await self.request("GET", f"/api/v1/kv/{key}")
        return item

    async def kv_delete(self, key: str) -> None:
        await self.request("DELETE", f"/api/v1/kv/{key}")

    # --- containers -------------------------------------------------------------------------
    async def create_container(self, name: str, **policy: Any) -> dict[str, Any]:
        body = {"name": name, **{k: v for k, v in policy.items() if v is not None}}
        view: dict[str, Any] = await self.request("POST", "/api/v1/containers", json=body)
        return view

    async def containers(self) -> list[dict[str, Any]]:
        views: list[dict[str, Any]] = await self.request("GET", "/api/v1/containers")
        return views

    async def container(self, name: str) -> dict[str, Any]:
        view: dict[str, Any] = await self.request("GET", f"/api/v1/containers/{name}")
        return view

    async def delete_container(self, name: str) -> None:
        await self.request("DELETE", f"/api/v1/containers/{name}")

    # --- vdisks -----------------------------------------------------------------------------
    async def create_vdisk(self, name: str, container: str, size: int) -> dict[str, Any]:
        vd: dict[str, Any] = await self.request(
            "POST", "/api/v1/vdisks", json={"name": name, "container": container, "size": size}
        )
        return vd

    async def vdisks(self) -> list[dict[str, Any]]:
        vds: list[dict[str, Any]] = await self.request("GET", "/api/v1/vdisks")
        return vds

    async def vdisk(self, ref: str) -> dict[str, Any]:
        vd: dict[str, Any] = await self.request("GET", f"/api/v1/vdisks/{ref}")
        return vd

    async def delete_vdisk(self, ref: str) -> None:
        await self.request("DELETE", f"/api/v1/vdisks/{ref}")

    async def write_vdisk(self, ref: str, path: str, offset: int = 0) -> int:
        """Stream a local file into the vdisk at ``offset``."""
        answer = await self._send_file(
            f"/api/v1/vdisks/{ref}/data", path, params={"offset": str(offset)}
        )
        return int(answer["written"])

    async def _send_file(
        self,
        path: str,
        file: str,
        params: dict[str, str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        """PUT a local file as a stream; JSON answer.

        Fails over to the next node only if a node cannot be reached at all: the file is
        read afresh for each attempt (a stream cannot be replayed).
        """

        async def body() -> AsyncIterator[bytes]:
            with open(file, "rb") as f:
                while chunk := f.read(1 << 20):
                    if progress:
                        progress(len(chunk))
                    yield chunk

        headers = {
            "Content-Length": str(os.path.getsize(file)),
            "Content-Type": "application/octet-stream",
        }
        errors = []
        for url in self.urls:
            try:
                async with self.session.put(
                    url + path, params=params, data=body(), headers=headers
                ) as resp:
                    return await self._answer(resp)
            except aiohttp.ClientConnectorError as exc:
                errors.append(f"{url}: {exc}")
        raise Unreachable("no node answered: " + "; ".join(errors))

    async def _receive(
        self,
        path: str,
        out: BinaryIO,
        headers: dict[str, str],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """GET a stream into ``out``; bytes written. Fails over only before any byte."""
        last: Exception | None = None
        for url in self.urls:
            n = 0
            try:
                async with self.session.get(url + path, headers=headers) as resp:
                    if resp.status >= 400:
                        await self._answer(resp)
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        out.write(chunk)
                        n += len(chunk)
                        if progress:
                            progress(len(chunk))
                    return n
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if n:
                    raise  # part of the data is out already: another node cannot resume it
                last = exc
        raise Unreachable(f"no node answered: {last}")

    async def write_vdisk_bytes(self, ref: str, data: bytes, offset: int = 0) -> int:
        answer = await self.request(
            "PUT", f"/api/v1/vdisks/{ref}/data", params={"offset": str(offset)}, data=data
        )
        return int(answer["written"])

    async def read_vdisk(
        self, ref: str, out: BinaryIO, offset: int = 0, length: int | None = None
    ) -> int:
        """Stream ``length`` bytes (default: to the end) from ``offset`` into ``out``."""
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        return await self._receive(f"/api/v1/vdisks/{ref}/data", out, headers)

    async def read_vdisk_bytes(self, ref: str, offset: int = 0, length: int | None = None) -> bytes:
        buf = io.BytesIO()
        await self.read_vdisk(ref, buf, offset, length)
        return buf.getvalue()

    # --- images -----------------------------------------------------------------------------
    async def create_image(self, name: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
        image: dict[str, Any] = await self.request("POST", "/api/v1/images", json=body)
        return image

    async def images(self) -> list[dict[str, Any]]:
        images: list[dict[str, Any]] = await self.request("GET", "/api/v1/images")
        return images

    async def image(self, ref: str) -> dict[str, Any]:
        image: dict[str, Any] = await self.request("GET", f"/api/v1/images/{ref}")
        return image

    async def delete_image(self, ref: str) -> None:
        await self.request("DELETE", f"/api/v1/images/{ref}")

    async def task(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = await self.request("GET", f"/api/v1/tasks/{task_id}")
        return task

    async def upload_image(
        self, ref: str, path: str, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Stream a local image file (any supported format) into image ``ref``."""
        image: dict[str, Any] = await self._send_file(
            f"/api/v1/images/{ref}/file", path, progress=progress
        )
        return image

    async def download_image(
        self,
        ref: str,
        out: BinaryIO,
        offset: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return await self._receive(f"/api/v1/images/{ref}/file", out, headers, progress)
