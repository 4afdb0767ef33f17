"""Read the samples of a SoundFont 2 file (.sf2) or of its Ogg Vorbis-compressed variant (.sf3).

Only what the real-recordings soundbank needs: a sample's name, its frames, its loop and its rate,
so that recorded instrument notes inside a soundfont can be played as real material. In an .sf3 a
sample's start/end are byte offsets of its own Ogg stream in the pool (sample type bit 0x10), and its
loop points count decoded frames from the sample's start.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["Sf2Sample", "read_sf2_samples"]


@dataclass
class Sf2Sample:
    name: str
    audio: np.ndarray  # float32 mono, the sample's frames (start..end)
    loop: tuple[int, int]  # loop start/end relative to the sample's start
    rate: int


_VORBIS = 0x10


def _fits(data: bytes, pos: int, stop: int) -> bool:
    return pos + 8 <= stop and struct.unpack("<I", data[pos + 4 : pos + 8])[0] <= stop - pos - 8


def _chunks(data: bytes, start: int, stop: int):
    pos = start
    while _fits(data, pos, stop):
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        yield tag, pos + 8, size
        pos += 8 + size
        # RIFF pads odd chunks to even length, but some .sf3 writers do not: take the pad byte only
        # where a whole chunk header follows it.
        if size & 1 and _fits(data, pos + 1, stop):
            pos += 1


def read_sf2_samples(path: str | Path) -> dict[str, Sf2Sample]:
    """Samples of a .sf2/.sf3 file by name. Raises ValueError for a file that is not a SoundFont 2."""
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise ValueError(f"{path}: not a SoundFont 2 file")
    raw_pool = b""
    pool = headers = None
    for tag, body, size in _chunks(data, 12, len(data)):
        if tag != b"LIST":
            continue
        kind = data[body : body + 4]
        for sub, sub_body, sub_size in _chunks(data, body + 4, body + size):
            if kind == b"sdta" and sub == b"smpl":
                pool = np.frombuffer(data, dtype="<i2", count=sub_size // 2, offset=sub_body)
                raw_pool = data[sub_body : sub_body + sub_size]
            elif kind == b"pdta" and sub == b"shdr":
                headers = data[sub_body : sub_body + sub_size]
    if pool is None or headers is None:
        raise ValueError(f"{path}: no sample pool or sample headers")
    samples: dict[str, Sf2Sample] = {}
    for k in range(len(headers) // 46 - 1):  # the last record is the terminal 'EOS'
        record = headers[46 * k : 46 * (k + 1)]
        name = record[:20].split(b"\0")[0].decode("latin-1").strip()
        start, end, loop_start, loop_end, rate = struct.unpack("<5I", record[20:40])
        (sample_type,) = struct.unpack("<H", record[44:46])
        if sample_type & _VORBIS:
            if not 0 <= start < end <= len(raw_pool) or rate <= 0:
                continue
            try:
                audio, _ = sf.read(io.BytesIO(raw_pool[start:end]), dtype="float32", always_2d=True)
            except (RuntimeError, sf.LibsndfileError):
                continue
            audio = np.ascontiguousarray(audio[:, 0])
            loop = (min(loop_start, len(audio)), min(loop_end, len(audio)))
            samples[name] = Sf2Sample(name, audio, loop, int(rate))
            continue
        if not 0 <= start < end <= len(pool) or rate <= 0:
            continue
        audio = pool[start:end].astype(np.float32) / 32768.0
        loop = (max(0, loop_start - start), max(0, min(end, loop_end) - start))
        samples[name] = Sf2Sample(name, audio, loop, int(rate))
    return samples
