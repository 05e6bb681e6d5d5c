"""``fabric node run``: one node as a real process, serving until SIGTERM.

Exit codes tell the launcher why a node could not start: 2 bad config, node id or
cluster secret (or a directory others may write), 3 its address is taken, 4 its durable
state is corrupt, 5 another process holds its directory.

A node creates every file for its own user only (umask 077): extent groups, the Raft
log and snapshots, spill files and its log.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import logging
import os
import random
import signal
import ssl
import sys

import uvloop
from aiohttp import web

from fabric import limits
from fabric.config import ClusterConfig, ConfigError, load_config
from fabric.consensus.wal import CorruptLog
from fabric.keys import ClusterKeys
from fabric.ports import Runtime
from nodes import secretfile, tls
from nodes.api import HEALTH_EXTRA, build_app
from nodes.api_access import check_access
from nodes.api_access import install as install_access
from nodes.api_access import routes as access_routes
from nodes.api_data import routes as data_routes
from nodes.api_faults import install as install_faults
from nodes.api_faults import routes as fault_routes
from nodes.api_healing import routes as healing_routes
from nodes.api_images import routes as image_routes
from nodes.api_members import routes as member_routes
from nodes.console.app import console_pages
from nodes.console.app import install as install_console
from nodes.faultinject import (
    NET_FAULTS,
    FaultAgent,
    FaultyClock,
    FaultyDisk,
    NetFaults,
    client_faults,
)
from nodes.guard import GUARD, ConnectionGuard, NodeAddresses, guard_middleware
from nodes.node import Node
from nodes.runtime import FileDisk, HttpFetcher, HttpTransport, RealClock, thread_offload
from nodes.services.images import FileSpill

log = logging.getLogger("fabric.node")

EXIT_CONFIG, EXIT_ADDRESS, EXIT_CORRUPT, EXIT_LOCKED = 2, 3, 4, 5


def disk_root(node_dir: str, disk: str) -> str:
    return disk if os.path.isabs(disk) else os.path.join(node_dir, disk)


def _lock(node_dir: str) -> int | None:
    secretfile.make_private_dir(node_dir)
    fd = os.open(os.path.join(node_dir, "LOCK"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def api_routes() -> list[web.RouteDef]:
    """The /api/v1 routes beyond those of ``build_app`` (every one is in the OpenAPI
    document: ``tests/unit/test_api_schemas.py``)."""
    return [
        *data_routes(),
        *image_routes(),
        *healing_routes(),
        *member_routes(),
        *access_routes(),
        *fault_routes(),
    ]


async def serve(
    config: ClusterConfig,
    node_id: str,
    node_dir: str,
    keys: ClusterKeys,
    server_ssl: ssl.SSLContext | None = None,
    client_ssl: ssl.SSLContext | None = None,
) -> int:
    nc = config.node(node_id)
    # Injected faults wrap the clock, the disks and the transport's sends (idle: free).
    rng = random.Random()
    clock = FaultyClock(RealClock())
    net = NetFaults(random.Random(rng.getrandbits(64)))
    transport = HttpTransport(node_id, config, keys, client_ssl, clock.wall, net)
    disks = [FileDisk(d, disk_root(node_dir, d), nc.capacity_of(i)) for i, d in enumerate(nc.disks)]
    faulty = [FaultyDisk(d, random.Random(rng.getrandbits(64))) for d in disks]
    agent = FaultAgent(node_id, clock, faulty, net)
    transport.serve_control(agent.control)
    fetcher = HttpFetcher()
    runtime = Runtime(
        clock=clock,
        rng=rng,
        transport=transport,
        disks=list(faulty),
        offload=thread_offload,
        fetcher=fetcher,
        spill_factory=lambda: FileSpill(os.path.join(node_dir, "spill")),
        keys=keys,
    )
    node = Node(config, node_id, runtime)
    # The console's middleware turns check_access's refusals of its pages into pages.
    app = build_app(node, [*transport.routes(), *api_routes()], [console_pages, check_access])
    install_access(app)
    install_console(app)
    install_faults(app, transport, agent)
    app[NET_FAULTS] = net
    app[HEALTH_EXTRA] = agent.summary
    app.middlewares.append(client_faults)
    guard = ConnectionGuard(
        NodeAddresses(lambda: (n.host for n in node.membership.nodes())), config.limits
    )
    app[GUARD] = guard
    app.middlewares.append(guard_middleware)  # inside `errors`: a stalled body is answered 408
    # aiohttp's keep-alive timer is the request-head deadline (see nodes/guard.py).
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=config.limits.header_timeout_s,
    )
    await runner.setup()
    assert runner.server is not None, "set up above"
    loop = asyncio.get_running_loop()
    try:
        # Not a TCPSite: every connection goes through the guard, which counts it first.
        listener = await loop.create_server(
            guard.factory(runner.server), nc.host, nc.port, ssl=server_ssl
        )
    except OSError as exc:
        log.critical(
            "cannot listen on %s: %s (is another process using this port?)",
            nc.address,
            exc.strerror or exc,
        )
        await runner.cleanup()
        return EXIT_ADDRESS
    try:
        await node.start()
    except CorruptLog as exc:
        log.critical(
            "refusing to start: %s (disk %s). Move the node's directory aside to "
            "rebuild it from its peers.",
            exc,
            disks[0].root,
        )
        listener.close()
        await runner.cleanup()
        return EXIT_CORRUPT
    log.info("node %s serving on %s (voters %s)", node_id, nc.url, ",".join(config.voters))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node %s stopping", node_id)
    await node.stop()
    await transport.close()
    await fetcher.close()
    listener.close()  # no new connections; the runner closes the open ones
    await runner.cleanup()
    for disk in disks:
        disk.close()
    log.info("node %s stopped", node_id)
    return 0


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8


def tune_allocator() -> None:
    """Keep freed megabyte buffers in the heap for the next one.

    By default glibc returns a big freed buffer (an extent, a message, an EC window) to
    the kernel at once, so the next one is faulted in and zeroed again, page by page. A
    node under EC work or reads spent more CPU on those page faults than on the work
    itself (pyeclib ran at a seventh of its speed in a fresh process). The price is the
    free heap each arena may keep (``limits.NODE_HEAP_KEEP_BYTES``), bounded by
    ``limits.NODE_MALLOC_ARENAS`` arenas.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc: its allocator keeps its own policy
    mallopt(M_ARENA_MAX, limits.NODE_MALLOC_ARENAS)
    mallopt(M_MMAP_THRESHOLD, limits.NODE_HEAP_BUFFER_BYTES)
    mallopt(M_TRIM_THRESHOLD, limits.NODE_HEAP_KEEP_BYTES)
    mallopt(M_TOP_PAD, limits.NODE_HEAP_GROW_BYTES)


def run_node(
    config_path: str, node_id: str, node_dir: str | None, secret_path: str | None = None
) -> int:
    tune_allocator()
    os.umask(0o077)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(config_path)
        config.node(node_id)
    except ConfigError as exc:
        log.critical("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    node_dir = node_dir or os.path.join(os.path.dirname(config_path) or ".", "nodes", node_id)
    try:
        keys = secretfile.load(secret_path or secretfile.default_path(config_path))
        secretfile.make_private_dir(node_dir)
        secretfile.check_private_dir(node_dir)
        server_ssl = tls.server_context(config.tls, config_path) if config.tls else None
        client_ssl = tls.client_context(config.tls, config_path)
    except (secretfile.SecretError, tls.TlsError, OSError) as exc:
        log.critical("refusing to start: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    lock = _lock(node_dir)
    if lock is None:
        log.critical("another process is running node %s in %s", node_id, node_dir)
        return EXIT_LOCKED
    # uvloop: the same asyncio API on libuv, with cheaper socket and callback handling
    # (the write path spends much of its time moving bytes between sockets and files).
    result: int = uvloop.run(serve(config, node_id, node_dir, keys, server_ssl, client_ssl))
    return result
