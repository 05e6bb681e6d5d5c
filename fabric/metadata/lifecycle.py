"""The legal state moves of images and tasks, in one table each.

A catalog update names the state it expects to find; it applies only if the record is
in that state and the move is in the table. Staying in a non-final state is a move too
(a PENDING image gets its vdisk, a RUNNING task reports progress); a final state never
changes again, so two racing updates from PENDING resolve one way, whichever commits
first.
"""

from __future__ import annotations

IMAGE_MOVES: frozenset[tuple[str, str]] = frozenset(
    {
        ("PENDING", "PENDING"),
        ("PENDING", "ACTIVE"),
        ("PENDING", "ERROR"),
    }
)
TASK_MOVES: frozenset[tuple[str, str]] = frozenset(
    {
        ("RUNNING", "RUNNING"),
        ("RUNNING", "SUCCEEDED"),
        ("RUNNING", "FAILED"),
    }
)
IMAGE_INITIAL = "PENDING"
TASK_INITIAL = "RUNNING"


def image_move_ok(old: str, new: str) -> bool:
    return (old, new) in IMAGE_MOVES


def task_move_ok(old: str, new: str) -> bool:
    return (old, new) in TASK_MOVES
