"""Every bound the fabric enforces, in one place. Units are the last word of each name."""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --- wire -------------------------------------------------------------------------------
WIRE_VERSION = 1
"""Bumped on any incompatible change of the message encoding."""
MAX_MESSAGE_BYTES = 80 * MiB
"""Largest encoded message a node accepts (an extent group write batch fits)."""
MAX_RPC_BATCH_MESSAGES = 512
"""Raft messages packed into one transport request."""
PEER_OUTBOX_MESSAGES = 4096
"""Queued one-way messages per peer; beyond it the oldest are dropped (Raft retries)."""

# --- metadata / consensus ----------------------------------------------------------------
MAX_COMMAND_BYTES = 4 * MiB
"""Largest single metadata command."""
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1 * MiB
SNAPSHOT_EVERY_ENTRIES = 10_000
"""Applied entries after which a node snapshots its state machine and compacts its log."""
PROPOSAL_TIMEOUT_S = 10.0
"""How long a proposal or linearizable read may wait for commit before failing."""
MAX_PENDING_PROPOSALS = 20_000
"""Proposals waiting for commit on one node; beyond it new ones are refused (back-pressure)."""

# --- cluster ------------------------------------------------------------------------------
MAX_NODES = 15
MIN_NODES = 1
MAX_VOTERS = 7
STARTUP_TIMEOUT_S = 60.0
"""``fabric up`` gives up when the cluster is not healthy after this long."""
SHUTDOWN_GRACE_S = 10.0
"""``fabric down`` sends SIGKILL to a node still running after this long."""

# --- HTTP API -----------------------------------------------------------------------------
MAX_JSON_BODY_BYTES = 1 * MiB

# --- client -------------------------------------------------------------------------------
CLIENT_CONNECT_TIMEOUT_S = 2.0
"""A node that does not accept a connection in this long is skipped for the next one."""
CLIENT_PROGRESS_TIMEOUT_S = 3.0
"""No byte moved either way for this long: the client probes the node's health."""
CLIENT_PROBE_TIMEOUT_S = 2.0
"""A node that does not answer that probe in this long is hung: the client moves on.

A node that answers is working on a long request (a conversion, a commit): the
request goes on waiting, bounded only by its own total timeout."""
