"""Read one file out of the archives games and learning software ship their sounds in (standard library only).

    read_member(path, "sound/footsteps/wood1.ogg")          # zip (.pk3, .zip)
    read_member(path, "Structures.ocg/Chest.ocg/Open.ogg")  # OpenClonk group (.ocg/.ocd/.c4g), nested groups by '/'
    read_member(path, "gcompris/src/activities/x/door.wav") # Qt resource bundle (.rcc)

The kind is told by the file's first bytes, not its name. Only reading is supported, and only what
the real-recordings soundbank needs; a malformed archive raises ValueError, a missing member KeyError.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

__all__ = ["archive_kind", "list_members", "read_member"]

# OpenClonk group: a gzip stream whose two magic bytes are changed, holding a 204-byte header and
# 316-byte entries (name, packed flag, child-group flag, size, offset …). The header is "scrambled"
# (every byte XOR 237, then bytes 0 and 2 of every triple swapped). Child groups are stored inline,
# uncompressed, in the same layout.
_C4_MAGIC = b"\x1e\x8c"
_C4_ID = b"RedWolf Design GrpFolder"
_C4_HEADER, _C4_ENTRY = 204, 316


def archive_kind(path: str | Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == _C4_MAGIC:
        return "c4group"
    if head == b"qres":
        return "rcc"
    if head[:2] == b"PK":
        return "zip"
    raise ValueError(f"{path}: not a zip, OpenClonk group or Qt resource archive")


def _unscramble(header: bytes) -> bytes:
    b = bytearray(x ^ 237 for x in header)
    for i in range(0, len(b) - 2, 3):
        b[i], b[i + 2] = b[i + 2], b[i]
    return bytes(b)


def _c4_entries(raw: bytes, prefix: str, out: dict[str, bytes]) -> None:
    header = _unscramble(raw[:_C4_HEADER])
    if len(raw) < _C4_HEADER or header[: len(_C4_ID)] != _C4_ID:
        raise ValueError("not an OpenClonk group (bad header)")
    (count,) = struct.unpack("<i", header[36:40])
    data_start = _C4_HEADER + _C4_ENTRY * count
    if count < 0 or data_start > len(raw):
        raise ValueError("OpenClonk group: entry table runs past the end")
    for k in range(count):
        entry = raw[_C4_HEADER + _C4_ENTRY * k : _C4_HEADER + _C4_ENTRY * (k + 1)]
        name = entry[:260].split(b"\0")[0].decode("latin-1")
        _packed, child, size, _unused, offset = struct.unpack("<5i", entry[260:280])
        if offset < 0 or size < 0 or data_start + offset + size > len(raw):
            raise ValueError(f"OpenClonk group: entry {prefix}{name} runs past the end")
        body = raw[data_start + offset : data_start + offset + size]
        if child:
            _c4_entries(body, f"{prefix}{name}/", out)
        else:
            out[prefix + name] = body


def _read_c4group(path: Path) -> dict[str, bytes]:
    data = bytearray(path.read_bytes())
    data[:2] = b"\x1f\x8b"  # back to a plain gzip stream
    try:
        raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bytes(data))
    except zlib.error as err:
        raise ValueError(f"{path}: OpenClonk group does not inflate ({err})") from None
    if not raw:
        raise ValueError(f"{path}: OpenClonk group does not inflate (no data)")
    out: dict[str, bytes] = {}
    try:
        _c4_entries(raw, "", out)
    except (ValueError, struct.error) as err:
        raise ValueError(f"{path}: {err}") from None
    return out


def _read_rcc(path: Path) -> dict[str, bytes | None]:
    """Qt resource bundle: big-endian header (magic, version, tree, data and name offsets); a tree of
    14-byte (v1) or 22-byte (v2+, with a modification time) nodes; names as UTF-16 with a hash; data
    blocks as length + bytes, zlib-compressed behind a 4-byte length where flag 1 is set. Members
    compressed with zstd (flag 4) are listed with None: reading them would need another library."""
    data = path.read_bytes()
    version, tree, blobs, names = struct.unpack(">4I", data[4:20])
    node_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    out: dict[str, bytes | None] = {}

    def walk(index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise ValueError(f"{path}: Qt resource tree nested too deep")
        node = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[node : node + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[node + 6 : node + 14])
            for child in range(first, first + count):
                walk(child, f"{prefix}{name}/" if index else "", depth + 1)
            return
        (offset,) = struct.unpack(">I", data[node + 10 : node + 14])
        (size,) = struct.unpack(">I", data[blobs + offset : blobs + offset + 4])
        body = data[blobs + offset + 4 : blobs + offset + 4 + size]
        if flags & 4:
            out[prefix + name] = None
        elif flags & 1:
            out[prefix + name] = zlib.decompress(body[4:])
        else:
            out[prefix + name] = body

    try:
        walk(0, "", 0)
    except (struct.error, UnicodeDecodeError, zlib.error) as err:
        raise ValueError(f"{path}: malformed Qt resource bundle ({err})") from None
    return out


def list_members(path: str | Path) -> list[str]:
    path = Path(path)
    kind = archive_kind(path)
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    return sorted((_read_c4group if kind == "c4group" else _read_rcc)(path))


_cache: dict[tuple[str, float], dict] = {}


def read_member(path: str | Path, member: str) -> bytes:
    """The bytes of one file inside an archive; KeyError if it is not there."""
    path = Path(path)
    kind = archive_kind(path)
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            try:
                return archive.read(member)
            except KeyError:
                raise KeyError(f"{path}: no member {member!r}") from None
    key = (str(path), path.stat().st_mtime)
    if key not in _cache:  # a bank reads many members of one (large) group: unpack it once
        if len(_cache) >= 8:
            _cache.pop(next(iter(_cache)))
        _cache[key] = (_read_c4group if kind == "c4group" else _read_rcc)(path)
    members = _cache[key]
    if member not in members:
        raise KeyError(f"{path}: no member {member!r}")
    if members[member] is None:
        raise ValueError(f"{path}: member {member!r} is zstd-compressed (not supported)")
    return members[member]
