"""Request schemas of the HTTP API: one description per route, checked and documented.

A schema is a plain dict in a small subset of JSON Schema (as OpenAPI 3.0 spells it):
``type`` (object, array, string, integer, number, boolean; none: any JSON value),
``properties``, ``required``, ``additionalProperties`` (false, or a schema for every
value), ``items``, ``minItems``/``maxItems``, ``minLength``/``maxLength``, ``pattern``,
``enum``, ``minimum``/``maximum`` with OpenAPI 3.0's boolean ``exclusiveMinimum`` and
``exclusiveMaximum``,
``nullable`` and ``anyOf``. The same dicts go into the OpenAPI document
(``nodes/openapi.py``) and into ``check``, so what is documented is what is enforced.

Objects are closed: a field that is not declared is refused (``additionalProperties``
defaults to false here, unlike JSON Schema), and ``obj`` writes that default out so
the document says the same. Every refusal is a ``BadRequest`` whose message names the
field (``labels.rack``, ``disks[2]``) and what it must be.

``parse_json`` is the only way a request body becomes Python values: it refuses what
the standard parser lets through and the rest of the node cannot take (NaN and
Infinity, integers beyond int64, nesting deeper than ``MAX_JSON_DEPTH``, lone
surrogates, a key given twice), each as a ``BadRequest``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable
from typing import Any

from fabric import limits
from fabric.errors import BadRequest

Schema = dict[str, Any]

_INT_DIGITS = len(str(limits.MAX_JSON_INT))
_QUERY_INT = re.compile(r"-?[0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


# --- building schemas ---------------------------------------------------------------------
def integer(low: int = 0, high: int = limits.MAX_JSON_INT, **extra: Any) -> Schema:
    return {"type": "integer", "minimum": low, "maximum": high, **extra}


def number(low: float, high: float, **extra: Any) -> Schema:
    return {"type": "number", "minimum": low, "maximum": high, **extra}


def string(low: int = 0, high: int = limits.MAX_KEY_BYTES, **extra: Any) -> Schema:
    return {"type": "string", "minLength": low, "maxLength": high, **extra}


def boolean(**extra: Any) -> Schema:
    return {"type": "boolean", **extra}


def array(items: Schema, low: int = 0, high: int = 64, **extra: Any) -> Schema:
    return {"type": "array", "items": items, "minItems": low, "maxItems": high, **extra}


def obj(required: Iterable[str] = (), **properties: Schema) -> Schema:
    """A closed object: ``properties`` and nothing else, ``required`` among them."""
    need = list(required)
    assert set(need) <= set(properties), f"required fields {need} not all declared"
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if need:
        schema["required"] = need
    return schema


# --- parsing ------------------------------------------------------------------------------
def parse_json(raw: bytes) -> Any:
    """The JSON value of a request body (none: ``{}``), or BadRequest naming the problem."""
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            parse_constant=_constant,
            parse_int=_int,
            parse_float=_float,
            object_pairs_hook=_object,
        )
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {limits.MAX_JSON_DEPTH} levels") from None
    _check_value(value)
    return value


def _constant(name: str) -> Any:
    raise BadRequest(f"JSON has no {name}: numbers must be finite")


def _int(text: str) -> int:
    # Length first: converting thousands of digits is slow, and Python refuses past 4300.
    if len(text.lstrip("-")) <= _INT_DIGITS:
        value = int(text)
        if abs(value) <= limits.MAX_JSON_INT:
            return value
    raise BadRequest(f"integer {_cut(text)} is out of range: at most {limits.MAX_JSON_INT} in size")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"number {_cut(text)} is out of range: numbers must be finite")
    return value


def _cut(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} chars)"


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(f"field {_show(key)} given twice")
            seen.add(key)
    return out


def _check_value(value: Any) -> None:
    """Depth and strings of a parsed value, without recursion (it may be deep)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= limits.MAX_JSON_DEPTH:
                raise BadRequest(f"JSON nested deeper than {limits.MAX_JSON_DEPTH} levels")
            for k, v in item.items():
                _check_string(k)
                stack.append((v, depth + 1))
        elif isinstance(item, list):
            if depth >= limits.MAX_JSON_DEPTH:
                raise BadRequest(f"JSON nested deeper than {limits.MAX_JSON_DEPTH} levels")
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            _check_string(item)


def _check_string(text: str) -> None:
    # A lone surrogate ("\ud800") parses, but no UTF-8 encoder (responses, msgpack) takes it.
    if _SURROGATE.search(text):
        raise BadRequest("JSON string holds a lone surrogate (\\ud800-\\udfff): not Unicode text")


def from_query(name: str, schema: Schema, raw: str) -> Any:
    """A query parameter's text as the value its schema wants, checked."""
    kind = schema.get("type")
    value: Any = raw
    if kind == "integer":
        if not _QUERY_INT.fullmatch(raw) or len(raw.lstrip("-")) > _INT_DIGITS:
            raise BadRequest(f"{name} must be {describe(schema)}, not {_show(raw)}")
        value = int(raw)
    elif kind == "boolean":
        if raw not in ("true", "false"):
            raise BadRequest(f"{name} must be true or false, not {_show(raw)}")
        value = raw == "true"
    check(schema, value, name)
    return value


# --- checking -----------------------------------------------------------------------------
def check(schema: Schema, value: Any, where: str = "body") -> None:
    """Raise BadRequest unless ``value`` fits ``schema``; the message names ``where``."""
    if value is None and schema.get("nullable"):
        return
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                check(option, value, where)
                return
            except BadRequest:
                continue
        raise BadRequest(f"{where} must be {describe(schema)}, not {_show(value)}")
    kind = schema.get("type")
    if kind is None:
        return
    if not _is(kind, value):
        raise BadRequest(f"{where} must be {describe(schema)}, not {_show(value)}")
    if kind == "object":
        _check_object(schema, value, where)
    elif kind == "array":
        _check_array(schema, value, where)
    elif not _in_range(schema, value):
        raise BadRequest(f"{where} must be {describe(schema)}, not {_show(value)}")


def _is(kind: str, value: Any) -> bool:
    match kind:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
    raise AssertionError(f"schema type {kind!r} is not in the subset")


def _in_range(schema: Schema, value: Any) -> bool:
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, str):
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            return False
        return "pattern" not in schema or _regex(schema["pattern"]).search(value) is not None
    if isinstance(value, bool):
        return True
    if isinstance(value, int) and abs(value) > limits.MAX_JSON_INT:
        return False
    low, high = schema.get("minimum"), schema.get("maximum")
    above = low is None or (value > low if schema.get("exclusiveMinimum") else value >= low)
    below = high is None or (value < high if schema.get("exclusiveMaximum") else value <= high)
    return above and below


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    # The document's patterns are ECMA regexes, whose "$" ends the text; Python's also
    # matches before a final newline, which would let "name\n" through.
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


def _check_object(schema: Schema, value: dict[str, Any], where: str) -> None:
    props: dict[str, Schema] = schema.get("properties", {})
    extra = schema.get("additionalProperties", False)
    prefix = "" if where == "body" else f"{where}."
    for name in schema.get("required", ()):
        if name not in value:
            raise BadRequest(f"{where} needs {prefix}{name!r}")
    if len(value) > schema.get("maxProperties", len(value)):
        raise BadRequest(f"{where} may have at most {schema['maxProperties']} fields")
    for name, item in value.items():
        if name in props:
            check(props[name], item, prefix + name)
        elif isinstance(extra, dict):
            check(extra, item, prefix + name)
        else:
            known = ", ".join(props) or "none"
            raise BadRequest(f"unknown field {prefix + name!r} (fields: {known})")


def _check_array(schema: Schema, value: list[Any], where: str) -> None:
    low, high = schema.get("minItems", 0), schema.get("maxItems", len(value))
    if not low <= len(value) <= high:
        raise BadRequest(f"{where} must be {describe(schema)}, not {len(value)} items")
    items = schema.get("items", {})
    for i, item in enumerate(value):
        check(items, item, f"{where}[{i}]")


def describe(schema: Schema) -> str:
    """What a value must be, in words.

    A ``description`` replaces the words for a pattern (a regex says little to a user)
    and is added to them otherwise, so the range always shows.
    """
    words = _words(schema)
    note = schema.get("description")
    if note is None:
        return words
    if "pattern" in schema or "anyOf" in schema or "type" not in schema:
        return str(note)
    return f"{words} ({note})"


def _words(schema: Schema) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(describe(option) for option in schema["anyOf"])
    kind = schema.get("type")
    low, high = schema.get("minimum"), schema.get("maximum")
    span = "" if low is None or high is None else f" in {low}..{high}"
    bounds = ((low, "exclusiveMinimum"), (high, "exclusiveMaximum"))
    excluded = [bound for bound, key in bounds if schema.get(key)]
    if excluded:
        span += f" ({' and '.join(map(str, excluded))} excluded)"
    match kind:
        case "integer":
            return f"an integer{span}"
        case "number":
            return f"a finite number{span}"
        case "boolean":
            return "true or false"
        case "string":
            text = f"a string of {schema.get('minLength', 0)}..{schema.get('maxLength')} chars"
            return text + (f" matching {schema['pattern']}" if "pattern" in schema else "")
        case "array":
            return f"a list of {schema.get('minItems', 0)}..{schema.get('maxItems')} items"
        case "object":
            return "a JSON object"
    return "a JSON value"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if value is not None else "null"
    return text if len(text) <= 40 else text[:37] + "..."
