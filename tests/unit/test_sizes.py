"""Sizes as users type them, for ``fabric vdisk create --size`` and the console's form."""

from __future__ import annotations

import pytest

from fabric.sizes import parse_size


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
