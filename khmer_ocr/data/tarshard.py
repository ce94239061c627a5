"""Writing a shard's tar archive: the bytes `tarfile` writes (USTAR, regular files of mode 0644, mtime 0, no
owner), with each header patched from a template instead of built field by field (several times faster)."""

from __future__ import annotations

import tarfile
from functools import cache
from typing import BinaryIO

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


@cache
def _template(name_length: int) -> bytes:
    info = tarfile.TarInfo("0" * name_length)
    info.size, info.mtime, info.mode = 0, 0, 0o644
    return info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")


def header(name: str, size: int) -> bytes:
    """The 512-byte USTAR header tarfile writes for a regular file `name` of `size` bytes."""
    raw = name.encode("ascii", "strict") if name.isascii() else b""
    if not raw or len(raw) > 100 or size >= 8**11:  # tarfile's own encoding of long or non-ASCII names
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o644
        return info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
    buf = bytearray(_template(len(raw)))
    buf[: len(raw)] = raw
    buf[124:136] = b"%011o\0" % size
    buf[148:156] = b" " * 8  # the checksum is the byte sum with its own field as spaces
    buf[148:155] = b"%06o\0" % sum(buf)
    return bytes(buf)


class ShardTar:
    """A tar archive written to an open binary file: add() files, then close() (end blocks and padding)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.offset = 0

    def add(self, name: str, data: bytes) -> int:
        """Append a file; returns the offset of its data in the archive."""
        pad = -len(data) % BLOCK
        self._f.write(header(name, len(data)) + data + b"\0" * pad)
        at = self.offset + BLOCK
        self.offset = at + len(data) + pad
        return at

    def close(self) -> None:
        end = self.offset + 2 * BLOCK
        self._f.write(b"\0" * (2 * BLOCK + (-end % RECORD)))
        self.offset = end + (-end % RECORD)
