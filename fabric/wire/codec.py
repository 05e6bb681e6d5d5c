"""The wire codec: frozen dataclasses <-> msgpack bytes, versioned and size-limited.

Every message kind is registered once with a small integer tag. A message encodes as
``[WIRE_VERSION, tag, field1, field2, ...]``; nested registered dataclasses ride as
msgpack extension values carrying the same list. Decoding checks the version, the tag
and the field count, and restores tuples and enums from the dataclass's type hints, so
a decoded message compares equal to the one that was sent.

Types say little about a peer's intent: a kind may be registered with a ``check`` that
``decode`` runs on every value it builds (ids follow their grammar, offsets and terms
are in range, lists are bounded; see ``fabric.wire.checks``), so no handler ever sees
a message that decoded but is not valid.

A peer's malformed bytes raise ``WireError`` (bad input); registering a class twice is
our bug and asserts.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any

import msgpack

from fabric.errors import BadRequest
from fabric.limits import MAX_MESSAGE_BYTES, WIRE_VERSION

_EXT_DATACLASS = 1


REFUSAL_REASONS = ("too_large", "undecodable", "envelope", "unknown_kind", "bad_field", "invalid")
"""Why bytes were refused, coarse enough to be a metric label: ``too_large`` (past the
size limit), ``undecodable`` (not msgpack), ``envelope`` (no version, another version,
not a batch), ``unknown_kind`` (a tag or extension we do not know), ``bad_field`` (a
field count or type), ``invalid`` (typed right, but its ``check`` refused it)."""


class WireError(Exception):
    """Bytes from a peer that are not a valid message (a peer's bad input)."""

    def __init__(self, message: str, reason: str = "bad_field") -> None:
        super().__init__(message)
        assert reason in REFUSAL_REASONS, f"unknown refusal reason {reason!r}"
        self.reason = reason


_Converter = Callable[[Any], Any]
Check = Callable[[Any], None]
"""Raises ``WireError`` or ``BadRequest`` for a decoded value that is not valid."""
_by_tag: dict[int, tuple[type, tuple[_Converter, ...]]] = {}
_checks: dict[int, Check] = {}
_by_type: dict[type, int] = {}
_required: dict[int, int] = {}
"""tag -> fields without a default: an older sender may omit the trailing others."""
_names: dict[int, tuple[str, ...]] = {}
"""tag -> its field names, in order (read on every encode)."""
_shared: set[int] = set()
"""Tags whose values are immutable all the way down (``register_class(shared=True)``)."""

SHARE_MAX_BYTES = 4096
"""The largest encoding of a shared value that the codec remembers."""
SHARE_SLOTS = 8192
"""How many encodings and decodings of shared values it remembers (each way)."""


class Recent:
    """A bounded map that forgets its oldest insertions first (the codec's memos, and
    ``fabric.metadata.state``'s of checked commands)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.items: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        return self.items.get(key)

    def put(self, key: Any, value: Any) -> None:
        if len(self.items) >= self.slots:
            del self.items[next(iter(self.items))]
        self.items[key] = value


_encoded = Recent(SHARE_SLOTS)
"""id(value) -> (value, its extension): holding the value keeps its id from reuse."""
_decoded = Recent(SHARE_SLOTS)
"""An extension's bytes -> the value they decoded to."""


def _identity(value: Any) -> Any:
    return value


def _expect(kind: type | tuple[type, ...], what: str) -> _Converter:
    def check(v: Any) -> Any:
        # bool is an int to Python, never to us: a flag is not a count.
        if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, float, (int, float))):
            raise WireError(f"expected {what}, got {type(v).__name__}")
        return v

    return check


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise WireError(f"expected a number, got {type(v).__name__}")
    return float(v)


def _converter(hint: Any) -> _Converter:
    """How to check a decoded msgpack value and turn it into the hinted Python type.

    Every field of every message is checked: a peer's bytes are never trusted because
    they decoded (a string where a count belongs, a list where bytes belong).
    """
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        inner = _converter(args[0]) if args else _identity
        seq = _expect(list, "a list")
        return lambda v: tuple(inner(x) for x in seq(v))
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            conv = _converter(options[0])
            return lambda v: None if v is None else conv(v)
        return _identity
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        key = _converter(key_hint)
        conv = _converter(value_hint)
        mapping = _expect(dict, "a map")
        return lambda v: {key(k): conv(x) for k, x in mapping(v).items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return lambda v: _enum(hint, v)
    if hint is float:
        return _float
    if hint in (int, str, bytes, bool):
        return _expect(hint, hint.__name__)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _expect(hint, hint.__name__)
    return _identity


def _enum(cls: type[enum.Enum], v: Any) -> Any:
    try:
        return cls(v)
    except ValueError:
        raise WireError(f"{v!r} is not a {cls.__name__}") from None


def register(tag: int, check: Check | None = None) -> Callable[[type], type]:
    """Class decorator: make a frozen dataclass a wire message with ``tag``; ``check``
    runs on every one decoded."""

    def wrap(cls: type) -> type:
        register_class(cls, tag, check)
        return cls

    return wrap


def registered() -> dict[int, type]:
    """Every registered kind by tag (for tests that cover them all)."""
    return {tag: cls for tag, (cls, _) in _by_tag.items()}


def checked(cls: type) -> bool:
    """Whether decoding ``cls`` runs a check beyond field types."""
    return _by_type.get(cls) in _checks


def register_class(cls: type, tag: int, check: Check | None = None, shared: bool = False) -> None:
    """``shared``: a value of ``cls`` holds only immutable data (frozen, no dicts or
    lists inside), so one decoded value may stand for every decoding of the same bytes,
    and one encoding for every send of the same value. A Raft entry is encoded once per
    peer it goes to and decoded by each: in a simulated cluster of a thousand nodes that
    is a thousand times the same work, in one process."""
    assert dataclasses.is_dataclass(cls), f"{cls} is not a dataclass"
    assert tag not in _by_tag, f"wire tag {tag} used by {_by_tag[tag][0]} and {cls}"
    assert cls not in _by_type, f"{cls} registered twice"
    assert not shared or vars(cls)["__dataclass_params__"].frozen, f"{cls} is shared but not frozen"
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    convs = tuple(_converter(hints[f.name]) for f in fields)
    required = sum(
        1
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    _by_tag[tag] = (cls, convs)
    if check is not None:
        _checks[tag] = check
    _required[tag] = required
    _names[tag] = tuple(f.name for f in fields)
    _by_type[cls] = tag
    if shared:
        _shared.add(tag)


def _default(obj: Any) -> Any:
    tag = _by_type.get(type(obj))
    if tag is None:
        raise TypeError(f"cannot encode {type(obj).__name__}: not a registered message")
    if tag in _shared:
        known = _encoded.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1]
    fields = [getattr(obj, name) for name in _names[tag]]
    ext = msgpack.ExtType(_EXT_DATACLASS, _packer_bytes([tag, *fields]))
    if tag in _shared and len(ext.data) <= SHARE_MAX_BYTES:
        _encoded.put(id(obj), (obj, ext))
    return ext


def _packer_bytes(value: Any) -> bytes:
    out: bytes = msgpack.packb(value, default=_default, use_bin_type=True)
    return out


def _build(items: Any) -> Any:
    if not isinstance(items, list) or not items or type(items[0]) is not int:
        raise WireError("message without a tag", "unknown_kind")
    tag = items[0]
    entry = _by_tag.get(tag)
    if entry is None:
        raise WireError(f"unknown message tag {tag}", "unknown_kind")
    cls, convs = entry
    values = items[1:]
    if not _required[tag] <= len(values) <= len(convs):
        raise WireError(f"{cls.__name__}: {len(values)} fields, expected {len(convs)}")
    try:
        value = cls(*(conv(v) for conv, v in zip(convs, values, strict=False)))
    except (TypeError, ValueError, WireError) as exc:
        raise WireError(f"{cls.__name__}: {exc}") from exc
    check = _checks.get(tag)
    if check is not None:
        try:
            check(value)
        except WireError as exc:
            raise WireError(f"{cls.__name__}: {exc}", "invalid") from exc
        except BadRequest as exc:
            raise WireError(f"{cls.__name__}: {exc.message}", "invalid") from exc
    return value


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _EXT_DATACLASS:
        raise WireError(f"unknown extension type {code}", "unknown_kind")
    small = len(data) <= SHARE_MAX_BYTES
    if small:
        known = _decoded.get(data)
        if known is not None:
            return known
    value = _build(_unpack(data))
    if small and _by_type.get(type(value)) in _shared:
        _decoded.put(data, value)
    return value


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(
            data,
            ext_hook=_ext_hook,
            raw=False,
            strict_map_key=False,
        )
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise WireError(f"undecodable message: {exc}", "undecodable") from exc


def pack(value: Any) -> bytes:
    """Encode plain data holding registered records, with no size limit (snapshots)."""
    return _packer_bytes([WIRE_VERSION, value])


def loads(data: bytes) -> Any:
    """Decode msgpack that may hold registered records, with no envelope check."""
    return _unpack(data)


def unpack(data: bytes) -> Any:
    """Decode what ``pack`` made; raise WireError for anything else."""
    items = _unpack(data)
    if not isinstance(items, list) or len(items) != 2 or items[0] != WIRE_VERSION:
        raise WireError("not a versioned value", "envelope")
    return items[1]


def encode(message: Any) -> bytes:
    """Encode a registered message (or a plain msgpack value) for the wire."""
    data = _packer_bytes([WIRE_VERSION, message])
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return data


def decode(data: bytes) -> Any:
    """Decode bytes from a peer; raise WireError for anything but a valid message."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}", "too_large")
    items = _unpack(data)
    if not isinstance(items, list) or len(items) != 2:
        raise WireError("message is not a [version, body] pair", "envelope")
    if type(items[0]) is not int or items[0] != WIRE_VERSION:
        raise WireError(f"wire version {items[0]!r}, this node speaks {WIRE_VERSION}", "envelope")
    return items[1]


# --- bulk bytes beside the header ------------------------------------------------------------
# A message class may name one ``tuple[bytes, ...]`` field in ``__bulk__``: transports that
# can (HTTP) send those parts raw after the msgpack header instead of packed inside it, so
# megabytes of extent data are neither copied into msgpack's buffer nor out of it again.
MAX_BULK_PARTS = 4096


def bulk_field(message: Any) -> str | None:
    field: str | None = getattr(type(message), "__bulk__", None)
    return field


def encode_parts(message: Any) -> tuple[bytes, tuple[bytes, ...]]:
    """(header, parts): the message with its bulk field emptied, and that field's bytes."""
    field = bulk_field(message)
    if field is None:
        return encode(message), ()
    parts: tuple[bytes, ...] = getattr(message, field)
    total = sum(map(len, parts))
    if len(parts) > MAX_BULK_PARTS or total > MAX_MESSAGE_BYTES:
        raise ValueError(f"{len(parts)} parts of {total} bytes exceed the message limits")
    return encode(dataclasses.replace(message, **{field: ()})), parts


def decode_parts(header: bytes, parts: tuple[bytes, ...]) -> Any:
    """The message ``encode_parts`` split; WireError if the parts do not belong to it."""
    message = decode(header)
    field = bulk_field(message)
    if field is None:
        if parts:
            raise WireError(f"{type(message).__name__} carries no bulk parts", "envelope")
        return message
    if getattr(message, field) != ():
        raise WireError(f"{type(message).__name__}: bulk field {field} inside the header")
    whole = dataclasses.replace(message, **{field: parts})
    check = _checks.get(_by_type[type(message)])
    if check is not None:  # the header was checked with its bulk field empty
        try:
            check(whole)
        except (WireError, BadRequest) as exc:
            raise WireError(f"{type(message).__name__}: {exc}", "invalid") from exc
    return whole
