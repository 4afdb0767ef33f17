"""Sources: what feeds the engine. Each yields blocks of frames × channels float32 at `rate`.

- `FileSource`: any file soundfile reads, as fast as possible or paced in real time.
- `DemoSource`: a seeded synthetic scene (so the main job runs with no microphone and no file).
- `MicSource`: a sounddevice input stream; its callback copies into a preallocated ring and counts
  overflows — no allocation, no locks, no logging, no file I/O there. The worker pops blocks.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf

from stream_s5.conditioning import InputError
from stream_s5.ring import SpscRing
from stream_s5.sessions import EngineFault

__all__ = ["FileSource", "DemoSource", "MicSource", "SourceLost", "list_devices"]


class SourceLost(EngineFault):
    """The input device stopped delivering audio (unplugged, its sound server gone)."""


class FileSource:
    def __init__(self, path: str | Path, block_s: float = 0.1, realtime: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        try:
            info = sf.info(str(self.path))
        except Exception as exc:  # libsndfile's message names the problem (format, truncation, …)
            raise InputError(f"{self.path}: not a readable audio file ({exc})") from None
        if info.frames <= 0 or info.samplerate <= 0:
            raise InputError(f"{self.path}: no audio frames")
        self.rate, self.channels, self.frames = int(info.samplerate), int(info.channels), int(info.frames)
        self.block = max(1, int(block_s * self.rate))
        self.realtime = realtime
        self.read_frames = 0

    @property
    def duration(self) -> float:
        return self.frames / self.rate

    def __iter__(self):
        start = time.perf_counter()
        try:
            with sf.SoundFile(str(self.path)) as f:
                while True:
                    try:
                        block = f.read(self.block, dtype="float32", always_2d=True)
                    except Exception as exc:
                        raise InputError(f"{self.path}: read failed after {self.read_frames} frames ({exc})") from None
                    if block.shape[0] == 0:
                        break
                    self.read_frames += block.shape[0]
                    if self.realtime:
                        ahead = self.read_frames / self.rate - (time.perf_counter() - start)
                        if ahead > 0:
                            time.sleep(ahead)
                    yield block
        except sf.LibsndfileError as exc:
            raise InputError(f"{self.path}: {exc}") from None


class DemoSource:
    """A synthetic scene from the procedural soundbank; `scene` holds the truth (events, references)."""

    def __init__(self, seed: int = 0, duration: float = 10.0, rate: int = 16000, channels: int = 1, block_s: float = 0.1,
                 realtime: bool = False):
        from stream_s5.synth.scenes import SceneConfig, generate_scene
        from stream_s5.synth.soundbank import Soundbank

        cfg = SceneConfig(sr=rate, duration=duration, channels=channels, room=channels > 1, p_no_target=0.0)
        self.scene = generate_scene(cfg, seed, Soundbank.procedural(rate, seed))
        self.rate, self.channels = rate, channels
        self.frames = self.scene.mixture.shape[1]
        self.block = max(1, int(block_s * rate))
        self.realtime = realtime

    @property
    def duration(self) -> float:
        return self.frames / self.rate

    def __iter__(self):
        audio = self.scene.mixture.T.astype(np.float32)
        start = time.perf_counter()
        for i in range(0, self.frames, self.block):
            if self.realtime:
                ahead = i / self.rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
            yield audio[i : i + self.block]


def list_devices() -> str:
    import sounddevice as sd

    return str(sd.query_devices())


class MicSource:
    """Live input. Iterating yields whatever arrived (possibly empty blocks while waiting) until
    `stop()` or `duration` seconds of audio. A device that delivers nothing for `stall_s` while its
    stream should be running, or whose stream stops by itself, raises `SourceLost` (the caller
    finishes its files up to there)."""

    def __init__(self, device=None, rate: int | None = None, channels: int | None = None, block_s: float = 0.02,
                 ring_s: float = 4.0, duration: float | None = None, stall_s: float = 2.0):
        import sounddevice as sd  # imported only where a device is used

        info = sd.query_devices(device, "input")
        self.rate = int(rate or info["default_samplerate"])
        self.channels = int(channels or min(2, info["max_input_channels"]) or 1)
        self.ring = SpscRing(self.channels, int(ring_s * self.rate))
        self.status_events = 0  # PortAudio's own over/underflow flags
        self.duration = duration
        self.block = max(1, int(block_s * self.rate))
        self.stall_s = stall_s
        self._running = True
        self.stream = sd.InputStream(samplerate=self.rate, channels=self.channels, dtype="float32", device=device,
                                     blocksize=self.block, callback=self._callback)
        self.device_name = info["name"]

    def _callback(self, indata, frames, time_info, status):
        if status:
            self.status_events += 1
        self.ring.push(indata)

    @property
    def overflows(self) -> int:
        return self.ring.overflow_events + self.status_events

    def stop(self):
        self._running = False

    def __iter__(self):
        self.stream.start()
        taken = 0
        limit = None if self.duration is None else int(self.duration * self.rate)
        last_data = time.monotonic()
        try:
            while self._running and (limit is None or taken < limit):
                if self.ring.available() < self.block:
                    silent_for = time.monotonic() - last_data
                    if silent_for > self.stall_s or not self.stream.active:
                        why = "its stream stopped" if not self.stream.active else f"nothing for {silent_for:.1f} s"
                        raise SourceLost(f"the input device {self.device_name!r} stopped delivering audio ({why}) "
                                         f"after {taken / self.rate:.1f} s")
                    time.sleep(self.block / self.rate / 4)
                    continue
                last_data = time.monotonic()
                n = self.ring.available() if limit is None else min(self.ring.available(), limit - taken)
                block = self.ring.pop(n)
                taken += block.shape[0]
                yield block
        finally:
            self.stream.stop()
            self.stream.close()
