"""Soundbank: where the scene generator gets its clips.

Two kinds, same interface:

* :meth:`Soundbank.procedural` synthesises every clip on demand (per-class generator families in
  :mod:`stream_s5.synth.generators`, interferers and noise in :mod:`stream_s5.synth.background`).
* :meth:`Soundbank.from_folder` reads recorded (or pre-rendered) material in this layout::

      <folder>/<Class>/*.wav          one folder per target class, named exactly as in
                                      stream_s5.labels.CLASSES (missing classes are allowed)
      <folder>/interference/*.wav     non-target sounds
      <folder>/noise/*.wav            background noise (looped/concatenated to scene length)
      <folder>/rirs/*.wav             optional multichannel RIRs, one channel per microphone,
      <folder>/rirs/<room>/*.wav      or grouped by room (sources of a scene share one room)
      <folder>/soundbank.json         optional manifest (written by write_soundbank)

  Any format soundfile reads (.wav, .flac, .ogg) is accepted; files are resampled to the bank's
  rate with soxr and dry sources are downmixed to mono.

:func:`write_soundbank` renders a procedural bank to that layout, so training reads synthetic and
real material through the same :meth:`Soundbank.from_folder` path.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr

from stream_s5.labels import CLASSES

from .background import INTERFERER_GENERATORS, synth_interferer, synth_noise
from .dsp import n_samples, peak_normalise, recording_colour
from .generators import CLASS_DURATION_RANGE, CLASS_GENERATORS, synth_event
from .speech import ESPEAK_AVAILABLE

__all__ = [
    "AUDIO_EXTENSIONS",
    "SOUNDBANK_FORMAT",
    "CLASS_GENERATORS",
    "ESPEAK_AVAILABLE",
    "MixedSoundbank",
    "Soundbank",
    "synth_event",
    "synth_interferer",
    "synth_noise",
    "write_packed",
    "write_soundbank",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
SOUNDBANK_FORMAT = "stream_s5.soundbank/1"
_SPECIAL_FOLDERS = ("interference", "noise", "rirs")
# Independent random streams per material kind in write_soundbank (class streams use their index).
_STREAM_INTERFERENCE, _STREAM_NOISE, _STREAM_RIRS = 1000, 1001, 1002


def _child_rng(seed: int, rng: np.random.Generator) -> np.random.Generator:
    """Private stream for one synthesised clip; consumes exactly one draw from the caller's rng,
    so scene-level randomness does not depend on how many numbers a generator uses."""
    return np.random.default_rng([int(seed), int(rng.integers(2**63))])


def _audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


class Soundbank:
    """Source of target events, interferers, background noise and (optionally) RIRs.

    Build one with :meth:`procedural` or :meth:`from_folder`. All draws take the caller's
    ``np.random.Generator``, so a scene is a pure function of its seed and the bank.
    """

    def __init__(
        self,
        sr: int,
        *,
        seed: int = 0,
        duration_range: tuple[float, float] = (1.0, 6.0),
        root: Path | None = None,
        class_files: dict[str, list[Path]] | None = None,
        interference_files: list[Path] | None = None,
        noise_files: list[Path] | None = None,
        rir_files: dict[str, list[Path]] | None = None,
        unknown_folders: tuple[str, ...] = (),
        cache_mb: float = 128.0,
        packed: dict[Path, np.ndarray] | None = None,
    ):
        self.sr = int(sr)
        self.seed = int(seed)
        self.duration_range = (float(duration_range[0]), float(duration_range[1]))
        self.root = root
        self._class_files = class_files
        self._interference_files = interference_files or []
        self._noise_files = noise_files or []
        self._rir_files = {room: files for room, files in (rir_files or {}).items() if files}
        self.unknown_folders = unknown_folders
        self._cache: OrderedDict[tuple[Path, bool], np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_mb * 2**20)
        self._packed = packed or {}  # pre-decoded clips (write_packed): no decoding, no soundfile

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def procedural(cls, sr: int = 16000, seed: int = 0, duration_range: tuple[float, float] = (1.0, 6.0)) -> Soundbank:
        """Bank that synthesises every clip on demand; ``seed`` varies the material for equal scene seeds."""
        return cls(sr, seed=seed, duration_range=duration_range)

    @classmethod
    def from_folder(cls, path: str | os.PathLike, sr: int = 16000, cache_mb: float = 128.0) -> Soundbank:
        """Bank reading the documented folder layout (see module docstring).

        Files are listed now and decoded lazily; decoded clips are kept in an LRU cache of
        ``cache_mb`` MiB (0 disables it). Without ``interference/`` or ``noise/`` files the bank
        falls back to procedural interferers / noise (see :attr:`fallbacks`).
        """
        root = Path(path)
        if root.suffix == ".npz" and root.is_file():
            return cls._from_packed(root, sr)
        if not root.is_dir():
            raise FileNotFoundError(f"soundbank folder not found: {root}")
        by_lower = {name.lower(): name for name in CLASSES}
        class_files: dict[str, list[Path]] = {}
        unknown = []
        for entry in sorted(root.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            name = by_lower.get(entry.name.lower())
            if name is not None:
                files = _audio_files(entry)
                if files:
                    class_files.setdefault(name, []).extend(files)
            elif entry.name not in _SPECIAL_FOLDERS:
                unknown.append(entry.name)
        rir_root = root / "rirs"
        rir_files: dict[str, list[Path]] = {}
        if _audio_files(rir_root):
            rir_files[""] = _audio_files(rir_root)
        if rir_root.is_dir():
            for room in sorted(p for p in rir_root.iterdir() if p.is_dir()):
                rir_files[room.name] = _audio_files(room)
        seed = 0
        manifest = root / "soundbank.json"
        if manifest.is_file():
            try:
                seed = int(json.loads(manifest.read_text()).get("seed", 0))
            except (ValueError, json.JSONDecodeError):
                seed = 0
        return cls(
            sr,
            seed=seed,
            root=root,
            class_files=class_files,
            interference_files=_audio_files(root / "interference"),
            noise_files=_audio_files(root / "noise"),
            rir_files=rir_files,
            unknown_folders=tuple(unknown),
            cache_mb=cache_mb,
        )

    @classmethod
    def _from_packed(cls, path: Path, sr: int) -> Soundbank:
        """A bank from one .npz written by :func:`write_packed` (clips already decoded and resampled)."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != PACKED_FORMAT:
                raise ValueError(f"{path}: not a packed soundbank ({PACKED_FORMAT})")
            if int(meta["sr"]) != int(sr):
                raise ValueError(f"{path}: packed at {meta['sr']} Hz, the bank wants {sr} Hz")
            pcm, offsets = data["pcm"], data["offsets"]
        packed: dict[Path, np.ndarray] = {}
        folders: dict[str, list[Path]] = {}
        for i, folder in enumerate(meta["folders"]):
            key = path / folder / f"{i:06d}"
            clip = (pcm[offsets[i] : offsets[i + 1]].astype(np.float32) * float(meta["scales"][i]))
            clip.setflags(write=False)
            packed[key] = clip
            folders.setdefault(folder, []).append(key)
        class_files = {name: folders[name] for name in CLASSES if name in folders}
        return cls(sr, seed=int(meta.get("seed", 0)), root=path, class_files=class_files,
                   interference_files=folders.get("interference", []), noise_files=folders.get("noise", []),
                   packed=packed, cache_mb=0)

    # -- description ------------------------------------------------------------------------

    @property
    def is_procedural(self) -> bool:
        return self._class_files is None

    @property
    def available_classes(self) -> tuple[str, ...]:
        """Target classes this bank can produce, in CLASSES order."""
        if self.is_procedural:
            return CLASSES
        return tuple(name for name in CLASSES if self._class_files.get(name))

    @property
    def missing_classes(self) -> tuple[str, ...]:
        return tuple(name for name in CLASSES if name not in self.available_classes)

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """Material kinds synthesised procedurally because a folder bank has none."""
        if self.is_procedural:
            return ()
        return tuple(kind for kind, files in (("interference", self._interference_files), ("noise", self._noise_files)) if not files)

    @property
    def has_rirs(self) -> bool:
        return bool(self._rir_files)

    @property
    def rir_rooms(self) -> tuple[str, ...]:
        """Room groups of the RIR files ('' for files directly in rirs/)."""
        return tuple(self._rir_files)

    def describe(self) -> dict:
        """JSON-able summary, e.g. for a training run's provenance."""
        if self.is_procedural:
            return {"kind": "procedural", "sr": self.sr, "seed": self.seed, "duration_range": list(self.duration_range), "espeak": ESPEAK_AVAILABLE}
        return {
            "kind": "folder",
            "root": str(self.root),
            "sr": self.sr,
            "seed": self.seed,
            "files": {name: len(self._class_files.get(name, [])) for name in CLASSES},
            "interference": len(self._interference_files),
            "noise": len(self._noise_files),
            "rirs": {room or ".": len(files) for room, files in self._rir_files.items()},
            "missing_classes": list(self.missing_classes),
            "fallbacks": list(self.fallbacks),
            "unknown_folders": list(self.unknown_folders),
        }

    def __repr__(self) -> str:
        if self.is_procedural:
            return f"Soundbank.procedural(sr={self.sr}, seed={self.seed})"
        return f"Soundbank.from_folder({str(self.root)!r}, sr={self.sr}; {len(self.available_classes)}/{len(CLASSES)} classes)"

    # -- draws ------------------------------------------------------------------------------

    def _duration(self, rng: np.random.Generator, low: float, high: float, max_duration: float | None) -> float:
        low, high = max(low, self.duration_range[0]), min(high, self.duration_range[1])
        if low > high:  # class range and bank range do not overlap: honour the bank's
            low, high = self.duration_range
        if max_duration is not None:
            high = min(high, max_duration)
            low = min(low, high)
        return float(rng.uniform(low, high))

    def event(self, cls: str, rng: np.random.Generator, max_duration: float | None = None) -> np.ndarray:
        """One clip of target class ``cls`` (float32 mono, at most ``max_duration`` seconds)."""
        if cls not in self.available_classes:
            raise KeyError(f"class {cls!r} not available in {self!r}; available: {', '.join(self.available_classes)}")
        if self.is_procedural:
            child = _child_rng(self.seed, rng)
            duration = self._duration(child, *CLASS_DURATION_RANGE[cls], max_duration)
            return synth_event(cls, child, self.sr, duration)
        files = self._class_files[cls]
        return self._excerpt(self._load(files[int(rng.integers(len(files)))]), rng, max_duration)

    def interferer(self, rng: np.random.Generator, max_duration: float | None = None) -> np.ndarray:
        """One non-target clip (float32 mono, at most ``max_duration`` seconds)."""
        if not self._interference_files:
            child = _child_rng(self.seed, rng)
            return synth_interferer(child, self.sr, self._duration(child, 1.0, 8.0, max_duration))
        files = self._interference_files
        return self._excerpt(self._load(files[int(rng.integers(len(files)))]), rng, max_duration)

    def noise(self, rng: np.random.Generator, n_samples_out: int) -> np.ndarray:
        """Background noise of exactly ``n_samples_out`` samples (float32 mono)."""
        n = int(n_samples_out)
        if not self._noise_files:
            return synth_noise(_child_rng(self.seed, rng), self.sr, n)
        files = self._noise_files
        first = self._load(files[int(rng.integers(len(files)))])
        if len(first) >= n:
            start = int(rng.integers(0, len(first) - n + 1))
            return first[start : start + n].copy()
        # Too short: chain random files with short crossfades so no click marks the joins.
        fade = n_samples(self.sr, 0.05)
        out = first.astype(np.float64)
        while len(out) < n + fade:
            nxt = self._load(files[int(rng.integers(len(files)))]).astype(np.float64)
            k = min(fade, len(out), len(nxt))
            if k == 0:
                out = np.concatenate([out, nxt])
                continue
            ramp = np.linspace(0.0, 1.0, k)
            joined = out[-k:] * np.sqrt(1 - ramp) + nxt[:k] * np.sqrt(ramp)
            out = np.concatenate([out[:-k], joined, nxt[k:]])
        start = int(rng.integers(0, len(out) - n + 1))
        return out[start : start + n].astype(np.float32)

    def rir_room(self, rng: np.random.Generator) -> str | None:
        """Pick a room group for one scene (None when the bank has no RIRs)."""
        if not self._rir_files:
            return None
        rooms = self.rir_rooms
        return rooms[int(rng.integers(len(rooms)))]

    def rir(self, rng: np.random.Generator, room: str | None = None) -> np.ndarray | None:
        """A multichannel RIR [mics, taps] (float32) from ``room`` (any room when None), or None."""
        if not self._rir_files:
            return None
        if room is None:
            room = self.rir_room(rng)
        files = self._rir_files[room]
        return self._load(files[int(rng.integers(len(files)))], mono=False)

    # -- file access --------------------------------------------------------------------------

    def _excerpt(self, clip: np.ndarray, rng: np.random.Generator, max_duration: float | None) -> np.ndarray:
        if max_duration is None:
            return clip.copy()
        limit = n_samples(self.sr, max_duration)
        if len(clip) <= limit:
            return clip.copy()
        start = int(rng.integers(0, len(clip) - limit + 1))
        return clip[start : start + limit].copy()

    def _load(self, path: Path, mono: bool = True) -> np.ndarray:
        """Decode, resample and (for dry sources) downmix one file; LRU-cached by byte budget."""
        if path in self._packed:
            return self._packed[path]
        key = (path, mono)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        audio, file_sr = sf.read(str(path), dtype="float32", always_2d=True)  # [frames, channels]
        if file_sr != self.sr:
            audio = soxr.resample(audio, file_sr, self.sr, quality="HQ").astype(np.float32)
        audio = np.ascontiguousarray(audio.mean(axis=1) if mono else audio.T, dtype=np.float32)
        audio.setflags(write=False)  # cached arrays are shared: callers get copies or read-only views
        if self._cache_limit > 0 and audio.nbytes <= self._cache_limit:
            self._cache[key] = audio
            self._cache_bytes += audio.nbytes
            while self._cache_bytes > self._cache_limit:
                _, dropped = self._cache.popitem(last=False)
                self._cache_bytes -= dropped.nbytes
        return audio


class MixedSoundbank:
    """Real recordings and procedural material drawn side by side, for training that transfers.

    A target of a class the folder bank has is a real clip with probability ``p_real`` (else
    procedural); classes without real material stay procedural. Interferers and backgrounds are real
    with ``p_real_interference`` / ``p_real_noise``. Real clips pass through a random recording chain
    (:func:`~stream_s5.synth.dsp.recording_colour`: EQ, band limits, saturation, short room tails) with
    probability ``p_colour``, so the model meets each recording through many microphones and rooms.
    Same interface as :class:`Soundbank`; RIRs come from the folder bank when it has them.
    """

    def __init__(self, real: Soundbank, procedural: Soundbank, *, p_real: float = 0.6,
                 p_real_interference: float = 0.5, p_real_noise: float = 0.5, p_colour: float = 0.6):
        if real.sr != procedural.sr:
            raise ValueError(f"rates differ: real {real.sr}, procedural {procedural.sr}")
        for name, value in (("p_real", p_real), ("p_real_interference", p_real_interference),
                            ("p_real_noise", p_real_noise), ("p_colour", p_colour)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value}")
        self.real, self.procedural = real, procedural
        self.sr = real.sr
        self.p_real, self.p_real_interference, self.p_real_noise, self.p_colour = p_real, p_real_interference, p_real_noise, p_colour

    available_classes = property(lambda self: CLASSES)
    missing_classes = property(lambda self: ())
    has_rirs = property(lambda self: self.real.has_rirs)
    rir_rooms = property(lambda self: self.real.rir_rooms)

    def rir_room(self, rng):
        return self.real.rir_room(rng)

    def rir(self, rng, room=None):
        return self.real.rir(rng, room)

    def describe(self) -> dict:
        return {"kind": "mixed", "real": self.real.describe(), "procedural": self.procedural.describe(),
                "p_real": self.p_real, "p_real_interference": self.p_real_interference,
                "p_real_noise": self.p_real_noise, "p_colour": self.p_colour}

    def _coloured(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p_colour:
            return clip
        child = _child_rng(self.real.seed, rng)
        return peak_normalise(recording_colour(child, clip, self.sr), 0.5)

    def event(self, cls: str, rng: np.random.Generator, max_duration: float | None = None) -> np.ndarray:
        if cls in self.real.available_classes and rng.random() < self.p_real:
            return self._coloured(self.real.event(cls, rng, max_duration), rng)
        return self.procedural.event(cls, rng, max_duration)

    def interferer(self, rng: np.random.Generator, max_duration: float | None = None) -> np.ndarray:
        if "interference" not in self.real.fallbacks and rng.random() < self.p_real_interference:
            return self._coloured(self.real.interferer(rng, max_duration), rng)
        return self.procedural.interferer(rng, max_duration)

    def noise(self, rng: np.random.Generator, n_samples_out: int) -> np.ndarray:
        if "noise" not in self.real.fallbacks and rng.random() < self.p_real_noise:
            return self.real.noise(rng, n_samples_out)
        return self.procedural.noise(rng, n_samples_out)


PACKED_FORMAT = "stream_s5.soundbank-packed/1"


def write_packed(folder: str | os.PathLike, path: str | os.PathLike, sr: int = 16000,
                 max_per_folder: int | None = None, seed: int = 0, max_seconds: float | None = None) -> dict:
    """Pack a folder soundbank's target, interference and noise clips (not RIRs) into one .npz:
    decoded, resampled to ``sr``, mono, 16-bit with a per-clip scale. For machines that train without
    soundfile or without the source files (a GPU box with numpy only). ``max_per_folder`` keeps a seeded
    random subset of each folder; ``max_seconds`` keeps a seeded random excerpt of longer clips (long
    background loops would fill a size-limited carry, and a scene takes 4 s of them). ``Soundbank.from_folder(path.npz)``
    reads it back."""
    bank = Soundbank.from_folder(folder, sr, cache_mb=0)
    rng = np.random.default_rng(seed)
    groups = [(name, bank._class_files[name]) for name in bank.available_classes]
    groups += [("interference", bank._interference_files), ("noise", bank._noise_files)]
    chunks, folders, scales, offsets = [], [], [], [0]
    for name, files in groups:
        if max_per_folder is not None and len(files) > max_per_folder:
            files = [files[int(i)] for i in sorted(rng.choice(len(files), max_per_folder, replace=False))]
        for file in files:
            clip = bank._load(file)
            if max_seconds is not None and len(clip) > int(max_seconds * sr):
                start = int(rng.integers(0, len(clip) - int(max_seconds * sr) + 1))
                clip = clip[start : start + int(max_seconds * sr)]
            scale = float(np.max(np.abs(clip))) / 32767.0 or 1.0
            chunks.append(np.round(clip / scale).astype(np.int16))
            folders.append(name)
            scales.append(scale)
            offsets.append(offsets[-1] + len(clip))
    meta = {"format": PACKED_FORMAT, "sr": int(sr), "seed": int(bank.seed), "source": str(folder),
            "folders": folders, "scales": scales}
    np.savez_compressed(path, pcm=np.concatenate(chunks) if chunks else np.zeros(0, np.int16),
                        offsets=np.asarray(offsets, np.int64), meta=np.array(json.dumps(meta)))
    return {"clips": len(folders), "seconds": offsets[-1] / sr}


# ----------------------------------------------------------------------------------------------
# Rendering a procedural bank to disk


def _render_job(job: tuple) -> str:
    """Render and write one clip; a top-level function so process pools can pickle it."""
    kind, name, index, folder, sr, seed, duration_range, noise_duration, subtype = job
    if kind == "class":
        rng = np.random.default_rng([seed, CLASSES.index(name), index])
        low, high = CLASS_DURATION_RANGE[name]
        low, high = max(low, duration_range[0]), min(high, duration_range[1])
        if low > high:
            low, high = duration_range
        audio = synth_event(name, rng, sr, float(rng.uniform(low, high)))
        path = Path(folder) / name / f"{name}_{index:05d}.wav"
    elif kind == "interference":
        rng = np.random.default_rng([seed, _STREAM_INTERFERENCE, index])
        kinds = sorted(INTERFERER_GENERATORS)
        family = kinds[index % len(kinds)]  # round-robin: every family equally represented
        audio = synth_interferer(rng, sr, float(rng.uniform(duration_range[0], max(duration_range[1], 8.0))), kind=family)
        path = Path(folder) / "interference" / f"{family}_{index:05d}.wav"
    elif kind == "noise":
        rng = np.random.default_rng([seed, _STREAM_NOISE, index])
        audio = synth_noise(rng, sr, n_samples(sr, noise_duration))
        path = Path(folder) / "noise" / f"noise_{index:05d}.wav"
    else:  # one simulated room with ``name`` sources, written as rirs/room_<index>/src_<k>.wav
        from .rooms import simulate_room

        rng = np.random.default_rng([seed, _STREAM_RIRS, index])
        draw = simulate_room(rng, sr, int(name))
        room_folder = Path(folder) / "rirs" / f"room_{index:04d}"
        room_folder.mkdir(parents=True, exist_ok=True)
        for k, rir in enumerate(draw.rirs):
            sf.write(str(room_folder / f"src_{k:02d}.wav"), (rir / (np.max(np.abs(rir)) + 1e-12) * 0.9).T.astype(np.float32), sr, subtype="FLOAT")
        (room_folder / "room.json").write_text(json.dumps(draw.info, indent=1))
        return str(room_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, subtype=subtype)
    return str(path)


def write_soundbank(
    folder: str | os.PathLike,
    sr: int = 16000,
    n_per_class: int = 150,
    n_interference: int = 300,
    n_noise: int = 60,
    seed: int = 0,
    *,
    duration_range: tuple[float, float] = (1.0, 6.0),
    noise_duration: float = 12.0,
    n_rir_rooms: int = 0,
    sources_per_room: int = 6,
    classes: tuple[str, ...] | list[str] | None = None,
    workers: int = 1,
    subtype: str = "PCM_16",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Render a procedural soundbank into ``folder`` in the :meth:`Soundbank.from_folder` layout.

    Every clip has its own seed ``[seed, stream, index]``, so the bank is identical whatever
    ``workers`` is, and single clips can be re-rendered. Clip lengths are drawn per class within
    ``duration_range``. ``progress(done, total)`` is called after each clip. RIR rooms (optional)
    are simulated shoebox rooms (:func:`stream_s5.synth.rooms.simulate_room`), written as
    ``rirs/room_<k>/src_<j>.wav`` (float WAV, one channel per microphone, peak-normalised jointly
    over the channels) plus the room description in ``room.json``.
    Returns the manifest that is also written to ``soundbank.json``.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    names = tuple(CLASSES if classes is None else classes)
    unknown = [name for name in names if name not in CLASSES]
    if unknown:
        raise ValueError(f"unknown classes: {unknown}")
    common = (str(root), int(sr), int(seed), tuple(duration_range), float(noise_duration), subtype)

    def job(kind, name, index):
        return (kind, name, index, *common)

    jobs = [job("class", name, i) for name in names for i in range(n_per_class)]
    jobs += [job("interference", None, i) for i in range(n_interference)]
    jobs += [job("noise", None, i) for i in range(n_noise)]
    jobs += [job("rirs", sources_per_room, i) for i in range(n_rir_rooms)]
    total = len(jobs)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for done, _ in enumerate(pool.map(_render_job, jobs, chunksize=8), start=1):
                if progress is not None:
                    progress(done, total)
    else:
        for done, item in enumerate(jobs, start=1):
            _render_job(item)
            if progress is not None:
                progress(done, total)
    manifest = {
        "format": SOUNDBANK_FORMAT,
        "generator": "stream_s5.synth procedural",
        "seed": int(seed),
        "sr": int(sr),
        "duration_range": list(duration_range),
        "noise_duration": float(noise_duration),
        "subtype": subtype,
        "espeak": ESPEAK_AVAILABLE,
        "counts": {
            **{name: int(n_per_class) for name in names},
            "interference": int(n_interference),
            "noise": int(n_noise),
            "rir_rooms": int(n_rir_rooms),
        },
    }
    (root / "soundbank.json").write_text(json.dumps(manifest, indent=1))
    return manifest
