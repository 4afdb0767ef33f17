"""7. Concurrent real-time streams with MultiStreamEngine: for N on a ladder, every stream fed one hop
per call in lockstep (3 fixed classes × 2 passes each: every slot always busy), the time of each
feed() call over all N streams — SED hops included — gives p50/p99 per hop. The sustained count is
the largest N whose p99 ≤ hop (the ladder stops after two rungs in a row above it, once the CPU time
per hop also exceeds the hop: `streams_by_cpu` is what one otherwise idle core would carry on
average, a figure that another job on the machine disturbs much less than wall-clock p99).

Configurations: SED aligned on the same hop for all streams (bit-equal to separate Engines), SED
staggered over the hops of its period, and staggered with the SED on a second thread (2 cores)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.conftest import bundle_info, machine_info, record, scene, summarise
from stream_s5 import EngineOptions
from stream_s5.multistream import MultiStreamEngine

LADDER = (1, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64)
HOPS, WARMUP = 250, 20  # 2 s of audio per rung, after two SED periods of warm-up
FIXED = "Speech,Dishes,Doorbell"


@pytest.fixture(scope="module")
def source(bundle):
    x, name = scene(bundle.sample_rate, 10.0, 1, seed=11)
    return x[0], name


def run_rung(bundle, x: np.ndarray, n: int, stagger: bool, overlap: bool, threads: int, device: str = "cpu") -> dict:
    hop = bundle.hop
    eng = MultiStreamEngine(bundle, n_streams=n, classes=FIXED, refine=2, device=device,
                            options=EngineOptions(threads=threads, calibrate=False),
                            stagger_sed=stagger, overlap_sed=overlap)
    total_hops = HOPS + WARMUP
    # a different excerpt for every stream
    offsets = (np.arange(n) * 7919 * hop) % (x.size - total_hops * hop)
    blocks = np.stack([x[o : o + total_hops * hop] for o in offsets])
    times, emitted = [], 0
    cpu0 = None
    try:
        for h in range(total_hops):
            if h == WARMUP:
                cpu0 = time.process_time()
            t = time.perf_counter()
            outs = eng.feed(blocks[:, h * hop : (h + 1) * hop])
            times.append(time.perf_counter() - t)
            assert len(outs) == n and len({o.length for o in outs}) == 1
            for o in outs:
                assert set(o.audio) == set(FIXED.split(","))
                assert all(a.size == o.length and np.isfinite(a).all() for a in o.audio.values())
            emitted += outs[0].length
        cpu_ms = 1000.0 * (time.process_time() - cpu0) / HOPS
        assert emitted == total_hops * hop - (eng.n_fft - hop)
        st = eng.stats()
    finally:
        eng.close()
    s = summarise(times, drop=WARMUP)
    return {"streams": n, **s, "cpu_ms_per_hop": round(cpu_ms, 4), "sed_calls": st["sed_calls"], "sed_windows": st["sed_windows"],
            "separator_calls": st["separator_calls"], "sed_p50_ms": round(st["timings"]["sed"].get("p50_ms", 0), 4),
            "separator_p50_ms": round(st["timings"]["separator"]["p50_ms"], 4),
            "output_p50_ms": round(st["timings"]["output"]["p50_ms"], 4)}


@pytest.mark.parametrize("stagger,overlap", [(False, False), (True, False), (True, True)],
                         ids=["aligned-sed", "staggered-sed", "staggered-sed-2nd-thread"])
def test_concurrent_streams(benchmark, bundle, source, stagger, overlap):
    x, name = source
    hop_ms = 1000.0 * bundle.hop / bundle.sample_rate
    ladder: list[dict] = []

    def run():
        ladder.clear()
        misses = 0
        for n in LADDER:
            rung = run_rung(bundle, x, n, stagger, overlap, threads=1)
            ladder.append(rung)
            misses = misses + 1 if rung["p99_ms"] > hop_ms else 0
            if misses >= 2 and rung["cpu_ms_per_hop"] > hop_ms:
                break

    benchmark.pedantic(run, rounds=1, iterations=1)
    passing = [r["streams"] for r in ladder if r["p99_ms"] <= hop_ms]
    by_mean = [r["streams"] for r in ladder if r["mean_ms"] <= hop_ms]
    # CPU time per hop (all threads) ≤ hop: the count one otherwise idle core could carry on average
    cores = 2 if overlap else 1
    by_cpu = [r["streams"] for r in ladder if r["cpu_ms_per_hop"] <= hop_ms]
    best = max(passing, default=0)
    at = next((r for r in ladder if r["streams"] == best), ladder[0])
    record(benchmark, streams=best, streams_by_mean=max(by_mean, default=0), streams_by_cpu=max(by_cpu, default=0),
           hop_ms=hop_ms,
           p50_ms=at["p50_ms"], p99_ms=at["p99_ms"], slots=3, passes=2, threads=1,
           cores=cores, stagger_sed=stagger, overlap_sed=overlap, ladder=ladder, scene=name,
           **bundle_info(bundle), **machine_info())
