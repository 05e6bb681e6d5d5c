"""API tokens in the replicated metadata: creating and revoking them, reading them back.

Each change is recorded in the event log (who the token is for and its role; never the
token or its hash), so an operator can see when access changed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fabric import limits
from fabric.metadata import keys
from fabric.metadata.commands import SetToken
from fabric.metadata.healing import record_event
from fabric.metadata.records import EventRecord, TokenRecord
from fabric.metadata.refusal import Refused

if TYPE_CHECKING:
    from fabric.metadata.state import MetadataState


def apply(state: MetadataState, index: int, cmd: SetToken) -> str:
    token = cmd.token
    key = keys.token_key(token.id)
    old: TokenRecord | None = state.value(key)
    if token.revoked:
        if old is not None and old.revoked:
            return token.id
        state.put(index, key, replace(old, revoked=True) if old else token)
        message = f"token {token.id} ({old.name if old else token.name}) revoked"
    else:
        if old is not None:
            raise Refused("conflict", f"token id {token.id} is taken")
        if len(tokens(state)) >= limits.MAX_TOKENS:
            raise Refused("conflict", f"{limits.MAX_TOKENS} tokens exist; revoke some first")
        state.put(index, key, token)
        message = f"token {token.id} created for {token.name!r} with role {token.role}"
    record_event(state, index, EventRecord(0, cmd.at_wall, "access", "", token.id, message))
    return token.id


def tokens(state: MetadataState) -> dict[str, TokenRecord]:
    return {item.value.id: item.value for _, item in state.scan(keys.TOKEN)}


def token(state: MetadataState, token_id: str) -> TokenRecord | None:
    found: TokenRecord | None = state.value(keys.token_key(token_id))
    return found
