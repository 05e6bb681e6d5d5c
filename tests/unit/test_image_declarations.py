"""What a request may declare about an image: the formats, and a type that agrees."""

from __future__ import annotations

from typing import Any

import pytest

from fabric.errors import BadRequest, Unprocessable
from fabric.images.declared import FORMATS
from nodes.openapi import IMAGE_REQUEST
from nodes.services.images import declared_kind
from shell.cli import build_parser


def test_the_cli_and_the_api_offer_exactly_the_formats_we_read() -> None:
    assert IMAGE_REQUEST["properties"]["source_format"]["enum"] == list(FORMATS)
    for verb, source in (("upload", "disk.img"), ("import", "http://127.0.0.1/d")):
        for fmt in FORMATS:
            args = build_parser().parse_args(
                ["image", verb, source, "--name", "x", "--format", fmt]
            )
            assert args.format == fmt
        with pytest.raises(SystemExit):
            build_parser().parse_args(["image", verb, source, "--name", "x", "--format", "vdi"])


@pytest.mark.parametrize(
    ("body", "declared"),
    [
        ({}, (None, None)),
        ({"source_format": "qcow2"}, ("qcow2", None)),
        ({"source_format": "iso", "image_type": "ISO"}, ("iso", "ISO")),
        ({"source_format": "vhdx", "image_type": "DISK"}, ("vhdx", "DISK")),
        ({"image_type": "ISO"}, (None, "ISO")),
    ],
)
def test_declarations_that_agree(body: dict[str, Any], declared: tuple[Any, Any]) -> None:
    assert declared_kind(body) == declared


@pytest.mark.parametrize(
    ("body", "error", "fragment"),
    [
        ({"source_format": "vdi"}, BadRequest, "source_format must be one of raw"),
        ({"image_type": "TAPE"}, BadRequest, "DISK or ISO"),
        ({"source_format": "qcow2", "image_type": "ISO"}, Unprocessable, "qcow2"),
        ({"source_format": "iso", "image_type": "DISK"}, Unprocessable, "DISK"),
    ],
)
def test_declarations_that_contradict_themselves(
    body: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        declared_kind(body)
