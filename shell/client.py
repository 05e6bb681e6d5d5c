"""The Python client of the fabric's HTTP API, used by the CLI, the tests and services.

It knows every node's URL and moves on to the next node when one cannot serve:

* a node that refuses the connection, or does not accept it within
  ``CLIENT_CONNECT_TIMEOUT_S``, is skipped: nothing reached it.
* a node that moves no byte either way for ``CLIENT_PROGRESS_TIMEOUT_S`` is asked for
  its health on a second connection. No answer within ``CLIENT_PROBE_TIMEOUT_S`` means
  the node is hung (paused, wedged): the request goes to the next node if sending it
  again is safe (an idempotent method, GET/PUT/DELETE); a POST that may have reached
  the hung node raises ``InDoubt`` instead. So that a hung node seldom gets one, a
  request that is not safe to repeat goes only to a node that has answered this
  client, or a health probe just before. A node that answers the probe is busy, not
  hung, so a long operation (an image conversion, a slow commit) keeps waiting, bounded
  only by the client's total timeout: progress is about bytes moving, not total time.
* a node that answers ``out_of_service`` refused before doing anything (its disks or
  its Raft log cannot be written): the request goes to the next node, whatever its
  method, unless its body was a stream the first node consumed.
* a streamed answer that breaks off (a body shorter than its ``Content-Length``, or a
  node that stops sending) raises ``BrokenStream`` with how many bytes arrived; another
  node cannot resume it.

A node that failed moves to the back of the list, so the client's later requests do not
wait for it again. An answer with an error body raises ``ApiError`` carrying the
server's code and message; nothing else in the project speaks raw HTTP to a cluster.
"""

from __future__ import annotations

import asyncio
import io
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, BinaryIO, Protocol, TypeVar

import aiohttp

from fabric import limits

T = TypeVar("T")


class Writable(Protocol):
    """Where a streamed answer goes: a binary file, or anything that takes bytes."""

    def write(self, data: bytes) -> int: ...


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods whose request may be sent again to another node when one hangs."""
STREAM_CHUNK_BYTES = 1 << 20

# Failures that happen before the request reached the node: any request may move on.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
OUT_OF_SERVICE = "out_of_service"
"""A node's refusal before doing anything (``fabric.errors.OutOfService``): safe to send
the request to the next node, whatever its method."""
# Failures after it may have: only a request that is safe to repeat moves on.
_BROKEN = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message


class Unreachable(Exception):
    """No node of the cluster answered.

    ``maybe_sent``: some node failed after the request may have reached it (a repeatable
    request that broke off mid-way), so it may have been applied; False when every node
    refused the connection or failed a probe first, so nothing reached any."""

    def __init__(self, message: str, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class InDoubt(Unreachable):
    """A node failed a request that is not safe to repeat, after the request was sent.

    The request may or may not have been applied; the caller must look before retrying.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, maybe_sent=True)


class BrokenStream(Exception):
    """A streamed answer broke off after the node answered; the message says how far."""


class _Hung(Exception):
    """The node moved no byte for a while and did not answer a health probe."""


class _Watch:
    """One attempt on one node: when a byte last moved, and what reached the caller."""

    def __init__(self) -> None:
        self.last_s = time.monotonic()
        self.delivered = 0
        """Bytes of a streamed answer already handed to the caller: no other node may
        take over from here."""
        self.expected: int | None = None
        """The answer's Content-Length, once its headers arrived."""

    def moved(self, delivered: int = 0) -> None:
        self.last_s = time.monotonic()
        self.delivered += delivered

    def idle_s(self) -> float:
        return time.monotonic() - self.last_s


class FabricClient:
    def __init__(
        self,
        urls: list[str],
        timeout_s: float = 30.0,
        cluster_id: str = "",
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        assert urls, "a client needs at least one node URL"
        self.urls = list(urls)
        self.token = os.environ.get("FABRIC_TOKEN", "") if token is None else token
        """Sent as ``Authorization: Bearer`` with every request ("" sends none); by
        default the environment's ``FABRIC_TOKEN``."""
        self.ssl_context = ssl_context
        """Trusting the cluster's CA (https nodes); None: the system's trust store."""
        """Nodes in the order they are tried; a node that fails moves to the back."""
        self.cluster_id = cluster_id
        """When set, nodes of any other cluster refuse our requests (same ports, say)."""
        self.timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=limits.CLIENT_CONNECT_TIMEOUT_S
        )
        self._serving: set[str] = set()
        """Nodes that answered this client: a request that is not safe to repeat may go
        to them without a probe first."""
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FabricClient:
        headers = {"X-Fabric-Cluster": self.cluster_id} if self.cluster_id else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connector = aiohttp.TCPConnector(ssl=self.ssl_context or True)
        self._session = aiohttp.ClientSession(
            timeout=self.timeout, headers=headers, connector=connector
        )
        # aiohttp sends an idempotent request (PUT, DELETE) again, once and silently, when
        # a pooled connection breaks; when a restarting node refuses that second try, we
        # would be told "never sent" about a request the node may have applied before it
        # went. What is sent again, and where, is decided here (``_each_node``).
        self._session._retry_connection = False
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

        async def attempt(url: str, watch: _Watch) -> Any:
            async with self.session.request(method, url + path, **kwargs) as resp:
                watch.moved()
                return await self._answer(resp)

        # A streamed body is spent by the first attempt: it cannot go to another node.
        replayable = isinstance(kwargs.get("data"), None | bytes | bytearray | str)
        return await self._each_node(method, attempt, repeatable=replayable)

    # --- moving on from a node that cannot serve ------------------------------------------
    async def _each_node(
        self,
        method: str,
        attempt: Callable[[str, _Watch], Awaitable[T]],
        repeatable: bool = True,
    ) -> T:
        """``attempt`` on the first node that serves it (see the module's docstring).

        ``repeatable``: the request can be sent again as it was (no spent stream)."""
        resendable = repeatable
        repeatable = repeatable and method in IDEMPOTENT_METHODS
        errors = []
        maybe_sent = False
        for url in list(self.urls):
            watch = _Watch()
            try:
                if not repeatable and url not in self._serving and not await self._probe(url):
                    errors.append(f"{url}: did not answer a health probe")
                    self._demote(url)
                    continue
                result = await self._watched(url, watch, attempt(url, watch))
                self._serving.add(url)
                return result
            except _NOT_SENT as exc:
                errors.append(f"{url}: {exc or type(exc).__name__}")
            except ApiError as exc:
                if exc.code != OUT_OF_SERVICE or not resendable:
                    raise
                errors.append(f"{url}: {exc.message}")  # refused before any work
            except (_Hung, *_BROKEN) as exc:
                why = _describe(exc)
                if watch.delivered or isinstance(exc, aiohttp.ClientPayloadError):
                    raise BrokenStream(
                        f"{url}: {why} after {watch.delivered} of "
                        f"{'?' if watch.expected is None else watch.expected} bytes"
                    ) from exc
                if not repeatable:
                    raise InDoubt(
                        f"{url}: {why} after the {method} request was sent; it may or may "
                        "not have been applied"
                    ) from exc
                errors.append(f"{url}: {why}")
                maybe_sent = True
            self._demote(url)
        raise Unreachable("no node answered: " + "; ".join(errors), maybe_sent)

    async def _watched(self, url: str, watch: _Watch, attempt: Awaitable[T]) -> T:
        """``attempt``'s result, unless the node goes quiet and fails a health probe."""
        task = asyncio.ensure_future(attempt)
        try:
            while not task.done():
                quiet_s = limits.CLIENT_PROGRESS_TIMEOUT_S - watch.idle_s()
                if quiet_s > 0:
                    await asyncio.wait({task}, timeout=quiet_s)
                elif await self._alive(url, task):
                    watch.moved()  # busy, not hung: wait another progress period
                else:
                    raise _Hung(
                        f"moved no byte for {watch.idle_s():.0f} s and did not answer a "
                        f"health probe in {limits.CLIENT_PROBE_TIMEOUT_S:.0f} s"
                    )
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved here when we raise something else

    async def _alive(self, url: str, task: asyncio.Future[Any]) -> bool:
        """Does the node answer a health probe (or finish ``task`` meanwhile)?"""
        probe = asyncio.ensure_future(self._probe(url))
        await asyncio.wait({task, probe}, return_when=asyncio.FIRST_COMPLETED)
        if probe.done():
            return probe.result()
        probe.cancel()
        await asyncio.wait({probe})
        return True

    async def _probe(self, url: str) -> bool:
        timeout = aiohttp.ClientTimeout(total=limits.CLIENT_PROBE_TIMEOUT_S)
        try:
            async with self.session.get(url + "/api/v1/health", timeout=timeout) as resp:
                await resp.read()
            self._serving.add(url)
            return True  # any answer, even an error, shows the node is serving
        except (aiohttp.ClientError, TimeoutError):
            return False

    def pass_over_first(self) -> None:
        """The caller gave up waiting (its own deadline, shorter than ours) on the node
        tried first: try the others first from now on. A node that is cut off from its
        peers still answers health probes, so only the caller can tell it is no use."""
        self._demote(self.urls[0])

    def _demote(self, url: str) -> None:
        self._serving.discard(url)
        self.urls.remove(url)
        self.urls.append(url)

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

    async def metrics_text(self, names: Sequence[str] = ()) -> str:
        """The first answering node's ``/metrics`` (Prometheus text: that node's numbers),
        only the series ``names`` if any are given."""
        params = [("name[]", name) for name in names]

        async def attempt(url: str, watch: _Watch) -> str:
            async with self.session.get(url + "/metrics", params=params) as resp:
                watch.moved()
                if resp.status >= 400:
                    await self._answer(resp)
                return await resp.text()

        return await self._each_node("GET", attempt)

    # --- healing ----------------------------------------------------------------------------
    async def events(
        self, since: int | None = None, limit: int | None = None, kind: str | None = None
    ) -> dict[str, Any]:
        params = {
            k: str(v)
            for k, v in (("since", since), ("limit", limit), ("kind", kind))
            if v is not None
        }
        answer: dict[str, Any] = await self.request("GET", "/api/v1/events", params=params)
        return answer

    async def rebuild(self, **settings: Any) -> dict[str, Any]:
        """Rebuild settings and progress; with ``settings``, change them first."""
        body = {k: v for k, v in settings.items() if v is not None}
        method = "PUT" if body else "GET"
        answer: dict[str, Any] = await self.request(method, "/api/v1/rebuild", json=body or None)
        return answer

    async def add_node(self, member: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("POST", "/api/v1/nodes", json=member)
        return answer

    async def promote(self, node: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("POST", f"/api/v1/nodes/{node}/promote")
        return answer

    async def rejoin(self, node: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("POST", f"/api/v1/nodes/{node}/rejoin")
        return answer

    async def remove_node(self, node: str) -> None:
        await self.request("DELETE", f"/api/v1/nodes/{node}")

    async def drain(self, node: str, undo: bool | None = None) -> dict[str, Any]:
        """A node's drain; with ``undo`` given, start (False) or stop (True) it first."""
        path = f"/api/v1/nodes/{node}/drain"
        if undo is None:
            answer: dict[str, Any] = await self.request("GET", path)
        else:
            answer = await self.request("POST", path, json={"undo": undo})
        return answer

    async def scrub(self, **settings: Any) -> dict[str, Any]:
        """Scrub settings; with ``settings`` (``now=True`` among them), change them first."""
        body = {k: v for k, v in settings.items() if v is not None and v is not False}
        method = "PUT" if body else "GET"
        answer: dict[str, Any] = await self.request(method, "/api/v1/scrub", json=body or None)
        return answer

    # --- faults ------------------------------------------------------------------------------
    async def inject_fault(
        self,
        kind: str,
        target: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        duration_s: float | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Inject a fault (admin); the answer names the nodes its target resolved to."""
        body: dict[str, Any] = {"kind": kind, "params": params or {}, "duration_s": duration_s}
        if target is not None:
            body["target"] = target
        if seed is not None:
            body["seed"] = seed
        answer: dict[str, Any] = await self.request("POST", "/api/v1/faults", json=body)
        return answer

    async def faults(self) -> list[dict[str, Any]]:
        answer = await self.request("GET", "/api/v1/faults")
        found: list[dict[str, Any]] = answer["faults"]
        return found

    async def clear_faults(self, id: str | None = None) -> None:
        await self.request("DELETE", "/api/v1/faults" + (f"/{id}" if id else ""))

    # --- metadata key space -----------------------------------------------------------------
    async def kv_put(self, key: str, value: Any, expect_version: int | None = None) -> int:
        body: dict[str, Any] = {"value": value}
        if expect_version is not None:
            body["expect_version"] = expect_version
        answer = await self.request("PUT", f"/api/v1/kv/{key}", json=body)
        return int(answer["version"])

    async def create_token(self, name: str, role: str) -> dict[str, Any]:
        """A new token (shown once, in the answer's ``token``)."""
        body = {"name": name, "role": role}
        answer: dict[str, Any] = await self.request("POST", "/api/v1/tokens", json=body)
        return answer

    async def tokens(self) -> list[dict[str, Any]]:
        answer: dict[str, Any] = await self.request("GET", "/api/v1/tokens")
        listed: list[dict[str, Any]] = answer["tokens"]
        return listed

    async def revoke_token(self, token_id: str) -> None:
        await self.request("DELETE", f"/api/v1/tokens/{token_id}")

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

    async def vdisk_extents(self, ref: str) -> dict[str, Any]:
        """``size``, ``extent_bytes`` and the ``mapped`` runs ``[first index, count]`` of
        extents that hold data (the others are holes)."""
        answer: dict[str, Any] = await self.request("GET", f"/api/v1/vdisks/{ref}/extents")
        return answer

    async def delete_vdisk(self, ref: str) -> None:
        await self.request("DELETE", f"/api/v1/vdisks/{ref}")

    async def write_vdisk(
        self,
        ref: str,
        path: str,
        offset: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream a local file into the vdisk at ``offset``."""
        answer = await self._send_file(
            f"/api/v1/vdisks/{ref}/data", path, params={"offset": str(offset)}, progress=progress
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

        The file is read afresh for each node tried (a stream cannot be replayed);
        ``progress`` hears of each byte once, however many nodes were tried.
        """
        headers = {
            "Content-Length": str(os.path.getsize(file)),
            "Content-Type": "application/octet-stream",
        }
        reported = 0

        async def body(watch: _Watch) -> AsyncIterator[bytes]:
            nonlocal reported
            pos = 0
            with open(file, "rb") as f:
                while chunk := f.read(STREAM_CHUNK_BYTES):
                    watch.moved()  # the node took the previous chunk
                    yield chunk
                    pos += len(chunk)
                    if progress and pos > reported:
                        progress(pos - reported)
                        reported = pos

        async def attempt(url: str, watch: _Watch) -> Any:
            async with self.session.put(
                url + path, params=params, data=body(watch), headers=headers
            ) as resp:
                watch.moved()
                return await self._answer(resp)

        return await self._each_node("PUT", attempt)

    async def _receive(
        self,
        path: str,
        out: BinaryIO | Writable,
        headers: dict[str, str],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """GET a stream into ``out``; bytes written.

        Moves on to another node only before the first byte; a body shorter than its
        ``Content-Length`` raises ``BrokenStream``.
        """

        async def attempt(url: str, watch: _Watch) -> int:
            async with self.session.get(url + path, headers=headers) as resp:
                watch.moved()
                if resp.status >= 400:
                    await self._answer(resp)
                watch.expected = resp.content_length
                async for chunk in resp.content.iter_chunked(STREAM_CHUNK_BYTES):
                    out.write(chunk)
                    watch.moved(len(chunk))
                    if progress:
                        progress(len(chunk))
            if watch.expected is not None and watch.delivered != watch.expected:
                raise BrokenStream(
                    f"{url}: connection closed after {watch.delivered} of {watch.expected} bytes"
                )
            return watch.delivered

        return await self._each_node("GET", attempt)

    async def write_vdisk_bytes(self, ref: str, data: bytes, offset: int = 0) -> int:
        answer = await self.request(
            "PUT", f"/api/v1/vdisks/{ref}/data", params={"offset": str(offset)}, data=data
        )
        return int(answer["written"])

    async def read_vdisk(
        self,
        ref: str,
        out: BinaryIO | Writable,
        offset: int = 0,
        length: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream ``length`` bytes (default: to the end) from ``offset`` into ``out``."""
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        return await self._receive(f"/api/v1/vdisks/{ref}/data", out, headers, progress)

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


def _describe(exc: BaseException) -> str:
    """How a node failed, in the words of the module's docstring."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection closed"
    if isinstance(exc, _Hung):
        return f"node hung: {exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
