"""The node-to-node MAC, fed headers and times: what it accepts and what it refuses."""

from __future__ import annotations

import pytest

from fabric import peerauth
from fabric.keys import ClusterKeys
from fabric.peerauth import AuthError, PeerAuth

KEY = ClusterKeys(b"s" * 32).peer_key
PATH = "/internal/v1/call"


def auth(node: str = "n1", key: bytes = KEY, kept: int = 100, skew: float = 60) -> PeerAuth:
    return PeerAuth(key, node, "c1", lambda s: s in ("n1", "n2"), skew, kept)


def signed(
    at: float, nonce: int = 1, body: bytes = b"m", sender: PeerAuth | None = None
) -> dict[str, str]:
    return (sender or auth()).sign(
        "POST", PATH, at, nonce.to_bytes(16, "big"), peerauth.body_digest(body)
    )


def test_a_signed_request_passes_once_and_its_body_must_match() -> None:
    receiver = auth("n2")
    req = signed(1000.0)
    ok = receiver.check("POST", PATH, req, 1000.5)
    assert ok.sender == "n1"
    receiver.check_body(ok, peerauth.body_digest(b"m"))
    with pytest.raises(AuthError, match="does not match"):
        receiver.check_body(ok, peerauth.body_digest(b"M"))
    with pytest.raises(AuthError, match="replayed"):
        receiver.check("POST", PATH, req, 1001.0)


@pytest.mark.parametrize(
    "change, why",
    [
        ({peerauth.FROM: "n2"}, "bad signature"),  # claims another sender
        ({peerauth.FROM: "n9"}, "unknown sender"),
        ({peerauth.CLUSTER: "c2"}, "another cluster"),
        ({peerauth.TIME: "1000001"}, "bad signature"),  # a fresher time, same MAC
        ({peerauth.DIGEST: "0" * 64}, "bad signature"),
        ({peerauth.NONCE: "zz"}, "bad"),
        ({peerauth.TIME: "-5"}, "bad X-Fabric-Time"),
        ({peerauth.PARTS: "5,5"}, "bad signature"),  # a layout added after signing
    ],
)
def test_every_signed_field_is_bound_by_the_mac(change: dict[str, str], why: str) -> None:
    with pytest.raises(AuthError, match=why):
        auth("n2").check("POST", PATH, {**signed(1000.0), **change}, 1000.0)


def test_the_path_and_method_are_bound() -> None:
    with pytest.raises(AuthError, match="bad signature"):
        auth("n2").check("POST", "/internal/v1/messages", signed(1000.0), 1000.0)


def test_a_missing_header_is_named() -> None:
    headers = signed(1000.0)
    del headers[peerauth.AUTH]
    with pytest.raises(AuthError, match="no X-Fabric-Auth header"):
        auth("n2").check("POST", PATH, headers, 1000.0)


def test_another_key_is_refused() -> None:
    forger = auth(key=ClusterKeys(b"f" * 32).peer_key)
    with pytest.raises(AuthError, match="bad signature"):
        auth("n2").check("POST", PATH, signed(1000.0, sender=forger), 1000.0)


def test_requests_outside_the_skew_window_are_refused() -> None:
    with pytest.raises(AuthError, match="clocks skewed"):
        auth("n2").check("POST", PATH, signed(1000.0), 1061.0)
    with pytest.raises(AuthError, match="clocks skewed"):
        auth("n2").check("POST", PATH, signed(1100.0), 1000.0)


def test_the_replay_cache_stays_bounded_and_never_reopens_a_replay() -> None:
    receiver = auth("n2", kept=10)
    captured = [signed(1000.0 + i / 100, nonce=i) for i in range(50)]
    for i, req in enumerate(captured):
        receiver.check("POST", PATH, req, 1000.5 + i / 100)
    assert len(receiver._seen) <= 10
    for req in captured:  # forgotten or not, none of them passes again
        with pytest.raises(AuthError, match="replay"):
            receiver.check("POST", PATH, req, 1001.0)
    # A fresh request still passes.
    receiver.check("POST", PATH, signed(1001.0, nonce=999), 1001.0)


def test_a_reply_is_bound_to_its_request_and_replier() -> None:
    server, client = auth("n2"), auth("n1")
    mac = server.sign_reply("ab" * 16, peerauth.body_digest(b"reply"))
    client.check_reply("ab" * 16, "n2", peerauth.body_digest(b"reply"), mac)
    for nonce, replier, body in (
        ("cd" * 16, "n2", b"reply"),
        ("ab" * 16, "n1", b"reply"),
        ("ab" * 16, "n2", b"other"),
    ):
        with pytest.raises(AuthError):
            client.check_reply(nonce, replier, peerauth.body_digest(body), mac)


def test_derived_keys_are_independent_and_the_secret_stays_out_of_repr() -> None:
    keys = ClusterKeys(b"s" * 32)
    assert len({keys.peer_key, keys.dedup_key, keys.admin_token_key}) == 3
    assert keys.peer_key != ClusterKeys(b"t" * 32).peer_key
    assert "sss" not in repr(keys) and "sss" not in repr(auth())
