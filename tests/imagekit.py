"""Shared tools for image-format tests: real images made by qemu-img, fed to our readers."""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.images.base import ImageReader, MemorySpill, ReaderLimits

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-img") is None and not __import__("os").environ.get("CI"),
    reason="qemu-img not installed (the README's test command installs it)",
)


def make_mixed_raw(path: Path, size: int, seed: int = 1, block: int = 64 * 1024) -> bytes:
    """A raw disk of ``size`` bytes with holes, duplicate blocks, text and random data.

    ``size`` need not be a multiple of anything; the result is also returned.
    """
    rng = random.Random(seed)
    buf = bytearray(size)
    dup = rng.randbytes(block)
    text = (b"the quick brown fox jumps over the lazy dog %d\n" * 2000)[:block]
    pos = 0
    while pos < size:
        kind = rng.choice(("hole", "hole", "dup", "text", "random", "partial"))
        n = min(block * rng.randint(1, 4), size - pos)
        if kind == "dup":
            piece = (dup * (n // block + 1))[:n]
        elif kind == "text":
            piece = (text * (n // block + 1))[:n]
        elif kind == "random":
            piece = rng.randbytes(n)
        elif kind == "partial":
            # a few bytes inside an otherwise empty region: not a whole hole, not a whole block
            piece = bytes(n)
            off = rng.randrange(n)
            piece = piece[:off] + b"\xa5" + piece[off + 1 :]
        else:
            piece = bytes(n)
        buf[pos : pos + n] = piece
        pos += n
    path.write_bytes(bytes(buf))
    return bytes(buf)


def qemu_img(*args: str | Path) -> str:
    """Run qemu-img and return its stdout; raise with its stderr on failure."""
    out = subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(map(str, args))} failed: {out.stderr}")
    return out.stdout


def convert(src: Path, dst: Path, fmt: str, *options: str) -> Path:
    """``qemu-img convert -O fmt [-o options] src dst`` from a raw source."""
    args: list[str | Path] = ["convert", "-f", "raw", "-O", fmt]
    for opt in options:
        args += ["-c"] if opt == "-c" else ["-o", opt]
    qemu_img(*args, src, dst)
    return dst


def qemu_raw(image: Path, tmp: Path) -> bytes:
    """What ``qemu-img convert -O raw`` makes of ``image``: the reference result."""
    out = tmp / (image.name + ".ref.raw")
    qemu_img("convert", "-O", "raw", image, out)
    return out.read_bytes()


def read_through(
    make_reader: Callable[[ReaderLimits, MemorySpill], ImageReader],
    image: Path,
    seed: int = 0,
    limits: ReaderLimits | None = None,
) -> bytes:
    """Feed ``image`` to a reader in random chunk sizes; return the raw disk it describes.

    Checks the contract on the way: runs stay inside the virtual size and never overlap.
    """
    rng = random.Random(seed)
    reader = make_reader(limits or ReaderLimits(), MemorySpill())
    data = image.read_bytes()
    runs: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        n = rng.choice((1, 7, 512, 4096, 65536, 1 << 20, rng.randint(1, 300_000)))
        for run in reader.feed(data[pos : pos + n]):
            runs.append((run.offset, bytes(run.data)))
        pos += n
    runs.extend((run.offset, bytes(run.data)) for run in reader.finish())
    size = reader.virtual_size
    assert size is not None, "reader finished without knowing the virtual size"
    out = bytearray(size)
    covered: list[tuple[int, int]] = []
    for off, chunk in runs:
        assert off >= 0 and off + len(chunk) <= size, f"run {off}+{len(chunk)} outside {size}"
        out[off : off + len(chunk)] = chunk
        covered.append((off, off + len(chunk)))
    covered.sort()
    for (_, end), (start, _) in itertools.pairwise(covered):
        assert start >= end, "runs overlap"
    return bytes(out)


def read_all(
    make_reader: Callable[[ReaderLimits, MemorySpill], ImageReader],
    blob: bytes,
    limits: ReaderLimits | None = None,
) -> list[tuple[int, bytes]]:
    """Feed a whole in-memory blob (for malformed-input tests); return the runs."""
    reader = make_reader(limits or ReaderLimits(), MemorySpill())
    runs = [(r.offset, bytes(r.data)) for r in reader.feed(blob)]
    runs += [(r.offset, bytes(r.data)) for r in reader.finish()]
    return runs
