"""16 kHz or 32 kHz: what each costs and what 16 kHz gives up.

Cost: the same architecture at both rates (same 16 ms window, 8 ms hop, 1.28 s SED window, 64 mels),
exported to ONNX and timed on ONNX Runtime, one thread. Weights are random: cost does not depend on them.

Quality ceiling: scenes synthesised at 32 kHz; each class reference is taken down to 16 kHz and back
(soxr, the runtime's resampler). The SDR of that round trip against the 32 kHz reference is the best
score a perfect 16 kHz separator could reach when judged at 32 kHz, and the share of energy above
8 kHz is what it cannot output at all. A ceiling far above the separator's quality means the lower
rate costs nothing measurable.

    python -m export.rate_cost --json docs/results/rate_cost.json                          # cost (idle machine)
    python -m export.rate_cost --quality --scenes 100 --json docs/results/rate_quality.json  # ceiling
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soxr

from export.bundle import export_graphs
from export.models import ModelConfig, SedConfig, SedNet, SeparatorConfig, SeparatorNet, count_parameters


def config(rate: int) -> ModelConfig:
    k = rate // 16000
    return ModelConfig(
        sed=SedConfig(sample_rate=rate, window=20480 * k, n_fft=512 * k, win_length=400 * k, mel_hop=160 * k),
        separator=SeparatorConfig(sample_rate=rate, n_fft=256 * k, hop=128 * k),
    )


def median_ms(fn, n: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def measure(rate: int) -> dict:
    cfg = config(rate)
    sed, sep = SedNet(cfg.sed).eval(), SeparatorNet(cfg.separator).eval()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        export_graphs(cfg, sed, sep, Path(tmp))
        s_sed = ort.InferenceSession(f"{tmp}/sed.onnx", opts, providers=["CPUExecutionProvider"])
        s_sep = ort.InferenceSession(f"{tmp}/separator.onnx", opts, providers=["CPUExecutionProvider"])
        f = cfg.separator.n_freq
        feeds = {"mix": np.zeros((3, 1, 1, 2, f), np.float32), "prev": np.zeros((3, 1, 2, f), np.float32),
                 "class_onehot": np.eye(18, dtype=np.float32)[:3], "activity": np.ones((3, 1), np.float32),
                 "pass_index": np.zeros(3, np.int64), "state_in": np.zeros((3, *cfg.separator.state_shape), np.float32)}
        sep_ms = median_ms(lambda: s_sep.run(None, feeds), 300)
        audio = np.zeros((1, cfg.sed.window), np.float32)
        sed_ms = median_ms(lambda: s_sed.run(None, {"audio": audio}), 50)
    hop_ms = 1000 * cfg.separator.hop / rate
    sed_hop_ms = 1000 * cfg.sed.frame_hop * 2 / rate
    return {"rate": rate, "separator_params": count_parameters(sep), "sed_params": count_parameters(sed),
            "separator_pass_3slots_ms": round(sep_ms, 4), "sed_call_ms": round(sed_ms, 3),
            "engine_cost_per_hop_ms_3slots_2passes": round(2 * sep_ms + sed_ms * hop_ms / sed_hop_ms, 4),
            "hop_ms": hop_ms}


def band_limit(ref: np.ndarray) -> tuple[float, float]:
    """(SDR in dB of a 32 → 16 → 32 kHz round trip against `ref`, share of `ref`'s energy above 8 kHz)."""
    ref = ref.astype(np.float64)
    round_trip = soxr.resample(soxr.resample(ref, 32000, 16000, quality="HQ"), 16000, 32000, quality="HQ")[: len(ref)]
    sdr = 10 * np.log10(np.sum(ref**2) / (np.sum((ref - round_trip) ** 2) + 1e-20) + 1e-20)
    spectrum = np.abs(np.fft.rfft(ref)) ** 2
    return float(sdr), float(spectrum[len(spectrum) // 2 :].sum() / (spectrum.sum() + 1e-20))


def band_limit_ceiling(n_scenes: int, seed: int) -> dict:
    from stream_s5.synth.scenes import SceneConfig, generate_scenes

    per_class: dict[str, list[tuple[float, float]]] = {}
    for scene in generate_scenes(SceneConfig(sr=32000, duration=10.0), n_scenes, seed):
        for cls, ref in scene.sources.items():
            per_class.setdefault(cls, []).append(band_limit(ref))
    rows = {cls: {"n": len(v), "median_ceiling_sdr_db": round(float(np.median([a for a, _ in v])), 1),
                  "min_ceiling_sdr_db": round(float(np.min([a for a, _ in v])), 1),
                  "median_energy_above_8k_pct": round(100 * float(np.median([b for _, b in v])), 3)}
            for cls, v in sorted(per_class.items())}
    every = [a for v in per_class.values() for a, _ in v]
    return {"scenes": n_scenes, "seed": seed, "references": len(every),
            "median_ceiling_sdr_db": round(float(np.median(every)), 1),
            "p10_ceiling_sdr_db": round(float(np.percentile(every, 10)), 1), "per_class": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=100, help="32 kHz scenes for the quality ceiling")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--quality", action="store_true", help="measure the 16 kHz quality ceiling instead of the cost")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    result = band_limit_ceiling(args.scenes, args.seed) if args.quality else [measure(16000), measure(32000)]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
