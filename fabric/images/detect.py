"""Which reader an image needs, told from its first bytes (never from its name).

``sniff(head, at_eof)`` looks at up to ``HEAD_BYTES`` of the start of the stream and
returns the reader class, or None when it needs more bytes to decide. Formats that
announce themselves at offset 0 (qcow2, VMDK sparse extents, VHDX, dynamic VHD) are
recognised at once; an ISO 9660 image carries "CD001" at 32769; anything else is raw
(whose reader recognises a fixed VHD by the footer at its end). Refused outright: a
LUKS container (encrypted) and a text VMDK descriptor (it points at other files).
"""

from __future__ import annotations

from fabric.images import qcow2, vhd, vhdx, vmdk
from fabric.images.base import ImageReader, UnsupportedImage
from fabric.images.raw import IsoReader, RawReader

HEAD_BYTES = 64 * 1024
"""Enough for every signature, the ISO one at 32769 included."""
ISO_MAGIC_OFFSET = 0x8001
LUKS_MAGIC = b"LUKS\xba\xbe"


def sniff(head: bytes, at_eof: bool) -> type[ImageReader] | None:
    if qcow2.sniff(head):
        return qcow2.Qcow2Reader
    if vmdk.sniff(head):
        return vmdk.VmdkReader
    if vhdx.sniff(head):
        return vhdx.VhdxReader
    if vhd.sniff(head):
        return vhd.VhdReader
    if head.startswith(LUKS_MAGIC):
        raise UnsupportedImage("LUKS-encrypted image: encryption is not supported")
    if head.lstrip().startswith(b"# Disk DescriptorFile"):
        raise UnsupportedImage(
            "a VMDK descriptor file names other files; upload a monolithicSparse or "
            "streamOptimized VMDK instead"
        )
    if len(head) < ISO_MAGIC_OFFSET + 5 and not at_eof:
        return None
    if head[ISO_MAGIC_OFFSET : ISO_MAGIC_OFFSET + 5] == b"CD001":
        return IsoReader
    return RawReader
