"""The console's charts: what the leader's samples say (rates from byte counters that
restart with their process), and the SVG drawn from them."""

from __future__ import annotations

import re
from typing import Any

from nodes.console.charts import CHARTS, axis_unit, describe, draw
from nodes.services.trends import Trends

MiB = 1 << 20
USAGE = {"disk_used_bytes": 3 * MiB, "disk_capacity_bytes": 100 * MiB, "logical_bytes": MiB}


def test_a_rate_is_the_bytes_every_node_moved_over_the_time_between_samples() -> None:
    t = Trends(kept=10)
    t.add(0.0, 1000.0, USAGE, {"n1": (0, 0), "n2": (100, 0)})
    t.add(10.0, 1010.0, USAGE, {"n1": (40 * MiB, 10 * MiB), "n2": (100 + 20 * MiB, 0)})
    first, second = t.samples
    assert first.written_bytes_per_s is None and first.read_bytes_per_s is None
    assert second.written_bytes_per_s == 6 * MiB and second.read_bytes_per_s == MiB
    assert second.logical_bytes == MiB and second.disk_used_bytes == 3 * MiB


def test_a_restarted_node_counts_its_new_total_and_a_new_node_waits_a_sample() -> None:
    t = Trends(kept=10)
    t.add(0.0, 0.0, USAGE, {"n1": (50 * MiB, 0)})
    # n1 restarted (its total went down) and n2 joined with bytes from before the window.
    t.add(1.0, 1.0, USAGE, {"n1": (2 * MiB, 0), "n2": (900 * MiB, 0)})
    t.add(2.0, 2.0, USAGE, {"n1": (3 * MiB, 0), "n2": (901 * MiB, 0)})
    rates = [s.written_bytes_per_s for s in t.samples]
    assert rates == [None, 2 * MiB, 2 * MiB]


def test_only_the_newest_samples_are_kept_and_clearing_starts_the_rates_again() -> None:
    t = Trends(kept=3)
    for i in range(5):
        t.add(float(i), float(i), USAGE, {"n1": (i * MiB, 0)})
    assert [s.wall for s in t.samples] == [2.0, 3.0, 4.0] and t.taken == 5
    assert [s["wall"] for s in t.to_json(1)["samples"]] == [4.0]
    assert t.to_json(0)["samples"] == [] and len(t.to_json(99)["samples"]) == 3
    t.clear()
    t.add(9.0, 9.0, USAGE, {"n1": (9 * MiB, 0)})
    assert [s.written_bytes_per_s for s in t.samples] == [None]


def samples(n: int) -> list[dict[str, Any]]:
    t = Trends(kept=n)
    for i in range(n):
        usage = {**USAGE, "logical_bytes": i * 300 * MiB, "physical_bytes": i * 600 * MiB}
        t.add(10.0 * i, 1.7e9 + 10 * i, usage, {"n1": (i * i * MiB, i * MiB)})
    return t.to_json(n)["samples"]  # type: ignore[no-any-return]


def test_each_chart_draws_its_lines_on_a_binary_unit_axis() -> None:
    drawn = samples(30)
    for name, chart in CHARTS.items():
        svg = draw(chart, drawn).decode()
        assert svg.startswith("<?xml") and "<svg" in svg, name
        texts = set(re.findall(r"<text[^>]*>([^<]*)</text>", svg))
        assert {line.label for line in chart.lines} <= texts, (name, texts)
        assert "UTC" in " ".join(texts)
    capacity = draw(CHARTS["capacity"], drawn).decode()
    assert "GiB" in re.findall(r"<text[^>]*>([^<]*)</text>", capacity)  # 17 GiB physical
    throughput = draw(CHARTS["throughput"], drawn).decode()
    assert "MiB/s" in re.findall(r"<text[^>]*>([^<]*)</text>", throughput)


def test_the_same_samples_draw_the_same_bytes() -> None:
    drawn = samples(12)
    assert draw(CHARTS["capacity"], drawn) == draw(CHARTS["capacity"], drawn)


def test_a_chart_with_one_sample_and_no_rate_yet_still_draws() -> None:
    drawn = samples(1)
    assert b"<svg" in draw(CHARTS["throughput"], drawn)
    assert describe(CHARTS["throughput"], drawn) == (
        "Disk throughput: no rate yet (a rate needs two samples)"
    )
    assert describe(CHARTS["capacity"], []) == "Capacity: no samples yet"


def test_the_alt_text_says_the_newest_values() -> None:
    said = describe(CHARTS["throughput"], samples(3))
    assert said == (
        "Disk throughput, newest sample: written (every copy, rebuilds) 307.2 KiB/s, "
        "read (clients, rebuilds, scrubs) 102.4 KiB/s"
    )


def test_the_axis_counts_in_the_unit_that_keeps_the_largest_value_under_1024() -> None:
    assert axis_unit(0) == ("B", 1.0)
    assert axis_unit(1023) == ("B", 1.0)
    assert axis_unit(1024) == ("KiB", 1024.0)
    assert axis_unit(5 * MiB) == ("MiB", float(MiB))
    assert axis_unit(2.0**60) == ("TiB", 2.0**40)
