"""The cluster config: one TOML file describing nodes, voters, timeouts and policies.

Parsing is pure (text in, dataclasses out). Every error names the file, the line and
the key, because a user editing a config by hand needs to know where to look.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from fabric import limits
from fabric.ids import NODE_ID
from fabric.metadata.records import RebuildSettings, ScrubSettings
from fabric.tokens import OPENABLE_PATHS
from fabric.urlguard import allow_entry_problem


class ConfigError(Exception):
    """The config is malformed (the user's input): the message names key and line."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    id: str
    host: str
    port: int
    disks: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    """Fault-domain labels: ``rack``, ``block``."""
    disk_capacity: tuple[int, ...] = ()
    """Bytes of extent groups each disk may hold (0 or absent: its free space)."""
    scheme: str = "http"
    """``https`` when the cluster's config has ``[tls]`` (set by ``parse_config``)."""

    def capacity_of(self, i: int) -> int:
        return self.disk_capacity[i] if i < len(self.disk_capacity) else 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``[tls]``: PEM files (paths relative to the config's directory, or absolute)."""

    cert: str
    """The certificate the node serves (with its chain), naming the node's host."""
    key: str
    ca: str
    """The authority clients trust when they connect to a node."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    tick_ms: int = 50
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    node_heartbeat_ms: int = 300
    degraded_after_ms: int = 1500
    down_after_ms: int = 4000
    learner_heartbeat_every: int = 1
    """Non-voting nodes hear every this-many-th Raft heartbeat: a thousand-node cluster is
    almost all learners. Above 1, committed entries ride on that heartbeat too, instead
    of reaching them at once, except what a learner waits for (a read, its own
    proposal, a promotion), which the leader sends it then."""
    background_scale: int = 1
    """Multiplies the period of every background loop (scanner, rebuild planner, health
    monitor, disk probe, membership watch, scrubber wake-up): a big cluster, or a long
    simulated run, trades how soon these react for how much work they cost."""


LONG_RUN_TIMEOUTS = Timeouts(
    tick_ms=200,
    election_ticks=25,
    heartbeat_ticks=10,
    node_heartbeat_ms=5000,
    degraded_after_ms=15000,
    down_after_ms=30000,
    background_scale=5,
)
"""Timing for big clusters and long simulated runs: Raft ticks at 200 ms with a 5-10 s
election timeout and heartbeats every 2 s, health reports every 5 s (DOWN after 30 s),
and every background loop five times slower. Per node and virtual second this is about a
tenth of the default's wake-ups and messages; failover and failure detection take about
ten times longer."""
LARGE_CLUSTER_TIMEOUTS = Timeouts(
    tick_ms=500,
    election_ticks=20,
    heartbeat_ticks=4,
    node_heartbeat_ms=120000,
    degraded_after_ms=300000,
    down_after_ms=600000,
    learner_heartbeat_every=45,
    background_scale=60,
)
"""Timing for a thousand nodes over a simulated day: Raft ticks at 500 ms with a 10-20 s
election timeout and heartbeats every 2 s to the voters, every 90 s to the learners,
which get the log's new entries then, or at once when they wait for them;
health reports every 2 minutes (a Raft answer counts as one too), DEGRADED after 5
minutes of silence and DOWN (so rebuilt) after 10, which is Ceph's default wait before
it marks a silent OSD out and re-replicates (``mon_osd_down_out_interval``); every
background loop sixty times slower. An idle node then wakes about once every twenty
virtual seconds; a node loss is acted on in minutes."""
TIMINGS = {
    "default": Timeouts(),
    "long-run": LONG_RUN_TIMEOUTS,
    "large-cluster": LARGE_CLUSTER_TIMEOUTS,
}
"""The named timings a scenario may ask for (``[cluster] timing``)."""


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """``[limits]``: how long a node waits on a client, how many connections one may hold,
    how long a created image may wait for its upload.

    Each is a node's local behaviour (its HTTP server, the leader's scanner), never a
    decision every node must make alike, so a config may change them; the quotas the
    state machine enforces (kv bytes, PENDING images) are constants in ``fabric.limits``.
    """

    header_timeout_s: float = limits.HTTP_HEADER_TIMEOUT_S
    body_idle_s: float = limits.HTTP_BODY_IDLE_S
    connections_per_client: int = limits.HTTP_CONNECTIONS_PER_CLIENT
    pending_image_ttl_s: float = limits.PENDING_IMAGE_TTL_S


@dataclass(frozen=True, slots=True)
class DebugSettings:
    """``[debug]``: deliberately broken behaviour, so a test can prove that a checker
    fails on the bug it guards against (FoundationDB runs its workloads against broken
    clusters the same way). Every setting is off by default and in no shipped config;
    ``fabric up`` warns when one is on and each node logs it at start."""

    ack_before_commit: bool = False
    """The write coordinator answers a write once its bytes are durable on every
    replica, before the ``WriteExtents`` that makes them visible commits: the commit
    runs in the background, is never retried and dies with the node, so a crash (or a
    refused commit) right after the answer loses an acknowledged write, and a read in
    between returns the older value."""
    stale_reads: bool = False
    """A linearizable read (ReadIndex) answers from the node's own applied state without
    asking the leader: a node cut off from the leader keeps serving what it last knew,
    so a read that starts after a write completed can miss it."""

    def enabled(self) -> list[str]:
        """The names of the settings that are on."""
        return [name for name in DebugSettings.__dataclass_fields__ if getattr(self, name)]


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str
    nodes: tuple[NodeConfig, ...]
    voters: tuple[str, ...]
    extent_bytes: int = 1 << 20
    fault_domain: str = "node"
    timeouts: Timeouts = Timeouts()
    containers: tuple[dict[str, Any], ...] = ()
    id: str = ""
    """Set by the first ``fabric up``: nodes and clients check it, so a command never
    reaches another cluster that happens to listen on the same ports."""
    rebuild: RebuildSettings = field(default_factory=RebuildSettings)
    """``[rebuild]``: until changed at runtime (``fabric rebuild``)."""
    scrub: ScrubSettings = field(default_factory=ScrubSettings)
    """``[scrub]``: until changed at runtime (``fabric scrub``)."""
    public_paths: tuple[str, ...] = ()
    """``[auth] public``: paths served without a token (``/metrics``, ``/api/v1/health``),
    for scrapers and load balancers."""
    import_allow: tuple[str, ...] = ()
    """``[import] allow``: host names and address ranges URL import may reach although
    they are not public (``fabric.urlguard``); the cluster's own nodes stay refused."""
    limits: ServeLimits = field(default_factory=ServeLimits)
    """``[limits]``: idle timeouts, connections per client, PENDING image expiry."""
    tls: TlsConfig | None = None
    """``[tls]``: nodes serve HTTPS and clients check them against its CA."""
    debug: DebugSettings = field(default_factory=DebugSettings)
    """``[debug]``: broken on purpose, for tests only (``DebugSettings``)."""

    def racks(self) -> dict[str, str]:
        """Node id -> its ``rack`` label ("" for a node without one)."""
        return {n.id: n.labels.get("rack", "") for n in self.nodes}

    def node(self, node_id: str) -> NodeConfig:
        for node in self.nodes:
            if node.id == node_id:
                return node
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError(f"unknown node id {node_id!r}; the config has: {known}")

    @property
    def learners(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes if n.id not in self.voters)


class _Source:
    """Finds the line where a key is set, for error messages."""

    def __init__(self, text: str, origin: str) -> None:
        self.lines = text.splitlines()
        self.origin = origin

    def error(
        self, key: str, problem: str, table: str = "", nth: int = 0, value: str = ""
    ) -> ConfigError:
        """``value``: the text of a list entry at fault, found on or after the key's line."""
        line = self._line_of(key.rsplit(".", 1)[-1], table, nth)
        if line is not None and value:
            line = self._line_with(value, line)
        where = f"{self.origin}:{line}" if line else self.origin
        return ConfigError(f"{where}: {key}: {problem}")

    def _line_of(self, name: str, table: str, nth: int) -> int | None:
        header = re.compile(r"^\s*\[\[?\s*" + re.escape(table) + r"\s*\]\]?") if table else None
        assign = re.compile(r"^\s*" + re.escape(name) + r"\s*=")
        seen = -1
        inside = header is None
        for number, text in enumerate(self.lines, start=1):
            if header is not None and header.match(text):
                seen += 1
                inside = seen == nth
                continue
            if header is not None and re.match(r"^\s*\[", text):
                inside = False
            if inside and assign.match(text):
                return number
        return None

    def _line_with(self, value: str, start: int) -> int:
        for number in range(start, len(self.lines) + 1):
            if value in self.lines[number - 1]:
                return number
        return start


def _get(
    src: _Source,
    table: dict[str, Any],
    key: str,
    kind: type,
    default: Any,
    where: str,
    tname: str = "",
    nth: int = 0,
) -> Any:
    if key not in table:
        if default is _REQUIRED:
            raise src.error(f"{where}{key}", "is required", tname, nth)
        return default
    value = table[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise src.error(f"{where}{key}", f"must be an integer, not {value!r}", tname, nth)
    if not isinstance(value, kind):
        raise src.error(f"{where}{key}", f"must be a {kind.__name__}, not {value!r}", tname, nth)
    return value


_REQUIRED = object()


def _parse_node(src: _Source, raw: Any, nth: int) -> NodeConfig:
    where = f"nodes[{nth}]."
    if not isinstance(raw, dict):
        raise src.error("nodes", "each [[nodes]] entry must be a table")
    node_id = _get(src, raw, "id", str, _REQUIRED, where, "nodes", nth)
    if not NODE_ID.match(node_id):
        raise src.error(f"{where}id", f"{node_id!r} is not a valid node id", "nodes", nth)
    port = _get(src, raw, "port", int, _REQUIRED, where, "nodes", nth)
    if not 1 <= port <= 65535:
        raise src.error(f"{where}port", f"{port} is not a TCP port", "nodes", nth)
    raw_disks = _get(src, raw, "disks", list, ["disk0"], where, "nodes", nth)
    every = _get(src, raw, "capacity_bytes", int, 0, where, "nodes", nth)
    disks: list[str] = []
    capacity: list[int] = []
    for d in raw_disks:
        # A disk is a path, or {path = "...", capacity_bytes = N} for experiments.
        if isinstance(d, dict) and isinstance(d.get("path"), str):
            cap = d.get("capacity_bytes", every)
            if isinstance(cap, bool) or not isinstance(cap, int):
                raise src.error(f"{where}disks", "capacity_bytes must be an integer", "nodes", nth)
            disks.append(d["path"])
            capacity.append(cap)
        else:
            disks.append(d)
            capacity.append(every)
    if not disks or not all(isinstance(d, str) and d for d in disks):
        raise src.error(
            f"{where}disks", "must be a non-empty list of paths or tables", "nodes", nth
        )
    if any(c < 0 or 0 < c < limits.MIN_DISK_CAPACITY_BYTES for c in capacity):
        raise src.error(
            f"{where}disks",
            f"capacity_bytes must be 0 or at least {limits.MIN_DISK_CAPACITY_BYTES}",
            "nodes",
            nth,
        )
    labels = {k: str(raw[k]) for k in ("rack", "block") if k in raw}
    host = _get(src, raw, "host", str, "127.0.0.1", where, "nodes", nth)
    caps = tuple(capacity) if any(capacity) else ()
    return NodeConfig(node_id, host, port, tuple(disks), labels, caps)


def _parse_timeouts(src: _Source, raw: Any) -> Timeouts:
    if not isinstance(raw, dict):
        raise src.error("timeouts", "must be a table")
    values = {}
    for name, default in _timeout_defaults():
        value = _get(src, raw, name, int, default, "timeouts.", "timeouts")
        if value <= 0:
            raise src.error(f"timeouts.{name}", "must be positive", "timeouts")
        values[name] = value
    unknown = sorted(set(raw) - set(values))
    if unknown:
        raise src.error(f"timeouts.{unknown[0]}", "unknown setting", "timeouts")
    t = Timeouts(**values)
    if not t.degraded_after_ms < t.down_after_ms:
        raise src.error("timeouts.down_after_ms", "must be above degraded_after_ms", "timeouts")
    return t


def _timeout_defaults() -> list[tuple[str, int]]:
    t = Timeouts()
    return [(name, getattr(t, name)) for name in Timeouts.__dataclass_fields__]


SETTINGS_BOUNDS: dict[str, tuple[float, float]] = {
    "delay_s": (0, 7 * 86_400),
    "bytes_per_s": (0, 1 << 50),
    "per_node": (1, 64),
    "cycle_s": (1, 365 * 86_400),
    "header_timeout_s": (0.1, 3600),
    "body_idle_s": (0.1, 3600),
    "connections_per_client": (1, 65_536),
    "pending_image_ttl_s": (1, 30 * 86_400),
}
"""Bounds of the ``[rebuild]`` and ``[scrub]`` settings, in the config and in the API."""


def _parse_settings(src: _Source, raw: Any, table: str, default: Any) -> Any:
    """``[rebuild]``, ``[scrub]`` or ``[limits]``: numbers within bounds, defaults for the rest."""
    if not isinstance(raw, dict):
        raise src.error(table, "must be a table")
    values: dict[str, Any] = {}
    for name in type(default).__dataclass_fields__:
        if name not in SETTINGS_BOUNDS:
            continue
        current = getattr(default, name)
        value = raw.get(name, current)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise src.error(f"{table}.{name}", f"must be a number, not {value!r}", table)
        low, high = SETTINGS_BOUNDS[name]
        if not low <= value <= high:
            raise src.error(f"{table}.{name}", f"must be {low:g}..{high:g}", table)
        values[name] = type(current)(value)
    unknown = sorted(set(raw) - set(values))
    if unknown:
        raise src.error(f"{table}.{unknown[0]}", "unknown setting", table)
    return replace(default, **values)


def _parse_import(src: _Source, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, dict):
        raise src.error("import", "must be a table")
    unknown = sorted(set(raw) - {"allow"})
    if unknown:
        raise src.error(f"import.{unknown[0]}", "unknown setting", "import")
    allow = _get(src, raw, "allow", list, [], "import.", "import")
    if len(allow) > limits.IMPORT_ALLOW_ENTRIES:
        raise src.error("import.allow", f"at most {limits.IMPORT_ALLOW_ENTRIES} entries", "import")
    for entry in allow:
        problem = allow_entry_problem(entry)
        if problem is not None:
            raise src.error("import.allow", problem, "import", value=f'"{entry}"')
    return tuple(allow)


def parse_config(text: str, origin: str = "<config>") -> ClusterConfig:
    """Parse and validate a cluster config; raise ConfigError naming key and line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    src = _Source(text, origin)
    cluster = raw.get("cluster", {})
    if not isinstance(cluster, dict):
        raise src.error("cluster", "must be a table")
    name = _get(src, cluster, "name", str, "fabric", "cluster.", "cluster")
    cluster_id = _get(src, cluster, "id", str, "", "cluster.", "cluster")
    raw_nodes = raw.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise src.error("nodes", "at least one [[nodes]] entry is required")
    nodes = tuple(_parse_node(src, n, i) for i, n in enumerate(raw_nodes))
    if len(nodes) > limits.MAX_NODES:
        raise src.error("nodes", f"{len(nodes)} nodes; at most {limits.MAX_NODES} are supported")
    _check_unique(src, nodes)
    ids = [n.id for n in nodes]
    voters = _get(src, cluster, "voters", list, ids[: min(3, len(ids))], "cluster.", "cluster")
    for v in voters:
        if v not in ids:
            raise src.error("cluster.voters", f"{v!r} is not a node in [[nodes]]", "cluster")
    if not 1 <= len(voters) <= limits.MAX_VOTERS or len(set(voters)) != len(voters):
        raise src.error("cluster.voters", f"need 1..{limits.MAX_VOTERS} distinct voters", "cluster")
    extent = _get(src, cluster, "extent_bytes", int, 1 << 20, "cluster.", "cluster")
    if not (64 * 1024 <= extent <= 4 << 20 and extent & (extent - 1) == 0):
        raise src.error(
            "cluster.extent_bytes", "must be a power of two, 64 KiB to 4 MiB", "cluster"
        )
    domain = _get(src, cluster, "fault_domain", str, "node", "cluster.", "cluster")
    if domain not in ("node", "rack", "block"):
        raise src.error("cluster.fault_domain", "must be node, rack or block", "cluster")
    timeouts = _parse_timeouts(src, raw.get("timeouts", {}))
    containers = raw.get("containers", [])
    if not isinstance(containers, list):
        raise src.error("containers", "must be a list of [[containers]] tables")
    rebuild = _parse_settings(src, raw.get("rebuild", {}), "rebuild", RebuildSettings())
    scrub = _parse_settings(src, raw.get("scrub", {}), "scrub", ScrubSettings())
    public = _parse_auth(src, raw.get("auth", {}))
    import_allow = _parse_import(src, raw.get("import", {}))
    serve = _parse_settings(src, raw.get("limits", {}), "limits", ServeLimits())
    tls = _parse_tls(src, raw.get("tls"))
    debug = _parse_debug(src, raw.get("debug", {}))
    if tls is not None:
        nodes = tuple(replace(n, scheme="https") for n in nodes)
    return ClusterConfig(
        name,
        nodes,
        tuple(voters),
        extent,
        domain,
        timeouts,
        tuple(containers),
        cluster_id,
        rebuild,
        scrub,
        public,
        import_allow,
        serve,
        tls,
        debug,
    )


def _parse_tls(src: _Source, tls: Any) -> TlsConfig | None:
    if tls is None:
        return None
    if not isinstance(tls, dict):
        raise src.error("tls", "must be a table")
    unknown = sorted(set(tls) - {"cert", "key", "ca"})
    if unknown:
        raise src.error(f"tls.{unknown[0]}", "unknown setting", "tls")
    paths = [_get(src, tls, k, str, _REQUIRED, "tls.", "tls") for k in ("cert", "key", "ca")]
    return TlsConfig(*paths)


def _parse_debug(src: _Source, debug: Any) -> DebugSettings:
    if not isinstance(debug, dict):
        raise src.error("debug", "must be a table")
    unknown = sorted(set(debug) - set(DebugSettings.__dataclass_fields__))
    if unknown:
        raise src.error(f"debug.{unknown[0]}", "unknown setting", "debug")
    values = {k: _get(src, debug, k, bool, False, "debug.", "debug") for k in debug}
    return DebugSettings(**values)


def _parse_auth(src: _Source, auth: Any) -> tuple[str, ...]:
    if not isinstance(auth, dict):
        raise src.error("auth", "must be a table")
    unknown = sorted(set(auth) - {"public"})
    if unknown:
        raise src.error(f"auth.{unknown[0]}", "unknown setting", "auth")
    public = _get(src, auth, "public", list, [], "auth.", "auth")
    for path in public:
        if path not in OPENABLE_PATHS:
            raise src.error(
                "auth.public", f"{path!r}: only {', '.join(OPENABLE_PATHS)} may be opened", "auth"
            )
    return tuple(public)


def _check_unique(src: _Source, nodes: tuple[NodeConfig, ...]) -> None:
    seen_ids: set[str] = set()
    seen_addr: set[str] = set()
    for i, node in enumerate(nodes):
        if node.id in seen_ids:
            raise src.error(f"nodes[{i}].id", f"duplicate node id {node.id!r}", "nodes", i)
        if node.address in seen_addr:
            raise src.error(f"nodes[{i}].port", f"address {node.address} used twice", "nodes", i)
        seen_ids.add(node.id)
        seen_addr.add(node.address)


def default_config_text() -> str:
    from importlib import resources  # here: it costs `fabric status` 10 ms to load

    return resources.files("fabric").joinpath("default.toml").read_text()


def load_config(path: str) -> ClusterConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_config(text, path)


def sized_config(base: ClusterConfig, nodes: int, base_port: int | None = None) -> ClusterConfig:
    """The base config grown or shrunk to ``nodes`` nodes (``fabric up --nodes N`` checks
    ``limits.MAX_LOCAL_NODES`` itself: a simulated cluster may be far bigger)."""
    if not limits.MIN_NODES <= nodes <= limits.MAX_NODES:
        raise ConfigError(f"--nodes {nodes}: must be {limits.MIN_NODES}..{limits.MAX_NODES}")
    template = base.nodes[0]
    port0 = template.port if base_port is None else base_port
    out = [
        NodeConfig(
            f"n{i + 1}",
            template.host,
            port0 + i,
            template.disks,
            {},
            template.disk_capacity,
            template.scheme,
        )
        for i in range(nodes)
    ]
    voters = tuple(n.id for n in out[: 3 if nodes >= 3 else 1])
    return replace(base, nodes=tuple(out), voters=voters)


def render_config(cfg: ClusterConfig) -> str:
    """TOML text for ``cfg`` (what ``fabric up`` writes into the cluster directory)."""
    t = cfg.timeouts
    lines = [
        "[cluster]",
        f'name = "{cfg.name}"',
        *([f'id = "{cfg.id}"'] if cfg.id else []),
        "voters = [" + ", ".join(f'"{v}"' for v in cfg.voters) + "]",
        f"extent_bytes = {cfg.extent_bytes}",
        f'fault_domain = "{cfg.fault_domain}"',
        "",
        "[timeouts]",
        *(f"{name} = {getattr(t, name)}" for name in Timeouts.__dataclass_fields__),
        "",
        "[rebuild]",
        *_settings_lines(cfg.rebuild),
        "",
        "[scrub]",
        *_settings_lines(cfg.scrub),
        *(
            ["", "[auth]", "public = [" + ", ".join(f'"{p}"' for p in cfg.public_paths) + "]"]
            if cfg.public_paths
            else []
        ),
        "",
        "[import]",
        "allow = [" + ", ".join(_toml_value(a) for a in cfg.import_allow) + "]",
        "",
        "[limits]",
        *_settings_lines(cfg.limits),
        *(
            ["", "[tls]", *(f'{k} = "{getattr(cfg.tls, k)}"' for k in ("cert", "key", "ca"))]
            if cfg.tls
            else []
        ),
        *(
            ["", "[debug]", *(f"{name} = true" for name in cfg.debug.enabled())]
            if cfg.debug.enabled()
            else []
        ),
    ]
    for node in cfg.nodes:
        lines += [
            "",
            "[[nodes]]",
            f'id = "{node.id}"',
            f'host = "{node.host}"',
            f"port = {node.port}",
            "disks = [" + ", ".join(_disk_entry(node, i) for i in range(len(node.disks))) + "]",
            *(f'{k} = "{v}"' for k, v in node.labels.items()),
        ]
    for container in cfg.containers:
        lines += ["", "[[containers]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in container.items()]
    return "\n".join(lines) + "\n"


def _disk_entry(node: NodeConfig, i: int) -> str:
    cap = node.capacity_of(i)
    path = node.disks[i]
    return f'{{path = "{path}", capacity_bytes = {cap}}}' if cap else f'"{path}"'


def _settings_lines(settings: Any) -> list[str]:
    return [
        f"{name} = {getattr(settings, name)}"
        for name in type(settings).__dataclass_fields__
        if name in SETTINGS_BOUNDS
    ]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
