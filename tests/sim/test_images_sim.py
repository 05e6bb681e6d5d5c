"""The image service on a simulated cluster, fed real images made by qemu-img.

Every variant is uploaded through the node's image service (the same code the HTTP
route calls), converted on the fly, downloaded back as raw, and compared byte for byte
with what ``qemu-img convert -O raw`` makes of the same file.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fabric.errors import Unprocessable
from fabric.sim.records import physical_bytes
from nodes.simcluster import SimCluster
from tests.imagekit import make_mixed_raw, needs_qemu, qemu_img
from tests.sim.conftest import started

pytestmark = needs_qemu
MiB = 1 << 20
SIZE = 6 * MiB + 12345  # not a multiple of any cluster, grain or block size


@pytest.fixture(scope="module")
def sim() -> Iterator[SimCluster]:
    cluster = started(nodes=3, seed=21)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "disk.raw"
    make_mixed_raw(path, SIZE, seed=4)
    return path


async def file_chunks(path: Path, size: int = 300_000) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def upload(sim: SimCluster, path: Path, name: str, **extra: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        svc = sim.nodes["n2"].images
        image = await svc.create({"name": name, **extra})
        return await svc.upload(image["id"], file_chunks(path))

    return sim.run(go())


def download(sim: SimCluster, name: str) -> bytes:
    async def go() -> bytes:
        node = sim.nodes["n3"]
        image = await node.images.get(name)
        vdisk = node.images.image(image["id"]).vdisk_id
        assert vdisk is not None
        _, _, stream = await node.reader.read(vdisk, 0, image["virtual_size"])
        return b"".join([c async for c in stream])

    return sim.run(go())


def reference(image: Path, fmt: str) -> bytes:
    out = image.with_suffix(".ref")
    qemu_img("convert", "-f", fmt, "-O", "raw", image, out)
    return out.read_bytes()


VARIANTS = [
    ("qcow2", "qcow2", ["-o", "compat=0.10"]),
    ("qcow2", "qcow2", ["-c"]),
    ("qcow2", "qcow2", ["-c", "-o", "compression_type=zstd"]),
    ("qcow2", "qcow2", ["-o", "cluster_size=2M"]),
    ("qcow2", "qcow2", ["-o", "extended_l2=on,cluster_size=64k"]),
    ("qcow2", "qcow2", ["-o", "preallocation=metadata"]),
    ("vmdk", "vmdk", []),
    ("vmdk", "vmdk", ["-o", "subformat=streamOptimized"]),
    ("vpc", "vhd", ["-o", "subformat=dynamic"]),
    ("vpc", "vhd", ["-o", "subformat=fixed,force_size=on"]),
    ("vhdx", "vhdx", ["-o", "subformat=dynamic"]),
    ("vhdx", "vhdx", ["-o", "subformat=fixed"]),
    ("raw", "raw", []),
]


@pytest.mark.parametrize(
    ("qfmt", "ours", "opts"),
    VARIANTS,
    ids=[f"{q}{'-' + '-'.join(o) if o else ''}" for q, _, o in VARIANTS],
)
def test_stored_raw_is_byte_identical_to_qemu_img(
    sim: SimCluster, source: Path, tmp_path: Path, qfmt: str, ours: str, opts: list[str]
) -> None:
    img = tmp_path / f"disk.{qfmt}"
    qemu_img("convert", "-f", "raw", "-O", qfmt, *opts, source, img)
    name = f"{qfmt}-{abs(hash(tuple(opts))) % 10**8}"
    image = upload(sim, img, name)
    assert image["state"] == "ACTIVE"
    assert image["source_format"] == ours
    assert image["source_bytes"] == img.stat().st_size
    ref = reference(img, qfmt)
    assert image["virtual_size"] == len(ref)
    assert download(sim, name) == ref
    assert image["source_sha256"] == hashlib.sha256(img.read_bytes()).hexdigest()


def test_same_image_as_qcow2_and_vmdk_costs_about_one_copy(source: Path, tmp_path: Path) -> None:
    sim = started(nodes=3, seed=22)
    try:
        q, v = tmp_path / "d.qcow2", tmp_path / "d.vmdk"
        qemu_img("convert", "-f", "raw", "-O", "qcow2", "-c", source, q)
        qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", source, v)
        upload(sim, q, "as-qcow2")
        one = sim.run(sim.nodes["n1"].cluster_view())["containers"][0]
        upload(sim, v, "as-vmdk")
        two = sim.run(sim.nodes["n1"].cluster_view())["containers"][0]
        assert two["logical_bytes"] == 2 * one["logical_bytes"]
        assert two["unique_bytes"] == one["unique_bytes"]  # the second copy is references
        assert two["physical_bytes"] <= one["physical_bytes"] * 1.01
    finally:
        sim.close()


def _patch(path: Path, offset: int, data: bytes) -> Path:
    blob = bytearray(path.read_bytes())
    blob[offset : offset + len(data)] = data
    path.write_bytes(bytes(blob))
    return path


def _bad_images(tmp: Path, source: Path) -> list[tuple[str, Path, str]]:
    base = tmp / "base.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", source, base)
    child = tmp / "child.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", base, "-F", "qcow2", child)
    # A LUKS1 header (magic, version 1, cipher): qemu-img's own luks creation times its key
    # derivation against the CPU and fails on a loaded machine, so the header is built here.
    luks = tmp / "secret.luks"
    luks.write_bytes(
        b"LUKS\xba\xbe\x00\x01"
        + b"aes".ljust(32, b"\0")
        + b"xts-plain64".ljust(32, b"\0")
        + bytes(1 << 20)
    )
    truncated = tmp / "cut.qcow2"
    truncated.write_bytes(base.read_bytes()[: base.stat().st_size // 2])
    huge = tmp / "huge.qcow2"
    huge.write_bytes(base.read_bytes())
    _patch(huge, 24, struct.pack(">Q", 1 << 60))
    garbage = tmp / "garbage.qcow2"
    garbage.write_bytes(b"QFI\xfb" + bytes(range(256)) * 40)
    descriptor = tmp / "flat.vmdk"
    descriptor.write_bytes(
        b'# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n'
        b'RW 2048 FLAT "other-file.img" 0\n'
    )
    vhd = tmp / "d.vhd"
    qemu_img("convert", "-f", "raw", "-O", "vpc", source, vhd)
    vhd_cut = tmp / "cut.vhd"
    vhd_cut.write_bytes(vhd.read_bytes()[:-4096])
    return [
        ("backing", child, "backing file"),
        ("luks", luks, "encrypt"),
        ("truncated", truncated, "truncated"),
        ("absurd-size", huge, "virtual size"),
        ("garbage", garbage, "qcow2"),
        ("descriptor", descriptor, "descriptor"),
        ("vhd-truncated", vhd_cut, ""),
    ]


def test_every_refusal_is_clear_and_leaves_nothing(source: Path, tmp_path: Path) -> None:
    sim = started(nodes=3, seed=23)
    try:
        for label, path, fragment in _bad_images(tmp_path, source):
            with pytest.raises(Unprocessable) as err:
                upload(sim, path, f"bad-{label}")
            assert fragment.lower() in err.value.message.lower(), (label, err.value.message)
            image = sim.run(sim.nodes["n1"].images.get(f"bad-{label}"))
            assert image["state"] == "ERROR" and image["error"], label
            vdisks = sim.run(sim.nodes["n1"].catalog.vdisks())
            assert not [v for v in vdisks if v.name.startswith("image-")], label
        c = sim.run(sim.nodes["n1"].cluster_view())["containers"][0]
        assert c["logical_bytes"] == 0 and c["vdisks"] == 0

        def collected() -> bool:  # sealed, then collected: what the refused uploads stored
            leader = sim.leader()
            return leader is not None and physical_bytes(sim.nodes[leader].metadata.state) == 0

        sim.run(sim.wait_for(collected, 60, "what the refused uploads stored collected"))
        c = sim.run(sim.nodes["n1"].cluster_view())["containers"][0]
        assert c["physical_bytes"] == 0
    finally:
        sim.close()


def test_wrong_checksum_ends_in_error_with_nothing_visible(source: Path, tmp_path: Path) -> None:
    sim = started(nodes=3, seed=24)
    try:
        with pytest.raises(Unprocessable, match="sha256 of the source is"):
            upload(sim, source, "liar", checksum={"type": "sha256", "value": "0" * 64})
        image = sim.run(sim.nodes["n1"].images.get("liar"))
        assert image["state"] == "ERROR"
        assert not sim.run(sim.nodes["n1"].catalog.vdisks())
        good = hashlib.sha256(source.read_bytes()).hexdigest()
        ok = upload(sim, source, "honest", checksum=f"sha256:{good}")
        assert ok["state"] == "ACTIVE" and ok["source_sha256"] == good
    finally:
        sim.close()


def test_a_node_converts_a_bounded_number_of_images_at_once(source: Path) -> None:
    from fabric.errors import Unavailable
    from fabric.limits import MAX_INGESTS

    sim = started(nodes=3, seed=25)
    try:
        blob = source.read_bytes()
        reading: list[int] = []

        async def slow() -> AsyncIterator[bytes]:
            reading.append(1)
            for i in range(0, len(blob), 1 << 20):
                yield blob[i : i + (1 << 20)]
                await sim.sleep(1.0)  # a slow client: the upload stays in progress

        async def go() -> None:
            import asyncio

            svc = sim.nodes["n2"].images
            images = [await svc.create({"name": f"i{i}"}) for i in range(MAX_INGESTS + 1)]
            running = [
                asyncio.ensure_future(svc.upload(im["id"], slow())) for im in images[:MAX_INGESTS]
            ]
            await sim.wait_for(lambda: len(reading) == MAX_INGESTS, 10, "every upload reading")
            with pytest.raises(Unavailable, match="already converting"):
                await svc.upload(images[-1]["id"], slow())
            assert all(r["state"] == "ACTIVE" for r in await asyncio.gather(*running))
            # The refused one kept its place: it uploads fine once a slot is free.
            done = await svc.upload(images[-1]["id"], file_chunks(source))
            assert done["state"] == "ACTIVE"

        sim.run(go())
    finally:
        sim.close()


def test_an_upload_whose_body_breaks_off_ends_in_error_and_leaves_nothing(
    source: Path,
) -> None:
    """The body is received ahead of the decoder: a broken connection must still fail the
    upload, never end a raw image early as a shorter, ACTIVE disk."""
    sim = started(nodes=3, seed=26)
    try:
        blob = source.read_bytes()

        async def breaks_off() -> AsyncIterator[bytes]:
            for i in range(0, 3 * MiB, 300_000):
                yield blob[i : i + 300_000]
            raise ConnectionResetError("the uploader went away")

        async def go() -> None:
            svc = sim.nodes["n2"].images
            image = await svc.create({"name": "cut"})
            with pytest.raises(ConnectionResetError):
                await svc.upload(image["id"], breaks_off())

        sim.run(go())
        image = sim.run(sim.nodes["n1"].images.get("cut"))
        assert image["state"] == "ERROR", f"seed {sim.seed}: {image}"
        assert "went away" in image["error"]
        assert not sim.run(sim.nodes["n1"].catalog.vdisks()), f"seed {sim.seed}"
    finally:
        sim.close()


def test_concurrent_uploads_share_one_window_of_writes_in_flight() -> None:
    """Each ingest keeps a few extent batches being stored; all of a node's ingests
    together keep at most INGEST_NODE_WRITES_IN_FLIGHT, which bounds the node's memory."""
    import asyncio

    from fabric import limits

    sim = started(nodes=3, seed=27)
    try:
        node = sim.nodes["n2"]
        real = node.writer.write_extents
        inflight: list[int] = [0, 0]  # now, most

        async def slow_write(ref: str, first: int, extents: list[bytes]) -> int:
            inflight[0] += 1
            inflight[1] = max(inflight)
            try:
                await sim.sleep(0.5)  # a slow disk: batches pile up if nothing bounds them
                return await real(ref, first, extents)
            finally:
                inflight[0] -= 1

        node.writer.write_extents = slow_write  # type: ignore[method-assign]
        disk = bytes(range(1, 256)) * (40 * MiB // 255)  # 40 MiB, no zero extent

        async def body() -> AsyncIterator[bytes]:
            for i in range(0, len(disk), MiB):
                yield disk[i : i + MiB]

        async def go() -> list[dict[str, Any]]:
            images = [await node.images.create({"name": f"w{i}"}) for i in range(4)]
            return await asyncio.gather(*(node.images.upload(im["id"], body()) for im in images))

        done = sim.run(go())
        assert all(d["state"] == "ACTIVE" for d in done), f"seed {sim.seed}"
        assert (
            limits.INGEST_WRITES_IN_FLIGHT < inflight[1] <= limits.INGEST_NODE_WRITES_IN_FLIGHT
        ), f"seed {sim.seed}: {inflight[1]} batches in flight at most"
    finally:
        sim.close()


def _iso(tmp: Path) -> Path:
    """An ISO 9660 image as far as detection goes: its first volume descriptor says so."""
    blob = bytearray(make_mixed_raw(tmp / "iso.raw", 2 * MiB, seed=7))
    blob[32768:32774] = b"\x01CD001"
    path = tmp / "cd.iso"
    path.write_bytes(bytes(blob))
    return path


def test_declared_formats_and_types_must_match_the_content(source: Path, tmp_path: Path) -> None:
    """What a user declares is checked: a qcow2 whose magic broke in transit is refused,
    not stored as a raw disk, and a retry under the same name replaces the failure."""
    sim = started(nodes=3, seed=28)
    try:
        good = tmp_path / "disk.qcow2"
        qemu_img("convert", "-f", "raw", "-O", "qcow2", source, good)
        broken = tmp_path / "broken.qcow2"
        broken.write_bytes(good.read_bytes())
        _patch(broken, 3, b"\x00")  # the magic's last byte lost
        iso = _iso(tmp_path)
        refusals: list[tuple[Path, dict[str, Any], tuple[str, ...]]] = [
            (broken, {"source_format": "qcow2"}, ("declared source_format qcow2", "is raw")),
            (good, {"image_type": "ISO"}, ("declared image_type ISO", "is qcow2", "CD001")),
            (good, {"source_format": "iso"}, ("declared source_format iso", "is qcow2")),
            (iso, {"image_type": "DISK"}, ("declared image_type DISK", "ISO 9660")),
            (iso, {"source_format": "raw"}, ("declared source_format raw", "is iso")),
        ]
        for path, declared, fragments in refusals:
            with pytest.raises(Unprocessable) as err:
                upload(sim, path, "vm", **declared)
            for fragment in fragments:
                assert fragment in err.value.message, (declared, err.value.message)
            image = sim.run(sim.nodes["n1"].images.get("vm"))
            assert image["state"] == "ERROR" and fragments[0] in image["error"], image
            assert not sim.run(sim.nodes["n1"].catalog.vdisks()), f"seed {sim.seed}: {declared}"

        # The failed image does not hold the name: the retry replaces it.
        failed_id = sim.run(sim.nodes["n1"].images.get("vm"))["id"]
        image = upload(sim, good, "vm", source_format="qcow2")
        assert image["state"] == "ACTIVE" and image["id"] != failed_id
        assert (image["source_format"], image["declared_format"]) == ("qcow2", "qcow2")
        assert [i["id"] for i in sim.run(sim.nodes["n1"].images.listing())] == [image["id"]]
        assert download(sim, "vm") == reference(good, "qcow2")

        cd = upload(sim, iso, "cd", image_type="ISO")
        assert (cd["image_type"], cd["source_format"]) == ("ISO", "iso")
        assert upload(sim, iso, "cd2")["image_type"] == "ISO"  # undeclared: from the content
        assert upload(sim, good, "disk", image_type="DISK")["image_type"] == "DISK"
    finally:
        sim.close()


def test_a_declaration_that_contradicts_itself_creates_nothing() -> None:
    sim = started(nodes=3, seed=29)
    try:
        svc = sim.nodes["n2"].images
        for body in (
            {"name": "x", "image_type": "ISO", "source_format": "qcow2"},
            {"name": "x", "image_type": "DISK", "source_format": "iso"},
        ):
            with pytest.raises(Unprocessable, match="declared"):
                sim.run(svc.create(body))
        assert not sim.run(svc.listing())
    finally:
        sim.close()


def test_a_raw_disk_is_padded_to_a_whole_sector_like_qemu_img(source: Path) -> None:
    """SIZE is not whole sectors: the disk ends with zeros to the next 512 bytes, and the
    image says how many; its sizes mean what the container's sizes mean."""
    sim = started(nodes=3, seed=30)
    try:
        image = upload(sim, source, "odd")
        ref = reference(source, "raw")
        assert len(ref) % 512 == 0 and len(ref) > SIZE
        assert image["virtual_size"] == len(ref) and image["padded_bytes"] == len(ref) - SIZE
        assert image["source_bytes"] == SIZE and image["source_format"] == "raw"
        assert download(sim, "odd") == ref
        # The only image of its container: its sizes are the container's.
        c = sim.run(sim.nodes["n1"].cluster_view())["containers"][0]
        assert image["logical_bytes"] == c["logical_bytes"] > 0
        assert image["stored_bytes"] == c["stored_bytes"] < image["logical_bytes"]  # zstd
    finally:
        sim.close()


def test_a_failed_image_that_kept_its_vdisk_is_freed_when_its_name_is_taken() -> None:
    """A failure whose vdisk could not be dropped left it named on the ERROR record: the
    next image of that name drops it first, so no data outlives its record."""
    from dataclasses import replace

    from fabric.metadata.commands import UpdateImage

    sim = started(nodes=3, seed=31)
    try:
        svc = sim.nodes["n2"].images

        async def go() -> dict[str, Any]:
            image = await svc.create({"name": "stuck"})
            vd = await svc.catalog.create_vdisk("image-leftover", "images", MiB)
            record = svc.image(image["id"])
            failed = replace(record, state="ERROR", error="drop failed", vdisk_id=vd.id)
            assert (await svc.metadata.propose(UpdateImage(failed, "PENDING"))).ok
            return await svc.create({"name": "stuck"})

        again = sim.run(go())
        assert again["state"] == "PENDING"
        assert not sim.run(sim.nodes["n1"].catalog.vdisks()), f"seed {sim.seed}"
        assert [i["id"] for i in sim.run(svc.listing())] == [again["id"]]
    finally:
        sim.close()
