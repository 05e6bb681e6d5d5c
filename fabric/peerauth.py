"""Node-to-node authentication: a MAC on every request and every reply.

Theory of operation. Nodes of one cluster share a secret (``fabric.keys``); the key
``peer`` derived from it signs each request to ``/internal/v1``. The signature covers
what an attacker would want to change or reuse: the method, the path, the sender, the
cluster id, a timestamp, a random nonce, the parts layout and a digest of the body.
A receiver checks, in this order and before it reads the body:

1. every header is present and well formed, the sender is a node it knows;
2. the MAC (BLAKE3 in keyed mode, compared in constant time);
3. the timestamp is within ``skew_s`` of its own wall clock;
4. the nonce is new (replay protection: nonces seen within the window are kept).

Only then is the body read, and its digest must equal the signed one before a byte of
it is decoded. A reply carries a MAC over the request's nonce and the reply's digest, so
a process that took over a dead node's port cannot answer in its name.

Why a MAC and not mutual TLS: it works the same with TLS on or off (TLS is optional,
for the API and links between hosts), it costs one BLAKE3 pass over each body, and the
node refuses an unauthenticated request from its headers alone. TLS, when on, adds
confidentiality; the MAC stays the proof of membership.

The replay window is bounded in memory: at most ``nonces_kept`` nonces are kept; when
one is forgotten early, every request signed at or before its time is refused from then
on (the "floor"), so forgetting never reopens a replay.

Pure: the caller passes the wall time in; nothing here reads a clock.
"""

from __future__ import annotations

import collections
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import blake3

FROM = "X-Fabric-From"
CLUSTER = "X-Fabric-Cluster"
TIME = "X-Fabric-Time"
NONCE = "X-Fabric-Nonce"
DIGEST = "X-Fabric-Digest"
AUTH = "X-Fabric-Auth"
PARTS = "X-Fabric-Parts"

NONCE_BYTES = 16
DIGEST_BYTES = 32
_MAX_HEADER_CHARS = 4096
"""No signed header is longer (the parts layout is the longest: a few hundred sizes)."""


class AuthError(Exception):
    """A peer's request or reply failed authentication; the message says which check."""


def body_digest(*chunks: bytes | memoryview) -> str:
    h = blake3.blake3()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


class Digester:
    """A body digest computed as its parts arrive."""

    def __init__(self) -> None:
        self._h = blake3.blake3()

    def update(self, chunk: bytes | memoryview) -> None:
        self._h.update(chunk)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


@dataclass(frozen=True)
class Signed:
    """A request whose headers passed every check; its body must still match ``digest``."""

    sender: str
    nonce: str
    digest: str


class PeerAuth:
    def __init__(
        self,
        key: bytes,
        node_id: str,
        cluster_id: str,
        is_peer: Callable[[str], bool],
        skew_s: float,
        nonces_kept: int,
    ) -> None:
        assert len(key) == 32, "a peer key is 32 bytes"
        self._key = key
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.is_peer = is_peer
        self.skew_s = skew_s
        self.nonces_kept = nonces_kept
        self._seen: dict[str, float] = {}
        self._order: collections.deque[tuple[str, float]] = collections.deque()
        self._floor = float("-inf")
        """Requests signed at or before this time are refused: a nonce of theirs may
        have been forgotten to keep the cache bounded."""

    def __repr__(self) -> str:
        return f"PeerAuth({self.node_id!r})"  # the key stays out of logs

    def _mac(self, *fields: str) -> str:
        return blake3.blake3("\n".join(fields).encode(), key=self._key).hexdigest()

    # --- the sending side ------------------------------------------------------------------
    def sign(
        self, method: str, path: str, now_wall: float, nonce: bytes, digest: str, parts: str = ""
    ) -> dict[str, str]:
        """The headers that authenticate one request from this node."""
        assert len(nonce) == NONCE_BYTES, "a nonce is 16 random bytes"
        stamp = str(int(now_wall * 1000))
        mac = self._mac(
            "fabric-request-v1",
            method,
            path,
            self.node_id,
            self.cluster_id,
            stamp,
            nonce.hex(),
            parts,
            digest,
        )
        return {
            FROM: self.node_id,
            CLUSTER: self.cluster_id,
            TIME: stamp,
            NONCE: nonce.hex(),
            DIGEST: digest,
            AUTH: mac,
        }

    def check_reply(self, nonce: str, replier: str, digest: str, mac: str) -> None:
        want = self._mac("fabric-reply-v1", nonce, replier, digest)
        if not hmac.compare_digest(want, mac):
            raise AuthError(f"reply from {replier} does not carry the cluster's signature")

    # --- the receiving side ----------------------------------------------------------------
    def check(self, method: str, path: str, headers: Mapping[str, str], now_wall: float) -> Signed:
        """Check a request's headers; raises ``AuthError`` naming the first that fails."""
        values = {}
        for name in (FROM, CLUSTER, TIME, NONCE, DIGEST, AUTH):
            value = headers.get(name)
            if value is None:
                raise AuthError(f"no {name} header: not a signed node-to-node request")
            if len(value) > _MAX_HEADER_CHARS:
                raise AuthError(f"{name} header too long")
            values[name] = value
        parts = headers.get(PARTS, "")
        sender, stamp, nonce = values[FROM], values[TIME], values[NONCE]
        if values[CLUSTER] != self.cluster_id:
            raise AuthError("request for another cluster")
        if not self.is_peer(sender):
            raise AuthError(f"unknown sender {sender[:64]!r}")
        if not (stamp.isdigit() and len(stamp) <= 16):
            raise AuthError(f"bad {TIME} header")
        if len(nonce) != 2 * NONCE_BYTES or len(values[DIGEST]) != 2 * DIGEST_BYTES:
            raise AuthError(f"bad {NONCE} or {DIGEST} header")
        want = self._mac(
            "fabric-request-v1",
            method,
            path,
            sender,
            self.cluster_id,
            stamp,
            nonce,
            parts,
            values[DIGEST],
        )
        if not hmac.compare_digest(want, values[AUTH]):
            raise AuthError(f"bad signature (sender {sender}): not signed with the cluster secret")
        signed_at = int(stamp) / 1000
        if abs(signed_at - now_wall) > self.skew_s:
            raise AuthError(
                f"signed {signed_at - now_wall:+.1f} s from this node's clock "
                f"(more than {self.skew_s:g} s): clocks skewed, or a replay"
            )
        self._remember(nonce, signed_at, now_wall)
        return Signed(sender, nonce, values[DIGEST])

    def _remember(self, nonce: str, signed_at: float, now_wall: float) -> None:
        while self._order and self._order[0][1] < now_wall - self.skew_s:
            self._seen.pop(self._order.popleft()[0], None)
        if signed_at <= self._floor:
            raise AuthError("request too old to tell from a replay (replay cache full)")
        if nonce in self._seen:
            raise AuthError("replayed request (nonce already seen)")
        self._seen[nonce] = signed_at
        self._order.append((nonce, signed_at))
        while len(self._order) > self.nonces_kept:
            old, at = self._order.popleft()
            self._seen.pop(old, None)
            self._floor = max(self._floor, at)

    def check_body(self, signed: Signed, digest: str) -> None:
        if not hmac.compare_digest(signed.digest, digest):
            raise AuthError(f"body from {signed.sender} does not match its signed digest")

    def sign_reply(self, nonce: str, digest: str) -> str:
        return self._mac("fabric-reply-v1", nonce, self.node_id, digest)
