"""The wire codec: frozen dataclasses <-> msgpack bytes, versioned and size-limited.

Every message kind is registered once with a small integer tag. A message encodes as
``[WIRE_VERSION, tag, field1, field2, ...]``; nested registered dataclasses ride as
msgpack extension values carrying the same list. Decoding checks the version, the tag
and the field count, and restores tuples and enums from the dataclass's type hints, so
a decoded message compares equal to the one that was sent.

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

from fabric.limits import MAX_MESSAGE_BYTES, WIRE_VERSION

_EXT_DATACLASS = 1


class WireError(Exception):
    """Bytes from a peer that are not a valid message (a peer's bad input)."""


_Converter = Callable[[Any], Any]
_by_tag: dict[int, tuple[type, tuple[_Converter, ...]]] = {}
_by_type: dict[type, int] = {}
_required: dict[int, int] = {}
_names: dict[int, tuple[str, ...]] = {}
"""tag -> its field names, in order (read on every encode)."""
"""tag -> fields without a default: an older sender may omit the trailing others."""


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


def register(tag: int) -> Callable[[type], type]:
    """Class decorator: make a frozen dataclass a wire message with ``tag``."""

    def wrap(cls: type) -> type:
        register_class(cls, tag)
        return cls

    return wrap


def register_class(cls: type, tag: int) -> None:
    assert dataclasses.is_dataclass(cls), f"{cls} is not a dataclass"
    assert tag not in _by_tag, f"wire tag {tag} used by {_by_tag[tag][0]} and {cls}"
    assert cls not in _by_type, f"{cls} registered twice"
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    convs = tuple(_converter(hints[f.name]) for f in fields)
    required = sum(
        1
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    _by_tag[tag] = (cls, convs)
    _required[tag] = required
    _names[tag] = tuple(f.name for f in fields)
    _by_type[cls] = tag


def _default(obj: Any) -> Any:
    tag = _by_type.get(type(obj))
    if tag is None:
        raise TypeError(f"cannot encode {type(obj).__name__}: not a registered message")
    fields = [getattr(obj, name) for name in _names[tag]]
    return msgpack.ExtType(_EXT_DATACLASS, _packer_bytes([tag, *fields]))


def _packer_bytes(value: Any) -> bytes:
    out: bytes = msgpack.packb(value, default=_default, use_bin_type=True)
    return out


def _build(items: list[Any]) -> Any:
    if not items or not isinstance(items[0], int):
        raise WireError("message without a tag")
    entry = _by_tag.get(items[0])
    if entry is None:
        raise WireError(f"unknown message tag {items[0]}")
    cls, convs = entry
    values = items[1:]
    if not _required[items[0]] <= len(values) <= len(convs):
        raise WireError(f"{cls.__name__}: {len(values)} fields, expected {len(convs)}")
    try:
        return cls(*(conv(v) for conv, v in zip(convs, values, strict=False)))
    except (TypeError, ValueError, WireError) as exc:
        raise WireError(f"{cls.__name__}: {exc}") from exc


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _EXT_DATACLASS:
        raise WireError(f"unknown extension type {code}")
    return _build(_unpack(data))


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
        raise WireError(f"undecodable message: {exc}") from exc


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
        raise WireError("not a versioned value")
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
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    items = _unpack(data)
    if not isinstance(items, list) or len(items) != 2:
        raise WireError("message is not a [version, body] pair")
    if items[0] != WIRE_VERSION:
        raise WireError(f"wire version {items[0]!r}, this node speaks {WIRE_VERSION}")
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
            raise WireError(f"{type(message).__name__} carries no bulk parts")
        return message
    if getattr(message, field) != ():
        raise WireError(f"{type(message).__name__}: bulk field {field} inside the header")
    return dataclasses.replace(message, **{field: parts})
