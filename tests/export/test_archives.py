"""Reading single files out of game and learning-software archives: OpenClonk groups (nested, gzip with
changed magic, scrambled header), Qt resource bundles (plain and zlib members), zip. The archives are
written here from the formats' descriptions, not with the reader's own helpers."""

import gzip
import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
import soundfile as sf

from export.archives import archive_kind, list_members, read_member


def _scramble(header: bytes) -> bytes:
    b = bytearray(header)
    for i in range(0, len(b) - 2, 3):
        b[i], b[i + 2] = b[i + 2], b[i]
    return bytes(x ^ 237 for x in b)


def _c4_group(entries: dict) -> bytes:
    """An uncompressed OpenClonk group: values are bytes (a file) or a dict (a child group)."""
    bodies = [(_c4_group(v) if isinstance(v, dict) else v) for v in entries.values()]
    header = b"RedWolf Design GrpFolder".ljust(28, b"\0") + struct.pack("<3i", 1, 2, len(entries))
    table, offset = b"", 0
    for (name, value), body in zip(entries.items(), bodies):
        entry = name.encode().ljust(260, b"\0") + struct.pack("<5i", 0, int(isinstance(value, dict)), len(body), 0, offset)
        table += entry.ljust(316, b"\0")
        offset += len(body)
    return _scramble(header.ljust(204, b"\0")) + table + b"".join(bodies)


def _c4_file(path, entries):
    packed = bytearray(gzip.compress(_c4_group(entries)))
    packed[:2] = b"\x1e\x8c"
    path.write_bytes(bytes(packed))


def _ogg(freq=440.0, seconds=0.2, rate=22050):
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="OGG")
    return buf.getvalue()


def test_a_file_in_a_nested_openclonk_group_is_read(tmp_path):
    chest_open, close = _ogg(300), b"not audio but bytes"
    _c4_file(tmp_path / "Sound.ocg", {"Structures.ocg": {"Chest.ocg": {"Open.ogg": chest_open}, "DoorClose1.wav": close},
                                      "Readme.txt": b"hello"})
    path = tmp_path / "Sound.ocg"
    assert archive_kind(path) == "c4group"
    assert read_member(path, "Structures.ocg/Chest.ocg/Open.ogg") == chest_open
    assert read_member(path, "Structures.ocg/DoorClose1.wav") == close
    assert list_members(path) == ["Readme.txt", "Structures.ocg/Chest.ocg/Open.ogg", "Structures.ocg/DoorClose1.wav"]
    audio, rate = sf.read(io.BytesIO(read_member(path, "Structures.ocg/Chest.ocg/Open.ogg")))
    assert rate == 22050 and len(audio) == 4410
    with pytest.raises(KeyError, match="no member"):
        read_member(path, "Structures.ocg/Open.ogg")


def test_a_broken_openclonk_group_is_a_clear_error(tmp_path):
    bad = bytearray(gzip.compress(b"RedWolf? no" * 30))
    bad[:2] = b"\x1e\x8c"
    (tmp_path / "bad.ocg").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="OpenClonk group"):
        read_member(tmp_path / "bad.ocg", "x.ogg")
    (tmp_path / "short.ocg").write_bytes(b"\x1e\x8c\x08\x00garbage")
    with pytest.raises(ValueError, match="does not inflate"):
        read_member(tmp_path / "short.ocg", "x.ogg")


def _rcc(files: dict[str, tuple[bytes, bool]], version=3) -> bytes:
    """A Qt resource bundle with one folder "res" holding `files` (name → (bytes, zlib-compress?))."""
    names_blob, name_offset = b"", {}
    for name in ["res", *files]:
        name_offset[name] = len(names_blob)
        names_blob += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
    data_blob, data_offset = b"", {}
    for name, (body, compress) in files.items():
        stored = struct.pack(">I", len(body)) + zlib.compress(body) if compress else body
        data_offset[name] = len(data_blob)
        data_blob += struct.pack(">I", len(stored)) + stored
    pad = b"\0" * 8 if version >= 2 else b""

    def directory(name_off, count, first):
        return struct.pack(">IHII", name_off, 2, count, first) + pad

    nodes = directory(0, 1, 1) + directory(name_offset["res"], len(files), 2)
    for name, (_, compress) in files.items():
        nodes += struct.pack(">IHHHI", name_offset[name], 1 if compress else 0, 0, 0, data_offset[name]) + pad
    header_size = 24 if version >= 3 else 20
    tree = header_size
    data = tree + len(nodes)
    names = data + len(data_blob)
    header = b"qres" + struct.pack(">4I", version, tree, data, names) + (b"\0" * 4 if version >= 3 else b"")
    return header + nodes + data_blob + names_blob


@pytest.mark.parametrize("version", [1, 3])
def test_plain_and_compressed_members_of_a_qt_resource_bundle_are_read(tmp_path, version):
    door, knock = _ogg(200), _ogg(900)
    (tmp_path / "x.rcc").write_bytes(_rcc({"door.ogg": (door, False), "knock.wav": (knock, True)}, version))
    path = tmp_path / "x.rcc"
    assert archive_kind(path) == "rcc"
    assert list_members(path) == ["res/door.ogg", "res/knock.wav"]
    assert read_member(path, "res/door.ogg") == door
    assert read_member(path, "res/knock.wav") == knock
    with pytest.raises(KeyError):
        read_member(path, "door.ogg")


def test_zip_members_and_unknown_archives(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.pk3", "w") as z:
        z.writestr("sound/a.ogg", b"abc")
    assert archive_kind(tmp_path / "a.pk3") == "zip" and read_member(tmp_path / "a.pk3", "sound/a.ogg") == b"abc"
    with pytest.raises(KeyError):
        read_member(tmp_path / "a.pk3", "sound/b.ogg")
    (tmp_path / "b.bin").write_bytes(b"\0\1\2\3")
    with pytest.raises(ValueError, match="not a zip"):
        read_member(tmp_path / "b.bin", "x")
