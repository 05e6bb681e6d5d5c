"""The cluster secret on disk, and the file modes that keep it and the data private.

``fabric up`` writes ``DIR/cluster.secret`` once (64 hex digits, mode 0600) and every
node of the cluster reads it at start; nodes on other hosts get a copy (docs/DEPLOY.md).
A node refuses to start when the secret is readable by others, or when its directory
can be written by others: either would let another local user become a node.
"""

from __future__ import annotations

import os
import stat

from fabric.keys import SECRET_BYTES, ClusterKeys

SECRET_NAME = "cluster.secret"
FILE_MODE = 0o600
DIR_MODE = 0o700


class SecretError(Exception):
    """The secret file is missing, unreadable, malformed or not private."""


def default_path(config_path: str) -> str:
    """Where a node looks for the secret: beside its cluster config."""
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), SECRET_NAME)


def create(path: str) -> bool:
    """Write a new random secret at ``path`` unless one is there; True if written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(SECRET_BYTES).hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def load(path: str) -> ClusterKeys:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SecretError(
            f"no cluster secret at {path}: `fabric up` creates one; a node on another host "
            "needs a copy of the cluster's (see docs/DEPLOY.md)"
        ) from None
    except OSError as exc:
        raise SecretError(f"cannot read the cluster secret {path}: {exc.strerror}") from None
    with os.fdopen(fd) as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(
                f"cluster secret {path} is open to other users (mode {stat.S_IMODE(mode):04o}); "
                f"run `chmod 600 {path}`"
            )
        text = f.read(4 * SECRET_BYTES).strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise SecretError(f"cluster secret {path} is not {2 * SECRET_BYTES} hex digits")
    return ClusterKeys(secret)


def make_private_dir(path: str) -> None:
    """Create ``path`` and its missing parents for our use only (``os.makedirs`` gives
    its mode to the last one only); an existing directory keeps its mode."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    make_private_dir(os.path.dirname(path))
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass  # made meanwhile by another process: it is that process's to keep


def check_private_dir(path: str) -> None:
    """Refuse a directory that other users may write to (they could swap our files)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise SecretError(f"cannot use {path}: {exc.strerror}") from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SecretError(
            f"{path} can be written by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod go-w {path}`"
        )
