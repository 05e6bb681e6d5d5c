"""The fault vocabulary: kinds, their parameters, targets, and who acts on each fault.

Theory of operation. A user asks for a fault as ``{"kind", "target", "params",
"duration_s"}`` (``POST /api/v1/faults``, ``fabric fault inject``). ``parse_request``
checks it field by field and fills the parameters' defaults; ``resolve`` turns the
target into the nodes it names (once, from the membership, the leader and the racks
of that moment, with a seeded choice where the target asks for one) and into a
``Plan``: for every node that must act, the peers it acts toward. Only the node that
took the request resolves; each acting node is then told its part and applies it
locally (``nodes/faultinject.py``), so clearing a fault never needs the network the
fault has broken, nor consensus.

Network faults act on the sender: a node drops, delays, duplicates or throttles what
it sends to the peers its plan names. A plain target is symmetric (every link with a
target node at one end, both directions); ``{"from": A, "to": B}`` is one-way (only
A's nodes act, toward B's), and ``"to": "clients"`` acts on the node's answers to API
clients instead. Node, disk and clock faults act on the target nodes themselves.

Pure: no clock, no randomness of its own (an ``random.Random`` comes in), so the
simulator (issue 13) can take the same specs and the same resolution.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fabric.errors import BadRequest

CLIENTS = "*clients"
"""The pseudo-peer of a plan that stands for the node's API clients (not a node id)."""

NODE_KINDS = ("node-kill", "node-pause", "node-resume", "node-restart")
NET_KINDS = (
    "net-partition",
    "net-delay",
    "net-loss",
    "net-duplicate",
    "net-bandwidth",
    "net-reset",
)
DISK_KINDS = ("disk-fail", "disk-slow", "disk-corrupt", "disk-full", "disk-lose-unsynced")
CLOCK_KINDS = ("clock-skew", "clock-strobe")
KINDS = (*NODE_KINDS, *NET_KINDS, *DISK_KINDS, *CLOCK_KINDS)
INSTANT_KINDS = frozenset({"node-kill", "node-restart", "node-resume"})
"""Done once applied: never listed as active, never cleared."""
SELECTS = ("one", "minority", "majority", "leader", "all")
DISK_OPS = ("read", "write", "fsync")

MAX_DURATION_S = 7 * 86400.0
MAX_DELAY_MS = 60_000.0
MAX_OFFSET_S = 10 * 365 * 86400.0
MAX_TARGET_NODES = 64
MAX_DISK_NAME_CHARS = 4096


@dataclass(frozen=True)
class Param:
    """One parameter of a kind: a number in ``[low, high]``, a choice, a list of
    choices, or a disk name; ``default`` None means required."""

    type: str
    """``number``, ``choice``, ``choices`` or ``name``."""
    default: Any = None
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()
    optional: bool = False
    """May be absent with no default (a disk name: every disk)."""


_PROBABILITY = Param("number", 1.0, 0.0, 1.0)
_DISK = Param("name", optional=True)
PARAMS: dict[str, dict[str, Param]] = {
    "node-kill": {},
    "node-pause": {},
    "node-resume": {},
    "node-restart": {},
    "net-partition": {},
    "net-delay": {
        "ms": Param("number", None, 0.0, MAX_DELAY_MS),
        "jitter_ms": Param("number", 0.0, 0.0, MAX_DELAY_MS),
        "distribution": Param("choice", "uniform", choices=("uniform", "normal")),
    },
    "net-loss": {"probability": Param("number", None, 0.0, 1.0)},
    "net-duplicate": {"probability": _PROBABILITY},
    "net-bandwidth": {"bytes_per_s": Param("number", None, 1.0, 1e12)},
    "net-reset": {},
    "disk-fail": {
        "ops": Param("choices", list(DISK_OPS), choices=DISK_OPS),
        "probability": _PROBABILITY,
        "disk": _DISK,
    },
    "disk-slow": {
        "ms": Param("number", None, 0.0, MAX_DELAY_MS),
        "ops": Param("choices", list(DISK_OPS), choices=DISK_OPS),
        "disk": _DISK,
    },
    "disk-corrupt": {
        "mode": Param("choice", "at-rest", choices=("at-rest", "on-read")),
        "probability": _PROBABILITY,
        "disk": _DISK,
    },
    "disk-full": {"disk": _DISK},
    "disk-lose-unsynced": {"disk": _DISK},
    "clock-skew": {"offset_s": Param("number", None, -MAX_OFFSET_S, MAX_OFFSET_S)},
    "clock-strobe": {
        "offset_s": Param("number", None, -MAX_OFFSET_S, MAX_OFFSET_S),
        "period_s": Param("number", None, 0.01, 86400.0),
    },
}
assert set(PARAMS) == set(KINDS), "every kind has its parameter table"


def family(kind: str) -> str:
    """``node``, ``net``, ``disk`` or ``clock``."""
    return kind.split("-", 1)[0]


@dataclass(frozen=True)
class Request:
    """A checked fault request: ``params`` complete with defaults."""

    kind: str
    target: dict[str, Any]
    params: dict[str, Any]
    duration_s: float | None


@dataclass(frozen=True)
class Topology:
    """What a target is resolved against: the members (sorted), their racks, the leader."""

    nodes: tuple[str, ...]
    racks: Mapping[str, str] = field(default_factory=dict)
    leader: str | None = None


@dataclass(frozen=True)
class Plan:
    """Who acts on a resolved fault: node -> the peers it acts toward (``CLIENTS`` for
    its API clients; empty for node, disk and clock faults, which act on the node)."""

    nodes: tuple[str, ...]
    """Every node the target named, as the answer lists them."""
    acts: dict[str, tuple[str, ...]]


# --- checking a request --------------------------------------------------------------------
def parse_request(body: Mapping[str, Any]) -> Request:
    """A checked ``Request`` from a request body, or ``BadRequest`` naming the problem."""
    kind = body.get("kind")
    if kind not in KINDS:
        raise BadRequest(f"unknown fault kind {kind!r}; kinds: {', '.join(KINDS)}")
    target = body.get("target", {"select": "all"} if kind in INSTANT_KINDS else None)
    if not isinstance(target, dict):
        raise BadRequest('target must be {"nodes": [...]}, {"select": ...} or {"from", "to"}')
    check_target(kind, target)
    params = check_params(kind, body.get("params") or {})
    duration = body.get("duration_s")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise BadRequest("duration_s must be a number of seconds or null")
        if not 0 < duration <= MAX_DURATION_S:
            raise BadRequest(f"duration_s must be in (0, {MAX_DURATION_S:g}]")
        duration = float(duration)
    return Request(kind, target, params, duration)


def check_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` of ``kind`` checked, with defaults filled in."""
    table = PARAMS[kind]
    unknown = sorted(set(params) - set(table))
    if unknown:
        known = ", ".join(table) or "none"
        raise BadRequest(f"{kind}: unknown parameter {unknown[0]!r} (parameters: {known})")
    out: dict[str, Any] = {}
    for name, spec in table.items():
        if name not in params:
            if spec.default is None:
                if spec.optional:
                    continue
                raise BadRequest(f"{kind}: parameter {name!r} is required")
            out[name] = spec.default
            continue
        out[name] = _check_param(f"{kind}: {name}", spec, params[name])
    return out


def _check_param(what: str, spec: Param, value: Any) -> Any:
    if spec.type == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"{what} must be a number")
        if not spec.low <= value <= spec.high or value != value:
            raise BadRequest(f"{what} must be in [{spec.low:g}, {spec.high:g}]")
        return float(value)
    if spec.type == "choice":
        if value not in spec.choices:
            raise BadRequest(f"{what} must be one of {', '.join(spec.choices)}")
        return value
    if spec.type == "choices":
        if not isinstance(value, list) or not value or any(v not in spec.choices for v in value):
            raise BadRequest(f"{what} must be a non-empty list of {', '.join(spec.choices)}")
        return sorted(set(value), key=spec.choices.index)
    assert spec.type == "name", f"unknown parameter type {spec.type}"
    if not isinstance(value, str) or not 0 < len(value) <= MAX_DISK_NAME_CHARS:
        raise BadRequest(f"{what} must be a disk name (as the config names it)")
    return value


def check_target(kind: str, target: Mapping[str, Any]) -> None:
    if "from" in target or "to" in target:
        if family(kind) != "net":
            raise BadRequest(f"{kind}: only network faults take a from/to target")
        if set(target) != {"from", "to"}:
            raise BadRequest('a one-way target is exactly {"from": TARGET, "to": TARGET}')
        if not isinstance(target["from"], dict):
            raise BadRequest("target.from must be a target object")
        _check_simple(target["from"], "target.from")
        to = target["to"]
        if to == "clients":
            if kind == "net-duplicate":
                raise BadRequest("net-duplicate acts between nodes, not toward clients")
            return
        if not isinstance(to, dict):
            raise BadRequest('target.to must be a target object or "clients"')
        _check_simple(to, "target.to")
        return
    _check_simple(target, "target")


def _check_simple(target: Mapping[str, Any], what: str) -> None:
    if set(target) == {"nodes"}:
        nodes = target["nodes"]
        if (
            not isinstance(nodes, list)
            or not 0 < len(nodes) <= MAX_TARGET_NODES
            or not all(isinstance(n, str) and n for n in nodes)
        ):
            raise BadRequest(f"{what}.nodes must be a non-empty list of node ids")
        return
    if set(target) == {"select"}:
        sel = target["select"]
        if not isinstance(sel, str) or not (sel in SELECTS or sel.startswith("rack:")):
            raise BadRequest(f"{what}.select must be one of {', '.join(SELECTS)} or rack:NAME")
        return
    raise BadRequest(f'{what} must be {{"nodes": [...]}} or {{"select": ...}}')


# --- resolving a target --------------------------------------------------------------------
def select(target: Mapping[str, Any], topo: Topology, rng: random.Random) -> tuple[str, ...]:
    """The nodes a simple target names (sorted); ``BadRequest`` if it names none."""
    members = sorted(topo.nodes)
    if "nodes" in target:
        unknown = [n for n in target["nodes"] if n not in members]
        if unknown:
            raise BadRequest(f"unknown node {unknown[0]!r}; nodes: {', '.join(members)}")
        return tuple(sorted(set(target["nodes"])))
    sel: str = target["select"]
    n = len(members)
    if sel == "all":
        chosen = members
    elif sel == "one":
        chosen = [rng.choice(members)]
    elif sel == "minority":
        chosen = rng.sample(members, (n - 1) // 2)
    elif sel == "majority":
        chosen = rng.sample(members, n // 2 + 1)
    elif sel == "leader":
        if topo.leader is None or topo.leader not in members:
            raise BadRequest("no leader right now: select leader names nobody")
        chosen = [topo.leader]
    else:
        rack = sel.split(":", 1)[1]
        chosen = [m for m in members if topo.racks.get(m, "") == rack]
    if not chosen:
        raise BadRequest(f"select {sel!r} names no node of {n}")
    return tuple(sorted(chosen))


def resolve(request: Request, topo: Topology, rng: random.Random) -> Plan:
    """Who acts on ``request``, resolved once against ``topo`` with ``rng``."""
    target = request.target
    if family(request.kind) != "net":
        nodes = select(target, topo, rng)
        return Plan(nodes, {n: () for n in nodes})
    if "from" not in target:
        nodes = select(target, topo, rng)
        inside = set(nodes)
        acts: dict[str, tuple[str, ...]] = {}
        for a in sorted(topo.nodes):
            # Every link with a target node at one end, in both directions.
            peers = tuple(b for b in sorted(topo.nodes) if b != a and (a in inside or b in inside))
            if peers:
                acts[a] = peers
        if not acts:
            raise BadRequest(f"{request.kind}: the target leaves no link between nodes")
        return Plan(nodes, acts)
    senders = select(target["from"], topo, rng)
    if target["to"] == "clients":
        return Plan(senders, {a: (CLIENTS,) for a in senders})
    receivers = select(target["to"], topo, rng)
    acts = {a: tuple(b for b in receivers if b != a) for a in senders}
    acts = {a: peers for a, peers in acts.items() if peers}
    if not acts:
        raise BadRequest(f"{request.kind}: from and to name the same single node")
    return Plan(tuple(sorted({*senders, *receivers})), acts)


def new_id(rng: random.Random) -> str:
    return f"f{rng.getrandbits(40):010x}"


# --- the record every node keeps and every listing shows -----------------------------------
@dataclass(frozen=True)
class Fault:
    """An injected fault as listed (``GET /api/v1/faults``), and as one node applies it
    (``peers``: whom this node acts toward)."""

    id: str
    kind: str
    target: dict[str, Any]
    nodes: tuple[str, ...]
    params: dict[str, Any]
    started_wall: float
    until_wall: float | None
    peers: tuple[str, ...] = ()

    def answer(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "nodes": list(self.nodes),
            "params": self.params,
            "started_wall": self.started_wall,
            "until_wall": self.until_wall,
        }

    def to_text(self) -> str:
        return json.dumps({**self.answer(), "peers": list(self.peers)}, sort_keys=True)


def from_text(text: str) -> Fault:
    """A ``Fault`` a peer sent (``Fault.to_text``), checked; ``BadRequest`` otherwise."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"fault record is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise BadRequest("fault record must be an object with an id")
    request = parse_request(raw)
    nodes, peers = raw.get("nodes"), raw.get("peers")
    if not isinstance(nodes, list) or not isinstance(peers, list):
        raise BadRequest("fault record: nodes and peers must be lists")
    if not _ids(nodes) or not _ids(peers, allow_clients=True):
        raise BadRequest("fault record: nodes and peers must be lists of node ids")
    started, until = raw.get("started_wall"), raw.get("until_wall")
    if not isinstance(started, int | float) or not (
        until is None or isinstance(until, int | float)
    ):
        raise BadRequest("fault record: started_wall and until_wall must be numbers")
    fid = raw["id"]
    if not 0 < len(fid) <= 64 or not fid.isalnum():
        raise BadRequest("fault record: bad id")
    return Fault(
        fid,
        request.kind,
        request.target,
        tuple(nodes),
        request.params,
        float(started),
        None if until is None else float(until),
        tuple(peers),
    )


def _ids(values: Any, allow_clients: bool = False) -> bool:
    if not isinstance(values, list) or len(values) > MAX_TARGET_NODES:
        return False
    return all(
        isinstance(v, str) and 0 < len(v) <= 64 and (v != CLIENTS or allow_clients) for v in values
    )


def describe(fault: Fault) -> str:
    """One line for the event log."""
    params = ", ".join(f"{k}={v}" for k, v in sorted(fault.params.items()))
    until = "" if fault.until_wall is None else f" for {fault.until_wall - fault.started_wall:g} s"
    on = ",".join(fault.nodes)
    return f"{fault.kind} {fault.id} on {on}{f' ({params})' if params else ''}{until}"


def merge(listings: Sequence[Sequence[Fault]]) -> list[Fault]:
    """One entry per fault id from the listings of several nodes (the first wins)."""
    seen: dict[str, Fault] = {}
    for listing in listings:
        for f in listing:
            seen.setdefault(f.id, f)
    return sorted(seen.values(), key=lambda f: (f.started_wall, f.id))


_NUMBER = re.compile(r"-?[0-9.]+(e-?[0-9]+)?")


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a user types them (``fabric fault inject --param``, the
    console's fault panel): a number is a number, a comma makes a list (``ops`` is always
    one). A pair without ``=`` is ``BadRequest``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadRequest(f"parameter {pair!r}: expected KEY=VALUE")
        if "," in value or key == "ops":
            out[key] = [v for v in value.split(",") if v]
            continue
        try:
            out[key] = float(value) if _NUMBER.fullmatch(value) else value
        except ValueError:  # "1.2.3" looks numeric and is not
            out[key] = value
    return out
