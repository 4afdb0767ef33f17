"""1. Separator block latency (one hop, all slots occupied) for 1–3 slots × 1–3 refinement passes.
2. SED call latency (one window; and a batch of windows, per window, as MultiStreamEngine runs it)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.conftest import bundle_info, record, summarise
from stream_s5.separator import SeparatorBank
from stream_s5.bundle import load_bundle
from stream_s5.sed import MelFrameCache
from stream_s5.sessions import SedModel, SeparatorModel

HOPS, WARMUP = 1000, 50


@pytest.fixture(scope="module")
def sep_model(bundle):
    return SeparatorModel(bundle, ["CPUExecutionProvider"], threads=1)


@pytest.mark.parametrize("passes", [1, 2, 3], ids=lambda k: f"{k}pass")
@pytest.mark.parametrize("slots", [1, 2, 3], ids=lambda k: f"{k}slot")
def test_separator_block_latency(benchmark, bundle, sep_model, slots, passes):
    if passes > int(bundle.separator["max_passes"]):
        pytest.skip(f"bundle allows at most {bundle.separator['max_passes']} passes")
    n_fft, hop, channels = int(bundle.separator["n_fft"]), bundle.hop, bundle.channels
    bank = SeparatorBank(sep_model, slots, passes, n_fft, hop, channels, len(bundle.classes), history_frames=256)
    for s in range(slots):
        bank.assign(s, s, 0, -1, np.zeros(0))  # occupied, no backfill
    rng = np.random.default_rng(0)
    frames = (0.1 * rng.standard_normal((HOPS + WARMUP, channels, n_fft))).astype(np.float32)
    specs = [bank.analyse(i, f) for i, f in enumerate(frames)]
    activity = np.ones(slots, np.float32)
    times, outputs = [], []
    state = {"i": 0}

    def one_hop():
        i = state["i"]
        t = time.perf_counter()
        occupied, audio = bank.step(specs[i], activity)
        times.append(time.perf_counter() - t)
        state["i"] = i + 1
        outputs.append(audio)

    benchmark.pedantic(one_hop, rounds=HOPS, warmup_rounds=WARMUP, iterations=1)
    audio = np.concatenate(outputs, axis=1)
    assert audio.shape == (slots, len(outputs) * hop) and np.isfinite(audio).all()
    assert bank.calls == passes * len(outputs)
    stft = []
    for i, f in enumerate(frames[:300]):
        t = time.perf_counter()
        bank.analyse(i, f)
        stft.append(time.perf_counter() - t)
    hop_ms = 1000.0 * hop / bundle.sample_rate
    s = summarise(times, drop=WARMUP)
    record(benchmark, slots=slots, passes=passes, threads=1, hop_ms=hop_ms, **s,
           p99_over_hop=round(s["p99_ms"] / hop_ms, 4), stft_p50_ms=summarise(stft)["p50_ms"],
           ort_calls_per_hop=passes, **bundle_info(bundle))


@pytest.mark.parametrize("mode", ["single_graph", "whole", "cached"])
@pytest.mark.parametrize("batch", [1, 8, 16], ids=lambda b: f"batch{b}")
def test_sed_latency(benchmark, bundle, batch, mode):
    """One SED call on `batch` windows: the single SED graph (`sed.file`, ONNX's STFT operator), the
    split graphs on whole windows, or as the engine streams a split SED (each stream's features
    cached, only the frames new since its window one SED hop earlier computed)."""
    if mode == "single_graph":
        bundle = load_bundle(bundle.path)
        bundle.manifest["sed"].pop("front_end", None)  # this process's copy only: SedModel runs sed.file
    model = SedModel(bundle, ["CPUExecutionProvider"], threads=1)
    if mode != "single_graph" and not model.split:
        pytest.skip("the bundle's SED is a single graph")
    cache = MelFrameCache(model) if mode == "cached" else None
    window, sed_hop = int(bundle.sed["window"]), int(bundle.sed["hop"])
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((batch, window))).astype(np.float32)
    times, results = [], []
    rounds = 30 if batch == 1 else 10

    def call():
        t = time.perf_counter()
        if cache is None:
            results.append(model(audio))
        else:  # successive windows one SED hop apart (the samples do not matter to the cost)
            end = (len(times) + 1) * sed_hop
            results.append(model.from_log_mel(cache.log_mel(audio, [(b, 0, end) for b in range(batch)])))
        times.append(time.perf_counter() - t)

    benchmark.pedantic(call, rounds=rounds, warmup_rounds=2, iterations=1)
    clip, frame = results[-1]
    n_classes = len(bundle.classes)
    assert clip.shape == (batch, n_classes) and frame.shape == (batch, int(bundle.sed["frames"]), n_classes)
    assert np.isfinite(frame).all() and frame.min() >= 0.0 and frame.max() <= 1.0
    s = summarise(times, drop=2)
    hop_ms = 1000.0 * bundle.hop / bundle.sample_rate
    sed_hop_ms = 1000.0 * int(bundle.sed["hop"]) / bundle.sample_rate
    if cache is not None:
        assert cache.misses == batch and cache.hits == batch * (len(times) - 1)  # only the first call is whole
    record(benchmark, batch=batch, mode=mode, threads=1, window_ms=1000.0 * window / bundle.sample_rate, hop_ms=hop_ms,
           sed_hop_ms=sed_hop_ms, per_window_p50_ms=round(s["p50_ms"] / batch, 4),
           amortised_per_hop_ms=round(s["p50_ms"] / batch * bundle.hop / int(bundle.sed["hop"]), 4), **s,
           **bundle_info(bundle))


@pytest.mark.parametrize("batch", [1, 16], ids=lambda b: f"batch{b}")
def test_sed_int8_against_float(benchmark, bundle, batch, tmp_path):
    """The SED body as the engine streams it (cached features), float graph against the same bundle with
    an int8 body (`python -m export.quantize`: static, weight MatMuls), called alternately in one run so
    that the ratio is measured under the same machine load. Also records how far the int8 probabilities
    move."""
    pytest.importorskip("onnxruntime.quantization")
    pytest.importorskip("torch")  # export.quantize shares export.bundle's checks
    from export.quantize import quantize_bundle

    if bundle.manifest.get("provenance", {}).get("quantization"):
        pytest.skip("the bundle under test is already quantised")
    float_model = SedModel(bundle, ["CPUExecutionProvider"], threads=1)
    if not float_model.split:
        pytest.skip("the bundle's SED is a single graph")
    quantize_bundle(bundle.path, tmp_path / "int8", scenes=2)
    int8_model = SedModel(load_bundle(tmp_path / "int8"), ["CPUExecutionProvider"], threads=1)
    cache = MelFrameCache(float_model)
    window, sed_hop = int(bundle.sed["window"]), int(bundle.sed["hop"])
    audio = (0.1 * np.random.default_rng(1).standard_normal((batch, window))).astype(np.float32)
    log_mel = cache.log_mel(audio, [(b, 0, sed_hop) for b in range(batch)])
    times = {"float": [], "int8": []}
    rounds = 60 if batch == 1 else 30

    def call():
        for name, model in (("float", float_model), ("int8", int8_model)):
            t = time.perf_counter()
            model.from_log_mel(log_mel)
            times[name].append(time.perf_counter() - t)

    benchmark.pedantic(call, rounds=rounds, warmup_rounds=3, iterations=1)
    frame_gap = np.abs(float_model.from_log_mel(log_mel)[1] - int8_model.from_log_mel(log_mel)[1])
    assert 0 < frame_gap.max() < 0.1
    stats = {name: summarise(t, drop=3) for name, t in times.items()}
    record(benchmark, batch=batch, threads=1, float_per_window_p50_ms=round(stats["float"]["p50_ms"] / batch, 4),
           int8_per_window_p50_ms=round(stats["int8"]["p50_ms"] / batch, 4),
           speedup_p50=round(stats["float"]["p50_ms"] / stats["int8"]["p50_ms"], 3),
           frame_probs_abs_diff_max=round(float(frame_gap.max()), 5), float=stats["float"], int8=stats["int8"],
           **bundle_info(bundle))
