"""``fabric node run`` with node-to-node authentication taken out: the baseline of
``scripts/bench_auth.py`` and nothing else. Never run a cluster this way: any process
that can reach it can then act as one of its nodes.

    python -m scripts.unsigned_node node run --config C --id N --dir D
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from fabric import peerauth


class UnsignedAuth(peerauth.PeerAuth):
    """Names the sender and nothing more, and believes whatever it is told."""

    def sign(
        self, method: str, path: str, now_wall: float, nonce: bytes, digest: str, parts: str = ""
    ) -> dict[str, str]:
        return {peerauth.FROM: self.node_id, peerauth.NONCE: ""}

    def check(
        self, method: str, path: str, headers: Mapping[str, str], now_wall: float
    ) -> peerauth.Signed:
        return peerauth.Signed(headers.get(peerauth.FROM, ""), "", "")

    def check_body(self, signed: peerauth.Signed, digest: str) -> None:
        pass

    def check_reply(self, nonce: str, replier: str, digest: str, mac: str) -> None:
        pass

    def sign_reply(self, nonce: str, digest: str) -> str:
        return ""


def main() -> int:
    peerauth.PeerAuth = UnsignedAuth  # type: ignore[misc]
    peerauth.body_digest = lambda *chunks: ""  # no pass over the bytes either
    from shell.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
