"""The one exception command handlers raise: a precondition failed, nothing changed."""

from __future__ import annotations


class Refused(Exception):
    """A precondition failed: the command's result is a refusal with this code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
