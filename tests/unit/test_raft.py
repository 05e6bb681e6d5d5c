"""Unit tests of ``fabric.consensus.raft.Raft``: feed ticks and messages, assert outputs.

Small scenarios go through ``Net``, an instant in-memory network that performs every
``Ready`` in order (persist, send, apply) and can cut nodes off; the rest feed hand-made
messages straight into one node.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from fabric.consensus.raft import Raft
from fabric.consensus.types import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    Membership,
    MembershipChangeRefused,
    Message,
    NotLeader,
    RaftConfig,
    ReadState,
    Ready,
    Restored,
    Role,
    Snapshot,
    SnapshotRequest,
    VoteRequest,
    VoteResponse,
)

M = TypeVar("M")
VOTERS = ("a", "b", "c")
E = 10  # election_ticks in these tests


def config(node_id: str, voters: tuple[str, ...] = VOTERS, **kw: Any) -> RaftConfig:
    return replace(RaftConfig(id=node_id, voters=voters, election_ticks=E), **kw)


FRESH = Restored()


def new(node_id: str = "a", restored: Restored = FRESH, **kw: Any) -> Raft:
    return Raft(config(node_id, **kw), random.Random(node_id), restored)


def cmd(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(index, term, EntryKind.COMMAND, data or b"x%d" % index)


def drain(r: Raft) -> Ready:
    """Every Ready the node has, merged in order."""
    out = Ready()
    while r.has_ready():
        rd = r.ready()
        out.hard_state = rd.hard_state or out.hard_state
        out.snapshot = rd.snapshot or out.snapshot
        out.entries += rd.entries
        out.messages += rd.early_messages + rd.messages  # in the order they may leave
        out.committed += rd.committed
        out.read_states += rd.read_states
    return out


def sent(rd: Ready, kind: type[M], to: str | None = None) -> list[M]:
    msgs = rd.early_messages + rd.messages
    return [m for m in msgs if isinstance(m, kind) and (to is None or m.to == to)]


def make_leader(r: Raft) -> Ready:
    """Win a pre-vote and a vote by hand-fed answers from the other voters."""
    while r.role is not Role.PRE_CANDIDATE:
        r.tick()
    for peer in r.voters:
        if peer != r.id:
            r.step(VoteResponse(r.term + 1, peer, r.id, True, True))
    for peer in r.voters:
        if peer != r.id and not is_leader(r):
            r.step(VoteResponse(r.term, peer, r.id, True, False))
    assert is_leader(r)
    return drain(r)


def is_leader(r: Raft) -> bool:
    return r.role is Role.LEADER


class Net:
    """Instant delivery between nodes, performing each Ready in its documented order."""

    def __init__(self, *nodes: Raft) -> None:
        self.nodes = {r.id: r for r in nodes}
        self.cut: set[str] = set()
        self.applied: dict[str, list[Entry]] = defaultdict(list)
        self.snapshots: dict[str, list[Snapshot]] = defaultdict(list)
        self.reads: dict[str, list[ReadState]] = defaultdict(list)
        self.sent: list[Message] = []

    def flush(self) -> None:
        for _ in range(10_000):
            queue: list[Message] = []
            for node_id, r in self.nodes.items():
                while r.has_ready():
                    rd = r.ready()
                    queue += rd.early_messages + rd.messages
                    self.snapshots[node_id] += [rd.snapshot] if rd.snapshot else []
                    self.applied[node_id] += rd.committed
                    self.reads[node_id] += rd.read_states
            if not queue:
                return
            self.sent += queue
            for m in queue:
                if m.frm not in self.cut and m.to not in self.cut:
                    self.nodes[m.to].step(m)
        raise AssertionError("the cluster never went quiet")

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for r in self.nodes.values():
                r.tick()
            self.flush()

    def leader(self) -> Raft:
        leaders = [r for r in self.nodes.values() if r.role is Role.LEADER]
        assert len(leaders) == 1, [r.status() for r in self.nodes.values()]
        return leaders[0]


def cluster(*ids: str, learners: tuple[str, ...] = (), **kw: Any) -> Net:
    voters = tuple(i for i in ids if i not in learners)
    return Net(*(new(i, voters=voters, learners=learners, **kw) for i in ids))


def elected(net: Net) -> Raft:
    for _ in range(10 * E):
        net.tick()
        if any(r.role is Role.LEADER for r in net.nodes.values()):
            return net.leader()
    raise AssertionError("no leader")


# -- elections -------------------------------------------------------------------------


def test_follower_pre_votes_after_a_randomized_timeout_without_bumping_its_term() -> None:
    r = new("a", learners=("l",))
    elapsed = 0
    while r.role is not Role.PRE_CANDIDATE:
        r.tick()
        elapsed += 1
    assert E <= elapsed < 2 * E
    rd = drain(r)
    requests = sent(rd, VoteRequest)
    assert {m.to for m in requests} == {"b", "c"}  # voters only, never the learner
    assert all(m.pre_vote and m.term == 1 for m in requests)
    assert r.term == 0 and rd.hard_state is None  # nothing to persist for a pre-vote


def test_three_followers_elect_one_leader_which_commits_a_noop_of_its_term() -> None:
    net = cluster("a", "b", "c")
    leader = elected(net)
    net.tick(E)
    noop = net.applied[leader.id][0]
    assert noop.kind is EntryKind.NOOP and noop.term == leader.term
    assert all(net.applied[i] == [noop] for i in VOTERS)
    assert {r.leader for r in net.nodes.values()} == {leader.id}


def test_single_voter_leads_and_commits_alone() -> None:
    r = new("a", voters=("a",))
    while r.role is not Role.LEADER:
        r.tick()
    assert [e.kind for e in drain(r).committed] == [EntryKind.NOOP]
    index = r.propose(b"x")
    rd = r.ready()
    assert rd.entries == [Entry(index, r.term, EntryKind.COMMAND, b"x")] and not rd.committed
    assert r.commit_index < index, "committed before its only copy was written"
    assert r.has_ready(), "the next Ready must follow the write, to commit it"
    rd = r.ready()
    assert rd.committed == [Entry(index, r.term, EntryKind.COMMAND, b"x")] and rd.early_apply
    assert not rd.must_sync, "only the commit index moved: nothing a restart needs"
    r.read_index(5)
    assert r.ready().read_states == [ReadState(5, index)]


def test_rejoining_node_cannot_depose_a_healthy_leader() -> None:
    net = cluster("a", "b", "c")
    leader = elected(net)
    term = leader.term
    net.cut = {"c"}
    net.tick(5 * E)  # c pre-campaigns again and again, alone
    assert net.nodes["c"].term == term  # pre-vote: its term never moved
    net.cut = set()
    for _ in range(3 * E):
        net.tick()
        assert net.leader() is leader and leader.term == term
    assert net.nodes["c"].role is Role.FOLLOWER and net.nodes["c"].leader == leader.id


def test_voter_that_heard_a_leader_ignores_pre_votes_and_votes() -> None:
    r = new("b")
    r.step(AppendRequest(1, "a", "b", 0, 0, (), 0))
    drain(r)
    for pre_vote in (True, False):
        r.step(VoteRequest(2, "c", "b", 5, 1, pre_vote))
        assert not drain(r).messages and r.term == 1
    for _ in range(E):  # the lease runs out after an election timeout of silence
        r.tick()
    r.step(VoteRequest(2, "c", "b", 5, 1, True))
    assert sent(drain(r), VoteResponse) == [VoteResponse(2, "b", "c", True, True)]


def test_vote_needs_an_up_to_date_log() -> None:
    r = new("b", Restored(HardState(2), None, (cmd(1, 1), cmd(2, 2))))
    r.step(VoteRequest(3, "c", "b", 5, 1, True))  # longer log, older last term
    r.step(VoteRequest(3, "c", "b", 1, 2, False))  # same last term, shorter
    granted = [m.granted for m in sent(drain(r), VoteResponse)]
    assert granted == [False, False]
    r.step(VoteRequest(4, "c", "b", 2, 2, False))
    assert sent(drain(r), VoteResponse)[0].granted


def test_one_vote_per_term_and_the_vote_is_persisted_before_it_is_sent() -> None:
    r = new("b")
    r.step(VoteRequest(1, "a", "b", 0, 0, False))
    rd = r.ready()
    assert rd.hard_state == HardState(1, "a", 0)
    assert sent(rd, VoteResponse) == [VoteResponse(1, "b", "a", True, False)]
    r.step(VoteRequest(1, "c", "b", 0, 0, False))
    assert not sent(r.ready(), VoteResponse)[0].granted
    restarted = new("b", Restored(rd.hard_state))
    restarted.step(VoteRequest(1, "c", "b", 0, 0, False))
    assert not sent(drain(restarted), VoteResponse)[0].granted


def test_many_ticks_at_once_are_as_many_single_ticks() -> None:
    """A learner takes a batch of ticks in one step; anyone else still takes them one by
    one, so a follower that times out inside a batch campaigns as it would have."""
    one, batched = new("a", learners=("l",)), new("a", learners=("l",))
    for _ in range(2 * E):
        one.tick()
    batched.tick(2 * E)
    assert batched.role is one.role is Role.PRE_CANDIDATE
    assert drain(batched).messages == drain(one).messages
    learners = [new("l", voters=("a", "b"), learners=("l",)) for _ in range(2)]
    for _ in range(10 * E):
        learners[0].tick()
    learners[1].tick(10 * E)
    for learner in learners:
        assert learner.role is Role.LEARNER and not drain(learner).messages
    assert learners[0]._election_elapsed == learners[1]._election_elapsed == 10 * E


def test_learners_never_campaign_and_do_not_count_in_quorums() -> None:
    learner = new("l", voters=("a", "b"), learners=("l",))
    for _ in range(10 * E):
        learner.tick()
    assert learner.role is Role.LEARNER and not drain(learner).messages
    # It answers a candidate (which may count it: a promotion it has not received yet)...
    learner.step(VoteRequest(1, "a", "l", 0, 0, False))
    assert sent(drain(learner), VoteResponse) == [VoteResponse(1, "l", "a", True, False)]
    # ...but a candidate whose configuration makes it a learner does not count its vote.
    candidate = new("a", voters=("a", "b", "c"), learners=("l",))
    while candidate.role is not Role.PRE_CANDIDATE:
        candidate.tick()
    candidate.step(VoteResponse(1, "l", "a", True, True))
    assert candidate.role is Role.PRE_CANDIDATE

    net = cluster("a", "b", "l", learners=("l",))
    leader = elected(net)
    follower = "b" if leader.id == "a" else "a"
    net.tick(E)
    net.cut = {follower}
    index = leader.propose(b"x")
    net.tick(2)
    assert leader.commit_index < index  # the learner's ack is no vote...
    assert net.nodes["l"].last_index < index  # ...so it gets committed entries only
    leader.step(AppendResponse(leader.term, "l", leader.id, True, index))  # even if it acks
    assert leader.commit_index < index
    net.cut = set()
    net.tick(2 * E)  # the lost append is re-sent once the pipeline counts as stalled
    assert net.applied["l"][-1].data == b"x"


def test_answers_from_outside_the_configuration_are_not_counted() -> None:
    r = new("a", learners=("l",))
    make_leader(r)
    r.step(AppendResponse(1, "l", "a", True, 1))
    r.step(AppendResponse(1, "zz", "a", True, 1))
    drain(r)
    assert r.commit_index == 0, "a learner's or a stranger's ack is no vote"


# -- log replication -------------------------------------------------------------------


def test_follower_truncates_a_conflicting_suffix_and_hints_where_to_probe() -> None:
    log = (cmd(1, 1), cmd(2, 2), cmd(3, 2), cmd(4, 2))
    r = new("b", Restored(HardState(2, None, 1), None, log))
    r.step(AppendRequest(3, "a", "b", 4, 3, (cmd(5, 3),), 1))
    reject = sent(drain(r), AppendResponse)[0]
    assert not reject.success and reject.hint_index == 2  # first index of our term 2
    assert reject.match_index == 4  # echoes the rejected prev_index
    r.step(AppendRequest(3, "a", "b", 2, 2, (cmd(3, 3), cmd(4, 3)), 4))
    rd = drain(r)
    assert rd.entries == [cmd(3, 3), cmd(4, 3)]  # replaces the persisted 3..4
    assert rd.committed == [cmd(2, 2), cmd(3, 3), cmd(4, 3)]
    assert sent(rd, AppendResponse)[0] == AppendResponse(3, "b", "a", True, 4)


def test_follower_behind_hints_its_end() -> None:
    r = new("b", Restored(HardState(1), None, (cmd(1, 1),)))
    r.step(AppendRequest(1, "a", "b", 7, 1, (cmd(8, 1),), 0))
    assert sent(drain(r), AppendResponse)[0].hint_index == 2


def test_follower_commit_never_passes_what_the_leader_verified() -> None:
    r = new("b", Restored(HardState(1), None, (cmd(1, 1), cmd(2, 1), cmd(3, 1))))
    r.step(AppendRequest(2, "a", "b", 1, 1, (), 3))  # matches at 1; 2..3 unverified
    assert r.commit_index == 1


def test_divergent_logs_converge_on_the_leaders() -> None:
    old = (cmd(1, 1), cmd(2, 1), cmd(3, 2), cmd(4, 2), cmd(5, 2))
    net = Net(
        new("a", Restored(HardState(3), None, (*old[:2], cmd(3, 3), cmd(4, 3)))),
        new("b", Restored(HardState(2), None, old)),
        new("c", Restored(HardState(3), None, old[:2])),
    )
    net.cut = {"b"}
    leader = elected(net)
    assert leader.id == "a"  # c votes for a: a's last term 3 beats c's
    net.cut = set()
    net.tick(2 * E)
    assert [e.term for e in net.applied["b"]] == [e.term for e in net.applied["a"]]
    assert net.nodes["b"].last_index == leader.last_index == 5


def test_old_term_entries_commit_only_with_an_entry_of_the_current_term() -> None:
    r = new("a", Restored(HardState(2, None, 1), None, (cmd(1, 1), cmd(2, 2))))
    make_leader(r)
    assert r.term == 3 and r.last_index == 3  # the NOOP
    r.step(AppendResponse(3, "b", "a", True, 2))
    drain(r)
    assert r.commit_index == 1  # index 2 is on a majority, but of term 2 (§5.4.2)
    r.step(AppendResponse(3, "b", "a", True, 3))
    assert [e.index for e in drain(r).committed] == [2, 3]


def test_a_pipelined_leader_counts_itself_only_for_entries_it_has_written() -> None:
    """The leader sends an entry before its own fsync; an acknowledgement that comes back
    first does not commit it (one durable copy of three): the next ``ready()``, which says
    that the write is done, does."""
    r = new("a")
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))
    drain(r)
    index = r.propose(b"x")
    rd = r.ready()
    assert rd.entries[-1].index == index and rd.must_sync
    early = [m for m in rd.early_messages if isinstance(m, AppendRequest) and m.to == "b"]
    assert [m.entries[-1].index for m in early] == [index], "sent before the write"
    r.step(AppendResponse(1, "b", "a", True, index))  # b fsynced before our disk did
    assert r.commit_index == index - 1 and not rd.committed
    assert r.has_ready(), "the Ready after the write must follow, to count our copy"
    rd = r.ready()
    assert r.commit_index == index and rd.committed[-1].index == index and rd.early_apply


def test_a_pipelined_leader_commits_on_a_majority_of_followers_alone() -> None:
    """Two followers of three voters hold an entry durably: it is committed, whether or
    not the leader's own write has finished."""
    r = new("a")
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))
    r.step(AppendResponse(1, "c", "a", True, 1))
    drain(r)
    index = r.propose(b"x")
    r.ready()
    r.step(AppendResponse(1, "b", "a", True, index))
    assert r.commit_index == index - 1
    r.step(AppendResponse(1, "c", "a", True, index))
    assert r.commit_index == index


def test_only_appends_of_a_durable_term_leave_before_the_write() -> None:
    """Votes and acknowledgements promise what the Ready persists: they wait for it. A
    leader whose term and vote change in the same Ready (a lone voter's election) must
    not speak for that term before it is durable either."""
    r = new("a")
    while r.role is not Role.PRE_CANDIDATE:
        r.tick()
    for peer in ("b", "c"):
        r.step(VoteResponse(r.term + 1, peer, "a", True, True))
    rd = r.ready()
    assert sent(rd, VoteRequest) and not rd.early_messages and rd.must_sync
    r.step(VoteResponse(r.term, "b", "a", True, False))
    rd = r.ready()  # elected; the candidate's term and vote were written before
    assert is_leader(r) and {m.to for m in rd.early_messages} == {"b", "c"}
    assert all(isinstance(m, AppendRequest) for m in rd.early_messages)

    f = new("b")
    f.step(AppendRequest(1, "a", "b", 0, 0, (cmd(1, 1),), 1))
    rd = f.ready()
    assert sent(rd, AppendResponse) and not rd.early_messages
    assert rd.committed == [cmd(1, 1)] and not rd.early_apply, "applied before written"

    lone = new("a", voters=("a",), learners=("l",))
    while not is_leader(lone):
        lone.tick()
    rd = lone.ready()
    assert rd.hard_state is not None and rd.hard_state.term == lone.term
    assert not rd.early_messages
    rd = lone.ready()  # written: the leader's noop commits, and the learner gets it then
    assert [m.commit for m in sent(rd, AppendRequest, to="l")] == [lone.commit_index]


def test_appends_are_batched_and_pipelined_within_limits() -> None:
    r = new("a", max_append_entries=3, max_inflight_appends=2)
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))  # b: probe -> replicate
    drain(r)
    for k in range(20):
        r.propose(b"%d" % k)
    appends = sent(r.ready(), AppendRequest, to="b")
    assert [len(m.entries) for m in appends] == [3, 3]  # two in flight, three each
    assert appends[1].prev_index == appends[0].entries[-1].index
    r.step(AppendResponse(1, "b", "a", True, appends[0].entries[-1].index))
    more = sent(r.ready(), AppendRequest, to="b")
    assert len(more) == 1 and more[0].prev_index == appends[1].entries[-1].index


def test_append_bytes_limit_still_sends_an_oversized_entry() -> None:
    r = new("a", max_append_bytes=25)
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))
    drain(r)
    for size in (10, 10, 10, 100, 10):
        r.propose(b"z" * size)
    appends = sent(r.ready(), AppendRequest, to="b")
    assert [len(m.entries) for m in appends] == [2, 1, 1, 1]


def test_probe_sends_one_append_at_a_time_and_follows_the_hint() -> None:
    r = new("a", Restored(HardState(1), None, tuple(cmd(i, 1) for i in range(1, 6))))
    rd = make_leader(r)
    (probe,) = sent(rd, AppendRequest, to="b")
    assert probe.prev_index == 5 and len(probe.entries) == 1
    r.propose(b"more")
    assert not sent(drain(r), AppendRequest, to="b")  # paused until b answers
    r.step(AppendResponse(2, "b", "a", False, 5, hint_index=3))
    (retry,) = sent(drain(r), AppendRequest, to="b")
    assert retry.prev_index == 2 and [e.index for e in retry.entries] == [3, 4, 5, 6, 7]


def test_lost_pipeline_falls_back_to_probing() -> None:
    r = new("a", heartbeat_ticks=2)
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))
    drain(r)
    r.propose(b"lost")
    assert sent(drain(r), AppendRequest, to="b")  # ...and never acknowledged
    resent = []
    for _ in range(2 * E):
        r.tick()
        r.step(AppendResponse(1, "b", "a", True, 1))  # heartbeats come back
        resent += [m for m in sent(drain(r), AppendRequest, to="b") if m.entries]
    assert resent and resent[0].prev_index == 1


def test_heartbeats_carry_commit_clamped_to_the_followers_match() -> None:
    r = new("a")
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))
    drain(r)
    assert r.commit_index == 1
    for _ in range(2):  # heartbeat_ticks
        r.tick()
    beats = {m.to: m for m in sent(drain(r), AppendRequest) if not m.entries}
    assert beats["b"].commit == 1 and beats["b"].prev_index == 1
    assert beats["c"].commit == 0 and beats["c"].prev_index == 0


def test_a_peer_that_acks_after_the_commit_moved_is_told_the_commit_at_once() -> None:
    """b's ack commits an entry before c's comes back; the heartbeat sent on that commit
    was capped at c's old match. c's ack must bring it the commit now, not at the next
    heartbeat (a follower serving a client would wait for that heartbeat to apply its
    own write)."""
    r = new("a")
    make_leader(r)
    for peer in ("b", "c"):
        r.step(AppendResponse(r.term, peer, "a", True, r.last_index))
    drain(r)
    index = r.propose(b"x")
    drain(r)  # the appends to b and c go out
    r.step(AppendResponse(r.term, "b", "a", True, index))
    assert r.commit_index == index
    told = {m.to: m.commit for m in sent(drain(r), AppendRequest)}
    assert told["c"] < index  # capped: its ack is not in yet
    r.step(AppendResponse(r.term, "c", "a", True, index))
    beats = sent(drain(r), AppendRequest, to="c")  # no tick in between
    assert [m.commit for m in beats] == [index]
    # Once told, an ack that repeats what it holds brings nothing more.
    r.step(AppendResponse(r.term, "c", "a", True, index))
    assert not sent(drain(r), AppendRequest, to="c")


def test_a_learner_gets_an_entry_with_its_commit_in_one_append() -> None:
    r = new("a", voters=("a", "b"), learners=("l",))
    make_leader(r)
    for peer in ("b", "l"):
        r.step(AppendResponse(r.term, peer, "a", True, r.last_index))
    drain(r)
    index = r.propose(b"x")
    assert not sent(drain(r), AppendRequest, to="l")  # not before the voters commit it
    r.step(AppendResponse(r.term, "b", "a", True, index))
    appends = sent(drain(r), AppendRequest, to="l")
    assert [(m.entries[-1].index, m.commit) for m in appends] == [(index, index)]
    r.step(AppendResponse(r.term, "l", "a", True, index))
    assert not sent(drain(r), AppendRequest, to="l")  # nothing more to tell it


def test_learners_hear_every_nth_heartbeat_but_entries_at_once() -> None:
    """``learner_heartbeat_every``: a thousand-node cluster is mostly learners, and
    heartbeats to them are most of an idle leader's messages."""
    r = new("a", voters=("a", "b"), learners=("l",), learner_heartbeat_every=3)
    make_leader(r)
    for peer in ("b", "l"):
        r.step(AppendResponse(r.term, peer, "a", True, r.last_index))
    drain(r)
    heard: dict[str, int] = {"b": 0, "l": 0}
    for _ in range(6 * 2):  # six heartbeats of heartbeat_ticks=2
        r.tick()
        for m in sent(drain(r), AppendRequest):
            heard[m.to] += 1
    assert heard == {"b": 6, "l": 2}
    index = r.propose(b"x")
    drain(r)
    r.step(AppendResponse(r.term, "b", "a", True, index))
    appends = sent(drain(r), AppendRequest, to="l")  # no heartbeat due: the entry goes
    assert [m.entries[-1].index for m in appends] == [index]


def _lazy_leader() -> tuple[Raft, int]:
    """Leader of voters a, b with a lazy learner l caught up through the noop; the index
    of a command committed after."""
    r = new("a", voters=("a", "b"), learners=("l",), learner_heartbeat_every=3, lazy_learners=True)
    make_leader(r)
    for peer in ("b", "l"):
        r.step(AppendResponse(r.term, peer, "a", True, r.last_index))
    drain(r)
    index = r.propose(b"x")
    drain(r)
    r.step(AppendResponse(r.term, "b", "a", True, index))
    assert r.commit_index == index
    return r, index


def test_a_lazy_learner_gets_new_entries_with_its_heartbeat_not_at_once() -> None:
    """A big cluster's learners: each entry would cost an append and an answer per node;
    with its heartbeat one append carries whatever committed since."""
    r, index = _lazy_leader()
    assert not sent(drain(r), AppendRequest, to="l")  # committed: b heard, l waits
    second = r.propose(b"y")
    drain(r)
    r.step(AppendResponse(r.term, "b", "a", True, second))
    assert not sent(drain(r), AppendRequest, to="l")
    to_l: list[AppendRequest] = []
    for _ in range(3 * 2):  # three heartbeats of heartbeat_ticks=2: the third is l's
        r.tick()
        to_l += sent(drain(r), AppendRequest, to="l")
    assert [(m.entries[0].index, m.entries[-1].index, m.commit) for m in to_l] == [
        (index, second, second)
    ]  # one append with both entries and the commit, instead of a heartbeat


def test_a_lazy_learner_that_waits_for_an_index_is_caught_up_at_once() -> None:
    """It is about to read at that index, or to apply its own proposal: it must not wait
    for its heartbeat (and a voter or an unknown peer asks for nothing)."""
    r, index = _lazy_leader()
    drain(r)
    r.catch_up("b", index)
    r.catch_up("zz", index)
    assert not r.has_ready()
    r.catch_up("l", index + 1)  # up to an index not committed yet: what is committed goes
    appends = sent(drain(r), AppendRequest, to="l")
    assert [(m.entries[-1].index, m.commit) for m in appends] == [(index, index)]
    later = r.propose(b"z")
    drain(r)
    r.step(AppendResponse(r.term, "b", "a", True, later))
    assert [m.entries[-1].index for m in sent(drain(r), AppendRequest, to="l")] == [later]
    again = r.propose(b"w")  # past what l asked for: it waits again
    drain(r)
    r.step(AppendResponse(r.term, "b", "a", True, again))
    assert not sent(drain(r), AppendRequest, to="l")


def test_a_new_leader_tells_lazy_learners_at_once_and_promotes_one_after_catching_it_up() -> None:
    """Learners send their reads and proposals to the leader they know: they hear of a
    new one with its first entry. A learner to promote is sent the log at once (the
    change is refused until it has acknowledged it)."""
    r = new("a", voters=("a", "b"), learners=("l",), learner_heartbeat_every=3, lazy_learners=True)
    rd = make_leader(r)
    noop = r.last_index
    r.step(AppendResponse(r.term, "b", "a", True, noop))
    to_l = sent(rd, AppendRequest, to="l") + sent(drain(r), AppendRequest, to="l")
    assert [m.entries[-1].index for m in to_l if m.entries] == [noop]
    r.step(AppendResponse(r.term, "l", "a", True, noop))
    index = r.propose(b"x")
    drain(r)
    r.step(AppendResponse(r.term, "b", "a", True, index))
    assert not sent(drain(r), AppendRequest, to="l")
    with pytest.raises(MembershipChangeRefused, match="caught up"):
        r.propose_membership(("a", "b", "l"))
    assert [m.entries[-1].index for m in sent(drain(r), AppendRequest, to="l")] == [index]
    r.step(AppendResponse(r.term, "l", "a", True, index))
    assert r.propose_membership(("a", "b", "l")) == index + 1


def test_a_learner_rejected_at_its_heartbeat_is_probed_again_at_once() -> None:
    """The leader skips peers it saw nothing change for: a rejection (a learner whose
    disk was replaced) must still send it the entries it lacks, without a tick."""
    r = new("a", voters=("a", "b"), learners=("l",))
    make_leader(r)
    r.step(AppendResponse(r.term, "b", "a", True, r.last_index))
    r.step(AppendResponse(r.term, "l", "a", True, r.last_index))
    drain(r)
    index = r.propose(b"x")
    drain(r)
    r.step(AppendResponse(r.term, "b", "a", True, index))
    r.step(AppendResponse(r.term, "l", "a", True, index))
    drain(r)
    assert not r.has_ready()
    r.step(AppendResponse(r.term, "l", "a", False, index, 1))  # lost everything
    again = sent(drain(r), AppendRequest, to="l")
    assert again and again[0].prev_index == 0 and again[0].entries[-1].index <= index


# -- snapshots and restart -------------------------------------------------------------


def test_lagging_follower_gets_a_snapshot_and_resumes_after_it() -> None:
    net = cluster("a", "b", "c", max_append_entries=4)
    leader = elected(net)
    lagger = next(i for i in VOTERS if i != leader.id)
    net.cut = {lagger}
    for k in range(20):
        leader.propose(b"%d" % k)
    net.tick(2)
    leader.compact(leader.applied_index, b"state")
    assert leader.status()["snapshot_index"] == leader.applied_index
    leader.propose(b"after")
    net.cut = set()
    net.tick(2 * E)
    (snap,) = net.snapshots[lagger]
    assert snap == Snapshot(leader.applied_index - 1, leader.term, b"state", Membership(VOTERS))
    assert [e.data for e in net.applied[lagger]] == [b"", b"after"]  # NOOP, then a jump
    assert net.nodes[lagger].applied_index == leader.applied_index
    assert any(isinstance(m, SnapshotRequest) for m in net.sent)


def test_compaction_keeps_a_short_tail_for_a_slightly_lagging_follower() -> None:
    net = cluster("a", "b", "c")
    leader = elected(net)
    lagger = next(i for i in VOTERS if i != leader.id)
    net.cut = {lagger}
    for k in range(5):
        leader.propose(b"%d" % k)
    net.tick(2)
    leader.compact(leader.applied_index, b"state")
    net.cut = set()
    net.tick(2 * E)
    assert not net.snapshots[lagger] and net.applied[lagger][-1].data == b"4"


def test_installing_a_snapshot_replaces_the_log() -> None:
    r = new("b", Restored(HardState(1), None, (cmd(1, 1), cmd(2, 1))))
    r.step(SnapshotRequest(2, "a", "b", Snapshot(7, 2, b"s")))
    rd = r.ready()
    assert rd.snapshot == Snapshot(7, 2, b"s") and rd.committed == []
    assert rd.hard_state == HardState(2, None, 7)
    assert (r.applied_index, r.commit_index, r.last_index) == (7, 7, 7)
    assert sent(rd, AppendResponse) == [AppendResponse(2, "b", "a", True, 7)]
    r.step(AppendRequest(2, "a", "b", 7, 2, (cmd(8, 2),), 8))
    assert r.ready().committed == [cmd(8, 2)]


def test_stale_snapshot_is_acknowledged_without_reinstalling() -> None:
    r = new("b", Restored(HardState(1, None, 2), None, (cmd(1, 1), cmd(2, 1))))
    drain(r)
    r.step(SnapshotRequest(1, "a", "b", Snapshot(1, 1, b"s")))
    rd = drain(r)
    assert rd.snapshot is None and sent(rd, AppendResponse)[0].match_index == 2


def test_restart_resumes_as_follower_and_redelivers_committed_entries() -> None:
    snap = Snapshot(2, 1, b"s")
    entries = (cmd(2, 1), cmd(3, 1), cmd(4, 2), cmd(5, 2))  # 2 is inside the snapshot
    r = new("a", Restored(HardState(2, "b", 4), snap, entries))
    assert (r.role, r.term, r.leader) == (Role.FOLLOWER, 2, None)
    assert (r.commit_index, r.applied_index, r.last_index) == (4, 2, 5)
    rd = r.ready()
    assert rd.committed == [cmd(3, 1), cmd(4, 2)] and rd.hard_state is None
    assert rd.entries == [] and rd.snapshot is None
    r.step(VoteRequest(2, "c", "a", 9, 2, False))  # already voted for b in term 2
    assert not sent(r.ready(), VoteResponse)[0].granted


def test_restart_commit_is_at_least_the_snapshot() -> None:
    r = new("a", Restored(HardState(1, None, 0), Snapshot(3, 1, b"s"), ()))
    assert r.commit_index == r.applied_index == 3
    assert r.ready().committed == []


def test_restart_drops_a_divergent_suffix_left_behind_a_snapshot() -> None:
    """Ready.snapshot replaces the persisted log only up to its index; what followed it
    came from our old branch (its terms go backwards) and must not count as our log."""
    stale = (cmd(6, 2), cmd(7, 2))
    r = new("a", Restored(HardState(3, None, 5), Snapshot(5, 3, b"s"), stale))
    assert r.last_index == 5
    r.step(VoteRequest(4, "b", "a", 5, 3, False))
    assert sent(drain(r), VoteResponse)[0].granted  # b is as up to date as we are


def test_inconsistent_restored_state_is_refused() -> None:
    with pytest.raises(ValueError):
        new("a", Restored(HardState(1, None, 0), None, (cmd(2, 1),)))
    with pytest.raises(ValueError):
        new("a", Restored(HardState(1, None, 3), None, (cmd(1, 1),)))


def test_compact_beyond_applied_is_misuse() -> None:
    r = new("a", voters=("a",))
    while r.role is not Role.LEADER:
        r.tick()
    drain(r)
    with pytest.raises(ValueError):
        r.compact(r.applied_index + 1, b"")


# -- read index ------------------------------------------------------------------------


def test_read_index_waits_for_a_quorum_of_heartbeat_acks() -> None:
    r = new("a")
    make_leader(r)
    r.read_index(7)  # nothing committed in this term yet: waits
    assert not drain(r).read_states
    r.step(AppendResponse(1, "b", "a", True, 1))  # commits the NOOP...
    beats = sent(drain(r), AppendRequest)  # ...which starts the read round
    seq = beats[-1].read_seq
    assert seq > 0 and {m.to for m in beats if m.read_seq == seq} >= {"b", "c"}
    r.read_index(8)
    seq8 = sent(drain(r), AppendRequest)[-1].read_seq
    r.step(AppendResponse(1, "c", "a", True, 0, read_seq=seq))
    assert drain(r).read_states == [ReadState(7, 1)]  # c + a: a majority for round seq
    r.step(AppendResponse(1, "b", "a", True, 1, read_seq=seq8))
    assert drain(r).read_states == [ReadState(8, 1)]


def test_read_index_outside_the_leader_raises_not_leader() -> None:
    r = new("b")
    r.step(AppendRequest(1, "a", "b", 0, 0, (), 0))
    with pytest.raises(NotLeader) as err:
        r.read_index(1)
    assert err.value.leader == "a"
    with pytest.raises(NotLeader):
        r.propose(b"x")


def test_pending_reads_are_dropped_when_leadership_is_lost() -> None:
    r = new("a")
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))
    r.read_index(1)
    drain(r)
    r.step(AppendRequest(2, "b", "a", 1, 1, (), 1))  # a newer leader
    r.step(AppendResponse(2, "c", "a", True, 1, read_seq=1))
    assert r.role is Role.FOLLOWER and not drain(r).read_states


# -- check-quorum and stale peers ------------------------------------------------------


def test_isolated_leader_steps_down_within_two_election_timeouts() -> None:
    r = new("a")
    make_leader(r)
    for _ in range(2 * E):
        r.tick()
    assert r.role is Role.FOLLOWER and r.term == 1 and r.leader is None


def test_leader_hearing_a_majority_keeps_leading() -> None:
    r = new("a")
    make_leader(r)
    for _ in range(5 * E):
        r.tick()
        r.step(AppendResponse(1, "b", "a", True, 0))
    assert r.role is Role.LEADER


def test_lower_term_append_is_answered_with_our_term_and_deposes_the_stale_leader() -> None:
    r = new("b", Restored(HardState(5)))
    r.step(AppendRequest(3, "a", "b", 0, 0, (), 0))
    (reply,) = sent(drain(r), AppendResponse)
    assert reply.term == 5 and not reply.success
    stale = new("a")
    make_leader(stale)
    stale.step(replace(reply, to="a"))
    assert stale.role is Role.FOLLOWER and stale.term == 5


def test_wrong_malformed_and_stale_messages_are_ignored() -> None:
    r = new("b", Restored(HardState(2), None, (cmd(1, 1),)))
    ignored: list[Message] = [
        AppendRequest(2, "a", "c", 0, 0, (), 0),  # not for us
        AppendRequest(2, "a", "b", 1, 1, (cmd(3, 2),), 0),  # not contiguous
        AppendRequest(2, "a", "b", 1, 1, (cmd(2, 3),), 0),  # entry from the future
        VoteResponse(2, "a", "b", True, False),  # not campaigning
        AppendResponse(2, "a", "b", True, 99),  # not leading
    ]
    for m in ignored:
        r.step(m)
    assert not drain(r).messages and r.last_index == 1 and r.term == 2


def test_leader_ignores_acks_beyond_its_log() -> None:
    r = new("a")
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 50))
    drain(r)
    assert r.commit_index == 0


def test_status_is_json() -> None:
    r = new("a")
    make_leader(r)
    status = json.loads(json.dumps(r.status()))
    assert status["role"] == "leader" and status["peers"]["b"]["state"] == "probe"


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        Raft(RaftConfig(id="a", voters=()), random.Random(0))
    with pytest.raises(ValueError):
        Raft(RaftConfig(id="a", voters=("a",), learners=("a",)), random.Random(0))
    with pytest.raises(ValueError):
        Raft(RaftConfig(id="a", voters=("a", "a")), random.Random(0))
