"""The last cluster ``fabric up`` started, remembered so that commands run from any
directory find it.

It lives in the user's state directory (``$XDG_STATE_HOME/fabric/last-dir``, by default
``~/.local/state/fabric/last-dir``): one absolute path. Remembering is a convenience,
so a state directory that cannot be written costs nothing but the convenience.
"""

from __future__ import annotations

import os

FILE_NAME = "last-dir"


def state_dir() -> str:
    """``$XDG_STATE_HOME/fabric``, else ``~/.local/state/fabric``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "fabric")


def remember(root: str) -> None:
    """Record ``root`` as the last cluster started (best effort)."""
    folder = state_dir()
    tmp = os.path.join(folder, f".{FILE_NAME}.{os.getpid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(os.path.abspath(root) + "\n")
        os.replace(tmp, os.path.join(folder, FILE_NAME))  # never a half-written path
    except OSError:
        return


def recall() -> str | None:
    """The directory ``remember`` recorded last, if any."""
    try:
        with open(os.path.join(state_dir(), FILE_NAME)) as f:
            path = f.read().strip()
    except OSError:
        return None
    return path if os.path.isabs(path) else None
