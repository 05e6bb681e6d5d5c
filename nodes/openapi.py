"""Every route of the HTTP API, declared once: the OpenAPI document and request checking.

``OPERATIONS`` lists each route with its parameters, request body and answers as the
schemas of ``nodes/schemas.py``. ``document()`` renders them as the OpenAPI document
served at ``/api/v1/openapi.json``; ``json_body`` and ``query`` (``nodes/api.py``) look
up the operation of the route that matched and check the request against the same
schemas, so the document cannot promise what the node does not enforce. A unit test
holds the list and the application's routes to each other.

Answers are documented with their required fields only and stay open (scripts may rely
on the fields listed; new ones may be added, as SPEC.md allows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fabric import faults, limits, tokens
from fabric.config import SETTINGS_BOUNDS
from fabric.images.declared import FORMATS
from nodes.schemas import Schema, array, boolean, integer, number, obj, string

# --- request pieces ------------------------------------------------------------------------
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _name(kind: str) -> Schema:
    return string(
        1,
        64,
        pattern=_NAME,
        description=f"a {kind} name: 1-64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit",
    )


_SECONDS = number(0, limits.MAX_SETTING_DELAY_S)


def _setting(name: str, kind: str = "number", **extra: Any) -> Schema:
    """A ``[rebuild]`` or ``[scrub]`` setting, within the bounds the config file has."""
    low, high = SETTINGS_BOUNDS[name]
    if kind == "integer":
        return integer(int(low), int(high), **extra)
    return number(low, high, **extra)


_BYTES_PER_S = _setting("bytes_per_s", "integer", description="bytes per second; 0: no limit")
_OFFSET = integer(0, limits.MAX_VDISK_BYTES)
_NODE_ID = string(
    1,
    limits.MAX_NODE_ID_CHARS,
    pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$",
    description="a node id: 1-32 letters, digits, '-' or '_', starting with a letter or digit",
)
_CHECKSUM: Schema = {
    "description": 'a checksum: "sha256:HEX", "sha1:HEX" or '
    '{"type": "sha256"|"sha1", "value": HEX}',
    "nullable": True,
    "anyOf": [
        string(45, 71, pattern=r"^(sha256:[0-9a-fA-F]{64}|sha1:[0-9a-fA-F]{40})$"),
        obj(
            ["type", "value"],
            type={"type": "string", "enum": ["sha256", "sha1"]},
            value=string(40, 64, pattern="^[0-9a-fA-F]+$"),
        ),
    ],
}

CONTAINER_REQUEST = obj(
    ["name"],
    name=_name("container"),
    rf=integer(1, 3),
    dedup=boolean(),
    compression={"type": "string", "enum": ["none", "zstd"]},
    compression_level=integer(1, 19),
    min_saving_ratio=number(0, 1, exclusiveMaximum=True),
    ec=string(
        0,
        5,
        pattern=r"^([0-9]{1,2}\+[0-9])?$",
        nullable=True,
        description="k+m (e.g. 4+2): k data strips 1..16, m parity strips 1..8; "
        "empty or null: no erasure coding",
    ),
    ec_delay_s=_SECONDS,
)
VDISK_REQUEST = obj(
    ["name", "container", "size"],
    name=_name("vdisk"),
    container=_name("container"),
    size=integer(1, limits.MAX_VDISK_BYTES),
)
KV_REQUEST = obj(
    ["value"],
    value={"description": "any JSON value (nesting and size are bounded)"},
    expect_version=integer(0, limits.MAX_JSON_INT),
)
IMAGE_REQUEST = obj(
    ["name"],
    name=_name("image"),
    container={**_name("container"), "nullable": True},
    source_url=string(
        8,
        4096,
        pattern=r"^[hH][tT][tT][pP][sS]?://[^/?#\s]",
        nullable=True,
        description="an http(s) URL to import the image from",
    ),
    image_type={
        "type": "string",
        "enum": ["DISK", "ISO"],
        "description": "ISO only for ISO 9660 content ('CD001' at byte 32769), DISK only "
        "for other content (422 otherwise); left out, the type follows the content",
    },
    source_format={
        "type": "string",
        "enum": list(FORMATS),
        "nullable": True,
        "description": "the format the bytes will be in; content of another format is "
        "refused with 422 naming both. Left out, the format is detected from the content",
    },
    checksum=_CHECKSUM,
)
MEMBER_REQUEST = obj(
    ["id", "port"],
    id=_NODE_ID,
    host=string(1, 253, pattern=r"^[^\s/]+$", description="a host name or address"),
    port=integer(1, 65535),
    disks=array(string(1, 255, pattern=r"^[^\x00]+$"), 1, 64),
    labels=obj(rack=string(0, 64), block=string(0, 64)),
    disk_capacity=array(integer(0, limits.MAX_JSON_INT), 0, 64),
)
DRAIN_REQUEST = obj(undo=boolean())
REBUILD_REQUEST = obj(
    bytes_per_s=_BYTES_PER_S,
    per_node=_setting("per_node", "integer"),
    delay_s=_setting("delay_s"),
)
TOKEN_REQUEST = obj(
    ["name"],
    name=string(1, 128, description="who the token is for"),
    role={"type": "string", "enum": list(tokens.ROLES)},
)
SCRUB_REQUEST = obj(
    bytes_per_s=_BYTES_PER_S,
    cycle_s=_setting("cycle_s"),
    now=boolean(description="true starts a pass on every node now"),
)
FAULT_REQUEST = obj(
    ["kind"],
    kind={"type": "string", "enum": list(faults.KINDS)},
    target={
        "type": "object",
        "description": '{"nodes": [ID, ...]}, {"select": "one"|"minority"|"majority"|'
        '"leader"|"all"|"rack:NAME"}, or (network faults, one-way) '
        '{"from": TARGET, "to": TARGET|"clients"}',
        "additionalProperties": {},
    },
    params={
        "type": "object",
        "description": "the kind's parameters (see the README's Faults section)",
        "additionalProperties": {},
    },
    duration_s=number(0, faults.MAX_DURATION_S, nullable=True, exclusiveMinimum=True),
    seed=integer(0, limits.MAX_JSON_INT, description="seeds the choice of target nodes"),
)


# --- answers -------------------------------------------------------------------------------
def _view(**props: Schema) -> Schema:
    """An open object whose listed fields are always there."""
    return {"type": "object", "properties": props, "required": list(props)}


def _nullable(schema: Schema, description: str = "") -> Schema:
    return {**_described(schema, description), "nullable": True}


def _described(schema: Schema, description: str) -> Schema:
    return {**schema, "description": description} if description else schema


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_NUM: Schema = {"type": "number"}
_BOOL: Schema = {"type": "boolean"}
ERROR = _view(error=_view(code=_STR, message=_STR))
HEALTH = _view(
    id=_STR,
    cluster=_STR,
    cluster_id=_STR,
    leader=_nullable(_STR),
    role={"type": "string", "enum": ["leader", "voter", "member", "starting"]},
    raft_role=_STR,
    term=_INT,
    registered=_BOOL,
    applied_index=_INT,
    problems={"type": "array", "items": _STR},
)
CONTAINER = _view(
    name=_STR,
    rf=_INT,
    ec=_nullable(_STR),
    dedup=_BOOL,
    compression=_STR,
    logical_bytes=_INT,
    physical_bytes=_INT,
    resiliency=_nullable(_INT),
)
CLUSTER = _view(
    name=_STR,
    leader=_nullable(_STR),
    nodes={
        "type": "array",
        "items": _view(id=_STR, address=_STR, role=_STR, state=_STR, disks={"type": "array"}),
    },
    containers={"type": "array", "items": CONTAINER},
)
KV_ITEM = _view(key=_STR, version=_INT, value={})
KV_VERSION = _view(key=_STR, version=_INT)
VDISK = _view(id=_STR, name=_STR, container=_STR, size=_INT, created=_NUM)
WRITTEN = _view(written=_INT, offset=_INT)
VDISK_EXTENTS = _view(
    size=_INT,
    extent_bytes=_INT,
    mapped={"type": "array", "items": {"type": "array", "items": _INT}},
)
IMAGE = _view(
    id=_STR,
    name=_STR,
    container=_STR,
    state={"type": "string", "enum": ["PENDING", "ACTIVE", "ERROR"]},
    image_type=_STR,
    source_format=_nullable(_STR, "the format detected from the content (once ACTIVE)"),
    declared_format=_nullable(_STR, "the source_format the image was created with"),
    virtual_size=_nullable(_INT, "the raw disk's size in bytes, padded_bytes included"),
    padded_bytes=_described(
        _INT, "zeros added to end a raw source on a whole 512-byte sector, as qemu-img does"
    ),
    source_bytes=_described(_INT, "bytes received, in the source format"),
    logical_bytes=_described(_INT, "bytes of the raw disk that are not holes (whole extents)"),
    stored_bytes=_described(
        _INT,
        "the image's distinct extents after compression, before replicas: what the "
        "container's stored_bytes counts, for this image alone (shared extents in full)",
    ),
    source_sha256=_nullable(_STR),
    error=_nullable(_STR),
    task_id=_nullable(_STR),
)
TASK = _view(
    id=_STR,
    kind=_STR,
    image_id=_STR,
    state=_STR,
    progress={"type": "number", "minimum": 0, "maximum": 1},
    bytes_done=_INT,
    bytes_expected=_nullable(
        _INT, "the source's Content-Length (at the end: the bytes read, if it sent none)"
    ),
    error=_nullable(_STR),
)
EVENTS = _view(
    events={
        "type": "array",
        "items": _view(seq=_INT, at_wall=_NUM, kind=_STR, node=_STR, subject=_STR, message=_STR),
    },
    last_seq=_INT,
)
REBUILD = _view(
    settings=_view(delay_s=_NUM, bytes_per_s=_INT, per_node=_INT),
    containers={"type": "array", "items": _view(name=_STR, resiliency=_nullable(_INT))},
)
SCRUB = _view(settings=_view(bytes_per_s=_INT, cycle_s=_NUM))
DRAIN = _view(id=_STR, draining=_BOOL, groups=_INT, strips=_INT, held_bytes=_INT)
MEMBER = _view(id=_STR, address=_nullable(_STR), member=_BOOL, role=_STR)
TOKEN = _view(id=_STR, name=_STR, role=_STR, created=_NUM, revoked=_BOOL)
FAULT = _view(
    id=_STR,
    kind=_STR,
    target={"type": "object"},
    nodes={"type": "array", "items": _STR},
    params={"type": "object"},
    started_wall=_NUM,
    until_wall=_nullable(_NUM),
)


# --- the operations ------------------------------------------------------------------------
@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    """As the OpenAPI document spells it: ``{name}`` for each path parameter."""
    summary: str
    ok: int = 200
    answer: Schema | None = None
    """JSON schema of the success answer (None: no body, or raw bytes if ``raw_answer``)."""
    body: Schema | None = None
    """JSON request body; None: the route reads none (or raw bytes if ``raw_body``)."""
    raw_body: bool = False
    raw_answer: str = ""
    """Media type of a success answer that is not JSON ("": JSON)."""
    query: dict[str, Schema] = field(default_factory=dict)
    ranged: bool = False
    """Honours ``Range``: may answer 206 or 416."""
    accepted: bool = False
    """May also answer 202 with the same body: work started (an image import)."""
    public: bool = False
    """Served without a token (``fabric.tokens.PUBLIC_PATHS``)."""
    errors: tuple[int, ...] = ()
    """Statuses beyond those every request may get (``COMMON_ERRORS``)."""


COMMON_ERRORS = (400, 401, 403, 404, 409, 503, 504)
"""Every request may meet these: a bad request, missing or wrong credentials, an unknown
id, a conflict (another cluster's id among them), no leader or a node out of service,
a commit that timed out."""

_ID = string(1, 256)
_KEY = string(1, limits.MAX_KEY_BYTES, description="a key of 1..1024 bytes; may contain '/'")
_BYTES = integer(0, limits.MAX_VDISK_BYTES)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/api/v1/health", "This node's view of itself: role, leader, term", answer=HEALTH
    ),
    Operation("GET", "/api/v1/cluster", "Nodes, roles, leader, states, containers", answer=CLUSTER),
    Operation(
        "GET", "/api/v1/openapi.json", "This document", answer={"type": "object"}, public=True
    ),
    Operation("GET", "/metrics", "Prometheus metrics", raw_answer="text/plain"),
    Operation("GET", "/api/v1/kv/{key}", "Read a metadata key (linearizable)", answer=KV_ITEM),
    Operation(
        "PUT",
        "/api/v1/kv/{key}",
        "Write a metadata key through the leader; expect_version makes it a compare-and-set",
        answer=KV_VERSION,
        body=KV_REQUEST,
    ),
    Operation("DELETE", "/api/v1/kv/{key}", "Delete a metadata key", ok=204),
    Operation(
        "GET",
        "/api/v1/containers",
        "Containers with policy, bytes, savings, resiliency",
        answer={"type": "array", "items": CONTAINER},
    ),
    Operation(
        "POST",
        "/api/v1/containers",
        "Create a container",
        ok=201,
        answer=CONTAINER,
        body=CONTAINER_REQUEST,
    ),
    Operation("GET", "/api/v1/containers/{name}", "One container", answer=CONTAINER),
    Operation("DELETE", "/api/v1/containers/{name}", "Delete an empty container", ok=204),
    Operation("GET", "/api/v1/vdisks", "Vdisks", answer={"type": "array", "items": VDISK}),
    Operation("POST", "/api/v1/vdisks", "Create a vdisk", ok=201, answer=VDISK, body=VDISK_REQUEST),
    Operation("GET", "/api/v1/vdisks/{id}", "One vdisk (by id or name)", answer=VDISK),
    Operation("DELETE", "/api/v1/vdisks/{id}", "Delete a vdisk and release its extents", ok=204),
    Operation(
        "GET",
        "/api/v1/vdisks/{id}/extents",
        "The runs [first index, count] of extents that hold data; the others are holes",
        answer=VDISK_EXTENTS,
    ),
    Operation(
        "PUT",
        "/api/v1/vdisks/{id}/data",
        "Write the body at ?offset=N (Content-Length required)",
        answer=WRITTEN,
        raw_body=True,
        query={"offset": _OFFSET},
        errors=(411, 413, 507),
    ),
    Operation(
        "GET",
        "/api/v1/vdisks/{id}/data",
        "Read the vdisk from ?offset= for ?length= bytes, or the Range asked",
        raw_answer="application/octet-stream",
        query={"offset": _OFFSET, "length": _BYTES},
        ranged=True,
    ),
    Operation("GET", "/api/v1/images", "Images", answer={"type": "array", "items": IMAGE}),
    Operation(
        "POST",
        "/api/v1/images",
        "Create an image; with source_url, import it (202 with its task_id)",
        ok=201,
        answer=IMAGE,
        body=IMAGE_REQUEST,
        accepted=True,
    ),
    Operation("GET", "/api/v1/images/{id}", "One image (by id or name)", answer=IMAGE),
    Operation("DELETE", "/api/v1/images/{id}", "Delete an image and its vdisk", ok=204),
    Operation(
        "PUT",
        "/api/v1/images/{id}/file",
        "Upload the image's bytes in any supported format (detected from the content)",
        answer=IMAGE,
        raw_body=True,
        errors=(413, 422, 507),
    ),
    Operation(
        "GET",
        "/api/v1/images/{id}/file",
        "Download the image as raw bytes; honours Range",
        raw_answer="application/octet-stream",
        ranged=True,
    ),
    Operation("GET", "/api/v1/tasks/{id}", "An import task: state, progress, error", answer=TASK),
    Operation(
        "GET",
        "/api/v1/events",
        "The event log: node and disk states, rebuilds, scrub findings",
        answer=EVENTS,
        query={
            "since": integer(0, 2**62, description="events after this sequence number"),
            "limit": integer(0, limits.EVENTS_PAGE),
            "kind": string(0, 1024, description="comma-separated event kinds"),
        },
    ),
    Operation(
        "GET",
        "/api/v1/rebuild",
        "Rebuild settings; bytes at reduced resiliency, rate, ETA",
        answer=REBUILD,
    ),
    Operation(
        "PUT",
        "/api/v1/rebuild",
        "Change the rebuild's rate, per-node concurrency or delay",
        answer=REBUILD,
        body=REBUILD_REQUEST,
    ),
    Operation("GET", "/api/v1/scrub", "Scrub settings", answer=SCRUB),
    Operation(
        "PUT",
        "/api/v1/scrub",
        "Change the scrub rate or cycle; now=true starts a pass on every node",
        answer=SCRUB,
        body=SCRUB_REQUEST,
    ),
    Operation(
        "POST",
        "/api/v1/nodes",
        "Add a node to the membership and to Raft as a learner (then start it)",
        ok=201,
        answer=MEMBER,
        body=MEMBER_REQUEST,
    ),
    Operation(
        "POST", "/api/v1/nodes/{id}/promote", "Make a caught-up learner a voter", answer=MEMBER
    ),
    Operation(
        "POST",
        "/api/v1/nodes/{id}/rejoin",
        "Remove, re-add and promote a voter that lost its Raft state",
        answer=MEMBER,
    ),
    Operation(
        "DELETE",
        "/api/v1/nodes/{id}",
        "Remove a node (409 while it is UP and holds data: drain it first)",
        ok=204,
    ),
    Operation(
        "GET",
        "/api/v1/nodes/{id}/drain",
        "A node's drain: draining, groups, strips and bytes it still holds",
        answer=DRAIN,
    ),
    Operation(
        "POST",
        "/api/v1/nodes/{id}/drain",
        "Move every copy off the node (409 if RF or EC width could not be kept); undo=true stops",
        answer=DRAIN,
        body=DRAIN_REQUEST,
    ),
    Operation(
        "POST",
        "/api/v1/tokens",
        "Create an API token (admin); the answer holds the token, shown this once",
        ok=201,
        answer=_view(**TOKEN["properties"], token=_STR),
        body=TOKEN_REQUEST,
    ),
    Operation(
        "GET",
        "/api/v1/tokens",
        "API tokens: id, name, role, revoked (admin; never the secrets)",
        answer=_view(tokens={"type": "array", "items": TOKEN}),
    ),
    Operation("DELETE", "/api/v1/tokens/{id}", "Revoke an API token (admin)", ok=204),
    Operation(
        "POST",
        "/api/v1/faults",
        "Inject a fault (admin): node, network, disk or clock, on the nodes a target names",
        ok=201,
        answer=FAULT,
        body=FAULT_REQUEST,
    ),
    Operation(
        "GET",
        "/api/v1/faults",
        "Active faults, gathered from every node that answers",
        answer=_view(faults={"type": "array", "items": FAULT}),
    ),
    Operation("DELETE", "/api/v1/faults", "Clear every fault (admin)", ok=204),
    Operation("DELETE", "/api/v1/faults/{id}", "Clear one fault (admin)", ok=204),
)

_PATH_PARAM = re.compile(r"\{(\w+)\}")
_PARAMS = {"key": _KEY, "name": string(1, 256), "id": _ID}
_BY_ROUTE = {(op.method, op.path): op for op in OPERATIONS}
assert len(_BY_ROUTE) == len(OPERATIONS), "an operation is declared twice"


def operation(method: str, path: str) -> Operation:
    """The declared operation of a route (``path`` as the router spells it)."""
    return _BY_ROUTE[(method, path)]


def route_path(canonical: str) -> str:
    """aiohttp's canonical path (``/kv/{key:.+}`` keeps its regex) as the document's."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", canonical)


# --- the document ----------------------------------------------------------------------
def _errors_json() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _responses(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if op.raw_answer:
        out[str(op.ok)] = {"description": "success", "content": {op.raw_answer: {}}}
    elif op.answer is not None:
        content = {"application/json": {"schema": op.answer}}
        out[str(op.ok)] = {"description": "success", "content": content}
    else:
        out[str(op.ok)] = {"description": "success, no content"}
    if op.accepted:
        out["202"] = {**out[str(op.ok)], "description": "accepted: a task started"}
    if op.ranged:
        out["206"] = {
            "description": "the Range asked",
            "content": {"application/octet-stream": {}},
        }
    statuses = {*COMMON_ERRORS, *op.errors}
    if op.body is not None or op.raw_body:
        statuses.add(413)
    if op.ranged:
        statuses.add(416)
    for status in sorted(statuses):
        out[str(status)] = {"description": _REASONS[status], "content": _errors_json()}
    # aiohttp's HTTP parser refuses a request line or header over 8 KiB before any route
    # or middleware sees it, in plain text.
    out["400"]["content"] = {**_errors_json(), "text/plain": {}}
    return out


_REASONS = {
    400: "bad request: the message names the field",
    401: "no or unknown credentials",
    403: "the credentials' role may not do this",
    404: "no such object",
    409: "conflict with the current state",
    411: "Content-Length required",
    413: "body too large",
    416: "range not satisfiable",
    422: "the image could not be read",
    503: "no leader, or the node is out of service",
    504: "the cluster did not commit in time",
    507: "not enough space",
}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _PARAMS[name]}
        for name in _PATH_PARAM.findall(op.path)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in op.query.items()
    ]
    if op.ranged:
        params.append(
            {
                "name": "Range",
                "in": "header",
                "required": False,
                "description": "bytes=START-END, bytes=START- or bytes=-SUFFIX",
                "schema": {"type": "string", "maxLength": 64},
            }
        )
    return params


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}{_op_name(op.path)}",
        "responses": _responses(op),
    }
    if op.public:
        out["security"] = []
    params = _parameters(op)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": op.body}},
        }
    elif op.raw_body:
        out["requestBody"] = {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    return out


def _op_name(path: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", path.replace("/api/v1", ""))
    return "".join(w[:1].upper() + w[1:] for w in words if w)


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Storage fabric API", "version": "1"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
