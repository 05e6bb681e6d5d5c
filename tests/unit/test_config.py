"""A user editing a cluster config by hand gets errors that say where to look."""

from __future__ import annotations

import pytest

from fabric.config import (
    LONG_RUN_TIMEOUTS,
    TIMINGS,
    ConfigError,
    default_config_text,
    parse_config,
    render_config,
    sized_config,
)


def test_embedded_default_is_five_nodes_two_disks_three_voters() -> None:
    cfg = parse_config(default_config_text())
    assert [n.id for n in cfg.nodes] == ["n1", "n2", "n3", "n4", "n5"]
    assert all(len(n.disks) == 2 for n in cfg.nodes)
    assert cfg.voters == ("n1", "n2", "n3")
    assert cfg.learners == ("n4", "n5")


def test_rendered_config_parses_back_to_the_same_cluster() -> None:
    cfg = sized_config(parse_config(default_config_text()), 7, base_port=9000)
    assert parse_config(render_config(cfg)) == cfg
    assert [n.port for n in cfg.nodes] == list(range(9000, 9007))


@pytest.mark.parametrize("n", [0, 10_001, -1])
def test_node_count_outside_1_to_10000_is_refused(n: int) -> None:
    with pytest.raises(ConfigError, match="--nodes"):
        sized_config(parse_config(default_config_text()), n)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (("port = 7103", 'port = "x"'), "cfg.toml:33: nodes[2].port: must be an integer"),
        (("port = 7104", "port = 70000"), "cfg.toml:39: nodes[3].port: 70000 is not a TCP port"),
        (('id = "n2"', 'id = "n1"'), "cfg.toml:25: nodes[1].id: duplicate node id"),
        (
            ('voters = ["n1", "n2", "n3"]', 'voters = ["n1", "n9"]'),
            "cfg.toml:6: cluster.voters: 'n9' is not a node",
        ),
        (("extent_bytes = 1048576", "extent_bytes = 1000"), "cfg.toml:7: cluster.extent_bytes"),
        (("tick_ms = 50", "tick_ms = -5"), "cfg.toml:11: timeouts.tick_ms: must be positive"),
        (("tick_ms = 50", "tik_ms = 50"), "timeouts.tik_ms: unknown setting"),
        (("[cluster]", "[cluster"), "cfg.toml: not valid TOML"),
    ],
)
def test_malformed_config_names_key_and_line(edit: tuple[str, str], fragment: str) -> None:
    text = default_config_text().replace(*edit, 1)
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.toml")
    assert fragment in str(err.value)


def test_unknown_node_id_lists_the_known_ones() -> None:
    cfg = parse_config(default_config_text())
    with pytest.raises(ConfigError, match=r"unknown node id 'n9'.*n1, n2, n3, n4, n5"):
        cfg.node("n9")


def test_debug_settings_are_off_unless_set_and_survive_a_rewrite() -> None:
    cfg = parse_config(default_config_text())
    assert cfg.debug.enabled() == [] and "[debug]" not in render_config(cfg)
    broken = parse_config(default_config_text() + "\n[debug]\nack_before_commit = true\n")
    assert broken.debug.enabled() == ["ack_before_commit"]
    assert parse_config(render_config(broken)) == broken  # `fabric up` keeps it, and warns


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ("[debug]\nack_before_commit = 1\n", "debug.ack_before_commit: must be a bool"),
        ("[debug]\nskip_fsync = true\n", "debug.skip_fsync: unknown setting"),
    ],
)
def test_debug_settings_are_checked(table: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_config(default_config_text() + "\n" + table)


def test_background_scale_is_a_positive_timeout_setting() -> None:
    base = default_config_text()
    cfg = parse_config(base.replace("[timeouts]\n", "[timeouts]\nbackground_scale = 5\n", 1))
    assert cfg.timeouts.background_scale == 5
    assert parse_config(render_config(cfg)).timeouts.background_scale == 5  # round trip
    assert parse_config(base).timeouts.background_scale == 1
    with pytest.raises(ConfigError, match="background_scale"):
        parse_config(base.replace("[timeouts]\n", "[timeouts]\nbackground_scale = 0\n", 1))
    # The named timings keep the orderings the parser demands of any config.
    for t in TIMINGS.values():
        assert t.degraded_after_ms < t.down_after_ms
        assert t.heartbeat_ticks < t.election_ticks
        assert t.node_heartbeat_ms * 2 < t.degraded_after_ms
        # A restarted learner hears of the leader well before it could be called DEGRADED.
        learner_beat_ms = t.tick_ms * t.heartbeat_ticks * t.learner_heartbeat_every
        assert learner_beat_ms * 2 < t.degraded_after_ms
    assert TIMINGS["long-run"] is LONG_RUN_TIMEOUTS


def test_learner_heartbeat_every_is_a_positive_timeout_setting() -> None:
    base = default_config_text()
    cfg = parse_config(
        base.replace("[timeouts]\n", "[timeouts]\nlearner_heartbeat_every = 10\n", 1)
    )
    assert cfg.timeouts.learner_heartbeat_every == 10
    assert parse_config(render_config(cfg)).timeouts.learner_heartbeat_every == 10
    assert parse_config(base).timeouts.learner_heartbeat_every == 1
    with pytest.raises(ConfigError, match="learner_heartbeat_every"):
        parse_config(base.replace("[timeouts]\n", "[timeouts]\nlearner_heartbeat_every = 0\n", 1))
