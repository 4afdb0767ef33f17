"""`stream-s5 eval`: held-out scenes scored through the streaming engine.

Two scene sources: synthetic scenes from the procedural soundbank (the default), or scenes built the
same DCASE way from a folder soundbank (`--soundbank DIR [--split valid]`, e.g. the real-recordings
bank of `python -m export.realbank`: real targets, real interferers and real backgrounds of files
that training never saw). Targets are drawn only from the classes the bank has.

Scenes come from the procedural soundbank with an evaluation seed (clips and scenes never used in
training, which renders its soundbank from seed 0 and draws scenes from another seed stream). Each
mixture is fed to the engine in chunks exactly as a file would be; the per-class outputs (with
backfill) and the events are scored with `stream_s5.metrics` (DCASE definitions).

`compare(a, b)` (`stream-s5 compare A.json B.json`) says whether a difference between two such runs on
the same scenes is more than the scenes' noise: a paired bootstrap over scenes.

Modes: "stream" (the product), "oracle" (the true class set given as a fixed class list: separator
quality without detection errors), "offline" (`stream_s5.offline`: whole clip known in advance).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stream_s5.bundle import Bundle, load_bundle
from stream_s5.engine import Engine, EngineOptions
from stream_s5.metrics import MetricAccumulator
from stream_s5.offline import separate_offline
from stream_s5.sinks import MemorySink

__all__ = ["EvalOptions", "evaluate", "run_stream", "compare"]


@dataclass
class EvalOptions:
    scenes: int = 200
    seed: int = 1000
    duration: float = 10.0
    refine: int | None = None
    mode: str = "stream"  # stream | oracle | offline
    chunk_s: float = 0.1
    p_no_target: float = 0.1
    threads: int = 1
    soundbank: str | None = None  # a folder soundbank instead of the procedural one
    split: str | None = None  # a sub-folder of it (train / valid) from export.realbank


def scene_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, 7, index]).generate_state(1)[0])


def run_stream(engine: Engine, mixture: np.ndarray, chunk: int) -> MemorySink:
    """mixture [C, N] at the engine's input rate → MemorySink with outputs and events."""
    sink = MemorySink()
    frames = mixture.T
    for i in range(0, frames.shape[0], chunk):
        sink.write(engine.feed(frames[i : i + chunk]))
    sink.write(engine.flush())
    return sink


def evaluate(bundle: Bundle | str | None = None, options: EvalOptions | None = None, progress=None) -> dict:
    from stream_s5.synth.scenes import SceneConfig, generate_scene
    from stream_s5.synth.soundbank import Soundbank

    opt = options or EvalOptions()
    if opt.mode not in ("stream", "oracle", "offline"):
        raise ValueError(f"mode must be stream, oracle or offline, not {opt.mode!r}")
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    engine = Engine(bundle, classes="auto", refine=opt.refine, device="cpu",
                    options=EngineOptions(threads=opt.threads, calibrate=False))
    rate = bundle.sample_rate
    cfg = SceneConfig(sr=rate, duration=opt.duration, channels=bundle.channels, room=bundle.channels > 1,
                      p_no_target=opt.p_no_target)
    if opt.soundbank:
        folder = Path(opt.soundbank) / opt.split if opt.split else Path(opt.soundbank)
        soundbank = Soundbank.from_folder(folder, rate)
        if not soundbank.available_classes:
            raise ValueError(f"soundbank {folder} has no target class folders")
    else:
        soundbank = Soundbank.procedural(rate, opt.seed)
    acc = MetricAccumulator(classes=list(bundle.classes))
    chunk = max(1, int(opt.chunk_s * rate))
    compute_s = audio_s = 0.0
    for i in range(opt.scenes):
        scene = generate_scene(cfg, scene_seed(opt.seed, i), soundbank)
        n = scene.mixture.shape[1]
        t0 = time.perf_counter()
        if opt.mode == "offline":
            estimates, est_events = separate_offline(bundle, engine.sed_model, engine.sep_model, scene.mixture,
                                                     engine.passes)
        else:
            fixed = sorted(scene.sources) if opt.mode == "oracle" else "auto"
            if opt.mode == "oracle" and not fixed:
                if progress:
                    progress(i + 1, opt.scenes)
                continue  # no class to separate with oracle labels
            engine.reset(classes=fixed)
            sink = run_stream(engine, scene.mixture, chunk)
            estimates = sink.result(n)
            est_events = [(e.label, e.onset, e.offset, e.decided_at) for e in sink.events]
        compute_s += time.perf_counter() - t0
        audio_s += n / rate
        ref_events = [(e.label, e.onset, e.offset) for e in scene.events]
        acc.add(f"scene{i:04d}", {k: v for k, v in scene.sources.items()}, estimates, scene.mixture[0], ref_events,
                est_events, n / rate)
        if progress:
            progress(i + 1, opt.scenes)
    summary = acc.summary()
    summary["settings"] = {**asdict(opt), "bundle": str(bundle.path), "passes": engine.passes,
                           "class_slots": int(bundle.separator["class_slots"]), "soundbank_material": soundbank.describe()}
    summary["rtf"] = compute_s / max(audio_s, 1e-9)
    return summary


SCENE_FIELDS = ("true", "predicted", "ca_sdri_db")  # in every per-scene record; scenes are named by "scene"
# (`stream-s5 eval`) or "name" (`stream-s5 eval --dcase`, the official soundscape name)
ALARM_FIELDS = ("estimated_events", "duration_s")  # synthetic and real-bank runs: false alarms per minute too


def _paired_scenes(a: dict, b: dict) -> tuple[list[dict], list[dict]]:
    """The two runs' per-scene records, checked to be the same scenes (ids and true class sets)."""
    for name, run in (("first", a), ("second", b)):
        if not isinstance(run.get("per_scene"), list) or not run["per_scene"]:
            raise ValueError(f"the {name} evaluation has no per-scene records (written by stream-s5 eval since "
                             "the twenty-third session): evaluate it again")
        for record in run["per_scene"]:
            if not isinstance(record, dict) or not ("scene" in record or "name" in record) or \
                    any(field not in record for field in SCENE_FIELDS):
                raise ValueError(f"the {name} evaluation's per-scene records are not stream-s5 eval's "
                                 f"(each needs a scene name and {', '.join(SCENE_FIELDS)})")
    ra, rb = a["per_scene"], b["per_scene"]
    ids_a, ids_b = ([r.get("scene", r.get("name")) for r in run] for run in (ra, rb))
    if ids_a != ids_b or any(set(x["true"]) != set(y["true"]) for x, y in zip(ra, rb)):
        raise ValueError("the two evaluations are not of the same scenes (use the same --seed, --scenes, "
                         "--soundbank/--split and --duration)")
    return ra, rb


def _scene_metrics(records: list[dict], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric, by its definition over scenes, for every resample (rows of `idx`)."""
    ca = np.array([np.nan if r["ca_sdri_db"] is None else r["ca_sdri_db"] for r in records])
    has_ca = ~np.isnan(ca)
    exact = np.array([set(r["true"]) == set(r["predicted"]) for r in records], float)
    false = np.array([len(set(r["predicted"]) - set(r["true"])) for r in records], float)
    ca_sum = np.where(has_ca, np.nan_to_num(ca), 0.0)[idx].sum(1)
    ca_n = has_ca[idx].sum(1)
    metrics = {"ca_sdri_db": np.where(ca_n > 0, ca_sum / np.maximum(ca_n, 1), np.nan),
               "label_accuracy": exact[idx].mean(1),
               "false_classes_per_scene": false[idx].mean(1)}
    if all(field in r for r in records for field in ALARM_FIELDS):  # not in DCASE-folder runs
        no_target = np.array([not r["true"] for r in records])
        events = np.array([r["estimated_events"] for r in records], float) * no_target
        minutes = np.array([r["duration_s"] for r in records], float) * no_target / 60.0
        with np.errstate(invalid="ignore", divide="ignore"):
            metrics["false_alarms_per_minute"] = np.where(minutes[idx].sum(1) > 0, events[idx].sum(1) / minutes[idx].sum(1), np.nan)
    return metrics


def compare(a: dict, b: dict, resamples: int = 10000, seed: int = 0, level: float = 0.95) -> dict:
    """Paired bootstrap of two `evaluate` summaries of the same scenes: for each metric the value of
    each run, the difference b − a and its `level` confidence interval from `resamples` resamplings of
    the scenes (the same scenes for both runs in every resample, so scene difficulty cancels), and the
    share of resamples in which b is better (higher, or lower for the false-alarm metrics)."""
    ra, rb = _paired_scenes(a, b)
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, not {resamples}")
    n = len(ra)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    full = np.arange(n)[None]
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {"scenes": n, "resamples": resamples, "level": level, "metrics": {}}
    whole_a, whole_b = _scene_metrics(ra, full), _scene_metrics(rb, full)
    resampled_a, resampled_b = _scene_metrics(ra, idx), _scene_metrics(rb, idx)
    for key in [k for k in whole_a if k in whole_b]:  # false alarms only where both runs record them
        value_a, value_b = whole_a[key][0], whole_b[key][0]
        diff = resampled_b[key] - resampled_a[key]
        diff = diff[~np.isnan(diff)]
        lower_is_better = key.startswith("false")
        row = {"a": None if np.isnan(value_a) else float(value_a), "b": None if np.isnan(value_b) else float(value_b),
               "difference": None, "ci_low": None, "ci_high": None, "p_b_better": None}
        if diff.size and not (np.isnan(value_a) or np.isnan(value_b)):
            better = (diff < 0) if lower_is_better else (diff > 0)
            row.update(difference=float(value_b - value_a), ci_low=float(np.percentile(diff, lo)),
                       ci_high=float(np.percentile(diff, hi)), p_b_better=float(better.mean()))
        out["metrics"][key] = row
    return out
