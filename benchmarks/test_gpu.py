"""8. The GPU path (CUDAExecutionProvider): model call latency, the engine's RTF and block times,
concurrent streams. Skipped, with the reason, where `choose_providers("cuda")` does not give CUDA."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.conftest import bundle_info, machine_info, record, scene, summarise
from benchmarks.test_multistream import LADDER, run_rung
from stream_s5 import Engine, EngineOptions
from stream_s5.sessions import BoundSeparatorModel, SedModel, SeparatorModel, choose_providers


@pytest.fixture(scope="module")
def cuda():
    providers, note = choose_providers("cuda")
    if note != "cuda":
        pytest.skip(f"no usable CUDA execution provider: {note}")
    return providers


@pytest.mark.parametrize("bound", [False, True], ids=["plain", "iobinding-cudagraph"])
@pytest.mark.parametrize("slots", [3, 96], ids=lambda b: f"B{b}")
def test_gpu_separator_pass(benchmark, bundle, cuda, slots, bound):
    model = (BoundSeparatorModel(bundle, cuda, slots, threads=1, cuda_graph=True) if bound
             else SeparatorModel(bundle, cuda, threads=1))
    n_freq = int(bundle.separator["n_fft"]) // 2 + 1
    rng = np.random.default_rng(0)
    mix = (0.1 * rng.standard_normal((slots, 1, bundle.channels, 2, n_freq))).astype(np.float32)
    prev = np.zeros((slots, 1, 2, n_freq), np.float32)
    onehot = np.eye(len(bundle.classes), dtype=np.float32)[np.arange(slots) % len(bundle.classes)]
    activity = np.ones((slots, 1), np.float32)
    state = np.zeros((slots, *model.state_shape), np.float32)
    times, out = [], {}

    def call():
        t = time.perf_counter()
        out["est"], _ = model(mix, prev, onehot, activity, np.zeros(slots, np.int64), state)
        times.append(time.perf_counter() - t)

    benchmark.pedantic(call, rounds=300, warmup_rounds=20, iterations=1)
    assert out["est"].shape == prev.shape and np.isfinite(out["est"]).all()
    record(benchmark, device="cuda", slots=slots, passes=1, io_binding=bound, **summarise(times, drop=20),
           hop_ms=1000.0 * bundle.hop / bundle.sample_rate, **bundle_info(bundle))


@pytest.mark.parametrize("batch", [1, 16], ids=lambda b: f"batch{b}")
def test_gpu_sed(benchmark, bundle, cuda, batch):
    model = SedModel(bundle, cuda, threads=1)
    audio = (0.1 * np.random.default_rng(1).standard_normal((batch, int(bundle.sed["window"])))).astype(np.float32)
    times, out = [], {}

    def call():
        t = time.perf_counter()
        out["clip"], out["frame"] = model(audio)
        times.append(time.perf_counter() - t)

    benchmark.pedantic(call, rounds=50, warmup_rounds=5, iterations=1)
    assert np.isfinite(out["frame"]).all() and 0.0 <= out["frame"].min() and out["frame"].max() <= 1.0
    s = summarise(times, drop=5)
    record(benchmark, device="cuda", batch=batch, per_window_p50_ms=round(s["p50_ms"] / batch, 4), **s,
           **bundle_info(bundle))


def test_gpu_engine_rtf(benchmark, bundle, cuda):
    x, name = scene(bundle.sample_rate, 20.0, bundle.channels)
    frames = x.T.copy()
    eng = Engine(bundle, classes="Speech,Dishes,Doorbell", refine=2, device="cuda",
                 options=EngineOptions(threads=1, calibrate=False))
    assert eng.device_note == "cuda"
    result = {}

    def run():
        eng.reset()
        total = 0
        t = time.perf_counter()
        for i in range(0, frames.shape[0], bundle.hop):
            out = eng.feed(frames[i : i + bundle.hop])
            total += out.length
            assert all(np.isfinite(a).all() for a in out.audio.values())
        total += eng.flush().length
        result["wall"], result["total"] = time.perf_counter() - t, total

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert result["total"] == frames.shape[0]
    block = eng.stats()["timings"]["block"]
    hop_ms = 1000.0 * bundle.hop / bundle.sample_rate
    record(benchmark, device="cuda", rtf=round(result["wall"] / (frames.shape[0] / bundle.sample_rate), 5),
           p50_ms=round(block["p50_ms"], 4), p99_ms=round(block["p99_ms"], 4), hop_ms=hop_ms, slots=3, passes=2,
           threads=1, scene=name, **bundle_info(bundle), **machine_info())


def test_gpu_concurrent_streams(benchmark, bundle, cuda):
    x, _ = scene(bundle.sample_rate, 10.0, 1, seed=11)
    x = x[0]
    hop_ms = 1000.0 * bundle.hop / bundle.sample_rate
    ladder: list[dict] = []

    def run():
        misses = 0
        for n in LADDER + (96, 128):
            rung = run_rung(bundle, x, n, stagger=True, overlap=False, threads=1, device="cuda")
            ladder.append(rung)
            misses = misses + 1 if rung["p99_ms"] > hop_ms else 0
            if misses == 2:
                break

    benchmark.pedantic(run, rounds=1, iterations=1)
    best = max((r["streams"] for r in ladder if r["p99_ms"] <= hop_ms), default=0)
    record(benchmark, device="cuda", streams=best, hop_ms=hop_ms, ladder=ladder, slots=3, passes=2,
           stagger_sed=True, **bundle_info(bundle))
