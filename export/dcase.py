"""The DCASE 2025 Task 4 development set as training data, and a miniature replica of its layouts.

Layout (nttcslab/dcase2025_task4_baseline, README "Data folder structure"; read by its SpatialScaper-based
generator ``src/modules/spatialscaper2``)::

    dev_set/sound_event/{train,valid}/<Class>/*.wav    dry target clips, one folder per DCASE class
    dev_set/interference/{train,valid}/<label>/*.wav   dry non-target clips, any label
    dev_set/noise/{train,valid}/*.wav                  multichannel background recordings (4 ch)
    dev_set/room_ir/{train,valid}/*.sofa               measured RIRs: one SOFA file per room, M positions × 4 mics
    dev_set/metadata/valid.json, metadata/valid/*.json the fixed validation soundscapes
    dev_set/config/                                     source-dataset configs
    dev_set/test/soundscape/<name>.wav                  4-ch 32 kHz test mixtures
    dev_set/test/oracle_target/<name>_<Class>.wav       their dry references

:class:`DcaseSceneGenerator` draws soundscapes from a split the way the official generator does
(``DatasetS5`` with ``config/separation/resunetk.yaml``): one room (a random SOFA file) per scene; 1–3
distinct target classes at 5–20 dB and 1–2 interferers at 0–15 dB, each a random file of its folder,
peak-normalised, cut to ``max_event_dur`` from a random start, placed at a uniform onset that keeps it in
the scene, convolved with the 4-channel RIR of a random measured position, and scaled so its whole
reverberant image has the power ``ref_db + snr`` (mean over channels and samples); the background is a
random 4-channel noise recording at ``ref_db`` (a random whole-second excerpt; looped when too short). The
dry reference of a target is the clip convolved with the reference channel's RIR cut to
[peak − 6 ms, peak + 50 ms), with the event's scale. Deviations, all for training speed or the runtime's
needs: any scene length (``duration``), any rate (files and RIRs are resampled with soxr), a mono variant
(``channels=1``: the reference channel of the same scene), optional no-target scenes (``p_no_target``),
and event boundaries for the SED labels measured on the reference (as in :mod:`stream_s5.synth.scenes`).

SOFA files are netCDF-4 (HDF5) files and are read with h5py (variables ``Data.IR`` [M, R, N],
``Data.SamplingRate``, ``SourcePosition``). :func:`write_replica` writes a miniature development set in the
same layout from the project's procedural soundbank and pyroomacoustics rooms, so that training from the
layout and ``stream-s5 eval --dcase`` run end to end in seconds::

    python -m export.dcase --out runs/dcase_replica --seed 0          # replica of dev_set (with test/)
"""

from __future__ import annotations

import argparse
import json
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

from stream_s5.labels import CLASSES
from stream_s5.synth.scenes import Event, Scene, active_region

__all__ = ["SPLITS", "DevSetError", "DevSet", "DcaseRecipe", "DcaseSceneGenerator", "read_sofa", "write_sofa",
           "write_replica", "write_test_set"]

SPLITS = ("train", "valid")
_AUDIO = (".wav", ".flac")


class DevSetError(ValueError):
    """The folder is not a DCASE 2025 Task 4 development set (the message says what is missing)."""


# ----------------------------------------------------------------------------------------------
# SOFA (netCDF-4 / HDF5)
# ----------------------------------------------------------------------------------------------


@dataclass
class SofaRirs:
    irs: np.ndarray  # [M, R, N] float64
    sr: int
    source_positions: np.ndarray  # [M, 3]


def read_sofa(path: str | Path) -> SofaRirs:
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            irs = np.asarray(f["Data.IR"][...], dtype=np.float64)
            sr = int(np.asarray(f["Data.SamplingRate"][...]).reshape(-1)[0])
            positions = np.asarray(f["SourcePosition"][...], dtype=np.float64) if "SourcePosition" in f else np.zeros((irs.shape[0], 3))
    except (OSError, KeyError) as exc:
        raise DevSetError(f"{path}: not a readable SOFA file with Data.IR and Data.SamplingRate ({exc})") from None
    if irs.ndim != 3 or irs.shape[0] < 1 or irs.shape[1] < 1:
        raise DevSetError(f"{path}: Data.IR must be [measurements, receivers, samples], got {irs.shape}")
    return SofaRirs(irs=irs, sr=sr, source_positions=positions.reshape(irs.shape[0], -1))


def write_sofa(path: str | Path, irs: np.ndarray, sr: int, source_positions: np.ndarray, receiver_positions: np.ndarray,
               room: dict | None = None) -> None:
    """A SOFA ``SingleRoomSRIR`` file with netCDF-4 dimensions (HDF5 dimension scales), as the RIR sets of the
    official layout are; ``irs`` [M, R, N]."""
    import h5py

    irs = np.asarray(irs, dtype=np.float64)
    m, r, n = irs.shape
    with h5py.File(str(path), "w") as f:
        dims = {}
        for name, size in (("M", m), ("R", r), ("N", n), ("C", 3), ("I", 1), ("E", 1)):
            dims[name] = f.create_dataset(name, data=np.zeros(size, np.float32))
            dims[name].make_scale(name)
            dims[name].attrs["NAME"] = np.bytes_(f"This is a netCDF dimension but not a netCDF variable.{size:10d}")

        def variable(name, data, axes, **attrs):
            ds = f.create_dataset(name, data=np.asarray(data, dtype=np.float64))
            for i, axis in enumerate(axes):
                ds.dims[i].attach_scale(dims[axis])
            for key, value in attrs.items():
                ds.attrs[key] = np.bytes_(value)

        variable("Data.IR", irs, "MRN")
        variable("Data.SamplingRate", [float(sr)], "I", Units="hertz")
        variable("Data.Delay", np.zeros((1, r)), "IR")
        variable("SourcePosition", source_positions, "MC", Type="cartesian", Units="metre")
        variable("ReceiverPosition", np.asarray(receiver_positions).reshape(r, 3, 1), "RCI", Type="cartesian", Units="metre")
        variable("ListenerPosition", np.asarray(receiver_positions).mean(axis=0).reshape(1, 3), "IC", Type="cartesian", Units="metre")
        variable("EmitterPosition", np.zeros((1, 3, 1)), "ECI", Type="cartesian", Units="metre")
        for key, value in {"Conventions": "SOFA", "Version": "2.1", "SOFAConventions": "SingleRoomSRIR",
                           "SOFAConventionsVersion": "1.0", "DataType": "FIR", "RoomType": "shoebox",
                           "APIName": "stream_s5 export.dcase (h5py)", "Title": "stream_s5 DCASE replica room",
                           "Comment": json.dumps(room or {})}.items():
            f.attrs[key] = np.bytes_(value)


# ----------------------------------------------------------------------------------------------
# the development set
# ----------------------------------------------------------------------------------------------


def _audio_files(folder: Path, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in _AUDIO)


@dataclass
class DevSet:
    root: Path
    split: str
    events: dict[str, list[Path]]
    interference: dict[str, list[Path]]
    noise: list[Path]
    rooms: list[Path]

    @classmethod
    def open(cls, root: str | Path, split: str = "train") -> DevSet:
        root = Path(root)
        if split not in SPLITS:
            raise DevSetError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        if not root.is_dir():
            raise DevSetError(f"{root}: not a folder")
        if not (root / "sound_event").is_dir() and (root / "dev_set").is_dir():
            raise DevSetError(f"{root}: point --dcase at the dev_set folder inside it ({root / 'dev_set'})")
        for sub in ("sound_event", "room_ir"):
            if not (root / sub / split).is_dir():
                raise DevSetError(f"{root}: no {sub}/{split}/ folder (a DCASE 2025 Task 4 dev_set has sound_event/, "
                                  "interference/, noise/ and room_ir/, each with train/ and valid/)")
        events: dict[str, list[Path]] = {}
        unknown = []
        for folder in sorted(p for p in (root / "sound_event" / split).iterdir() if p.is_dir()):
            if folder.name not in CLASSES:
                unknown.append(folder.name)
                continue
            files = _audio_files(folder)
            if files:
                events[folder.name] = files
        if unknown:
            raise DevSetError(f"{root / 'sound_event' / split}: folders that are not DCASE classes: {', '.join(unknown[:6])}")
        if not events:
            raise DevSetError(f"{root / 'sound_event' / split}: no <Class>/*.wav clips")
        interference = {}
        int_root = root / "interference" / split
        if int_root.is_dir():
            for folder in sorted(p for p in int_root.iterdir() if p.is_dir()):
                files = _audio_files(folder)
                if files:
                    interference[folder.name] = files
        rooms = sorted(p for p in (root / "room_ir" / split).rglob("*.sofa"))
        if not rooms:
            raise DevSetError(f"{root / 'room_ir' / split}: no .sofa room impulse responses")
        return cls(root=root, split=split, events=events, interference=interference,
                   noise=_audio_files(root / "noise" / split, recursive=True), rooms=rooms)

    def describe(self) -> dict:
        return {"root": str(self.root), "split": self.split, "rooms": len(self.rooms), "noise": len(self.noise),
                "interference": {k: len(v) for k, v in self.interference.items()},
                "events": {k: len(v) for k, v in self.events.items()}}


@dataclass
class DcaseRecipe:
    """The official generator's settings (``config/separation/resunetk.yaml``), with the deviations above."""

    duration: float = 10.0
    n_events: tuple[int, int] = (1, 3)
    snr_db: tuple[float, float] = (5.0, 20.0)
    n_interferers: tuple[int, int] = (1, 2)
    interferer_snr_db: tuple[float, float] = (0.0, 15.0)
    ref_db: float = -50.0
    direct_path_ms: tuple[float, float] = (6.0, 50.0)
    max_event_dur: float = 10.0
    p_no_target: float = 0.0
    ref_channel: int = 0


class DcaseSceneGenerator:
    """Scenes of one split of a development set; ``scene(seed)`` is deterministic for a seed."""

    def __init__(self, devset: DevSet, sr: int = 32000, channels: int = 4, recipe: DcaseRecipe | None = None,
                 cache_mb: float = 256.0):
        self.devset, self.sr, self.channels = devset, int(sr), int(channels)
        self.recipe = recipe or DcaseRecipe()
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_bytes, self._cache_limit = 0, int(cache_mb * 2**20)

    # -- file access (decoded, resampled, cached) ----------------------------------------------

    def _cached(self, key, load):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = load()
        self._cache[key] = value
        self._cache_bytes += value.nbytes
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return value

    def _audio(self, path: Path, mono: bool) -> np.ndarray:
        def load():
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            if mono:
                data = data.mean(axis=1, keepdims=True)
            if rate != self.sr:
                data = soxr.resample(data, rate, self.sr, quality="HQ")
            return np.ascontiguousarray(data.T, dtype=np.float32)  # [channels, n]

        return self._cached((path, mono), load)

    def _room(self, path: Path) -> np.ndarray:
        def load():
            sofa = read_sofa(path)
            irs = sofa.irs
            if sofa.sr != self.sr:
                irs = np.stack([soxr.resample(ir.T, sofa.sr, self.sr, quality="HQ").T for ir in irs])
            return irs.astype(np.float32)  # [M, R, N]

        return self._cached((path, "room"), load)

    # -- one scene ---------------------------------------------------------------------------------

    def _event(self, rng, files: list[Path], n: int):
        """(onset sample, peak-normalised clip) of a random file placed the official way."""
        rec = self.recipe
        clip = self._audio(files[int(rng.integers(len(files)))], mono=True)[0]
        duration = clip.size / self.sr
        max_dur = min(rec.max_event_dur, rec.duration)
        start = rng.uniform(0.0, duration - max_dur) if duration > max_dur else 0.0
        length = min(clip.size, int(max_dur * self.sr))
        clip = clip[int(start * self.sr): int(start * self.sr) + length].astype(np.float64)
        peak = np.max(np.abs(clip)) if clip.size else 0.0
        if peak > 0:
            clip = clip / peak
        onset = rng.uniform(0.0, max(0.0, rec.duration - clip.size / self.sr))
        return min(int(onset * self.sr), n - 1), clip

    @staticmethod
    def _scale(target_db: float, image: np.ndarray) -> float:
        power = float(np.mean(np.square(image)))
        return 1.0 if power <= 0 else 10.0 ** ((target_db - 10.0 * math.log10(power)) / 20.0)

    def _direct_path(self, ir_ref: np.ndarray) -> np.ndarray:
        pre, post = (int(ms * self.sr / 1000) for ms in self.recipe.direct_path_ms)
        peak = int(np.argmax(ir_ref))
        out = ir_ref.copy()
        if peak + post < out.size:
            out[peak + post:] = 0
        if peak - pre > 0:
            out[: peak - pre] = 0
        return out

    def scene(self, seed: int) -> Scene:
        rec, ds = self.recipe, self.devset
        rng = np.random.default_rng(int(seed))
        n = int(rec.duration * self.sr)
        room_path = ds.rooms[int(rng.integers(len(ds.rooms)))]
        room = self._room(room_path)
        n_mics = room.shape[1]
        if rec.ref_channel >= n_mics or self.channels > n_mics:
            raise DevSetError(f"{room_path}: {n_mics} receivers, the scene wants channel {rec.ref_channel} of {self.channels}")
        mixture = np.zeros((n_mics, n))
        noise_image = np.zeros((n_mics, n))
        if ds.noise:
            noise = self._audio(ds.noise[int(rng.integers(len(ds.noise)))], mono=False).astype(np.float64)
            if noise.shape[0] == 1:
                noise = np.repeat(noise, n_mics, axis=0)  # a mono recording: the same signal at every mic
            elif noise.shape[0] != n_mics:
                raise DevSetError(f"background has {noise.shape[0]} channels, the room's RIRs {n_mics}")
            if noise.shape[1] > n:
                start = math.floor(rng.uniform(0.0, (noise.shape[1] - n) / self.sr)) * self.sr
                noise = noise[:, start: start + n]
            else:
                noise = np.tile(noise, (1, -(-n // noise.shape[1])))[:, :n]
            noise_image = noise * self._scale(rec.ref_db, noise)
            mixture += noise_image

        classes = sorted(ds.events)
        n_targets = 0 if rng.random() < rec.p_no_target else int(rng.integers(rec.n_events[0], rec.n_events[1] + 1))
        labels = [classes[int(i)] for i in rng.choice(len(classes), size=min(n_targets, len(classes)), replace=False)]
        sources: dict[str, np.ndarray] = {}
        snrs: dict[str, float] = {}
        events: list[Event] = []
        interferers = np.zeros(n)
        interferer_events, interferer_snrs = [], []
        int_labels = sorted(ds.interference)
        n_int = int(rng.integers(rec.n_interferers[0], rec.n_interferers[1] + 1)) if int_labels else 0
        plan = [("target", label, ds.events[label], rng.uniform(*rec.snr_db)) for label in labels]
        for _ in range(n_int):
            label = int_labels[int(rng.integers(len(int_labels)))]
            plan.append(("interferer", label, ds.interference[label], rng.uniform(*rec.interferer_snr_db)))
        positions = []
        for kind, label, files, snr in plan:
            onset, clip = self._event(rng, files, n)
            position = int(rng.integers(room.shape[0]))
            positions.append(position)
            ir = room[position].astype(np.float64)  # [R, taps]
            image = signal.fftconvolve(clip[None], ir, axes=-1)
            scale = self._scale(rec.ref_db + snr, image)
            stop = min(n, onset + image.shape[1])
            mixture[:, onset:stop] += scale * image[:, : stop - onset]
            if kind == "target":
                dry = signal.fftconvolve(clip, self._direct_path(ir[rec.ref_channel]))
                placed = np.zeros(n)
                placed[onset:stop] = scale * dry[: stop - onset]
                region = active_region(placed, self.sr)
                if region is None:
                    continue
                sources[label] = placed
                snrs[label] = float(snr)
                events.append(Event(label, region[0] / self.sr, region[1] / self.sr))
            else:
                interferers[onset:stop] += scale * image[rec.ref_channel, : stop - onset]
                interferer_events.append(Event(label, onset / self.sr, stop / self.sr))
                interferer_snrs.append(float(snr))
        events.sort(key=lambda e: (e.onset, e.label))
        channels = [rec.ref_channel] if self.channels == 1 else list(range(self.channels))
        return Scene(mixture=mixture[channels].astype(np.float32),
                     sources={k: v.astype(np.float32) for k, v in sorted(sources.items())},
                     events=events, interferers=interferers.astype(np.float32),
                     noise=noise_image[rec.ref_channel].astype(np.float32), sr=self.sr, seed=int(seed), snrs=snrs,
                     interferer_events=interferer_events, interferer_snrs=interferer_snrs, noise_level_db=rec.ref_db,
                     room={"kind": "measured", "room": room_path.name, "positions": positions})


# ----------------------------------------------------------------------------------------------
# writing the test layout and a miniature replica of the whole development set
# ----------------------------------------------------------------------------------------------


def write_test_set(generator: DcaseSceneGenerator, out: str | Path, n: int, seed: int, prefix: str = "soundscape") -> list[str]:
    """``out/soundscape/<name>.wav`` (the generator's channels and rate) and ``out/oracle_target/<name>_<Class>.wav``
    from ``n`` generated scenes, as the official test folder holds them; returns the names."""
    out = Path(out)
    (out / "soundscape").mkdir(parents=True, exist_ok=True)
    (out / "oracle_target").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        scene = generator.scene(int(np.random.SeedSequence([seed, 11, i]).generate_state(1)[0]))
        name = f"{prefix}_{i:04d}"
        sf.write(str(out / "soundscape" / f"{name}.wav"), scene.mixture.T, generator.sr, subtype="FLOAT")
        for label, ref in scene.sources.items():
            sf.write(str(out / "oracle_target" / f"{name}_{label}.wav"), ref, generator.sr, subtype="FLOAT")
        names.append(name)
    return names


@dataclass
class ReplicaSize:
    clips_per_class: dict[str, int] = field(default_factory=lambda: {"train": 3, "valid": 1})
    interference_labels: int = 3
    clips_per_interference: dict[str, int] = field(default_factory=lambda: {"train": 2, "valid": 1})
    noise_files: dict[str, int] = field(default_factory=lambda: {"train": 2, "valid": 1})
    rooms: dict[str, int] = field(default_factory=lambda: {"train": 2, "valid": 1})
    positions_per_room: int = 4
    noise_seconds: float = 12.0
    valid_scenes: int = 4
    test_scenes: int = 6


def _replica_room(rng, sr: int, positions: int):
    from stream_s5.synth.rooms import simulate_room

    draw = simulate_room(rng, sr, positions, "tetrahedral", rt60_range=(0.2, 0.6), max_order=6)
    taps = max(r.shape[1] for r in draw.rirs)
    irs = np.stack([np.pad(r, ((0, 0), (0, taps - r.shape[1]))) for r in draw.rirs])
    return irs, draw


def write_replica(root: str | Path, seed: int = 0, sr: int = 32000, size: ReplicaSize | None = None,
                  classes: tuple[str, ...] = CLASSES) -> Path:
    """A miniature ``dev_set`` in the official layout, from the project's own synthesis: procedural target
    clips and interferers (:mod:`stream_s5.synth`), 4-channel backgrounds made diffuse in a simulated room,
    pyroomacoustics RIRs of a tetrahedral array stored as SOFA rooms, validation metadata, and a ``test/``
    folder (soundscapes + oracle targets) generated from the valid split. Returns the dev_set path."""
    from stream_s5.synth.rooms import spatialise_noise
    from stream_s5.synth.soundbank import Soundbank

    size = size or ReplicaSize()
    dev = Path(root) / "dev_set"
    bank = Soundbank.procedural(sr, seed)
    manifest = {"format": "stream_s5.dcase_replica/1", "seed": seed, "sr": sr, "size": asdict(size)}
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, 21, split_index])
        for cls in classes:
            folder = dev / "sound_event" / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(size.clips_per_class[split]):
                sf.write(str(folder / f"{cls}_{split}_{i:03d}.wav"), bank.event(cls, rng, 4.0), sr, subtype="PCM_16")
        for j in range(size.interference_labels):
            folder = dev / "interference" / split / f"interference{j:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(size.clips_per_interference[split]):
                sf.write(str(folder / f"int{j:02d}_{split}_{i:03d}.wav"), bank.interferer(rng, 4.0), sr, subtype="PCM_16")
        (dev / "room_ir" / split).mkdir(parents=True, exist_ok=True)
        (dev / "noise" / split).mkdir(parents=True, exist_ok=True)
        draws = []
        for r in range(size.rooms[split]):
            irs, draw = _replica_room(rng, sr, size.positions_per_room)
            draws.append(draw)
            write_sofa(dev / "room_ir" / split / f"room{split_index}{r:02d}.sofa", irs, sr,
                       np.asarray(draw.info["source_positions"]), np.asarray(draw.info["mic_positions"]), draw.info)
        for k in range(size.noise_files[split]):
            mono = bank.noise(rng, int(size.noise_seconds * sr)).astype(np.float64)
            four = spatialise_noise(rng, mono, draws[k % len(draws)], sr)
            four *= 0.1 / max(1e-9, float(np.sqrt(np.mean(four**2))))
            sf.write(str(dev / "noise" / split / f"room{split_index}{k % len(draws):02d}_noise{k:02d}.wav"), four.T, sr,
                     subtype="PCM_16")
    (dev / "config").mkdir(parents=True, exist_ok=True)
    (dev / "config" / "replica.json").write_text(json.dumps(manifest, indent=2) + "\n")
    # Validation metadata: the fixed scenes of the valid split, by generator seed (the official files hold
    # SpatialScaper event lists instead; `DcaseSceneGenerator` reproduces these from their seeds).
    valid = DcaseSceneGenerator(DevSet.open(dev, "valid"), sr=sr, channels=4)
    meta_dir = dev / "metadata" / "valid"
    meta_dir.mkdir(parents=True, exist_ok=True)
    listing = []
    for i in range(size.valid_scenes):
        scene_seed = int(np.random.SeedSequence([seed, 12, i]).generate_state(1)[0])
        scene = valid.scene(scene_seed)
        path = meta_dir / f"valid_{i:04d}.json"
        path.write_text(json.dumps({"seed": scene_seed, "recipe": asdict(valid.recipe), "room": scene.room,
                                    "events": [asdict(e) for e in scene.events]}, indent=1) + "\n")
        listing.append({"metadata_path": f"valid/{path.name}", "ref_event": [e.label for e in scene.events]})
    (dev / "metadata" / "valid.json").write_text(json.dumps(listing, indent=1) + "\n")
    write_test_set(valid, dev / "test", size.test_scenes, seed)
    return dev


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write a miniature DCASE 2025 Task 4 dev_set (with test/) from the project's synthesis.")
    p.add_argument("--out", required=True, help="folder that receives dev_set/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sr", type=int, default=32000)
    p.add_argument("--test-scenes", type=int, default=ReplicaSize().test_scenes)
    p.add_argument("--clips-per-class", type=int, default=3, help="train clips per class")
    p.add_argument("--valid-clips-per-class", type=int, default=1, help="valid clips per class (the test scenes use these)")
    p.add_argument("--rooms", type=int, default=2, help="simulated rooms in train and in valid (4 positions each)")
    args = p.parse_args(argv)
    size = ReplicaSize(test_scenes=args.test_scenes, rooms={"train": args.rooms, "valid": args.rooms},
                       noise_files={"train": args.rooms, "valid": args.rooms},
                       clips_per_class={"train": args.clips_per_class, "valid": args.valid_clips_per_class})
    dev = write_replica(args.out, seed=args.seed, sr=args.sr, size=size)
    print(f"wrote {dev}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
