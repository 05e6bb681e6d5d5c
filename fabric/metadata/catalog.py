"""Applying the image catalog's commands: images, their unique names, import tasks.

Keys: ``image/<id>`` (``ImageRecord``), ``image-name/<name>`` (its id), ``task/<id>``
(``TaskRecord``). Every update is compare-and-set on the record's state and must be a
legal move (``fabric.metadata.lifecycle``); the id, name and container of an image
never change. A new image takes the name of one that ended in ERROR, which goes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fabric import limits
from fabric.metadata import keys
from fabric.metadata.commands import (
    CatalogCommand,
    CreateImage,
    DeleteImage,
    ExpireImage,
    UpdateImage,
    UpdateTask,
)
from fabric.metadata.lifecycle import (
    IMAGE_INITIAL,
    TASK_INITIAL,
    image_move_ok,
    task_move_ok,
)
from fabric.metadata.records import ImageRecord, TaskRecord
from fabric.metadata.refusal import Refused

if TYPE_CHECKING:
    from fabric.metadata.state import MetadataState


def apply(state: MetadataState, index: int, cmd: CatalogCommand) -> Any:
    match cmd:
        case CreateImage():
            return _create(state, index, cmd)
        case UpdateImage():
            return _update_image(state, index, cmd)
        case DeleteImage():
            return _delete(state, cmd)
        case UpdateTask():
            return _update_task(state, index, cmd)
        case ExpireImage():
            return _expire(state, index, cmd)


def check_room(state: MetadataState) -> None:
    """Refuse a new image when the catalog is full or too many images wait for bytes.

    Counted from the state machine's own indexes, so every node refuses the same
    ``CreateImage`` whoever proposed it, and racing creations cannot overshoot."""
    pending = len(state.idx.pending_images)
    if pending >= limits.MAX_PENDING_IMAGES:
        raise Refused(
            "too_many_requests",
            f"{pending} images are PENDING (the limit is {limits.MAX_PENDING_IMAGES}): "
            "upload into them, delete them, or wait for them to expire",
        )
    total = state.count(keys.IMAGE)
    if total >= limits.MAX_IMAGES:
        raise Refused(
            "insufficient_storage",
            f"the catalog holds {total} images (the limit is {limits.MAX_IMAGES}); "
            "delete some first",
        )


def _create(state: MetadataState, index: int, cmd: CreateImage) -> str:
    image = cmd.image
    check_room(state)
    named = state.value(keys.image_name_key(image.name))
    old = None if named is None else state.image(named)
    if old is not None and old.state != "ERROR":
        raise Refused("conflict", f"an image named {image.name!r} already exists")
    if old is not None and old.vdisk_id:
        raise Refused("conflict", f"the failed image {image.name!r} still has data; delete it")
    if state.get(keys.image_key(image.id)) is not None:
        raise Refused("conflict", f"image id {image.id} exists")
    if state.container(image.container) is None:
        raise Refused("not_found", f"no container {image.container!r}")
    if cmd.task is not None:
        if state.get(keys.task_key(cmd.task.id)) is not None:
            raise Refused("conflict", f"task id {cmd.task.id} exists")
        if cmd.task.image_id != image.id or cmd.task.state != TASK_INITIAL:
            raise Refused("bad_command", "the task of a new image must be RUNNING for it")
        state.put(index, keys.task_key(cmd.task.id), cmd.task)
    if old is not None:
        # A failed image only records why it failed (its vdisk was dropped with the
        # failure): it must not keep the user from trying again under the same name.
        state.delete(keys.image_key(old.id))
    state.put(index, keys.image_name_key(image.name), image.id)
    state.put(index, keys.image_key(image.id), image)
    return image.id


def _update_image(state: MetadataState, index: int, cmd: UpdateImage) -> str:
    new = cmd.image
    old = state.image(new.id)
    if old is None:
        raise Refused("not_found", f"no image {new.id}")
    if (old.name, old.container) != (new.name, new.container):
        raise Refused("bad_command", f"image {new.id}: name and container never change")
    if old.state != cmd.expect_state:
        raise Refused("conflict", f"image {old.name!r} is {old.state}, not {cmd.expect_state}")
    if not image_move_ok(old.state, new.state):
        raise Refused("conflict", f"image {old.name!r} cannot go from {old.state} to {new.state}")
    state.put(index, keys.image_key(new.id), new)
    return new.state


def _expire(state: MetadataState, index: int, cmd: ExpireImage) -> str:
    image = state.image(cmd.image_id)
    if image is None:
        raise Refused("not_found", f"no image {cmd.image_id}")
    version = state.version(keys.image_key(image.id))
    if version != cmd.version or image.state != IMAGE_INITIAL or image.node or image.vdisk_id:
        raise Refused("conflict", f"image {image.name!r} changed; it does not expire")
    state.put(index, keys.image_key(image.id), replace(image, state="ERROR", error=cmd.reason))
    return image.id


def _delete(state: MetadataState, cmd: DeleteImage) -> str:
    image = state.image(cmd.image_id)
    if image is None:
        raise Refused("not_found", f"no image {cmd.image_id}")
    state.delete(keys.image_key(image.id))
    if state.value(keys.image_name_key(image.name)) == image.id:
        state.delete(keys.image_name_key(image.name))
    return image.id


def _update_task(state: MetadataState, index: int, cmd: UpdateTask) -> str:
    new = cmd.task
    old = state.task(new.id)
    if old is None:
        raise Refused("not_found", f"no task {new.id}")
    if (old.image_id, old.kind) != (new.image_id, new.kind):
        raise Refused("bad_command", f"task {new.id}: its image and kind never change")
    if old.state != cmd.expect_state:
        raise Refused("conflict", f"task {new.id} is {old.state}, not {cmd.expect_state}")
    if not task_move_ok(old.state, new.state):
        raise Refused("conflict", f"task {new.id} cannot go from {old.state} to {new.state}")
    state.put(index, keys.task_key(new.id), new)
    return new.state


def check_legacy_move(state: MetadataState, key: str, value: Any) -> None:
    """A release-0.1 raw write of a catalog record obeys today's state moves too."""
    if isinstance(value, ImageRecord):
        old = state.image(value.id)
        if old is None:
            check_room(state)
        ok = value.state == IMAGE_INITIAL if old is None else image_move_ok(old.state, value.state)
        if not ok or key != keys.image_key(value.id):
            raise Refused("conflict", f"{key}: not a legal image change")
    elif isinstance(value, TaskRecord):
        prev = state.task(value.id)
        ok = value.state == TASK_INITIAL if prev is None else task_move_ok(prev.state, value.state)
        if not ok or key != keys.task_key(value.id):
            raise Refused("conflict", f"{key}: not a legal task change")
