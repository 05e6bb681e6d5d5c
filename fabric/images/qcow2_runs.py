"""Guest runs cut from qcow2 data: bounded in size, clipped to the disk, zeros dropped."""

from __future__ import annotations

from collections.abc import Iterator

from fabric.images.base import Run, is_zero
from fabric.images.qcow2_tables import DataRun, mask_spans

RUN_MAX_BYTES = 1024 * 1024
"""Largest run emitted at once."""


def guest_runs(guest: int, data: memoryview, virtual_bytes: int) -> Iterator[Run]:
    """Runs of at most RUN_MAX_BYTES for ``data`` at ``guest``; all-zero runs are dropped.

    The runs are views of ``data`` (a fed chunk or an inflated cluster), not copies.
    """
    end = min(guest + len(data), virtual_bytes)
    for at in range(guest, end, RUN_MAX_BYTES):
        piece = data[at - guest : min(end, at + RUN_MAX_BYTES) - guest]
        if not is_zero(piece):
            yield Run(at, piece)


def stored_runs(
    run: DataRun, pos: int, piece: memoryview, cluster_bytes: int, virtual_bytes: int
) -> Iterator[Run]:
    """The guest runs of ``run`` found in ``piece``, which sits at file offset ``pos``."""
    into = pos - run.host
    if run.mask is None:
        yield from guest_runs(run.guest + into, piece, virtual_bytes)
        return
    for start, end in mask_spans(run.mask, cluster_bytes):
        lo, hi = max(start, into), min(end, into + len(piece))
        if lo < hi:
            yield from guest_runs(run.guest + lo, piece[lo - into : hi - into], virtual_bytes)


def needed_end(run: DataRun, virtual_bytes: int) -> int:
    """File offset just past the last byte of ``run`` that the guest can see."""
    visible = min(run.length, virtual_bytes - run.guest)
    if run.mask is None:
        return run.host + visible
    spans = mask_spans(run.mask, run.length)
    ends = [min(end, visible) for start, end in spans if start < visible]
    return run.host + max(ends) if ends else run.host
