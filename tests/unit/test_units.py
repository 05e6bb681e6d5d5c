"""Sizes, rates and durations as users type them, for the CLI and the console's forms."""

from __future__ import annotations

import pytest

from fabric.units import parse_rate, parse_seconds, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        ("4K", 4096),
        ("10G", 10 << 30),
        ("10g", 10 << 30),
        ("1GiB", 1 << 30),
        ("3MB", 3 << 20),
        (" 2T ", 2 << 40),
        ("7B", 7),
    ],
)
def test_a_size_with_a_binary_unit_is_its_bytes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "1.5G", "-1G", "10X", "G", "10 G"])
def test_anything_else_is_refused_with_what_was_given(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_rates_and_durations_read_as_the_cli_documents_them() -> None:
    assert parse_rate("200MB/s") == 200_000_000 and parse_rate("1GiB/s") == 1 << 30
    assert parse_rate("unlimited") == parse_rate("0") == 0
    assert parse_seconds("500ms") == 0.5 and parse_seconds("30m") == 1800.0
    assert parse_seconds("2") == 2.0 and parse_seconds("1d") == 86400.0
    for bad, parse in (("fast", parse_rate), ("-1MB/s", parse_rate), ("soon", parse_seconds)):
        with pytest.raises(ValueError, match="not a"):
            parse(bad)
