"""``fabric up / down / status`` for a local cluster of real node processes.

A cluster directory holds everything of one local cluster::

    DIR/cluster.toml              the config the nodes run with (written by the first up)
    DIR/cluster.secret            the secret that makes a process a node of this cluster
    DIR/admin.token               the cluster's first admin API token (the CLI's default)
    DIR/nodes/<id>/node.log       the node's log
    DIR/nodes/<id>/pid            the running node's process id
    DIR/nodes/<id>/<disk>/        the node's disks (Raft state lives on the first)

Everything in it is for its owner only (directories 0700, files 0600).

``up`` on an existing directory restarts the same cluster from its own cluster.toml;
``down`` stops every node (SIGTERM, then SIGKILL after a grace period).

``up`` starts every node it can. A node whose process exits while ``up`` waits is
named with its reason and log tail; if the voters that did start are a majority, ``up``
waits for the cluster to be healthy without it and raises ``PartialStart``, leaving the
started nodes running (another ``up`` starts just the missing ones). Without such a
majority no leader can be elected: ``up`` stops what it started and raises
``LaunchError``, as it does when the cluster is not healthy in time.
"""

from __future__ import annotations

# `fabric status` loads this module and must start at once: aiohttp, asyncio, subprocess,
# uuid and psutil load inside the functions of `up` and `down` that need them.
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import ssl
    import subprocess

    import aiohttp

from fabric import limits, tokens
from fabric.config import (
    ClusterConfig,
    ConfigError,
    NodeConfig,
    TlsConfig,
    default_config_text,
    load_config,
    parse_config,
    render_config,
    sized_config,
)
from shell import lastdir

CONFIG_NAME = "cluster.toml"
TOKEN_NAME = "admin.token"
SECRET_NAME = "cluster.secret"
"""``nodes.secretfile.SECRET_NAME``: spelled here too, so that ``fabric status`` loads
nothing of the node."""
POLL_S = 0.1
EXIT_REASONS = {
    2: "bad config or node id",
    3: "its address is already in use",
    4: "its durable state is corrupt",
    5: "another process holds its directory",
}


class LaunchError(Exception):
    """The cluster could not be started or stopped; the message says which node and why."""


class NoCluster(LaunchError):
    """The directory holds no cluster."""


class LaunchRefused(LaunchError, ConfigError):
    """``up`` was given a config it cannot run (the user's input): nothing started."""


@dataclass(frozen=True)
class StartFailure:
    """A node whose process exited while ``up`` waited for it."""

    node_id: str
    reason: str
    log_path: str
    log_tail: str

    def __str__(self) -> str:
        return (
            f"node {self.node_id} failed to start: {self.reason}\n"
            f"  log: {self.log_path}\n{self.log_tail}"
        )


class PartialStart(LaunchError):
    """The cluster is healthy without the nodes that could not start; the others run."""

    def __init__(self, config: ClusterConfig, failures: tuple[StartFailure, ...]) -> None:
        assert failures, "a partial start names the nodes that did not start"
        self.config = config
        self.failures = failures
        names = ", ".join(f.node_id for f in failures)
        super().__init__(
            "\n".join(map(str, failures)) + f"\nthe cluster is running without {names}; "
            "fix the cause and run `fabric up` again to start the missing nodes"
        )


@dataclass(frozen=True)
class Access:
    """How the shell's own requests reach a cluster's nodes."""

    token: str
    ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class ClusterDir:
    root: str

    @property
    def config_path(self) -> str:
        return os.path.join(self.root, CONFIG_NAME)

    @property
    def secret_path(self) -> str:
        return os.path.join(self.root, SECRET_NAME)

    @property
    def token_path(self) -> str:
        return os.path.join(self.root, TOKEN_NAME)

    def token(self) -> str:
        """The API token the CLI sends: ``FABRIC_TOKEN``, else the directory's admin token."""
        return os.environ.get("FABRIC_TOKEN", "").strip() or self.admin_token()

    def admin_token(self) -> str:
        """The directory's admin token ("" if there is none): what ``up``, ``down``,
        ``status`` and the membership commands use, whatever ``FABRIC_TOKEN`` says."""
        try:
            with open(self.token_path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def node_dir(self, node_id: str) -> str:
        return os.path.join(self.root, "nodes", node_id)

    def log_path(self, node_id: str) -> str:
        return os.path.join(self.node_dir(node_id), "node.log")

    def pid_path(self, node_id: str) -> str:
        return os.path.join(self.node_dir(node_id), "pid")

    def access(self, cfg: ClusterConfig) -> Access:
        """The admin token and the trust this directory gives, read once for a command
        (not at every poll of a wait loop)."""
        return Access(self.admin_token(), self.ssl_context(cfg))

    def ssl_context(self, cfg: ClusterConfig) -> ssl.SSLContext | None:
        """What clients of this cluster trust (None: it speaks plain HTTP). ``ssl`` loads
        only here: ``fabric status`` of a plain cluster does without it."""
        if cfg.tls is None:
            return None
        from nodes.tls import client_context

        return client_context(cfg.tls, self.config_path)

    def exists(self) -> bool:
        return os.path.exists(self.config_path)

    def config(self) -> ClusterConfig:
        if not self.exists():
            raise NoCluster(f"no cluster in {self.root} (`fabric up --dir {self.root}` makes one)")
        return load_config(self.config_path)

    def pid(self, node_id: str) -> int | None:
        """The node's pid if that process is alive and is our node."""
        try:
            with open(self.pid_path(node_id)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        cmd = _live_cmdline(pid)
        return pid if cmd is not None and "node" in cmd and node_id in cmd else None


def _live_cmdline(pid: int) -> list[str] | None:
    """The command line of process ``pid``, None if there is none or it is a zombie.

    Read from /proc where there is one: psutil takes longer to load than ``fabric
    status`` takes to run, so it is the fallback for other systems.
    """
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[:1]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            return None
        if state == [b"Z"]:
            return None
        return [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return list(proc.cmdline())
    except psutil.Error:
        return None


def resolve_dir(arg: str | None, remembered: bool = True) -> str:
    """The cluster directory of a command: ``--dir``, else ``$FABRIC_DIR``, else
    ``./fabric-data`` if it holds a cluster, else (``remembered``) the last cluster
    ``fabric up`` started if it still exists, else ``./fabric-data``."""
    given = arg or os.environ.get("FABRIC_DIR")
    if given:
        return os.path.abspath(given)
    here = os.path.abspath("fabric-data")
    if remembered and not os.path.exists(os.path.join(here, CONFIG_NAME)):
        last = lastdir.recall()
        if last is not None and os.path.exists(os.path.join(last, CONFIG_NAME)):
            return last
    return here


def log_tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return "(no log)"


def prepare(
    cdir: ClusterDir,
    config_file: str | None,
    nodes: int | None,
    say: Callable[[str], None],
    tls: bool = False,
    port_base: int | None = None,
    check_ports: bool = False,
) -> ClusterConfig:
    """The config to run: the directory's own, or a new one written into it (with a new
    private CA and node certificate when ``tls``; nodes from ``port_base`` on; with
    ``check_ports``, for a cluster that starts here, on free ports: ``_on_free_ports``)."""
    if cdir.exists():
        cfg = cdir.config()
        if tls and cfg.tls is None:
            say(f"note: cluster {cfg.name!r} was made without TLS; --tls applies to new ones")
        if config_file or port_base is not None or (nodes and nodes != len(cfg.nodes)):
            say(
                f"note: {cdir.root} already holds cluster {cfg.name!r} with "
                f"{len(cfg.nodes)} nodes; restarting it as it is "
                "(use another --dir for a new cluster)"
            )
        credentials(cdir, say)
        return cfg
    cfg = (
        load_config(config_file)
        if config_file
        else parse_config(default_config_text(), "<embedded default config>")
    )
    if nodes is not None:
        if not limits.MIN_NODES <= nodes <= limits.MAX_LOCAL_NODES:
            raise ConfigError(
                f"--nodes {nodes}: must be {limits.MIN_NODES}..{limits.MAX_LOCAL_NODES} node "
                "processes on one machine (`fabric sim` runs bigger clusters)"
            )
        cfg = sized_config(cfg, nodes)
    if port_base is not None:
        cfg = _renumbered(cfg, port_base)
    if check_ports:
        cfg = _on_free_ports(cfg, fixed=config_file is not None or port_base is not None, say=say)
    if not cfg.id:
        import uuid

        cfg = replace(cfg, id=uuid.uuid4().hex[:16])
    from nodes import secretfile

    secretfile.make_private_dir(cdir.root)
    if cfg.tls is not None and config_file:
        # The config moves into the cluster directory: its [tls] paths must still point
        # at the same files.
        base = os.path.dirname(os.path.abspath(config_file))
        cfg = replace(
            cfg,
            tls=TlsConfig(
                *(os.path.join(base, p) for p in (cfg.tls.cert, cfg.tls.key, cfg.tls.ca))
            ),
        )
    elif tls:
        from shell.certs import make_cluster_certs

        make_cluster_certs(os.path.join(cdir.root, "tls"), cfg.name, {n.host for n in cfg.nodes})
        files = TlsConfig("tls/node.pem", "tls/node.key", "tls/ca.pem")
        cfg = replace(cfg, tls=files, nodes=tuple(replace(n, scheme="https") for n in cfg.nodes))
        say(f"made a private CA for the cluster: {os.path.join(cdir.root, 'tls', 'ca.pem')}")
    write_private(cdir.config_path, render_config(cfg))
    credentials(cdir, say)
    return cfg


PORT_SEARCH_STEP = 100
"""A new cluster whose ports are taken moves up by this much until all of its are free
(and the ports just after it, which ``fabric node add`` takes, likely too)."""


def port_free(host: str, port: int) -> bool:
    """Could a node listen on ``host:port`` now? (With SO_REUSEADDR, as the node's server
    binds: a port that a stopped node left in TIME_WAIT counts as free.)"""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _renumbered(cfg: ClusterConfig, base: int) -> ClusterConfig:
    if not 1 <= base <= 65536 - len(cfg.nodes):
        raise LaunchRefused(f"--port-base {base}: the nodes' ports must lie in 1..65535")
    return replace(cfg, nodes=tuple(replace(n, port=base + i) for i, n in enumerate(cfg.nodes)))


def _free_base(cfg: ClusterConfig) -> int:
    """The first base from the config's first port up, in ``PORT_SEARCH_STEP``s, whose
    ports are all free."""
    first = cfg.nodes[0].port
    for base in range(first + PORT_SEARCH_STEP, 65536 - len(cfg.nodes), PORT_SEARCH_STEP):
        if all(port_free(n.host, base + i) for i, n in enumerate(cfg.nodes)):
            return base
    raise LaunchError(f"no {len(cfg.nodes)} free ports above {first}")


def _on_free_ports(cfg: ClusterConfig, fixed: bool, say: Callable[[str], None]) -> ClusterConfig:
    """A new cluster's config on ports nobody listens on, checked before anything is
    written (a refused ``up`` leaves no directory behind to get in the way of the next).

    Ports the user chose (``fixed``: a config file, ``--port-base``) are kept, or refused
    with a ``--port-base`` that is free; the embedded default's move up by themselves, so
    a second ``fabric up --dir OTHER`` starts beside the first."""
    taken = [n for n in cfg.nodes if not port_free(n.host, n.port)]
    if not taken:
        return cfg
    free = _free_base(cfg)
    ports = ", ".join(f"{n.port} ({n.id})" for n in taken)
    if fixed:
        raise LaunchError(
            f"port {ports} on {taken[0].host} already in use (another cluster?); "
            f"`--port-base {free}` puts the {len(cfg.nodes)} nodes on free ports"
        )
    say(
        f"port {ports} already in use (another cluster?): this cluster takes ports "
        f"{free}..{free + len(cfg.nodes) - 1}"
    )
    return _renumbered(cfg, free)


def write_private(path: str, text: str) -> None:
    """Write ``path`` for its owner only (mode 0600, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)


def credentials(cdir: ClusterDir, say: Callable[[str], None]) -> None:
    """The cluster secret and the first admin token, made once (an older cluster
    directory without them gets them at its next ``up``)."""
    from nodes import secretfile

    if secretfile.create(cdir.secret_path):
        say(f"made the cluster secret {cdir.secret_path} (mode 0600; nodes need it)")
    keys = secretfile.load(cdir.secret_path)
    if not os.path.exists(cdir.token_path):
        write_private(cdir.token_path, tokens.admin_token(keys.admin_token_key) + "\n")


def spawn(cdir: ClusterDir, node_id: str) -> subprocess.Popen[bytes]:
    import subprocess

    from nodes import secretfile

    secretfile.make_private_dir(cdir.node_dir(node_id))
    log_fd = os.open(cdir.log_path(node_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(log_fd, "ab") as logf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shell.cli",
                "node",
                "run",
                "--config",
                cdir.config_path,
                "--id",
                node_id,
                "--dir",
                cdir.node_dir(node_id),
            ],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
        )
    write_private(cdir.pid_path(node_id), f"{proc.pid}\n")
    return proc


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> Any:
    import aiohttp

    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=2), headers=auth_header(token)
        ) as resp:
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


STATUS_ANSWER_MAX_BYTES = 64 << 20
"""A node's cluster view is far smaller; more is not an answer from our node."""


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _get_now(url: str, access: Access, timeout_s: float = 2.0) -> Any:
    """GET a node's JSON over a plain HTTP/1.0 socket; None if it gives no 200 answer.

    ``fabric status`` asks one question of a node on this machine: loading aiohttp and
    asyncio, or even http.client (with ssl and the email parser), costs more than the
    question takes, and the command must start at once.
    """
    parts = urlsplit(url)
    auth = f"Authorization: Bearer {access.token}\r\n" if access.token else ""
    request = f"GET {parts.path or '/'} HTTP/1.0\r\nHost: {parts.netloc}\r\n{auth}\r\n".encode()
    answer = bytearray()
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(
                socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
            )
            if parts.scheme == "https":
                if access.ssl_context is None:
                    return None  # never send a token in the clear to a TLS cluster
                sock = stack.enter_context(
                    access.ssl_context.wrap_socket(sock, server_hostname=parts.hostname)
                )
            sock.sendall(request)
            while chunk := sock.recv(1 << 16):  # HTTP/1.0: the node closes when done
                answer += chunk
                if len(answer) > STATUS_ANSWER_MAX_BYTES:
                    return None
    except OSError:
        return None
    head, blank, body = bytes(answer).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not blank or len(status_line) < 2 or status_line[1] != b"200":
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


async def _healthy(
    session: aiohttp.ClientSession, cfg: ClusterConfig, expected: list[NodeConfig], token: str
) -> tuple[bool, str]:
    """(healthy with the ``expected`` nodes, what is still missing)."""
    import asyncio

    health = await asyncio.gather(
        *(_get(session, n.url + "/api/v1/health", token) for n in expected)
    )
    for node, h in zip(expected, health, strict=True):
        if h is None:
            return False, f"{node.id} not answering"
        if cfg.id and h.get("cluster_id") != cfg.id:
            raise LaunchError(
                f"{node.address} (node {node.id}) is served by another cluster "
                f"({h.get('cluster', '?')}, id {h.get('cluster_id') or '-'}); "
                "stop it or choose other ports"
            )
        if not h.get("registered"):
            return False, f"{node.id} not registered"
    leaders = {h["leader"] for h in health}
    if len(leaders) != 1 or None in leaders:
        return False, "no leader agreed on yet"
    leader = cfg.node(str(leaders.pop()))
    view = await _get(session, leader.url + "/api/v1/cluster", token)
    if view is None:
        return False, "leader view unavailable"
    ids = {n.id for n in expected}
    nodes = [n for n in view["nodes"] if n["id"] in ids]
    not_up = [n["id"] for n in nodes if n["state"] != "UP"]
    if not_up:
        return False, f"not UP yet: {', '.join(not_up)}"
    # Disk reports reach the leader with each node's next health report.
    unreported = [
        n["id"] for n in nodes if not all(isinstance(d, dict) for d in n.get("disks", []))
    ]
    return (not unreported), f"no disk report yet from {', '.join(unreported)}"


async def wait_healthy(
    cdir: ClusterDir,
    cfg: ClusterConfig,
    procs: dict[str, subprocess.Popen[bytes]],
    timeout_s: float,
) -> tuple[StartFailure, ...]:
    """Wait until the cluster is healthy with every node that started; those that did not.

    Raises ``LaunchError`` when too few voters started to elect a leader, or on timeout.
    """
    import asyncio

    import aiohttp

    deadline = time.monotonic() + timeout_s
    missing = "starting"
    failed: dict[str, StartFailure] = {}
    access = cdir.access(cfg)
    connector = aiohttp.TCPConnector(ssl=access.ssl_context or True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while time.monotonic() < deadline:
            for node_id, proc in procs.items():
                code = proc.poll()
                if code is not None and node_id not in failed:
                    failed[node_id] = _start_failure(cdir, node_id, code)
            _check_quorum(cfg, failed)
            expected = [n for n in cfg.nodes if n.id not in failed]
            healthy, missing = await _healthy(session, cfg, expected, access.token)
            if healthy:
                return tuple(failed.values())
            await asyncio.sleep(POLL_S)
    logs = "\n".join(f"  {n.id}: {cdir.log_path(n.id)}" for n in cfg.nodes)
    failures = "".join(f"{f}\n" for f in failed.values())
    raise LaunchError(f"{failures}cluster not healthy after {timeout_s:.0f} s ({missing})\n{logs}")


def _start_failure(cdir: ClusterDir, node_id: str, code: int) -> StartFailure:
    why = EXIT_REASONS.get(code, f"exit code {code}")
    log = cdir.log_path(node_id)
    return StartFailure(node_id, why, log, log_tail(log))


def _check_quorum(cfg: ClusterConfig, failed: dict[str, StartFailure]) -> None:
    """Raise when the voters that started can never elect a leader."""
    started = [v for v in cfg.voters if v not in failed]
    if len(started) > len(cfg.voters) // 2:
        return
    failures = "\n".join(map(str, failed.values()))
    raise LaunchError(
        f"{failures}\nonly {len(started)} of {len(cfg.voters)} voters could start: "
        "no leader can be elected"
    )


def up(
    root: str,
    config_file: str | None,
    nodes: int | None,
    say: Callable[[str], None] = print,
    timeout_s: float = limits.STARTUP_TIMEOUT_S,
    tls: bool = False,
    port_base: int | None = None,
) -> ClusterConfig:
    """Start the cluster of ``root``; its config once every node is UP.

    Raises ``PartialStart`` (nodes left running) or ``LaunchError`` (nothing left
    running that this call started): see the module's docstring.
    """
    cdir = ClusterDir(root)
    try:
        cfg = prepare(cdir, config_file, nodes, say, tls, port_base, check_ports=True)
    except LaunchRefused:
        raise
    except ConfigError as exc:
        raise LaunchRefused(str(exc)) from exc
    for name in cfg.debug.enabled():
        say(
            f"WARNING: [debug] {name} = true in {cdir.config_path}: this cluster is BROKEN ON "
            "PURPOSE and loses acknowledged writes (it exists to prove the checkers fail). "
            "Never keep data on it; remove the [debug] table to run a real cluster."
        )
    started = time.monotonic()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for node in cfg.nodes:
        if cdir.pid(node.id) is None:
            procs[node.id] = spawn(cdir, node.id)
    say(f"cluster {cfg.name!r} in {cdir.root}: starting {len(procs)} of {len(cfg.nodes)} nodes")
    import asyncio

    try:
        failures = asyncio.run(wait_healthy(cdir, cfg, procs, timeout_s))
    except LaunchError:
        _stop(cdir, list(procs), say=lambda _: None)
        raise
    elapsed = f"{time.monotonic() - started:.1f} s"
    if failures:
        for f in failures:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cdir.pid_path(f.node_id))
        say(f"healthy in {elapsed} without {', '.join(f.node_id for f in failures)}")
        raise PartialStart(cfg, failures)
    say(f"healthy in {elapsed}")
    return cfg


def _stop(
    cdir: ClusterDir,
    node_ids: list[str],
    say: Callable[[str], None],
    grace_s: float = limits.SHUTDOWN_GRACE_S,
) -> None:
    pids = {n: p for n in node_ids if (p := cdir.pid(n)) is not None}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(cdir.pid(n) for n in pids):
        time.sleep(0.05)
    for node_id, pid in pids.items():
        if cdir.pid(node_id) is not None:
            say(f"{node_id} did not stop in {grace_s:.0f} s: killing pid {pid}")
            os.kill(pid, signal.SIGKILL)
        else:
            say(f"stopped {node_id} (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cdir.pid_path(node_id))


def down(root: str, say: Callable[[str], None] = print) -> None:
    cdir = ClusterDir(root)
    cfg = cdir.config()
    running = [n.id for n in cfg.nodes if cdir.pid(n.id) is not None]
    if not running:
        say(f"no node of {cfg.name!r} is running in {cdir.root}")
    _stop(cdir, [n.id for n in cfg.nodes], say)


def _status(cdir: ClusterDir, cfg: ClusterConfig) -> dict[str, Any]:
    view: dict[str, Any] | None = None
    access = cdir.access(cfg)
    for node in cfg.nodes:
        if cdir.pid(node.id) is None:
            continue
        view = _get_now(node.url + "/api/v1/cluster", access)
        if view is not None and view.get("leader") is not None:
            break
    if view is None:
        view = {
            "name": cfg.name,
            "leader": None,
            "containers": [],
            "nodes": [
                {
                    "id": n.id,
                    "address": n.address,
                    "role": "voter" if n.id in cfg.voters else "member",
                    "state": "DOWN",
                    "disks": list(n.disks),
                }
                for n in cfg.nodes
            ],
        }
    for entry in view["nodes"]:
        pid = cdir.pid(entry["id"])
        entry["pid"] = pid
        entry["dir"] = cdir.node_dir(entry["id"])
        if pid is None:
            entry["state"] = "DOWN"
    view["dir"] = cdir.root
    return view


def status(root: str) -> dict[str, Any]:
    cdir = ClusterDir(root)
    return _status(cdir, cdir.config())
