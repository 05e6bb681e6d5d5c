"""Typed errors that cross node and API boundaries, each with a stable code and HTTP status.

A ``FabricError`` raised while serving a request becomes ``{"error": {code, message}}``
with its status on the HTTP API, and an error reply on the node-to-node transport that
the caller turns back into the same class with ``from_code``. Bugs are not
FabricErrors: they crash (and show up as 500 with code ``internal``).
"""

from __future__ import annotations


class FabricError(Exception):
    code = "error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(FabricError):
    code, status = "bad_request", 400


class Unauthorized(FabricError):
    """No credentials, or credentials that prove nothing (malformed, unknown, revoked)."""

    code, status = "unauthorized", 401


class Forbidden(FabricError):
    """Valid credentials whose role may not do this."""

    code, status = "forbidden", 403


class NotFound(FabricError):
    code, status = "not_found", 404


class Conflict(FabricError):
    code, status = "conflict", 409


class TooLarge(FabricError):
    code, status = "too_large", 413


class BodyStalled(FabricError, TimeoutError):
    """No byte of a request body arrived for the idle limit: the client stalled.

    Also a ``TimeoutError``: after the answer, aiohttp reads what is left of a body
    (lingering close) and ends that quietly on a timeout, while any other exception
    would be logged as a bug."""

    code, status = "body_stalled", 408


class TooManyRequests(FabricError):
    """A bounded resource is full for now (PENDING images): retry once some ended."""

    code, status = "too_many_requests", 429


class TooManyConnections(FabricError):
    code, status = "too_many_connections", 503


class Unprocessable(FabricError):
    """Well-formed request whose content we refuse (a malformed image, say)."""

    code, status = "unprocessable", 422


class Unavailable(FabricError):
    """The cluster cannot do it right now: no leader, too few healthy fault domains."""

    code, status = "unavailable", 503


class OutOfService(Unavailable):
    """This node refused before doing anything: it is out of service (the message says
    why). Another node can serve the request; the client moves on to one."""

    code = "out_of_service"


class Timeout(FabricError):
    code, status = "timeout", 504


class InsufficientStorage(FabricError):
    code, status = "insufficient_storage", 507


_BY_CODE = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        Unprocessable,
        Unavailable,
        OutOfService,
        Timeout,
        InsufficientStorage,
        BodyStalled,
        TooManyRequests,
        TooManyConnections,
    )
}


def from_code(code: str, message: str) -> FabricError:
    """Rebuild the error a peer reported, so it surfaces to our caller unchanged."""
    cls = _BY_CODE.get(code, FabricError)
    return cls(message)
