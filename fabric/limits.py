"""Every bound the fabric enforces, in one place. Units are the last word of each name."""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
MB = 1000 * 1000
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
MAX_WIRE_INDEX = 2**63 - 1
"""Largest Raft term, log index, read sequence or count a peer may send: what a signed
64-bit counter holds, far beyond anything a cluster reaches, and small enough that
adding one to it never leaves the range other Raft implementations use."""
MAX_EGROUP_FILE_BYTES = 4 * GiB
"""Largest offset or size a peer may name in an extent-group file: groups are sealed at
``EGROUP_MAX_BYTES`` (plus one write batch), parity members of a wide strip are about as
long; this leaves two orders of magnitude of headroom and still stops a forged offset
from making a sparse file of terabytes."""
MAX_WIRE_LIST_ITEMS = 1 << 20
"""Longest list in a message (a node's extent groups, a group's live extents): a million
ids already take tens of MiB, near ``MAX_MESSAGE_BYTES``."""
MAX_WIRE_TEXT_CHARS = 64 * KiB
"""Longest free-text field of a message (an error message, a report's reason)."""

# --- authentication ----------------------------------------------------------------------
PEER_CLOCK_SKEW_S = 60.0
"""How far a signed node-to-node request's timestamp may be from the receiver's wall clock.
Hosts kept by NTP agree within milliseconds; a minute tolerates a host without it while
bounding how long a captured request stays worth replaying (and how many nonces to keep)."""
PEER_NONCES_KEPT = 200_000
"""Nonces remembered for replay protection (about 100 bytes each: 20 MB at most). A busy
node signs a few thousand requests a second, so this covers the skew window at that rate;
past it the oldest are forgotten and requests signed before them are refused."""
TOKEN_STALENESS_S = 1.0
"""How far behind the leader a node's copy of the tokens may be when it checks one: a
revocation holds everywhere within this time (one ReadIndex per node per interval)."""
TOKEN_CATCH_UP_TIMEOUT_S = 1.0
"""How long a token check waits for the leader to answer its catch-up before it checks
on the node's own state (a node cut off from the leader keeps answering)."""
MAX_TOKENS = 10_000
"""API tokens one cluster keeps (revoked ones count: they stay listed)."""
PEER_DIGEST_INLINE_BYTES = 64 * KiB
"""Bodies smaller than this are digested on the event loop (a thread hop costs more than
the hash); larger ones in a worker thread."""
PEER_REFUSAL_LOG_EVERY_S = 10.0
"""At most one log line per interval for refused peer requests (a flood must not fill disks)."""

# --- metadata / consensus ----------------------------------------------------------------
MAX_COMMAND_BYTES = 4 * MiB
"""Largest single metadata command."""
MAX_APPEND_ENTRIES = 4096
"""Most log entries one AppendRequest from a peer may carry (``RaftConfig`` sends at most
256; more would only be a peer making us hold and check a huge batch)."""
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1 * MiB
"""Largest user kv value, measured as its compact JSON text (``keys.kv_value_bytes``)."""
KV_TOTAL_BYTES = 16 * MiB
"""All user kv entries together (keys, values and ``KV_ENTRY_OVERHEAD_BYTES`` each): every
node holds them in memory (a few times their JSON size as Python objects) and in every
snapshot, so the user's free-form space is a small, bounded share of a node's RSS. The
state machine enforces it on apply, so every node refuses the same write."""
KV_ENTRY_OVERHEAD_BYTES = 64
"""Counted for each kv entry beside its key and value: a million empty values are not free."""
SNAPSHOT_EVERY_ENTRIES = 10_000
"""Applied entries after which a node snapshots its state machine and compacts its log."""
PROPOSAL_TIMEOUT_S = 10.0
"""How long a proposal or linearizable read may wait for commit before failing."""
MAX_PENDING_PROPOSALS = 20_000
"""Proposals waiting for commit on one node; beyond it new ones are refused (back-pressure)."""
WAL_RETRY_BACKOFF_MIN_S = 0.05
"""First wait before a Raft WAL write that failed (a full disk, say) is tried again."""
WAL_RETRY_BACKOFF_MAX_S = 2.0
"""Longest wait between WAL retries: space that returns is noticed within this long."""
COMPACTION_RETRY_S = 30.0
"""After a snapshot could not be written, the log grows this long before the next try."""

MAX_VDISK_BYTES = 64 * 1024 * GiB
"""Largest vdisk (64 TiB): also bounds extent indexes in block maps."""

# --- cluster ------------------------------------------------------------------------------
MAX_NODES = 10_000
"""Members of one cluster (config, membership, node lists in peer messages): simulated
clusters reach thousands of nodes."""
MAX_LOCAL_NODES = 15
"""Node processes ``fabric up --nodes`` and ``fabric run`` start on one machine (more is
for ``fabric sim``, or a config of several hosts)."""
MAX_FAULTS = 256
"""Faults active on one node at once (``fabric fault inject`` refuses more)."""
FAULT_CONTROL_TIMEOUT_S = 3.0
"""A fault control call to one node (inject, clear, list): a paused or dead node is
reported as unreachable after this, and the others are still served."""
FAULT_ACT_DELAY_S = 0.5
"""A node told to kill, restart or pause itself does so this long after answering: long
enough for the answer to leave a busy machine (at 0.1 s a loaded CI host once lost the
answers of both nodes of a killed rack, and the runner took the kill as refused)."""
MIN_NODES = 1
MAX_VOTERS = 7
MAX_NODE_ID_CHARS = 32
"""Longest node id (the config's id pattern; Raft refuses longer ids in a configuration)."""
MAX_EGID_CHARS = 64
"""Longest extent-group id: the longest made is ``eg-<node id>-<12 hex digits>`` (48)."""
MAX_DISK_NAME_CHARS = 4096
"""Longest disk name (a disk is named by its configured path: Linux's PATH_MAX)."""
STARTUP_TIMEOUT_S = 60.0
"""``fabric up`` gives up when the cluster is not healthy after this long."""
SHUTDOWN_GRACE_S = 10.0
"""``fabric down`` sends SIGKILL to a node still running after this long."""

# --- supervision of a node's background tasks ---------------------------------------------
TASK_RESTART_BACKOFF_MIN_S = 0.1
"""First wait before a task that stopped on an operating fault is started again."""
TASK_RESTART_BACKOFF_MAX_S = 5.0
"""The wait doubles with each restart in a row up to this, so a fault that persists
costs a log line every few seconds, not a busy loop."""
TASK_STABLE_AFTER_S = 60.0
"""A task that ran this long before failing is restarted after the minimum wait again."""

# --- a node's memory allocator (glibc) -----------------------------------------------------
NODE_HEAP_BUFFER_BYTES = 32 * MiB
"""Buffers up to this size come from the heap, not from a fresh mapping each time."""
NODE_HEAP_KEEP_BYTES = 64 * MiB
"""Free heap an arena keeps for the next buffers before handing memory back."""
NODE_HEAP_GROW_BYTES = 16 * MiB
"""The heap grows by at least this much at a time."""
NODE_MALLOC_ARENAS = 2
"""Arenas (each may keep ``NODE_HEAP_KEEP_BYTES`` free): the event loop's and the
worker threads'."""

# --- HTTP API -----------------------------------------------------------------------------
MAX_JSON_BODY_BYTES = 1 * MiB
"""Largest JSON request body, counted as it arrives: Content-Length is not trusted, and
a chunked body is cut off at the same size."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects in a JSON request: no request needs more than
a few levels, and the parser, msgpack and every walk over a value recurse."""
MAX_JSON_INT = 2**63 - 1
"""Largest integer (in magnitude) a JSON request may carry: what msgpack and the
metadata records store as int64; longer digit strings are refused before conversion."""
HTTP_HEADER_TIMEOUT_S = 20.0
"""A connection must deliver a complete request head this soon after it opened (or after
its previous response): a client trickling header bytes (slowloris) is cut off. It is also
how long an idle keep-alive connection stays open, so it is longer than the 15 s aiohttp
clients (the CLI, node-to-node links) keep an idle connection: they always drop it first
and never send on a connection the node is closing. Config: ``[limits] header_timeout_s``."""
HTTP_BODY_IDLE_S = 30.0
"""A request body from which no byte arrived this long, while the node was ready to read
it, ends the request with 408 ``body_stalled`` (an upload fails, its conversion slot is
freed). Long enough for a slow link's retransmissions; ``[limits] body_idle_s``."""
HTTP_BODY_CHECKS_PER_IDLE = 4
"""A stalled body is noticed within ``body_idle_s`` plus this fraction of it."""
HTTP_CONNECTIONS_PER_CLIENT = 64
"""Open client connections one address may hold on a node (a browser uses 6, parallel
uploads a few dozen); more are answered 503 ``too_many_connections`` and closed. Node
links are counted apart and never refused. ``[limits] connections_per_client``."""

# --- URL import ---------------------------------------------------------------------------
IMPORT_CONNECT_TIMEOUT_S = 10.0
IMPORT_STALL_S = 30.0
"""An import source that sends nothing for this long is treated as dropped (and resumed)."""
IMPORT_MAX_REDIRECTS = 5
IMPORT_MAX_RESUMES = 5
IMPORT_RESUME_BACKOFF_S = 0.5
"""Wait before resume number n: n times this."""
IMPORT_ALLOW_ENTRIES = 256
"""``[import] allow`` entries: every fetch checks each address against all of them, and a
list longer than this is better written as a few wider ranges."""

# --- client -------------------------------------------------------------------------------
CLIENT_CONNECT_TIMEOUT_S = 2.0
"""A node that does not accept a connection in this long is skipped for the next one."""
CLIENT_PROGRESS_TIMEOUT_S = 3.0
"""No byte moved either way for this long: the client probes the node's health."""
CLIENT_PROBE_TIMEOUT_S = 2.0
"""A node that does not answer that probe in this long is hung: the client moves on.

A node that answers is working on a long request (a conversion, a commit): the
request goes on waiting, bounded only by its own total timeout."""

# --- data path ----------------------------------------------------------------------------
WRITE_BATCH_BYTES = 4 * MiB
"""Extents committed together: one fsync per replica and one Raft entry per batch."""
WRITE_BATCHES_IN_FLIGHT = 4
CLAIM_AHEAD_GROUPS = 4
"""New extent groups a writer places and claims in one commit (the rest wait as spares)."""
APPEND_ORDER_WAIT_S = 5.0
"""How long a replica holds a batch that arrived before the bytes reserved ahead of it
(batches of one group are in flight at once); then it refuses, and the writer moves on
to a new group."""
WRITE_RETRIES = 40
WRITE_RETRY_BACKOFF_S = 0.002
"""First retry waits up to this long; each further one up to twice as long (capped)."""
WRITE_LOCK_STRIPES = 1024
"""Locks serialising read-modify-writes of one extent on one node (hashed stripes)."""
EGROUP_MAX_BYTES = 8 * MiB
"""An extent group is sealed once this full: the unit of EC and of compaction."""
READ_AHEAD_EXTENTS = 4
REPLICA_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0
"""A replica that does not answer a read this fast is skipped for the next one."""
READ_PASS_OVER_S = 1.0
"""A node that left a read unanswered is tried after the others (and an erasure-coded
group's one copy on it is rebuilt from its strip instead) for this long: until the
leader marks a dead node DOWN, reads do not each wait on it first."""

# --- the leader's scanner ------------------------------------------------------------------
SCAN_EVERY_S = 1.0
EGROUP_IDLE_S = 5.0
COMPACT_MIN_DEAD_BYTES = 1 * MiB
COLLECT_GROUPS_PER_PASS = 64
COMPACT_GROUPS_PER_PASS = 4
EXPIRE_CLAIMS_PER_PASS = 64
CLAIM_TIMEOUT_S = 60.0
"""A claim older than this belongs to a writer that died or gave up (a write batch
takes seconds; its replica calls time out after ``REPLICA_TIMEOUT_S``)."""
FILE_SWEEP_EVERY_S = 30.0
UNKNOWN_FILE_GRACE_S = 60.0
"""A file no record or claim knows is deleted only after it stayed unknown this long."""
PRUNE_TOMBSTONES_PER_PASS = 1024

# --- erasure coding ------------------------------------------------------------------------
EC_CHUNK_BYTES = 1 << 20
"""Erasure-coding granule: one pyeclib call encodes or rebuilds one chunk of each member."""
EC_WINDOW_BYTES = 4 * MiB
"""Bytes of each member moved per call while converting, rebuilding or reading degraded
(a whole number of chunks; less for wide strips, see EC_CONVERSION_BYTES). A conversion
holds about (2k + 3m) windows at once: k being encoded while the next k are read, and
the parity of up to EC_APPENDS_IN_FLIGHT + 1 windows."""
EC_STRIPS_PER_PASS = 16
"""At most this many strips are converted per scanner pass (per container)."""
EC_CONVERSION_BYTES = 64 * MiB
"""Memory one conversion may hold in windows: a wide strip gets narrower windows (down to
one chunk), so EC_CONVERSIONS_IN_FLIGHT of them stay well inside a node's RSS bound."""
EC_APPENDS_IN_FLIGHT = 2
"""Windows of parity a conversion has on their way to the disks at once."""
EC_CONVERSIONS_IN_FLIGHT = 2
"""Strips converted at once: one's reads overlap another's encoding and commits (each
holds its own windows, see EC_WINDOW_BYTES)."""
EC_TAIL_QUIET_S = 10.0
"""A container's last cold groups, too few for a strip of k, are packed into a strip of
their own once every group of it still replicated stayed unchanged this long beyond
``ec_delay_s`` (it stopped growing: no partner group is on its way)."""
EC_DEGRADED_CACHE_WINDOWS = 8
"""Windows of rebuilt data a node keeps for degraded reads (consecutive extents share a
window; one window ahead is rebuilt while the current one is read)."""

# --- image ingest --------------------------------------------------------------------------
INGEST_BATCH_EXTENTS = 8
"""Consecutive extents an ingest hands to the vdisk writer at once (one write batch)."""
INGEST_BRIDGE_EXTENTS = 2
"""A gap of at most this many all-zero extents does not split a write batch."""
INGEST_REORDER_EXTENTS = 8
"""How far behind the newest extent a run may still land and be merged in memory."""
INGEST_PULL_BYTES = 4 << 20
"""Raw bytes a reader may produce in one step off the event loop (bounds memory)."""
INGEST_READ_AHEAD_BYTES = 2 << 20
"""Source bytes received ahead of the decoder while it works. More does not go faster
(the vdisk writer sets the pace) and costs RSS: four ingests with 8 MiB each peaked
~80 MiB higher."""
INGEST_PINNED_BYTES = 16 << 20
"""Source and inflated buffers that views of pending extents may keep alive."""
INGEST_WRITES_IN_FLIGHT = 4
"""Batches one ingest keeps being stored while it decodes the next source bytes (each
is cut into ``WRITE_BATCH_BYTES`` commits, ``WRITE_BATCHES_IN_FLIGHT`` at once)."""
INGEST_NODE_WRITES_IN_FLIGHT = 8
"""Batches all the ingests of a node keep in flight together: one upload gets the full
window (2 instead of 4 was ~10% slower), four at once share it (four ingests with four
batches of 8 extents each peaked at ~340 MiB of node RSS)."""
IMPORT_PROGRESS_EVERY_S = 1.0
MAX_INGESTS = 4
"""Uploads and imports converting on one node at once (each holds a few dozen MiB)."""
MAX_PENDING_IMAGES = 256
"""PENDING images in the cluster at once (created, bytes not yet all in): the converting
ones are at most ``MAX_INGESTS`` per node, so this leaves room for many created ahead
of their upload while a script cannot fill the catalog with empty images."""
MAX_IMAGES = 10_000
"""Images of any state in the catalog (an ERROR image stays until deleted)."""
PENDING_IMAGE_TTL_S = 600.0
"""An image created for an upload whose bytes never started arriving this long is turned
ERROR by the leader's scanner (the CLI uploads right after creating; a browser too).
Measured on the leader from when it first saw the record unchanged, so clock skew
between nodes cannot expire a fresh image. ``[limits] pending_image_ttl_s``."""
EXPIRE_IMAGES_PER_PASS = 64

# --- healing -------------------------------------------------------------------------------
EVENTS_KEPT = 10_000
"""The event log keeps this many of the latest events (older ones are deleted)."""
MAX_EVENTS_PER_COMMAND = 256
MAX_LOST_COPIES_PER_COMMAND = 4096
MIN_DISK_CAPACITY_BYTES = 16 * MiB
"""A configured disk capacity below this could not hold two extent groups."""
DISK_PROBE_EVERY_S = 2.0
"""Each disk is written, synced and sized this often (a failure also shows on any I/O)."""
DISK_HIGH_WATER = 0.90
"""A disk this full takes no new extent groups (FULL)..."""
DISK_LOW_WATER = 0.85
"""...until it is below this again (hysteresis: no flapping at the mark)."""
EVENTS_PAGE = 1000
"""At most this many events per ``GET /api/v1/events``."""
MAX_SETTING_DELAY_S = 365 * 86400.0
"""Longest delay an API request may ask for (a container's ec_delay_s: a year): a timer
further out is a typo, and far enough out it no longer fits the event loop's clock."""
REBUILD_EVERY_S = 0.5
"""The leader's rebuild planner looks for lost copies this often (and on every finish)."""
REBUILD_WINDOW_BYTES = 4 * MiB
"""A copy moves this many bytes per read from its source."""
REBUILD_WINDOWS_IN_FLIGHT = 2
MEMBERSHIP_WATCH_EVERY_S = 0.5
DRAIN_STALL_S = 120.0
"""``fabric node drain --wait`` / ``remove`` give up when what the node holds has not
shrunk for this long."""
MEMBERSHIP_CHANGE_TIMEOUT_S = 60.0
"""How long a membership change waits for its turn (an earlier change to commit, a new
node to catch up before it may vote)."""
"""How soon a node's transport learns of a node that joined or left."""
REBALANCE_TOLERANCE = 0.10
"""Rebalancing stops when every node holds within this share of the mean bytes (or
within one extent group of it, on a small cluster)."""
REBALANCE_START_BELOW = 0.5
"""A rebalance starts when some node holds less than this share of the mean bytes..."""
REBALANCE_MIN_MEAN_GROUPS = 4
"""...and the mean is at least this many full extent groups (a tiny cluster's spread
is noise, not imbalance)."""
REBALANCE_EVERY_S = 2.0
"""How often the leader looks for uneven usage (visits every group) when idle."""
REBUILD_RATE_WINDOW_S = 10.0
"""The rebuild rate shown is the bytes rebuilt over this many last seconds."""
REBUILD_COPY_MIN_BYTES_PER_S = 2 * MB
"""A copy is given up when slower than this (plus REPLICA_TIMEOUT_S): its target died."""

# --- health --------------------------------------------------------------------------------
HEALTH_MONITOR_EVERY_S = 0.2

# --- HTTP streaming ------------------------------------------------------------------------
STREAM_CHUNK_BYTES = 1 << 20

# --- cluster view --------------------------------------------------------------------------
CLUSTER_VIEW_TIMEOUT_S = 3.0

# --- web console ---------------------------------------------------------------------------
CONSOLE_REFRESH_S = 5.0
"""How often the console's live summary is sent (each send is one cluster view)."""
CONSOLE_STREAM_MAX_S = 600.0
"""A live summary stream ends after this and the browser opens a new one: no response
lives forever. (Its token is checked again before every send.)"""
CONSOLE_STREAMS_MAX = 32
"""Live summary streams one node holds open at once; more are refused with 503 and
``Retry-After`` (the page reconnects with backoff, and works without the stream, it just
does not update). Each is a connection and a cluster view every ``CONSOLE_REFRESH_S``:
a few operators' tabs fit, a script opening tabs in a loop does not wear the node out."""
CONSOLE_EVENTS_SHOWN = 200
"""The newest events the console's event log page shows."""
TRENDS_SAMPLE_S = 10.0
"""How often the leader samples capacity and disk throughput for the console's charts."""
TRENDS_KEPT = 360
"""Samples kept: an hour's charts at one sample every ``TRENDS_SAMPLE_S``."""

# --- history checkers ----------------------------------------------------------------------
CHECKER_ANOMALIES_LISTED = 20
"""Anomalies a verdict lists in its stats (all are counted): a broken run can have
thousands, and a report needs the first few."""
LINEARIZABILITY_MAX_STATES = 2_000_000
"""Search states (a set of linearized operations and the register's value) the kv
linearizability check may explore over all keys before it answers "unknown": about
10 s of CPU. A history with many concurrent unknown operations can need exponentially
many; a verdict that never comes is worse than an honest "unknown"."""
