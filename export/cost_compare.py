"""Engine CPU cost of two or more bundles, measured side by side in one run.

    python -m export.cost_compare stream_s5/models/default runs/bundles/real1 --seconds 60 --repeats 5

Each bundle streams the same procedural scene hop by hop (3 fixed classes × 2 refinement passes, SED
included, one ONNX Runtime thread, CPU); the bundles take turns, repeat after repeat, so that machine
noise hits them alike. Reported: median CPU seconds (process time) per second of audio for each
bundle, and each bundle's ratio to the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from stream_s5 import Engine, EngineOptions
from stream_s5.bundle import load_bundle
from stream_s5.synth.scenes import SceneConfig, generate_scene

FIXED = "Speech,Dishes,Doorbell"


def cpu_per_audio_second(engine: Engine, frames: np.ndarray, rate: int) -> float:
    engine.reset(classes=FIXED)
    hop = engine.bundle.hop
    start = time.process_time()
    for i in range(0, frames.shape[0], hop):
        engine.feed(frames[i : i + hop])
    engine.flush()
    return (time.process_time() - start) / (frames.shape[0] / rate)


def compare(bundles: list[str], seconds: float = 60.0, repeats: int = 5, seed: int = 5) -> dict:
    loaded = [load_bundle(b) for b in bundles]
    rates = {(b.sample_rate, b.channels) for b in loaded}
    if len(rates) != 1:
        raise ValueError(f"bundles differ in rate/channels: {sorted(rates)}")
    rate, channels = rates.pop()
    scene = generate_scene(SceneConfig(sr=rate, duration=seconds, channels=channels, room=channels > 1), seed)
    frames = np.ascontiguousarray(scene.mixture.T)
    engines = [Engine(b, classes=FIXED, refine=2, device="cpu", options=EngineOptions(threads=1, calibrate=False))
               for b in loaded]
    for engine in engines:  # warm-up: first-call allocations are not the steady state
        cpu_per_audio_second(engine, frames[: rate * 2], rate)
    samples = [[] for _ in engines]
    for _ in range(repeats):
        for k, engine in enumerate(engines):
            samples[k].append(cpu_per_audio_second(engine, frames, rate))
    medians = [statistics.median(s) for s in samples]
    return {"seconds": seconds, "repeats": repeats, "classes": FIXED, "passes": 2, "threads": 1,
            "bundles": [{"bundle": str(b.path), "cpu_s_per_audio_s": m, "samples": s, "ratio_to_first": m / medians[0]}
                        for b, m, s in zip(loaded, medians, samples)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    result = compare(args.bundles, args.seconds, args.repeats)
    for row in result["bundles"]:
        print(f"{row['bundle']}: {row['cpu_s_per_audio_s']:.4f} CPU s per audio s (× {row['ratio_to_first']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
