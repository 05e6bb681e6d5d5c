"""Identifiers that name nodes, files and extent groups: one parser per kind.

An id that came from outside this process (a peer's message, a log entry, a request)
is parsed here before it names anything: a parser returns the typed value or raises
``BadId``, a bad-input error (400 on the API, ``bad_request`` between nodes). None of
them asserts, so ``python -O`` keeps every check.

The grammars are closed character classes, never deny-lists: an id that passes cannot
hold a path separator, a NUL, a newline, or be ``.`` or ``..``, whatever else it holds.
"""

from __future__ import annotations

import re
from typing import NewType

from fabric import limits
from fabric.errors import BadRequest

NodeId = NewType("NodeId", str)
EgroupId = NewType("EgroupId", str)
FileName = NewType("FileName", str)

# ``\Z``, not ``$``: ``$`` also matches before a final newline, so "n1\n" would pass.
NODE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{limits.MAX_NODE_ID_CHARS - 1}}}\Z")
"""What a node id may be (the config, nodes added at runtime, every message)."""
EGID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{limits.MAX_EGID_CHARS - 1}}}\Z")
"""What an extent-group id may be. The ids made are ``eg-<node>-<12 hex>`` (a data
group), ``st-<12 hex>-p<j>`` (parity) and ``st-<12 hex>-d<j>`` (a packed member); the
grammar is wider so that tests may name groups freely, and has no ``.``, so a group's
file ``<egid>.eg`` never collides with another file of the disk."""
RECORD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
"""What the id of a vdisk (``vd-<16 hex>``), image (``img-<16 hex>``) or strip
(``st-<12 hex>``) may be: they name metadata keys, and show in URLs and logs."""
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
"""What a file on a disk may be called: one path component, never hidden, never a
name the file system treats specially."""


class BadId(BadRequest):
    """An id that does not follow its grammar (a peer's or a user's bad input)."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def node_id(value: object) -> NodeId:
    if not isinstance(value, str) or not NODE_ID.match(value):
        raise BadId(f"{_show(value)} is not a node id")
    return NodeId(value)


def egid(value: object) -> EgroupId:
    if not isinstance(value, str) or not EGID.match(value):
        raise BadId(f"{_show(value)} is not an extent-group id")
    return EgroupId(value)


def record_id(value: object) -> str:
    if not isinstance(value, str) or not RECORD_ID.match(value):
        raise BadId(f"{_show(value)} is not a vdisk, image or strip id")
    return value


def file_name(value: object) -> FileName:
    if not isinstance(value, str) or not FILE_NAME.match(value):
        raise BadId(f"{_show(value)} is not a disk file name")
    return FileName(value)


def disk_name(value: object) -> str:
    """A disk is named by its configured path: any text but empty, overlong or with NUL."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= limits.MAX_DISK_NAME_CHARS
        or "\x00" in value
    ):
        raise BadId(f"{_show(value)} is not a disk name")
    return value
