"""Membership changes in ``Raft``: one voter at a time, in force from the log, durable.

Scenarios run on the instant network of ``test_raft`` (``Net``), with nodes that may
start outside the configuration (a server about to be added); the rest feed hand-made
messages into one node.
"""

from __future__ import annotations

import random

import pytest

from fabric.consensus import membership
from fabric.consensus.raft import Raft
from fabric.consensus.types import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    Membership,
    MembershipChangeRefused,
    NotLeader,
    RaftConfig,
    Ready,
    Restored,
    Role,
    Snapshot,
    SnapshotRequest,
    VoteRequest,
    VoteResponse,
)
from fabric.sim.checkers import RaftChecker, SafetyViolation
from tests.unit.test_raft import E, Net, cmd, drain, elected, make_leader, new, sent

ABC = ("a", "b", "c")


def conf(index: int, term: int, voters: tuple[str, ...], learners: tuple[str, ...] = ()) -> Entry:
    data = membership.encode(Membership(voters, learners))
    return Entry(index, term, EntryKind.CONFIG, data)


def group(*ids: str, voters: tuple[str, ...] = ABC, learners: tuple[str, ...] = ()) -> Net:
    """Nodes ``ids`` that all start from the configuration (voters, learners); ids in
    neither are outside it."""
    return Net(*(new(i, voters=voters, learners=learners) for i in ids))


def settled(net: Net) -> Raft:
    """A leader that has committed its NOOP (so it may change the membership)."""
    leader = elected(net)
    net.tick(2)
    assert leader.commit_index == leader.last_index
    return leader


def change(net: Net, leader: Raft, voters: tuple[str, ...], learners: tuple[str, ...] = ()) -> int:
    index = leader.propose_membership(voters, learners)
    net.tick(2)
    assert leader.commit_index >= index, "the change did not commit"
    return index


def campaigns(r: Raft, ticks: int = 3 * E) -> bool:
    for _ in range(ticks):
        r.tick()
        if r.role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            return True
    return False


# -- encoding ----------------------------------------------------------------------------


def test_a_configuration_round_trips_and_garbage_is_refused() -> None:
    m = Membership(("a", "b"), ("c",))
    assert membership.decode(membership.encode(m)) == m
    for bad in (b"", b"\xc1", membership.encode(Membership((), ("c",))), b"\x93\x01\x90\x91\x01"):
        with pytest.raises(ValueError):
            membership.decode(bad)
    assert membership.problem(Membership(("a", "a"))) is not None
    assert membership.problem(Membership(("a",), ("a",))) is not None
    assert membership.problem(Membership(("a",), ("",))) is not None
    assert membership.problem(Membership(tuple("abcdefgh"))) is not None  # > MAX_VOTERS


# -- the rules of a change -----------------------------------------------------------------


def test_only_a_leader_changes_the_membership() -> None:
    r = new("b")
    r.step(AppendRequest(1, "a", "b", 0, 0, (), 0))
    with pytest.raises(NotLeader):
        r.propose_membership(("a", "b"))


@pytest.mark.parametrize(
    ("voters", "learners", "why"),
    [
        (("a", "b", "c", "d", "e"), (), "one voter at a time"),  # two added
        (("a",), (), "one voter at a time"),  # two removed
        (("a", "b", "d"), ("c",), "one voter at a time"),  # one swapped for another
        (("a", "b", "c", "x"), (), "as a learner first"),  # never was a learner
        ((), ("a", "b", "c"), "at least one voter"),
        (("c", "b", "a"), ("d", "e"), "unchanged"),
        (("a", "b", "c"), ("d", "d"), "twice"),
    ],
)
def test_a_change_that_breaks_a_rule_is_refused_for_good(
    voters: tuple[str, ...], learners: tuple[str, ...], why: str
) -> None:
    net = group("a", "b", "c", "d", "e", learners=("d", "e"))
    leader = settled(net)
    with pytest.raises(MembershipChangeRefused, match=why) as err:
        leader.propose_membership(voters, learners)
    assert not err.value.retryable
    assert leader.voters == ABC and leader.membership_index == 0


def test_the_last_voter_cannot_be_removed() -> None:
    r = new("a", voters=("a",))
    while r.role is not Role.LEADER:
        r.tick()
    drain(r)
    with pytest.raises(MembershipChangeRefused, match="at least one voter"):
        r.propose_membership((), ("a",))


def test_one_change_at_a_time_each_committed_before_the_next() -> None:
    net = group("a", "b", "c", "d", "e", learners=("d", "e"))
    leader = settled(net)
    follower = next(i for i in ABC if i != leader.id)
    net.cut = {i for i in ABC if i != leader.id}
    index = leader.propose_membership(ABC, ("d",))  # drop learner e: uncommitted
    with pytest.raises(MembershipChangeRefused, match="not committed yet") as err:
        leader.propose_membership(ABC, ())
    assert err.value.retryable
    net.cut = set()
    net.tick(2)
    assert net.nodes[follower].commit_index >= index
    leader.propose_membership(ABC, ())  # now it may


def test_a_new_leader_changes_nothing_before_it_committed_an_entry_of_its_term() -> None:
    r = new("a", learners=("d",))
    make_leader(r)  # its NOOP is not committed yet
    with pytest.raises(MembershipChangeRefused, match="entry of its term") as err:
        r.propose_membership(ABC)
    assert err.value.retryable
    r.step(AppendResponse(1, "b", "a", True, 1))
    drain(r)
    r.propose_membership(ABC)


def test_a_learner_is_promoted_only_once_it_has_caught_up() -> None:
    net = group("a", "b", "c", "d", learners=("d",))
    leader = settled(net)
    net.cut = {"d"}
    leader.propose(b"x")
    net.tick(2)
    with pytest.raises(MembershipChangeRefused, match="caught up") as err:
        leader.propose_membership((*ABC, "d"))
    assert err.value.retryable
    net.cut = set()
    net.tick(2 * E)
    change(net, leader, (*ABC, "d"))
    assert net.nodes["d"].role is Role.FOLLOWER


# -- a configuration is in force from the moment it is in the log -----------------------------


def test_add_a_learner_then_promote_it_and_quorums_follow() -> None:
    net = group("a", "b", "c", "d")  # d starts outside the configuration
    d = net.nodes["d"]
    assert d.role is Role.LEARNER and not campaigns(d)
    leader = settled(net)
    change(net, leader, ABC, ("d",))
    assert d.voters == ABC and d.learners == ("d",) and d.role is Role.LEARNER
    assert net.applied["d"] == net.applied[leader.id], "the new learner has the whole log"
    change(net, leader, (*ABC, "d"))
    assert d.role is Role.FOLLOWER and set(d.voters) == {"a", "b", "c", "d"}
    # Four voters: the leader and one other are no longer a majority.
    net.cut = {i for i in ABC if i != leader.id}
    index = leader.propose(b"needs three")
    net.tick(2)
    assert leader.commit_index < index
    net.cut = set()
    net.tick(2 * E)  # the lost appends go again once the pipeline counts as stalled
    assert leader.commit_index >= index


def test_committed_config_entries_reach_the_driver_by_kind() -> None:
    net = group("a", "b", "c", "d")
    leader = settled(net)
    index = change(net, leader, ABC, ("d",))
    for node in ("a", "b", "c", "d"):
        (entry,) = [e for e in net.applied[node] if e.kind is EntryKind.CONFIG]
        assert entry.index == index
        assert membership.decode(entry.data) == Membership(ABC, ("d",))


def test_a_follower_uses_a_change_before_it_commits_and_drops_it_when_truncated() -> None:
    r = new("b", learners=("d",))
    r.step(AppendRequest(1, "a", "b", 0, 0, (cmd(1, 1),), 1))
    r.step(AppendRequest(1, "a", "b", 1, 1, (conf(2, 1, (*ABC, "d")),), 1))
    assert set(r.voters) == {"a", "b", "c", "d"} and r.commit_index == 1  # not committed
    assert r.membership_index == 2
    # A new leader whose log never had it overwrites index 2: the old one is back.
    r.step(AppendRequest(2, "c", "b", 1, 1, (cmd(2, 2),), 1))
    assert r.voters == ABC and r.learners == ("d",) and r.membership_index == 0


def test_a_removed_follower_stops_campaigning_and_a_demoted_one_too() -> None:
    for voters, learners in [(("a", "b"), ()), (("a", "b"), ("c",))]:
        r = new("c")
        r.step(AppendRequest(1, "a", "c", 0, 0, (cmd(1, 1), conf(2, 1, voters, learners)), 2))
        drain(r)
        assert r.role is Role.LEARNER and not campaigns(r)


def test_a_voter_removed_by_an_uncommitted_change_still_campaigns_without_its_vote() -> None:
    """b holds a change that removes it, not known to be committed: the other voters may
    need b to elect the leader that commits it (§4.2.2), so b campaigns, and wins only
    with a majority of {a, c}."""
    log = (cmd(1, 1), cmd(2, 1), conf(3, 1, ("a", "c")))
    b = new("b", Restored(HardState(1, None, 2), None, log))
    assert b.voters == ("a", "c") and b.role is Role.FOLLOWER
    assert campaigns(b)
    b.step(VoteResponse(2, "a", "b", True, True))
    assert b.role is Role.PRE_CANDIDATE, "a and b are no majority of {a, c}"
    b.step(VoteResponse(2, "c", "b", True, True))
    b.step(VoteResponse(2, "a", "b", True, False))
    assert b.role is Role.CANDIDATE
    b.step(VoteResponse(2, "c", "b", True, False))
    assert b.role is Role.LEADER
    drain(b)
    b.step(AppendResponse(2, "a", "b", True, 4))
    b.step(AppendResponse(2, "c", "b", True, 4))
    drain(b)
    assert b.commit_index == 4 and b.role is Role.LEARNER  # committed its removal: out
    assert not campaigns(b)


def test_a_removed_peer_hears_from_the_leader_until_its_removal_commits() -> None:
    net = group("a", "b", "c")
    leader = settled(net)
    gone = next(i for i in ABC if i != leader.id)
    index = change(net, leader, tuple(i for i in ABC if i != gone))
    removed = net.nodes[gone]
    assert removed.membership_index == index and removed.commit_index >= index
    assert removed.role is Role.LEARNER and not campaigns(removed)
    assert gone not in leader.status()["peers"]


def test_a_removed_leader_leads_without_counting_itself_then_steps_down() -> None:
    net = group("a", "b", "c")
    leader = settled(net)
    others = tuple(i for i in ABC if i != leader.id)
    index = leader.propose_membership(others)
    assert leader.role is Role.LEADER and leader.voters == others
    net.tick(1)
    assert leader.commit_index >= index and leader.role is Role.LEARNER
    assert all(net.nodes[i].commit_index >= index for i in others), "the commit was broadcast"
    net.cut = {leader.id}
    new_leader = elected(Net(*(net.nodes[i] for i in others)))
    assert new_leader.id in others and not campaigns(leader)


def test_a_leader_removed_by_an_uncommitted_change_does_not_count_its_own_copy() -> None:
    r = new("a", learners=())
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))
    drain(r)
    index = r.propose_membership(("b", "c"))
    drain(r)
    r.step(AppendResponse(1, "b", "a", True, index))
    drain(r)
    assert r.commit_index < index and r.role is Role.LEADER  # b alone: 1 of {b, c}
    r.step(AppendResponse(1, "c", "a", True, index))
    drain(r)
    assert r.commit_index == index and r.role is Role.LEARNER


def test_removing_a_voter_shrinks_the_quorum_at_once() -> None:
    """Without c, the leader and b commit alone, and c's acknowledgements stop counting."""
    r = new("a")
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))
    drain(r)
    index = r.propose_membership(("a", "b"), ("c",))
    drain(r)
    r.step(AppendResponse(1, "c", "a", True, index))  # a learner's ack: no vote
    drain(r)
    assert r.commit_index < index
    r.step(AppendResponse(1, "b", "a", True, index))
    drain(r)
    assert r.commit_index == index


def test_check_quorum_counts_the_voters_in_force() -> None:
    """c was demoted: a leader that only hears from c loses its lease."""
    r = new("a")
    make_leader(r)
    r.step(AppendResponse(1, "b", "a", True, 1))
    drain(r)
    r.propose_membership(("a", "b"), ("c",))
    drain(r)
    for _ in range(2 * E):
        r.tick()
        r.step(AppendResponse(1, "c", "a", True, 1))
    assert r.role is not Role.LEADER


def test_a_learner_promoted_without_knowing_it_still_elects_the_leader() -> None:
    """Voters a, b and learner c; a promotes c, b dies before it has the change and c never
    gets it. Under a's configuration {a, b, c}, a needs c's vote, which c gives although
    it still thinks itself a learner (etcd-io/etcd#10998)."""
    start = {"voters": ("a", "b"), "learners": ("c",)}
    log = (cmd(1, 1), cmd(2, 1))
    a = new("a", Restored(HardState(1, "a", 2), None, (*log, conf(3, 1, ABC))), **start)
    c = new("c", Restored(HardState(1, None, 2), None, log), **start)
    assert a.voters == ABC and c.role is Role.LEARNER
    net = Net(a, c, new("b", **start))
    net.cut = {"b"}
    leader = elected(net)
    assert leader is a
    net.tick(2)
    assert c.role is Role.FOLLOWER and c.commit_index == a.commit_index >= 3


def test_a_node_outside_the_configuration_hears_a_leader_it_does_not_know() -> None:
    """d, started knowing only {a, b, c}, is added by leader e, which was added after d's
    starting configuration: d takes e's appends all the same."""
    d = new("d")
    entries = (cmd(1, 1), conf(2, 1, ABC, ("e",)), conf(3, 1, (*ABC, "e")))
    d.step(AppendRequest(2, "e", "d", 0, 0, (*entries, conf(4, 2, (*ABC, "e"), ("d",))), 4))
    rd = drain(d)
    assert sent(rd, AppendResponse)[0].success and d.leader == "e"
    assert d.learners == ("d",) and d.role is Role.LEARNER


# -- what a peer may not slip in ------------------------------------------------------------


def test_an_append_with_a_malformed_configuration_is_dropped() -> None:
    r = new("b")
    bad = Entry(1, 1, EntryKind.CONFIG, b"\x93\x01\x90\x90")  # no voters
    r.step(AppendRequest(1, "a", "b", 0, 0, (bad,), 0))
    assert r.last_index == 0 and not drain(r).messages


def test_a_snapshot_with_a_malformed_configuration_is_dropped() -> None:
    r = new("b")
    snap = Snapshot(5, 1, b"s", Membership(("a", "a")))
    r.step(SnapshotRequest(1, "a", "b", snap))
    assert r.last_index == 0 and not sent(drain(r), AppendResponse)


# -- durability --------------------------------------------------------------------------


def test_a_snapshot_records_the_configuration_of_its_index() -> None:
    net = group("a", "b", "c", "d")
    leader = settled(net)
    before = leader.applied_index
    index = change(net, leader, ABC, ("d",))
    net.tick(1)
    assert leader.membership_at(before) == Membership(ABC)
    assert leader.membership_at(index) == Membership(ABC, ("d",))
    snap = leader.compact(leader.applied_index, b"state")
    assert snap is not None and snap.membership == Membership(ABC, ("d",))
    with pytest.raises(ValueError):
        leader.membership_at(before)  # compacted away
    status = leader.status()
    assert status["voters"] == list(ABC) and status["learners"] == ["d"]


def test_restart_rebuilds_the_configuration_from_snapshot_and_entries() -> None:
    snap = Snapshot(3, 1, b"s", Membership(ABC, ("d",)))
    entries = (cmd(4, 1), conf(5, 1, (*ABC, "d")), cmd(6, 2))
    r = new("d", Restored(HardState(2, None, 4), snap, entries))
    assert set(r.voters) == {"a", "b", "c", "d"} and r.role is Role.FOLLOWER
    assert r.membership_index == 5 and r.membership_at(4) == Membership(ABC, ("d",))
    only_snapshot = new("d", Restored(HardState(2, None, 3), snap, ()))
    assert only_snapshot.membership == Membership(ABC, ("d",))
    assert only_snapshot.role is Role.LEARNER


def test_a_snapshot_without_a_configuration_falls_back_to_the_raft_config() -> None:
    old = Snapshot(3, 1, b"s")  # written before memberships were recorded
    r = new("a", Restored(HardState(1, None, 3), old, ()))
    assert r.membership == Membership(ABC) and r.role is Role.FOLLOWER
    after = new("a", Restored(HardState(1, None, 3), old, (conf(4, 1, ("a", "b")),)))
    assert after.voters == ("a", "b")


def test_a_follower_installing_a_snapshot_takes_its_configuration() -> None:
    r = new("c")
    r.step(SnapshotRequest(2, "a", "c", Snapshot(9, 2, b"s", Membership(("a", "b"), ("c",)))))
    rd = drain(r)
    assert rd.snapshot is not None and rd.snapshot.membership == Membership(("a", "b"), ("c",))
    assert r.role is Role.LEARNER and r.membership_index == 9


def test_a_lagging_learner_added_after_compaction_gets_the_snapshot() -> None:
    net = group("a", "b", "c", "d")
    leader = settled(net)
    for k in range(5):
        leader.propose(b"%d" % k)
    net.tick(2)
    leader.compact(leader.applied_index, b"state")
    change(net, leader, ABC, ("d",))
    (snap,) = net.snapshots["d"]
    assert snap.membership == Membership(ABC)  # as of its index, before d was added
    assert net.nodes["d"].learners == ("d",)


def test_restoring_a_malformed_configuration_entry_is_refused() -> None:
    bad = Entry(1, 1, EntryKind.CONFIG, b"junk")
    with pytest.raises(ValueError, match="configuration entry 1"):
        new("a", Restored(HardState(1), None, (bad,)))


def test_a_node_outside_its_starting_configuration_is_allowed() -> None:
    r = Raft(RaftConfig(id="x", voters=("a",)), random.Random(0))
    assert r.role is Role.LEARNER and not campaigns(r)
    r.step(VoteRequest(1, "a", "x", 0, 0, False))
    assert sent(drain(r), VoteResponse)[0].granted  # it may be a voter it has not heard of


# -- why a new leader commits an entry of its term before changing anything --------------


def _propose_membership_at_once(
    self: Raft, voters: tuple[str, ...], learners: tuple[str, ...] = ()
) -> int:
    """The bug: ``Raft.propose_membership`` without the rule that the leader has
    committed an entry of its own term first."""
    if self._role is not Role.LEADER:
        raise NotLeader(self._leader)
    new = Membership(tuple(voters), tuple(learners))
    membership.check_change(self._conf, new, self._caught_up)
    if self._log.membership_index > self._log.commit:
        raise MembershipChangeRefused("pending", retryable=True)
    index = self._log.last_index + 1
    self._log.append(Entry(index, self._term, EntryKind.CONFIG, membership.encode(new)))
    self._sync_membership()
    return index


class Hand:
    """Messages routed by hand between nodes of a ``Net``; what they apply is recorded
    in the net's ``applied`` lists, as ``Net`` does."""

    def __init__(self, net: Net) -> None:
        self.net = net

    def take(self, r: Raft) -> Ready:
        rd = drain(r)
        self.net.applied[r.id] += rd.committed
        return rd

    def exchange(self, frm: Raft, *to: Raft) -> None:
        """Deliver what ``frm`` has for ``to`` (the rest is lost), then their answers."""
        rd = self.take(frm)
        for r in to:
            for m in rd.messages:
                if m.to == r.id:
                    r.step(m)
            for m in self.take(r).messages:
                if m.to == frm.id:
                    frm.step(m)

    def tick_until(self, r: Raft, role: Role, others: tuple[Raft, ...] = ()) -> None:
        """Tick ``r`` and ``others`` (whose messages are lost) until ``r`` has ``role``."""
        for _ in range(4 * E):
            for o in others:
                o.tick()
                self.take(o)
            r.tick()
            if r.role is role:
                return
        raise AssertionError(f"{r.id} never became {role.name}")


@pytest.mark.parametrize("mutated", [False, True], ids=["correct", "mutated"])
def test_a_leader_that_changes_membership_before_committing_in_its_term_loses_a_commit(
    mutated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gap in single-server changes that Ongaro found after the thesis. Voters a b c
    d, learner e. Leader a promotes e (C1), which only e receives. b is elected by c and
    d (d hears nothing more from it) and, before its NOOP is committed, removes d (C2),
    which b and c commit. a comes back and is elected under C1 by d and e: it overwrites
    what b and c applied, and the checker sees two entries applied at one index. With
    the rule, b may not propose C2 before a majority holds its NOOP, and nothing it
    could have committed is lost."""
    if mutated:
        monkeypatch.setattr(Raft, "propose_membership", _propose_membership_at_once)
    start = {"voters": ("a", "b", "c", "d"), "learners": ("e",)}
    a, b, c, d, e = (new(i, **start) for i in "abcde")
    net = Net(a, b, c, d, e)
    hand = Hand(net)
    hand.tick_until(a, Role.PRE_CANDIDATE)
    net.flush()
    assert a.role is Role.LEADER and e.commit_index == a.commit_index == 1
    net.cut = {"b", "c", "d"}
    a.propose_membership(("a", "b", "c", "d", "e"))  # C1 at index 2
    net.flush()
    assert e.last_index == 2 and b.last_index == 1

    # a and e drop out; b wins the votes of c and d, and its NOOP reaches c only.
    hand.tick_until(b, Role.PRE_CANDIDATE, others=(c, d))
    hand.exchange(b, c, d)  # pre-votes
    hand.exchange(b, c, d)  # votes
    assert b.role is Role.LEADER and b.term == 2
    hand.exchange(b, c)
    assert b.commit_index == 1, "its NOOP is on b and c only: no majority of a b c d"
    if mutated:
        b.propose_membership(("a", "b", "c"))  # C2 at index 3: quorum b and c
        hand.exchange(b, c)
        hand.exchange(b, c)
        assert b.commit_index == c.commit_index == 3
    else:
        with pytest.raises(MembershipChangeRefused, match="entry of its term"):
            b.propose_membership(("a", "b", "c"))

    # b and c drop out; a, d and e elect a leader under C1.
    net.cut = {"b", "c"}
    for _ in range(10 * E):
        net.tick()
        if any(r.role is Role.LEADER and r.term > 2 for r in (a, d, e)):
            break
    net.tick(2)
    checker = RaftChecker()
    for node in "abcde":
        checker.observe_snapshot(node, 0)
    observe = [(i, entry) for i in "abcde" for entry in net.applied[i]]
    if mutated:
        with pytest.raises(SafetyViolation, match="state-machine safety at index 2"):
            for node, entry in observe:
                checker.observe_applied(node, entry)
    else:
        for node, entry in observe:
            checker.observe_applied(node, entry)
        net.cut = set()
        net.tick(4 * E)
        assert len({r.last_index for r in net.nodes.values()}) == 1


# -- a voter that lost its Raft state ----------------------------------------------------


def abstaining(node_id: str) -> Raft:
    cfg = RaftConfig(node_id, ABC, (), election_ticks=E, heartbeat_ticks=1, abstain=True)
    return Raft(cfg, random.Random(7))


def test_a_voter_that_lost_its_state_neither_votes_nor_campaigns_until_re_added() -> None:
    c = abstaining("c")
    assert not campaigns(c)
    c.step(VoteRequest(5, "b", "c", 0, 0, False))
    c.step(VoteRequest(5, "b", "c", 0, 0, True))
    answers = [m for m in drain(c).messages if isinstance(m, VoteResponse)]
    assert answers and not any(m.granted for m in answers)
    # A configuration that still lists it as a voter changes nothing...
    c.step(AppendRequest(6, "a", "c", 0, 0, (conf(1, 6, ABC),), 1))
    drain(c)
    assert not campaigns(c)
    # ...removed, then added back as a learner and promoted, it takes part again.
    c.step(AppendRequest(6, "a", "c", 1, 6, (conf(2, 6, ("a", "b")),), 2))
    c.step(AppendRequest(6, "a", "c", 2, 6, (conf(3, 6, ("a", "b"), ("c",)),), 3))
    c.step(AppendRequest(6, "a", "c", 3, 6, (conf(4, 6, ABC),), 4))
    drain(c)
    assert c.role is Role.FOLLOWER and campaigns(c)


def test_a_follower_whose_log_was_wiped_catches_up_from_the_same_leader() -> None:
    """It rejects the heartbeat anchored at what it once acknowledged: that rejection is
    news, not a stale answer, and the leader probes again from where it has nothing."""
    for fresh in (lambda i: new(i), abstaining):
        net = group("a", "b", "c")
        leader = settled(net)
        for i in range(5):
            leader.propose(b"x%d" % i)
        net.tick(3)
        victim = next(i for i in net.nodes if i != leader.id)
        net.nodes[victim] = fresh(victim)
        net.tick(6)
        assert net.nodes[victim].last_index == leader.last_index
        assert leader.commit_index == leader.last_index  # never moved back
