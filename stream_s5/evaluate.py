"""`stream-s5 eval`: held-out scenes scored through the streaming engine.

Two scene sources: synthetic scenes from the procedural soundbank (the default), or scenes built the
same DCASE way from a folder soundbank (`--soundbank DIR [--split valid]`, e.g. the real-recordings
bank of `python -m export.realbank`: real targets, real interferers and real backgrounds of files
that training never saw). Targets are drawn only from the classes the bank has.

Scenes come from the procedural soundbank with an evaluation seed (clips and scenes never used in
training, which renders its soundbank from seed 0 and draws scenes from another seed stream). Each
mixture is fed to the engine in chunks exactly as a file would be; the per-class outputs (with
backfill) and the events are scored with `stream_s5.metrics` (DCASE definitions).

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

__all__ = ["EvalOptions", "evaluate", "run_stream"]


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
