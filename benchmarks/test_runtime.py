"""4. Algorithmic latency (declared by the bundle, and measured with an impulse).
5. Start-up to the first processed block, in a fresh process.
6. Resident memory of a runtime process (fresh process: no torch, no test machinery)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from benchmarks.conftest import BUNDLE_ENV, bundle_info, record, run_python
from stream_s5 import Engine, EngineOptions


def impulse_latency(bundle, classes: str, position: int, threshold: float | None,
                    at_position: bool = True) -> int | None:
    """Feed an impulse at `position` hop by hop; → fed samples after which it shows in the returned
    (uncompensated) output blocks, minus `position`. threshold=None: compare against the same input
    without the impulse (any change counts), for separators that do not pass the impulse through;
    at_position: only changes at timeline samples ≥ position count (not the pre-echo that a
    frame-wise mask spreads over its whole window)."""
    hop = bundle.hop
    base = 1e-3 * np.random.default_rng(0).standard_normal(bundle.sample_rate).astype(np.float32)
    with_impulse = base.copy()
    with_impulse[position] += 0.5
    engines = [Engine(bundle, classes=classes, device="cpu", options=EngineOptions(calibrate=False))
               for _ in range(2 if threshold is None else 1)]
    inputs = [with_impulse, base][: len(engines)]
    fed = 0
    for i in range(0, base.size, hop):
        outs = [e.feed(s[i : i + hop]) for e, s in zip(engines, inputs)]
        fed += hop
        a = outs[0].audio.get(classes)
        if a is None or not a.size:
            continue
        hit = np.abs(a) > threshold if threshold is not None else np.abs(a - outs[1].audio[classes]) > 0
        where = outs[0].start + np.flatnonzero(hit)
        if (where >= position).any() if at_position else where.size:
            return fed - position
    return None


def test_algorithmic_latency(benchmark, bundle, toy_bundle_dir):
    from stream_s5.bundle import load_bundle

    toy = load_bundle(toy_bundle_dir)
    hop = toy.hop
    positions = [5000 + k for k in range(0, hop, 9)] + [40 * hop, 40 * hop + hop - 1]
    result = {}

    def run():
        result["toy"] = {p: impulse_latency(toy, "Speech", p, 0.25) for p in positions}
        result["bundle"] = impulse_latency(bundle, "Speech", 40 * bundle.hop, None)
        result["bundle_first_change"] = impulse_latency(bundle, "Speech", 40 * bundle.hop, None, at_position=False)

    benchmark.pedantic(run, rounds=1, iterations=1)
    toy_lat = result["toy"]
    assert all(v is not None for v in toy_lat.values()), f"impulse never appeared: {toy_lat}"
    worst, best = max(toy_lat.values()), min(toy_lat.values())
    assert worst <= toy.algorithmic_latency, "pipeline latency exceeds the declared algorithmic latency"
    # A trained separator may gate its output off (no SED activity for the class on a click in noise):
    # then the bundle shows nothing and only the toy pipeline's figure measures the latency.
    rate = bundle.sample_rate

    def in_ms(samples):
        return None if samples is None else round(1000.0 * samples / rate, 3)

    record(benchmark, declared_samples=bundle.algorithmic_latency,
           declared_ms=round(1000.0 * bundle.algorithmic_latency / rate, 3),
           measured_pipeline_worst_samples=worst, measured_pipeline_best_samples=best,
           measured_pipeline_worst_ms=round(1000.0 * worst / toy.sample_rate, 3),
           measured_pipeline_best_ms=round(1000.0 * best / toy.sample_rate, 3),
           measured_bundle_samples=result["bundle"], measured_bundle_ms=in_ms(result["bundle"]),
           measured_bundle_first_change_samples=result["bundle_first_change"],
           hop_ms=1000.0 * bundle.hop / rate, n_fft=int(bundle.separator["n_fft"]),
           lookahead=int(bundle.separator.get("lookahead", 0)), **bundle_info(bundle))


STARTUP = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import stream_s5
t1 = time.perf_counter()
eng = stream_s5.Engine(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None)
t2 = time.perf_counter()
out = eng.feed(np.zeros(eng.hop, np.float32))
t3 = time.perf_counter()
assert eng.frames_done == 1
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "first_block_s": t3 - t2,
                  "calibration": eng.calibration, "device": eng.device_note, "torch": "torch" in sys.modules}))
"""


def _argv_code(code: str, arg: str) -> str:
    return f"import sys; sys.argv = ['-c', {arg!r}]\n" + code


def test_startup_to_first_block(benchmark, bundle):
    arg = os.environ.get(BUNDLE_ENV, "")
    runs = []

    def run():
        wall, stdout = run_python(_argv_code(STARTUP, arg))
        runs.append((wall, json.loads(stdout.strip().splitlines()[-1])))

    benchmark.pedantic(run, rounds=3, iterations=1)
    walls = sorted(w for w, _ in runs)
    inner = runs[-1][1]
    assert not inner["torch"], "stream_s5 imported torch"
    record(benchmark, wall_s_median=round(float(np.median(walls)), 4), wall_s_all=[round(w, 4) for w in walls],
           import_s=round(inner["import_s"], 4), build_with_calibration_s=round(inner["build_s"], 4),
           first_block_s=round(inner["first_block_s"], 5), device=inner["device"],
           calibration=inner["calibration"], **bundle_info(bundle))


MEMORY = r"""
import json, sys, time
import numpy as np, psutil


def peak_kb():  # VmHWM: this process's peak RSS (ru_maxrss would carry the forking parent's peak)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return float(line.split()[1])
    return float("nan")


proc = psutil.Process()
rss0 = proc.memory_info().rss
import stream_s5
from stream_s5.multistream import MultiStreamEngine
rss_import = proc.memory_info().rss
streams = int(sys.argv[2])
bundle = sys.argv[1] or None
opts = stream_s5.EngineOptions(threads=1, calibrate=False)
if streams == 1:
    eng = stream_s5.Engine(bundle, classes="Speech,Dishes,Doorbell", refine=2, device="cpu", options=opts)
else:
    eng = MultiStreamEngine(bundle, n_streams=streams, classes="Speech,Dishes,Doorbell", refine=2, options=opts)
rss_build = proc.memory_info().rss
rate = eng.rate
x = (0.05 * np.random.default_rng(0).standard_normal(10 * rate)).astype(np.float32)
total = 0
for i in range(0, x.size, 1600):
    if streams == 1:
        total += eng.feed(x[i : i + 1600]).length
    else:
        total += eng.feed([x[i : i + 1600]] * streams)[0].length
total += (eng.flush() if streams == 1 else eng.flush()[0]).length
assert total == x.size, (total, x.size)
rss = proc.memory_info().rss
print(json.dumps({"rss_start_mb": rss0 / 2**20, "rss_import_mb": rss_import / 2**20, "rss_build_mb": rss_build / 2**20,
                  "rss_mb": rss / 2**20, "peak_rss_mb": peak_kb() / 1024,
                  "torch_imported": "torch" in sys.modules, "modules": len(sys.modules)}))
"""


@pytest.mark.parametrize("streams", [1, 16], ids=["engine", "multistream16"])
def test_resident_memory(benchmark, bundle, streams):
    arg = os.environ.get(BUNDLE_ENV, "")
    result = {}

    def run():
        wall, stdout = run_python(f"import sys; sys.argv = ['-c', {arg!r}, '{streams}']\n" + MEMORY)
        result.update(json.loads(stdout.strip().splitlines()[-1]), wall_s=wall)

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert not result["torch_imported"], "torch is in sys.modules of the runtime process"
    record(benchmark, streams=streams, slots=3, passes=2, threads=1, processed_s=10.0,
           **{k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}, **bundle_info(bundle))
