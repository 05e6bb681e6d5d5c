"""For every test: the user's state directory is a fresh temporary one.

``fabric up`` remembers its cluster in the state directory (``shell.lastdir``); a test,
or a node process or CLI it starts (they inherit the environment), must never read or
change the real user's."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    state = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state
