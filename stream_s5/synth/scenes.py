"""DCASE-2025-Task-4-style scene generator: targets, interferers and background at drawn SNRs.

Recipe (one scene, everything drawn from ``np.random.default_rng(seed)``):

1. Number of targets: 0 with probability ``p_no_target``, else uniform in
   [min_targets, max_targets] (distinct classes unless ``distinct_classes=False``); number of
   interferers uniform in [min_interferers, max_interferers].
2. Background noise at ``noise_level_db`` dBFS RMS (at the reference microphone).
3. Each clip is placed with the onset of its non-silent part uniform in the scene; it may run past
   the end, but at least ``min_event_s`` (or all of it, if shorter) stays inside.
4. Level: the RMS of the clip's contribution at the reference microphone over its active part
   [onset, offset] is ``snr`` dB above the background RMS (targets: ``target_snr_db``,
   interferers: ``interferer_snr_db``). One SNR is drawn per target class.
5. Events: onset/offset are measured on the placed reference with a frame-energy rule (10 ms
   frames, active = within 40 dB of the loudest frame), so labels never include leading or
   trailing silence.
6. If the mixture peak exceeds 0.99, mixture, references, interferers and noise are all scaled
   by the same factor (SNRs unchanged).

Dry scenes (``room=False``) are single-channel and exact: ``mixture[0] == sum(sources.values())
+ interferers + noise`` up to float32 rounding. Spatial scenes (``room=True``) convolve every
clip with its RIR per microphone (full reverberation in the mixture) while the references are the
DCASE references: the dry clip convolved with the reference-mic RIR cut to
[direct peak − 6 ms, direct peak + early_reflection_ms]. The late reverberation is therefore in the
mixture but in no reference, and the identity above does not hold; ``interferers`` and ``noise``
are still the exact (reverberant) reference-mic components.

On-disk layout of :func:`save_scene` (read back by :func:`load_scene`)::

    <folder>/mixture.wav       [N, channels] float32 WAV
    <folder>/<Class>.wav       reference of each present target class, mono float32
    <folder>/interference.wav  sum of the interferers at the reference microphone
    <folder>/noise.wav         background at the reference microphone
    <folder>/scene.json        events, SNRs, config, seed, room description
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
from scipy import signal

from stream_s5.labels import CLASSES

from .dsp import frame_energy_db, n_samples
from .rooms import MIC_ARRAYS, RoomDraw, early_part, simulate_room, spatialise_noise
from .soundbank import Soundbank

__all__ = [
    "SCENE_FORMAT",
    "SceneConfig",
    "Event",
    "Scene",
    "active_region",
    "scene_seed",
    "generate_scene",
    "generate_scenes",
    "save_scene",
    "load_scene",
]

SCENE_FORMAT = "stream_s5.scene/1"
EVENT_FRAME_S = 0.01  # frame length of the onset/offset rule
ACTIVITY_THRESHOLD_DB = 40.0  # active = frame energy within this many dB of the loudest frame


@dataclass
class SceneConfig:
    sr: int = 16000
    duration: float = 10.0
    channels: int = 1
    min_targets: int = 1
    max_targets: int = 3
    p_no_target: float = 0.1
    min_interferers: int = 0
    max_interferers: int = 2
    target_snr_db: tuple[float, float] = (5.0, 20.0)
    interferer_snr_db: tuple[float, float] = (0.0, 15.0)
    noise_level_db: tuple[float, float] = (-45.0, -25.0)  # dBFS RMS of the background
    min_event_s: float = 0.5
    max_event_s: float | None = None  # None: up to the scene duration (the bank's clip length)
    room: bool = False
    mic_array: str = "tetrahedral"  # used when channels > 1; one channel = one omni mic
    early_reflection_ms: float = 50.0
    distinct_classes: bool = True
    classes: tuple[str, ...] | None = None  # restrict target classes (None: all the bank has)
    rt60_range: tuple[float, float] = (0.2, 0.8)
    # Share of dry (room=False) scenes that get a simulated room anyway: mono reverberation for training.
    p_room: float = 0.0
    rir_source: str = "auto"  # "auto": the bank's rirs/ when present, else simulate; "simulate"; "bank"
    max_peak: float = 0.99

    def validate(self) -> None:
        if self.sr <= 0 or self.duration <= 0:
            raise ValueError("sr and duration must be positive")
        if not 0 <= self.min_targets <= self.max_targets:
            raise ValueError("need 0 <= min_targets <= max_targets")
        if not 0 <= self.min_interferers <= self.max_interferers:
            raise ValueError("need 0 <= min_interferers <= max_interferers")
        if not 0.0 <= self.p_no_target <= 1.0:
            raise ValueError("p_no_target must be a probability")
        if not 0.0 <= self.p_room <= 1.0:
            raise ValueError("p_room must be a probability")
        for name in ("target_snr_db", "interferer_snr_db", "noise_level_db", "rt60_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: low > high")
        if self.classes is not None:
            unknown = [c for c in self.classes if c not in CLASSES]
            if unknown:
                raise ValueError(f"unknown classes: {unknown}")
        if self.rir_source not in ("auto", "simulate", "bank"):
            raise ValueError(f"rir_source must be auto/simulate/bank, got {self.rir_source!r}")
        if self.channels < 1:
            raise ValueError("channels must be >= 1")
        if self.channels > 1:
            if not self.room:
                raise ValueError("channels > 1 needs room=True (a dry scene has no spatial image)")
            if self.rir_source != "bank" and MIC_ARRAYS.get(self.mic_array) != self.channels:
                raise ValueError(f"mic_array {self.mic_array!r} has {MIC_ARRAYS.get(self.mic_array)} mics, channels={self.channels}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SceneConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in data.items():
            if key not in known:
                continue  # forward compatibility: ignore fields of newer versions
            values[key] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


@dataclass
class Event:
    label: str
    onset: float  # seconds
    offset: float  # seconds


@dataclass
class Scene:
    mixture: np.ndarray  # [channels, N] float32
    sources: dict[str, np.ndarray]  # class -> [N] float32 reference at the reference mic
    events: list[Event]  # target events, sorted by onset
    interferers: np.ndarray  # [N] float32, sum of interferers at the reference mic
    noise: np.ndarray  # [N] float32, background at the reference mic
    sr: int
    seed: int
    snrs: dict[str, float] = field(default_factory=dict)  # drawn target SNR (dB) per class
    interferer_events: list[Event] = field(default_factory=list)
    interferer_snrs: list[float] = field(default_factory=list)  # same order as interferer_events
    noise_level_db: float = float("nan")  # drawn background level, dBFS RMS (before anti-clipping)
    gain: float = 1.0  # anti-clipping factor applied to every component
    config: SceneConfig | None = None
    room: dict | None = None  # room / RIR description of spatial scenes

    @property
    def labels(self) -> list[str]:
        """Sorted present target classes."""
        return sorted(self.sources)

    @property
    def n_samples(self) -> int:
        return self.mixture.shape[-1]

    @property
    def duration(self) -> float:
        return self.n_samples / self.sr

    def activity(self, cls: str, hop: int, threshold_db: float = ACTIVITY_THRESHOLD_DB) -> np.ndarray:
        """Frame-level 0/1 labels of ``cls`` (float32, ``ceil(N / hop)`` frames of ``hop`` samples).

        Frame j covers samples [j*hop, (j+1)*hop); it is active when the reference's energy there
        is within ``threshold_db`` of its loudest frame (the same rule as the event boundaries).
        """
        n_frames = -(-self.n_samples // hop)
        reference = self.sources.get(cls)
        if reference is None or not np.any(reference):
            return np.zeros(n_frames, dtype=np.float32)
        energy = frame_energy_db(reference, hop)
        return (energy > energy.max() - threshold_db).astype(np.float32)


def active_region(x: np.ndarray, sr: int, threshold_db: float = ACTIVITY_THRESHOLD_DB) -> tuple[int, int] | None:
    """[start, stop) samples of the non-silent part of x (10 ms frames from sample 0), or None."""
    frame = max(1, int(round(EVENT_FRAME_S * sr)))
    if not np.any(x):
        return None
    energy = frame_energy_db(x, frame)
    active = np.flatnonzero(energy > energy.max() - threshold_db)
    return int(active[0] * frame), int(min(len(x), (active[-1] + 1) * frame))


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene ``index`` in a set: independent streams via SeedSequence([seed, index])."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0])


_DEFAULT_BANKS: dict[int, Soundbank] = {}


def _default_bank(sr: int) -> Soundbank:
    if sr not in _DEFAULT_BANKS:
        _DEFAULT_BANKS[sr] = Soundbank.procedural(sr, seed=0)
    return _DEFAULT_BANKS[sr]


@dataclass
class _Placement:
    kind: str  # "target" or "interferer"
    label: str
    dry: np.ndarray  # [N] float64, clip placed in the scene timeline
    snr_db: float


def _place(rng: np.random.Generator, clip: np.ndarray, n: int, sr: int, min_event_s: float) -> np.ndarray | None:
    """Put ``clip`` in an n-sample timeline, onset of its active part uniform (see module doc)."""
    region = active_region(clip, sr)
    if region is None:
        return None
    start, stop = region
    keep = min(stop - start, n_samples(sr, min_event_s), n)
    onset = int(rng.integers(0, n - keep + 1))
    placed = np.zeros(n)
    offset = onset - start  # clip sample 0 lands here (may be negative: leading silence cut)
    lo, hi = max(0, offset), min(n, offset + len(clip))
    placed[lo:hi] = clip[lo - offset : hi - offset]
    return placed


def _room_for_scene(cfg: SceneConfig, rng: np.random.Generator, bank: Soundbank, n_sources: int) -> RoomDraw:
    count = max(1, n_sources)  # noise spatialisation needs a room even without sources
    use_bank = cfg.rir_source == "bank" or (cfg.rir_source == "auto" and bank.has_rirs)
    if not use_bank:
        array = "single" if cfg.channels == 1 else cfg.mic_array
        return simulate_room(rng, cfg.sr, count, array, rt60_range=cfg.rt60_range)
    if not bank.has_rirs:
        raise ValueError("rir_source='bank' but the soundbank has no rirs/")
    room = bank.rir_room(rng)
    rirs = []
    for _ in range(count):
        rir = np.asarray(bank.rir(rng, room), dtype=np.float64)
        if rir.shape[0] < cfg.channels or (rir.shape[0] != cfg.channels and cfg.channels != 1):
            raise ValueError(f"RIRs in room {room!r} have {rir.shape[0]} channels, scene wants {cfg.channels}")
        rirs.append(rir[: cfg.channels])
    return RoomDraw(rirs=rirs, info={"kind": "measured", "room": room}, mic_positions=None)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def generate_scene(cfg: SceneConfig, seed: int, soundbank: Soundbank | None = None) -> Scene:
    """One scene; deterministic: same config, seed and bank give bit-identical arrays."""
    cfg.validate()
    bank = soundbank if soundbank is not None else _default_bank(cfg.sr)
    if bank.sr != cfg.sr:
        raise ValueError(f"soundbank rate {bank.sr} != scene rate {cfg.sr}")
    rng = np.random.default_rng(int(seed))
    sr = cfg.sr
    n = n_samples(sr, cfg.duration)
    max_clip = cfg.duration if cfg.max_event_s is None else min(cfg.max_event_s, cfg.duration)

    candidates = [c for c in bank.available_classes if cfg.classes is None or c in cfg.classes]
    if rng.random() < cfg.p_no_target or not candidates:
        n_targets = 0
    else:
        n_targets = int(rng.integers(cfg.min_targets, cfg.max_targets + 1))
        if cfg.distinct_classes:
            n_targets = min(n_targets, len(candidates))
    picks = rng.choice(len(candidates), size=n_targets, replace=not cfg.distinct_classes) if n_targets else []
    labels = [candidates[int(i)] for i in picks]
    n_interferers = int(rng.integers(cfg.min_interferers, cfg.max_interferers + 1))
    noise_db = float(rng.uniform(*cfg.noise_level_db))
    snrs = {label: float(rng.uniform(*cfg.target_snr_db)) for label in dict.fromkeys(labels)}

    placements: list[_Placement] = []
    for label in labels:
        placed = _place(rng, bank.event(label, rng, max_clip), n, sr, cfg.min_event_s)
        if placed is not None:
            placements.append(_Placement("target", label, placed, snrs[label]))
    for _ in range(n_interferers):
        clip = bank.interferer(rng, max_clip)
        snr = float(rng.uniform(*cfg.interferer_snr_db))
        placed = _place(rng, clip, n, sr, cfg.min_event_s)
        if placed is not None:
            placements.append(_Placement("interferer", "interference", placed, snr))
    # A silent clip (only possible with odd folder material) cannot be set to an SNR: dropped.
    snrs = {label: snr for label, snr in snrs.items() if any(p.label == label for p in placements)}

    noise_rms = 10.0 ** (noise_db / 20.0)
    noise = np.asarray(bank.noise(rng, n), dtype=np.float64)
    noise *= noise_rms / max(_rms(noise), 1e-12)
    draw = None
    # Drawn only when asked for, so that scenes of configs without it stay bit-identical.
    if cfg.room or (cfg.p_room > 0 and rng.random() < cfg.p_room):
        draw = _room_for_scene(cfg, rng, bank, len(placements))
        noise_image = spatialise_noise(rng, noise, draw, sr)
        noise_image *= noise_rms / max(_rms(noise_image[0]), 1e-12)
    else:
        noise_image = noise[None]

    mixture = noise_image.copy()
    sources: dict[str, np.ndarray] = {}
    interferers = np.zeros(n)
    events: list[Event] = []
    interferer_events: list[tuple[Event, float]] = []
    for index, placement in enumerate(placements):
        if draw is not None:
            rir = draw.rirs[index]
            image = signal.oaconvolve(placement.dry[None], rir, axes=-1)[:, :n]
            reference = signal.oaconvolve(placement.dry, early_part(rir[0], sr, cfg.early_reflection_ms))[:n]
        else:
            image = placement.dry[None]
            reference = placement.dry
        region = active_region(reference, sr)
        if region is None:
            continue
        start, stop = region
        gain = noise_rms * 10.0 ** (placement.snr_db / 20.0) / max(_rms(image[0, start:stop]), 1e-12)
        image = image * gain
        event = Event(placement.label, start / sr, stop / sr)
        mixture += image
        if placement.kind == "target":
            sources[placement.label] = sources.get(placement.label, 0.0) + reference * gain
            events.append(event)
        else:
            interferers += image[0]
            interferer_events.append((event, placement.snr_db))

    peak = float(np.max(np.abs(mixture))) if mixture.size else 0.0
    scale = cfg.max_peak / peak if peak > cfg.max_peak else 1.0
    events.sort(key=lambda e: (e.onset, e.label))
    interferer_events.sort(key=lambda item: item[0].onset)
    ref_noise = noise_image[0]
    return Scene(
        mixture=(mixture * scale).astype(np.float32),
        sources={label: (ref * scale).astype(np.float32) for label, ref in sorted(sources.items())},
        events=events,
        interferers=(interferers * scale).astype(np.float32),
        noise=(ref_noise * scale).astype(np.float32),
        sr=sr,
        seed=int(seed),
        snrs=snrs,
        interferer_events=[e for e, _ in interferer_events],
        interferer_snrs=[s for _, s in interferer_events],
        noise_level_db=noise_db,
        gain=scale,
        config=cfg,
        room=None if draw is None else draw.info,
    )


def generate_scenes(cfg: SceneConfig, n: int, seed: int, soundbank: Soundbank | None = None) -> Iterator[Scene]:
    """Scenes 0..n-1 of a set; scene i uses :func:`scene_seed(seed, i) <scene_seed>`, so any
    scene can be regenerated alone from its stored ``Scene.seed``."""
    bank = soundbank if soundbank is not None else _default_bank(cfg.sr)
    for index in range(int(n)):
        yield generate_scene(cfg, scene_seed(seed, index), bank)


def _event_dict(event: Event) -> dict:
    return {"label": event.label, "onset": event.onset, "offset": event.offset}


def save_scene(scene: Scene, folder: str | os.PathLike) -> Path:
    """Write a scene in the documented layout (float WAV, so a load is bit-exact)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    sf.write(str(root / "mixture.wav"), scene.mixture.T, scene.sr, subtype="FLOAT")
    for label, reference in scene.sources.items():
        sf.write(str(root / f"{label}.wav"), reference, scene.sr, subtype="FLOAT")
    sf.write(str(root / "interference.wav"), scene.interferers, scene.sr, subtype="FLOAT")
    sf.write(str(root / "noise.wav"), scene.noise, scene.sr, subtype="FLOAT")
    meta = {
        "format": SCENE_FORMAT,
        "sr": scene.sr,
        "seed": scene.seed,
        "duration": scene.duration,
        "channels": int(scene.mixture.shape[0]),
        "labels": scene.labels,
        "events": [_event_dict(e) for e in scene.events],
        "snrs": scene.snrs,
        "interferer_events": [_event_dict(e) for e in scene.interferer_events],
        "interferer_snrs": scene.interferer_snrs,
        "noise_level_db": None if math.isnan(scene.noise_level_db) else scene.noise_level_db,
        "gain": scene.gain,
        "config": None if scene.config is None else scene.config.to_dict(),
        "room": scene.room,
    }
    (root / "scene.json").write_text(json.dumps(meta, indent=1))
    return root


def load_scene(folder: str | os.PathLike) -> Scene:
    """Read a scene written by :func:`save_scene`."""
    root = Path(folder)
    meta = json.loads((root / "scene.json").read_text())
    if meta.get("format") != SCENE_FORMAT:
        raise ValueError(f"{root}: not a {SCENE_FORMAT} scene")

    def read(name: str) -> np.ndarray:
        audio, sr = sf.read(str(root / name), dtype="float32", always_2d=True)
        if sr != meta["sr"]:
            raise ValueError(f"{root / name}: rate {sr} != {meta['sr']}")
        return audio

    def events(items) -> list[Event]:
        return [Event(e["label"], float(e["onset"]), float(e["offset"])) for e in items]

    return Scene(
        mixture=np.ascontiguousarray(read("mixture.wav").T),
        sources={label: read(f"{label}.wav")[:, 0] for label in meta["labels"]},
        events=events(meta["events"]),
        interferers=read("interference.wav")[:, 0],
        noise=read("noise.wav")[:, 0],
        sr=int(meta["sr"]),
        seed=int(meta["seed"]),
        snrs={k: float(v) for k, v in meta.get("snrs", {}).items()},
        interferer_events=events(meta.get("interferer_events", [])),
        interferer_snrs=[float(v) for v in meta.get("interferer_snrs", [])],
        noise_level_db=float("nan") if meta.get("noise_level_db") is None else float(meta["noise_level_db"]),
        gain=float(meta.get("gain", 1.0)),
        config=None if meta.get("config") is None else SceneConfig.from_dict(meta["config"]),
        room=meta.get("room"),
    )
