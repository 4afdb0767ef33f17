"""Sinks: where the engine's output goes.

- `ClassWavSink`: one `<Class>.wav` per class, sample-aligned with the input (same rate, same
  length). Samples are kept in memory for `horizon` seconds before they are written, so that onset
  backfill (a class detected late) can still fill in its true start.
- `EventsSink`: `events.jsonl`, one line per onset, per finished event and per retraction (an onset
  whose event was shorter than the minimum), flushed as they happen.
- `write_summary`: `summary.json`, strict JSON (non-finite figures become null).
- `prepare_output_folder`: checks `--output` before anything runs; a folder holding an earlier
  run's results is refused unless `overwrite`, which removes those stale files first.
- `PlaybackSink`: plays chosen classes live on an output device (sounddevice).
All of them leave valid files behind when closed from a Ctrl-C/SIGTERM handler."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from stream_s5.engine import EngineOutput
from stream_s5.ring import SpscRing

__all__ = ["ClassWavSink", "EventsSink", "MemorySink", "PlaybackSink", "write_summary", "strict_json",
           "prepare_output_folder", "OutputError"]


class OutputError(ValueError):
    """The output folder cannot be used (not a folder, not writable, holds an earlier run)."""


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/Infinity: a figure that could not be measured is null
    if isinstance(value, Path):
        return str(value)
    return value


def strict_json(value, indent: int | None = None) -> str:
    """`value` as strict JSON (RFC 8259): numpy types converted, non-finite floats as null."""
    return json.dumps(_jsonable(value), indent=indent, allow_nan=False)


def _earlier_results(folder: Path, classes) -> list[Path]:
    names = {"summary.json", "events.jsonl", "summary.json.tmp"} | {f"{label}.wav" for label in classes}
    return sorted(p for p in folder.iterdir() if p.name in names)


def prepare_output_folder(folder: str | Path, classes, overwrite: bool = False) -> list[str]:
    """Make sure `folder` can take this run's results → names of stale files removed (overwrite).

    A folder with an earlier run's summary.json, events.jsonl or <Class>.wav would otherwise mix old
    class files with the new summary; it is refused unless `overwrite`. Other files are never touched."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--output {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--output {folder}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"--output {folder}: the folder is not writable")
    stale = _earlier_results(folder, classes)
    if stale and not overwrite:
        names = ", ".join(p.name for p in stale[:5]) + (", …" if len(stale) > 5 else "")
        raise OutputError(f"--output {folder}: holds results of an earlier run ({names}); "
                          "pass --overwrite to replace them, or choose another folder")
    for path in stale:
        try:
            path.unlink()
        except OSError as exc:
            raise OutputError(f"--output {folder}: cannot remove the stale {path.name} ({exc.strerror or exc})") from None
    return [p.name for p in stale]


class _ClassWriter:
    def __init__(self, path: Path, model_rate: int, out_rate: int, subtype: str):
        self.file = sf.SoundFile(str(path), "w", samplerate=out_rate, channels=1, subtype=subtype)
        self.resampler = soxr.ResampleStream(model_rate, out_rate, 1, dtype="float32", quality="HQ") if model_rate != out_rate else None
        self.written_out = 0

    def write(self, samples: np.ndarray, last: bool = False):
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples, last=last)
        if samples.size:
            self.file.write(samples)
            self.written_out += samples.size

    def close(self, out_length: int):
        # pad or trim to exactly the input length (soxr's rounding may differ by a sample)
        missing = out_length - self.written_out
        if missing > 0:
            self.file.write(np.zeros(missing, np.float32))
        self.file.flush()
        if missing < 0:
            self.file.truncate(out_length)
        self.file.close()


class ClassWavSink:
    def __init__(self, folder: str | Path, model_rate: int, out_rate: int, classes: list[str] | None = None,
                 horizon_s: float = 2.5, subtype: str = "FLOAT"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model_rate, self.out_rate, self.subtype = model_rate, out_rate, subtype
        self.horizon = int(horizon_s * model_rate)
        self.committed = 0  # model-rate samples handed to every writer
        self.end = 0  # model-rate timeline end seen so far
        self.pending: dict[str, np.ndarray] = {}  # label → samples [committed, end)
        self.writers: dict[str, _ClassWriter] = {}
        self.late_backfill_samples = 0
        self.closed = False
        for label in classes or []:
            self._open(label)

    def _open(self, label: str):
        if label in self.writers:
            return
        self.writers[label] = _ClassWriter(self.folder / f"{label}.wav", self.model_rate, self.out_rate, self.subtype)
        if self.committed:  # a class that appears late starts with silence
            self.writers[label].write(np.zeros(self.committed, np.float32))
        self.pending[label] = np.zeros(self.end - self.committed, np.float32)

    def write(self, out: EngineOutput):
        new_end = max(self.end, out.start + out.length)
        if new_end > self.end:
            for label in self.pending:
                self.pending[label] = np.concatenate([self.pending[label], np.zeros(new_end - self.end, np.float32)])
            self.end = new_end
        for label, samples in out.audio.items():
            self._open(label)
            self._place(label, out.start, samples)
        for bf in out.backfill:
            self._open(bf.label)
            self._place(bf.label, bf.start, bf.audio)
        self._commit(self.end - self.horizon)

    def _place(self, label: str, start: int, samples: np.ndarray):
        lo = start - self.committed
        if lo < 0:  # older than the horizon: already on disk
            self.late_backfill_samples += min(-lo, samples.size)
            samples, lo = samples[-lo:], 0
        hi = min(lo + samples.size, self.pending[label].size)
        if hi > lo:
            self.pending[label][lo:hi] = samples[: hi - lo]

    def _commit(self, upto: int, last: bool = False):
        upto = min(upto, self.end)
        if upto <= self.committed and not last:
            return
        n = max(0, upto - self.committed)
        for label, writer in self.writers.items():
            writer.write(self.pending[label][:n], last=last)
            self.pending[label] = self.pending[label][n:]
        self.committed += n

    def close(self, input_length: int, keep: set[str] | None = None):
        """input_length: samples of the input at its own rate; every file gets exactly that many.
        keep: in auto mode, the classes with a kept (or still open) event; the file of any other class
        held only retracted audio (zeros) and is removed, so that the files agree with the events."""
        if self.closed:
            return
        self._commit(self.end, last=True)
        for writer in self.writers.values():
            writer.close(input_length)
        for label in [label for label in self.writers if keep is not None and label not in keep]:
            (self.folder / f"{label}.wav").unlink(missing_ok=True)
            del self.writers[label]
        self.closed = True

    @property
    def labels(self) -> list[str]:
        return sorted(self.writers)


class EventsSink:
    def __init__(self, path: str | Path):
        self.file = open(path, "w")
        self.count = 0

    def write(self, events):
        for event in events:
            kind = "retract" if event.retracted else "onset" if event.offset is None else "event"
            self.file.write(strict_json({"type": kind, **event.to_dict()}) + "\n")
            self.count += 1
        if events:
            self.file.flush()

    def close(self):
        if not self.file.closed:
            self.file.flush()
            self.file.close()


def write_summary(path: str | Path, summary: dict):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(strict_json(summary, indent=2) + "\n")
    tmp.replace(path)


class PlaybackSink:
    """Live playback of chosen classes (summed) on an output device. The device callback only copies
    from a preallocated ring and counts underflows."""

    def __init__(self, labels: list[str], model_rate: int, device=None, latency: str = "low", ring_s: float = 2.0):
        import sounddevice as sd  # only where a device is used

        self.labels = labels
        info = sd.query_devices(device, "output")
        self.rate = int(info["default_samplerate"])
        self.resampler = soxr.ResampleStream(model_rate, self.rate, 1, dtype="float32") if self.rate != model_rate else None
        self.ring = SpscRing(1, int(ring_s * self.rate))
        self.underflow_frames = 0
        self.played_frames = 0  # frames of separated audio the device took (the rest of its requests were underflows)
        self.unplayed_frames = 0  # frames still in the ring when the device was stopped
        self.status_flags = 0
        self._scratch = np.zeros((8192, 1), np.float32)
        self.stream = sd.OutputStream(samplerate=self.rate, channels=1, dtype="float32", device=device,
                                      latency=latency, callback=self._callback)
        self.stream.start()

    def _callback(self, outdata, frames, time_info, status):
        if status:
            self.status_flags += 1
        have = min(self.ring.available(), frames)
        if have:
            start = self.ring.read_pos % self.ring.capacity
            first = min(have, self.ring.capacity - start)
            outdata[:first] = self.ring.data[start : start + first]
            outdata[first:have] = self.ring.data[: have - first]
            self.ring.read_pos += have
            self.played_frames += have
        if have < frames:
            outdata[have:] = 0.0
            self.underflow_frames += frames - have

    def write(self, out: EngineOutput):
        mix = np.zeros(out.length, np.float32)
        for label in self.labels:
            if label in out.audio:
                mix += out.audio[label]
        if self.resampler is not None:
            mix = self.resampler.resample_chunk(mix)
        self.ring.push(mix[:, None])

    def close(self, drain: bool = True):
        """Stop the device; with `drain`, first let it play what the ring still holds (the end of a file
        would otherwise be cut: the device starts late and plays behind the engine). Bounded by the
        ring's own duration; what is left unplayed is counted."""
        if drain:
            deadline = time.monotonic() + self.ring.available() / self.rate + 1.0
            while self.ring.available() and self.stream.active and time.monotonic() < deadline:
                time.sleep(0.01)
        self.unplayed_frames = self.ring.available()
        self.stream.stop()
        self.stream.close()


class MemorySink:
    """Per-class output kept in memory (evaluation, tests): the same placement rules as
    `ClassWavSink`, at the bundle rate, without a horizon."""

    def __init__(self):
        self.audio: dict[str, np.ndarray] = {}
        self.end = 0
        self.events = []

    def _grow(self, label: str, end: int) -> np.ndarray:
        buf = self.audio.get(label, np.zeros(0, np.float32))
        if buf.size < end:
            buf = np.concatenate([buf, np.zeros(end - buf.size, np.float32)])
            self.audio[label] = buf
        return buf

    def write(self, out: EngineOutput):
        self.end = max(self.end, out.start + out.length)
        for label, samples in out.audio.items():
            self._grow(label, out.start + samples.size)[out.start : out.start + samples.size] = samples
        for bf in out.backfill:
            self._grow(bf.label, bf.start + bf.audio.size)[bf.start : bf.start + bf.audio.size] = bf.audio
        self.events.extend(e for e in out.events if e.offset is not None and not e.retracted)  # kept events

    def result(self, length: int | None = None) -> dict[str, np.ndarray]:
        length = self.end if length is None else length
        return {k: np.pad(v, (0, max(0, length - v.size)))[:length] for k, v in self.audio.items()}
