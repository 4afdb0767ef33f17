"""Cost of the same architecture at 16 kHz and 32 kHz (same 16 ms window, 8 ms hop, 1.28 s SED
window, 64 mels), exported to ONNX and timed on ONNX Runtime, one thread. Weights are random: cost
does not depend on them.

    python -m export.rate_cost
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

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


def main():
    print(json.dumps([measure(16000), measure(32000)], indent=2))


if __name__ == "__main__":
    main()
