"""The exit codes of ``fabric``: one table, shown by ``fabric --help`` and the README.

Scripts branch on these, so a code keeps its meaning across releases.
``fabric node run`` is the exception: it exits with the node's own codes
(``shell.launcher.EXIT_REASONS``), which ``fabric up`` reads to name a failed node.
"""

from __future__ import annotations

OK = 0
FAILED = 1
"""The cluster refused the request, or the work failed (a transfer broke off, a check of
``fabric run`` failed, ``fabric up`` could not make the cluster healthy)."""
USAGE = 2
"""Bad usage or input: arguments, a config or scenario file, a local file."""
PARTIAL_START = 6
"""``fabric up``: some nodes could not start; the others run, healthy, with a leader."""
NOT_RUNNING = 7
"""No cluster to talk to: none in the directory, or none of its nodes answers."""
INTERRUPTED = 130
"""Ctrl-C."""

TABLE = (
    (OK, "success"),
    (FAILED, "the cluster refused the request, or the work failed"),
    (USAGE, "bad usage or input (arguments, config, scenario, local file)"),
    (PARTIAL_START, "fabric up: some nodes could not start (named); the others run"),
    (NOT_RUNNING, "no running cluster: none in the directory, or no node of it answers"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)


def epilog() -> str:
    """The exit-code table as ``fabric --help`` prints it."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {what}" for code, what in TABLE)
