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


def _identity(value: Any) -> Any:
    return value


def _converter(hint: Any) -> _Converter:
    """How to turn a decoded msgpack value back into the hinted Python type."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        inner = _converter(args[0]) if args else _identity
        return lambda v: tuple(inner(x) for x in v)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            conv = _converter(options[0])
            return lambda v: None if v is None else conv(v)
        return _identity
    if origin is dict:
        _, value_hint = typing.get_args(hint)
        conv = _converter(value_hint)
        return lambda v: {k: conv(x) for k, x in v.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    return _identity


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
    convs = tuple(_converter(hints[f.name]) for f in dataclasses.fields(cls))
    _by_tag[tag] = (cls, convs)
    _by_type[cls] = tag


def _default(obj: Any) -> Any:
    tag = _by_type.get(type(obj))
    if tag is None:
        raise TypeError(f"cannot encode {type(obj).__name__}: not a registered message")
    fields = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
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
    if len(values) != len(convs):
        raise WireError(f"{cls.__name__}: {len(values)} fields, expected {len(convs)}")
    try:
        return cls(*(conv(v) for conv, v in zip(convs, values, strict=True)))
    except (TypeError, ValueError) as exc:
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
