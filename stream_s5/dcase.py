"""`stream-s5 eval --dcase DIR`: score a DCASE 2025 Task 4 test folder the way the official evaluator does.

The folder is laid out as the official development test set (nttcslab/dcase2025_task4_baseline,
``data/dev_set/test``)::

    DIR/soundscape/<name>.wav                 4-channel 32 kHz mixtures
    DIR/oracle_target/<name>_<Class>.wav      mono 32 kHz dry reference of every target class present

Each soundscape is streamed through the engine like a file (chunks of ``chunk_s``, then a flush); the
engine's per-class output streams are resampled back to the soundscape's rate (soxr HQ, offline, no delay)
and cut to its length. The figures are those of the official ``src/evaluation/evaluate.py`` with its
``ca_metric`` (``src/utils.py``):

* estimates: one waveform per class the engine reported (a class whose output is all zero was not reported);
  the engine may report more classes over a soundscape than it has slots at once, while the official evaluator
  loads at most ``n_sources`` = 3 estimates per soundscape (its batches stack them), so beyond ``max_classes``
  only the most energetic estimates are kept (the others are counted in ``classes_dropped``);
* per soundscape, for every class in both sets: ``SNR(est, ref) − SNR(mixture channel 0, ref)``, torchmetrics
  ``signal_noise_ratio`` semantics (:func:`stream_s5.metrics.snr`); every false-positive and false-negative
  class adds a 0 term; the terms are averaged; CA-SDRi is the mean over soundscapes;
* label accuracy: the share of soundscapes whose reported class set equals the oracle class set.

A soundscape with neither a reference nor an estimate has no term at all (the official code returns NaN
for it; its test sets always hold 1–3 targets): it is left out of CA-SDRi and counted in
``scenes_without_terms``; it still counts for label accuracy.

Input channel rule: a bundle with as many channels as the soundscape gets every channel; a mono bundle gets
the **reference channel 0** (the channel the references and the metric's mixture term are defined on; an
average of the four capsules would comb-filter the direct sound) unless ``mono_input="mean"``; any other
bundle gets the engine's own conditioning (docs/design.md, "Input conditioning").

``write_estimates`` writes ``<name>_<Class>.wav`` (mono, the soundscape's rate, 32-bit float, exactly the
arrays that were scored), so the official evaluator's ``--use_generated_waveform`` mode scores the same files.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from stream_s5.bundle import Bundle, load_bundle
from stream_s5.engine import Engine, EngineOptions
from stream_s5.evaluate import run_stream
from stream_s5.labels import CLASSES
from stream_s5.metrics import si_sdr, snr

__all__ = ["DcaseOptions", "DcaseLayoutError", "DcaseItem", "read_test_folder", "official_scene_score", "score_dcase"]

OFFICIAL_RATE = 32000
OFFICIAL_CHANNELS = 4


class DcaseLayoutError(ValueError):
    """The folder is not a DCASE 2025 Task 4 test folder (the message says what is wrong)."""


@dataclass
class DcaseOptions:
    rate: int | None = OFFICIAL_RATE  # required soundscape rate (None: any, but the same for all)
    channels: int | None = OFFICIAL_CHANNELS  # required soundscape channel count (None: any)
    refine: int | None = None
    chunk_s: float = 0.1
    threads: int = 1
    mono_input: str = "reference"  # reference | mean: what a mono bundle is fed
    write_estimates: str | None = None
    limit: int | None = None  # score only the first N soundscapes (by name)
    max_classes: int | None = 3  # the official evaluator's n_sources: at most this many estimates per soundscape


@dataclass
class DcaseItem:
    name: str
    soundscape: Path
    references: dict[str, Path] = field(default_factory=dict)
    rate: int = 0
    channels: int = 0
    frames: int = 0


def _wav_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav")


def read_test_folder(folder: str | Path, rate: int | None = OFFICIAL_RATE, channels: int | None = OFFICIAL_CHANNELS) -> list[DcaseItem]:
    """List and check a test folder; every problem is a :class:`DcaseLayoutError` naming the file."""
    root = Path(folder)
    if not root.is_dir():
        raise DcaseLayoutError(f"{root}: not a folder")
    scape_dir, oracle_dir = root / "soundscape", root / "oracle_target"
    if not scape_dir.is_dir():
        hint = " (point --dcase at dev_set/test, which holds soundscape/ and oracle_target/)" if (root / "test").is_dir() else ""
        raise DcaseLayoutError(f"{root}: no soundscape/ folder{hint}")
    if not oracle_dir.is_dir():
        raise DcaseLayoutError(f"{root}: no oracle_target/ folder (the evaluation set without oracle targets cannot be scored)")
    items = [DcaseItem(p.stem, p) for p in _wav_files(scape_dir)]
    if not items:
        raise DcaseLayoutError(f"{scape_dir}: no .wav soundscapes")
    by_name = {item.name: item for item in items}
    for path in _wav_files(oracle_dir):
        # <name>_<Class>.wav; class names hold no underscore, so the last one separates them
        name, _, label = path.stem.rpartition("_")
        if label not in CLASSES:
            raise DcaseLayoutError(f"{path}: oracle target name must be <soundscape>_<Class>.wav with a DCASE class, got class {label!r}")
        if name not in by_name:
            raise DcaseLayoutError(f"{path}: no soundscape {name}.wav for this oracle target")
        by_name[name].references[label] = path
    missing = [item.name for item in items if not item.references]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DcaseLayoutError(f"{oracle_dir}: no oracle target for {len(missing)} soundscape(s): {shown}")
    first_rate = None
    for item in items:
        try:
            info = sf.info(str(item.soundscape))
        except RuntimeError as exc:
            raise DcaseLayoutError(f"{item.soundscape}: not a readable WAV ({exc})") from None
        item.rate, item.channels, item.frames = int(info.samplerate), int(info.channels), int(info.frames)
        if rate is not None and item.rate != rate:
            raise DcaseLayoutError(f"{item.soundscape}: {item.rate} Hz, the DCASE layout has {rate} Hz soundscapes")
        if channels is not None and item.channels != channels:
            raise DcaseLayoutError(f"{item.soundscape}: {item.channels} channel(s), the DCASE layout has {channels}")
        first_rate = first_rate or item.rate
        if item.rate != first_rate:
            raise DcaseLayoutError(f"{item.soundscape}: {item.rate} Hz, other soundscapes have {first_rate} Hz")
        for label, path in item.references.items():
            try:
                ref = sf.info(str(path))
            except RuntimeError as exc:
                raise DcaseLayoutError(f"{path}: not a readable WAV ({exc})") from None
            if ref.samplerate != item.rate or ref.channels != 1 or ref.frames != item.frames:
                raise DcaseLayoutError(f"{path}: must be mono at {item.rate} Hz with {item.frames} samples like its soundscape, "
                                       f"got {ref.channels} channel(s) at {ref.samplerate} Hz, {ref.frames} samples")
    return items


def official_scene_score(estimates: dict[str, np.ndarray], references: dict[str, np.ndarray], mixture: np.ndarray):
    """``ca_metric`` of one soundscape: (mean of the terms or None when there is none, terms by class).

    ``estimates`` holds exactly the reported classes (as the estimate files do), each the same length as
    ``mixture`` (channel 0) and the references."""
    tp = sorted(set(estimates) & set(references))
    terms = {k: snr(estimates[k], references[k]) - snr(mixture, references[k]) for k in tp}
    errors = len(set(estimates) ^ set(references))
    count = len(terms) + errors
    return (None if count == 0 else float(sum(terms.values()) / count)), terms


def _engine_input(mixture: np.ndarray, bundle: Bundle, rule: str) -> np.ndarray:
    """mixture [N, C] → what the engine is fed (see the module's channel rule)."""
    if bundle.channels == 1 and mixture.shape[1] > 1:
        return mixture[:, :1] if rule == "reference" else mixture.mean(axis=1, keepdims=True)
    return mixture


def score_dcase(folder: str | Path, bundle: Bundle | str | None = None, options: DcaseOptions | None = None, progress=None) -> dict:
    opt = options or DcaseOptions()
    if opt.mono_input not in ("reference", "mean"):
        raise ValueError(f"mono_input must be reference or mean, not {opt.mono_input!r}")
    items = read_test_folder(folder, opt.rate, opt.channels)
    if opt.limit:
        items = items[: opt.limit]
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if bundle.channels > 1 and bundle.channels != items[0].channels:
        raise DcaseLayoutError(f"the bundle takes {bundle.channels} channels, the soundscapes have {items[0].channels}")
    rate = items[0].rate
    fed_channels = bundle.channels if bundle.channels == 1 else items[0].channels
    engine = Engine(bundle, classes="auto", refine=opt.refine, device="cpu", input_rate=rate, input_channels=fed_channels,
                    options=EngineOptions(threads=opt.threads, calibrate=False))
    out_dir = Path(opt.write_estimates) if opt.write_estimates else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    chunk = max(1, int(opt.chunk_s * rate))
    scenes, per_class = [], {c: {"present": 0, "detected": 0, "false": 0, "sdri_detected_db": []} for c in CLASSES}
    compute_s = audio_s = 0.0
    dropped = 0
    si_sdri: list[float] = []
    for index, item in enumerate(items):
        mixture, _ = sf.read(str(item.soundscape), dtype="float32", always_2d=True)
        references = {label: sf.read(str(path), dtype="float32")[0] for label, path in item.references.items()}
        t0 = time.perf_counter()
        engine.reset(classes="auto")
        sink = run_stream(engine, _engine_input(mixture, bundle, opt.mono_input).T, chunk)
        model_length = int(np.ceil(item.frames * bundle.sample_rate / rate))
        estimates = {}
        for label, audio in sink.result(model_length).items():
            if not np.any(audio):
                continue  # an empty slot: the class was not reported
            if bundle.sample_rate != rate:
                audio = soxr.resample(audio, bundle.sample_rate, rate, quality="HQ")
            audio = np.pad(audio, (0, max(0, item.frames - audio.size)))[: item.frames].astype(np.float32)
            if not np.all(np.isfinite(audio)):
                raise RuntimeError(f"{item.name}: non-finite output for {label}")
            estimates[label] = audio
        if opt.max_classes is not None and len(estimates) > opt.max_classes:
            keep = sorted(estimates, key=lambda k: float(np.dot(estimates[k], estimates[k])), reverse=True)[: opt.max_classes]
            dropped += len(estimates) - len(keep)
            estimates = {k: estimates[k] for k in sorted(keep)}
        compute_s += time.perf_counter() - t0
        audio_s += item.frames / rate
        if out_dir is not None:
            for label, audio in estimates.items():
                sf.write(str(out_dir / f"{item.name}_{label}.wav"), audio, rate, subtype="FLOAT")
        score, terms = official_scene_score(estimates, references, mixture[:, 0])
        # not an official figure: scale-invariant improvement of the correctly reported classes
        si_sdri.extend(si_sdr(estimates[k], references[k]) - si_sdr(mixture[:, 0], references[k]) for k in terms)
        scenes.append({"name": item.name, "true": sorted(references), "predicted": sorted(estimates),
                       "ca_sdri_db": score, "terms_db": terms, "labels_correct": set(estimates) == set(references)})
        for label in references:
            per_class[label]["present"] += 1
        for label in estimates:
            row = per_class[label]
            if label in references:
                row["detected"] += 1
                row["sdri_detected_db"].append(terms[label])
            else:
                row["false"] += 1
        if progress:
            progress(index + 1, len(items))
    scored = [s["ca_sdri_db"] for s in scenes if s["ca_sdri_db"] is not None]
    summary = {
        "ca_sdri_db": float(np.mean(scored)) if scored else None,
        "label_accuracy": float(np.mean([s["labels_correct"] for s in scenes])),
        "scenes": len(scenes),
        "scenes_without_terms": len(scenes) - len(scored),
        "classes_dropped": dropped,
        "si_sdri_db": float(np.mean(si_sdri)) if si_sdri else None,  # over correctly reported classes (not official)
        "per_class": {},
        "rtf": compute_s / max(audio_s, 1e-9),
        "settings": {**asdict(opt), "folder": str(folder), "bundle": str(bundle.path), "bundle_rate": bundle.sample_rate,
                     "bundle_channels": bundle.channels, "soundscape_rate": rate, "soundscape_channels": items[0].channels,
                     "passes": engine.passes, "formula": "nttcslab/dcase2025_task4_baseline src/utils.py ca_metric + evaluate.py"},
        "per_scene": scenes,
    }
    for label, row in per_class.items():
        if not (row["present"] or row["false"]):
            continue
        sdri = row.pop("sdri_detected_db")
        row["recall"] = row["detected"] / row["present"] if row["present"] else None
        reported = row["detected"] + row["false"]
        row["precision"] = row["detected"] / reported if reported else None
        row["sdri_detected_db"] = float(np.mean(sdri)) if sdri else None
        summary["per_class"][label] = row
    return summary
