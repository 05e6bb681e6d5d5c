"""The Prometheus naming conventions every ``/metrics`` family keeps, as one check.

https://prometheus.io/docs/practices/naming/: an application prefix (``fabric_``), base
units as the last word (``_bytes``, ``_seconds``, ``_ratio``; a point in time is
``_timestamp_seconds``), ``_total`` on every counter sample and nowhere else, and one label
name per concept: ``node``, ``disk``, ``container`` (never ``node_id``, ``peer`` or
``disk_index``). Users' dashboards and the shipped one are written against these.
"""

from __future__ import annotations

import re

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

NAME = re.compile(r"^fabric_[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
BASE_UNITS = frozenset({"bytes", "seconds", "ratio"})
NOT_BASE_UNITS = frozenset(
    {
        *("ms", "msec", "millis", "milliseconds", "us", "micros", "microseconds", "ns"),
        *("nanoseconds", "minutes", "hours", "days", "bits", "percent", "pct"),
        *("kb", "kib", "mb", "mib", "gb", "gib", "tb", "tib", "kilobytes", "megabytes"),
    }
)
SUFFIXES_OF_OTHER_TYPES = ("_total", "_count", "_sum", "_bucket", "_created", "_info")
LABELS = frozenset({"node", "disk", "container", "source", "check", "reason"})
"""``node``/``disk``/``container`` name what a figure is about; ``source`` is the node a
rebuild read from; ``check`` and ``reason`` say why a peer's message was refused."""


def violations(text: str) -> list[str]:
    """Every way the families in ``text`` (the exposition format) break the conventions."""
    out: list[str] = []
    for family in text_string_to_metric_families(text):
        out += [f"{family.name} ({family.type}): {why}" for why in _family(family)]
    return out


def _family(family: Metric) -> list[str]:
    name, kind, samples = family.name, family.type, family.samples
    why: list[str] = []
    if not NAME.match(name):
        why.append("not a fabric_ name in snake_case")
    words = name.split("_")
    if bad := NOT_BASE_UNITS.intersection(words):
        why.append(f"unit {sorted(bad)}: use a base unit (bytes, seconds, ratio)")
    if misplaced := BASE_UNITS.intersection(words[:-1]):
        why.append(f"unit {sorted(misplaced)} is not the last word")
    if "timestamp" in words and words[-1] != "seconds":
        why.append("a timestamp is in seconds (_timestamp_seconds)")
    if not family.documentation:
        why.append("no HELP text")
    if kind == "counter":
        why += [
            f"sample {s.name} does not end in _total" for s in samples if s.name != name + "_total"
        ]
    elif kind == "gauge":
        if name.endswith(SUFFIXES_OF_OTHER_TYPES):
            why.append("a gauge named like a counter, summary or info")
        why += [f"sample {s.name} is not named as its family" for s in samples if s.name != name]
    else:
        why.append("neither a counter nor a gauge (declare its type)")
    for sample in samples:
        labels = set(sample.labels)
        if extra := labels - LABELS:
            why.append(f"label {sorted(extra)} is not one of {sorted(LABELS)}")
        if name.startswith("fabric_disk_") and not {"node", "disk"} <= labels:
            why.append(f"a disk's figure without its node and disk labels: {sample.labels}")
        if name.startswith("fabric_container_") and "container" not in labels:
            why.append(f"a container's figure without its container label: {sample.labels}")
    return sorted(set(why))


def series_names(text: str) -> set[str]:
    """The names a query can use (a counter's end in ``_total``), samples or not yet."""
    return {
        f.name + "_total" if f.type == "counter" else f.name
        for f in text_string_to_metric_families(text)
    }
