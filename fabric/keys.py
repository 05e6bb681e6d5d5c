"""The cluster secret and the keys derived from it.

``fabric up`` draws one random secret per cluster and keeps it only in the cluster
directory (mode 0600). Every key the cluster needs is derived from it with BLAKE3's
key-derivation mode, one context string per purpose, so that knowing one derived key
(the dedup key, say) says nothing about the secret or about another key:

* ``peer``  — authenticates node-to-node messages (``fabric.peerauth``);
* ``dedup`` — keys the content hash that names an extent for dedup, so that nobody
  without the secret can compute, let alone forge, another block's dedup id;
* ``admin-token`` — the cluster's first admin token (``fabric.tokens``).

Pure: bytes in, bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import blake3

SECRET_BYTES = 32
_CONTEXT = "storage-fabric 2026-12 {purpose}"
"""BLAKE3 wants a globally unique, hard-coded context string per purpose."""


@dataclass(frozen=True)
class ClusterKeys:
    secret: bytes

    def __post_init__(self) -> None:
        assert len(self.secret) == SECRET_BYTES, "a cluster secret is 32 bytes"

    def __repr__(self) -> str:
        return "ClusterKeys(<secret>)"  # never in a log or a traceback

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose``, independent of every other purpose's."""
        return blake3.blake3(
            self.secret, derive_key_context=_CONTEXT.format(purpose=purpose)
        ).digest()

    @property
    def peer_key(self) -> bytes:
        return self.derive("peer")

    @property
    def dedup_key(self) -> bytes:
        return self.derive("dedup")

    @property
    def admin_token_key(self) -> bytes:
        return self.derive("admin-token")
