"""TLS contexts from a cluster's ``[tls]`` config: what a node serves, what clients trust.

TLS here gives confidentiality and server identity (a client knows it reached a node of
the cluster's CA); membership is still proven by the peer MAC (``fabric.peerauth``) and
users by their tokens, so a node does not ask clients for certificates.
"""

from __future__ import annotations

import os
import ssl

from fabric.config import TlsConfig


class TlsError(Exception):
    """A ``[tls]`` file is missing, unreadable or not what it should be."""


def resolve(config_path: str, path: str) -> str:
    """A ``[tls]`` path, relative to the directory of the config that names it."""
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(config_path), path)


def server_context(tls: TlsConfig, config_path: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    cert, key = resolve(config_path, tls.cert), resolve(config_path, tls.key)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"[tls] cert {cert} with key {key}: {exc.strerror or exc}") from None
    return ctx


def client_context(tls: TlsConfig | None, config_path: str) -> ssl.SSLContext | None:
    """Trusting the cluster's CA only (None: the cluster speaks plain HTTP)."""
    if tls is None:
        return None
    ca = resolve(config_path, tls.ca)
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"[tls] ca {ca}: {exc.strerror or exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
