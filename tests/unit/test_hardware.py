"""A scenario's ``[hardware]``: no table means no model; every value is checked and a bad
one is refused with its line and key."""

from __future__ import annotations

import pytest

from fabric.hardware import DEFAULT_DISK_BYTES, MB, DiskSpec, HardwareSpec, NetworkSpec
from fabric.scenario import ScenarioError, parse_scenario

BASE = """\
duration_s = 10

[[workloads]]
kind = "kv-cas"
"""

HARDWARE = """
[hardware.disk]
capacity_bytes = 4_000_000_000
read_latency_ms = 0.1
write_latency_ms = 0.2
sync_latency_ms = 2
bandwidth_mb_s = 100

[hardware.network]
latency_ms = 0.1
jitter_ms = 0.5
jitter = "exponential"
bandwidth_mb_s = 1250
cross_rack_latency_ms = 0.4
cross_rack_bandwidth_mb_s = 125
"""


def test_no_hardware_table_means_no_model() -> None:
    s = parse_scenario(BASE, "s.toml")
    assert s.hardware == HardwareSpec(disk=None, network=None)


def test_every_setting_is_read_with_its_unit() -> None:
    hw = parse_scenario(BASE + HARDWARE, "s.toml").hardware
    assert hw.disk == DiskSpec(4_000_000_000, 0.1, 0.2, 2.0, 100.0)
    assert hw.network == NetworkSpec(0.1, 0.5, "exponential", 1250.0, 0.4, 125.0)
    # 100 MB/s and 0.2 ms: a 1 MB write keeps the device busy 10.2 ms.
    assert hw.disk.service_s("write", MB) == pytest.approx(0.0102)
    assert hw.disk.service_s("sync", 0) == pytest.approx(0.002)
    assert hw.network.link(cross_rack=False) == (pytest.approx(0.0001), 1250 * MB)
    assert hw.network.link(cross_rack=True) == (pytest.approx(0.0004), 125 * MB)


def test_an_empty_table_takes_the_documented_defaults() -> None:
    hw = parse_scenario(BASE + "[hardware.disk]\n[hardware.network]\n", "s.toml").hardware
    assert hw.disk == DiskSpec(DEFAULT_DISK_BYTES, 0.0, 0.0, 0.0, 0.0)
    assert hw.disk.service_s("write", 1 << 30) == 0  # bandwidth 0: no limit
    # The network's defaults are the simulator's draw: 0.2 ms plus up to 1.8 ms, no limit.
    assert hw.network == NetworkSpec(0.2, 1.8, "uniform", 0.0, None, None)
    # Cross-rack values not given: the same as inside a rack.
    assert hw.network.link(True) == hw.network.link(False)


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("bandwidth_mb_s = 100", "bandwidth_mb_s = -1", "s.toml:11: hardware.disk.bandwidth_mb_s"),
        ("sync_latency_ms = 2", "sync_latency_ms = '2'", "s.toml:10: hardware.disk.sync_latency"),
        ("capacity_bytes = 4_000_000_000", "capacity_bytes = 1.5", "s.toml:7: hardware.disk.cap"),
        ('jitter = "exponential"', 'jitter = "pareto"', "s.toml:16: hardware.network.jitter"),
        ("\nlatency_ms = 0.1", "\nlatency_ms = 1e9", "s.toml:14: hardware.network.latency_ms"),
        ("\nlatency_ms = 0.1", "\nlatency_ms = true", "s.toml:14: hardware.network.latency_"),
        (
            "cross_rack_bandwidth_mb_s = 125",
            "cross_rack_bandwidth_mb_s = 1e12",
            "s.toml:19: hardware.network.cross_rack_bandwidth_mb_s: must be 0..1e+06",
        ),
        ("read_latency_ms = 0.1", "read_lat_ms = 0.1", "s.toml:8: hardware.disk.read_lat_ms"),
        ("[hardware.network]", "[hardware.net]", "s.toml:13: hardware.net: unknown setting"),
    ],
)
def test_a_bad_value_names_its_line_and_key(old: str, new: str, where: str) -> None:
    text = BASE + HARDWARE
    assert old in text
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text.replace(old, new, 1), "s.toml")
    assert str(err.value).startswith(where), str(err.value)


def test_hardware_must_be_tables() -> None:
    with pytest.raises(ScenarioError, match=r"hardware.disk: must be a table"):
        parse_scenario(BASE + "[hardware]\ndisk = 5\n", "s.toml")
    with pytest.raises(ScenarioError, match=r"hardware: must be a table"):
        parse_scenario("hardware = 1\n" + BASE, "s.toml")
