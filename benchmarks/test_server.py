"""8. Real-time WebSocket streams through one `stream-s5 serve` process (its own process, as deployed):
for N on a ladder, N clients (threads of `CLIENT_PROCESSES` client processes, so that one interpreter's
lock does not pace them all) each stream a real recording in real time (20 ms frames on an absolute
schedule, classes auto, all classes subscribed) for `SECONDS`; measured
per rung: end-to-end lag (client sends a frame → receives the output that consumed it) p50/p99 over
all streams, the server's pool-hop time p50/p99 against the 8 ms hop, outputs later than 100 ms, and
whether every stream kept up (its backlog at the end). "Sustained" = the largest N whose lag p99 ≤
100 ms with no stream falling behind. At N = 8 each client's events and audio are checked against a
local `Engine` on the same input (the benchmark fails on wrong output, never on slowness). The ladder
runs with the server's default clock (`--tick-ms 16`) and the clients' default STEP framing (one message per
output); one rung at `COMPARE_AT` streams runs again on a server that steps whenever one stream is ready
(`--tick-ms 0`, the earlier loop), measured in the same run.

`test_pool_stepping_cpu` measures the reason in-process, without network or clock: the CPU time a
`StreamPool` spends per second of audio for N streams whose 20 ms frames arrive at their own moments,
stepped after every arrival or once per tick (virtual time, so the figure does not depend on load).

The in-process figure to compare with is benchmarks/test_multistream.py (MultiStreamEngine, lockstep,
every slot always busy)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import psutil
import pytest
import soundfile as sf

from benchmarks.conftest import ROOT, bundle_info, machine_info, record
from stream_s5 import Engine, EngineOptions

LADDER = (8, 16, 24, 32)
COMPARE_AT = 16
CLIENT_PROCESSES = 2
SECONDS = 12.0
FRAME_S = float(os.environ.get("S5_BENCH_FRAME_MS", "20")) / 1000  # client frame; env so spawned clients see it
TICK_MS = float(os.environ.get("S5_BENCH_TICK_MS", "16"))  # the server's clock (its default: 16 ms)
RECORDING = ROOT / "tests" / "data" / "real_footsteps_speech.flac"


def start_server(bundle, max_streams: int, tick_ms: float | None = None):
    tick = ["--tick-ms", str(tick_ms)] if tick_ms is not None else []
    proc = subprocess.Popen([sys.executable, "-m", "stream_s5", "serve", "--port", "0", "--max-streams",
                             str(max_streams), "--model", str(bundle.path), "--max-speed", "1.5", *tick],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if line.startswith("open http://"):
            port = int(line.split(":")[2].split("/")[0])
            return proc, f"ws://127.0.0.1:{port}/ws"
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("server did not start")


def client_input(x: np.ndarray, i: int, rate: int, seconds: float = SECONDS) -> np.ndarray:
    """A different rotation of the recording per client, `seconds` long."""
    n = int(seconds * rate)
    shift = (i * 7919) % x.size
    return np.resize(np.roll(x, -shift), n).astype(np.float32)


def stream_realtime(url: str, x: np.ndarray, rate: int, result: dict, framing: str, t_start: float):
    from stream_s5.serve.client import RemoteEngine

    frame = int(FRAME_S * rate)
    outs = []
    with RemoteEngine(url, input_rate=rate, input_channels=1, framing=framing) as eng:
        time.sleep(max(0.0, t_start - time.time()))
        t0 = time.monotonic()
        for k, i in enumerate(range(0, x.size, frame)):
            delay = t0 + k * FRAME_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            outs.append(eng.feed(x[i : i + frame]))
        backlog_s = time.monotonic() - t0 - x.size / rate  # > 0: the client could not even send in time
        outs.append(eng.flush())
        result.update(outs=outs, lags=list(eng.lags_ms), stats=eng.stats(), backlog_s=backlog_s,
                      timing=eng.summary.get("timing", {}) if eng.summary else {})


def client_group(url: str, inputs: list[np.ndarray], rate: int, framing: str, t_start: float, spacing_s: float):
    """One client process: a thread per stream, each starting `spacing_s` after the previous (streams join
    at different moments and SED phases) → (their results, this process's CPU seconds meanwhile)."""
    cpu0 = time.process_time()
    results = [{} for _ in inputs]
    threads = [threading.Thread(target=stream_realtime, args=(url, x, rate, results[i], framing, t_start + i * spacing_s))
               for i, x in enumerate(inputs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS * 4 + 60)
    return results, time.process_time() - cpu0


def cpu_seconds(processes) -> float:
    """User + system CPU seconds of these processes so far (one that ended counts nothing)."""
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_rung(url: str, x: np.ndarray, rate: int, n: int, framing: str = "step") -> tuple[dict, list[dict]]:
    inputs = [client_input(x, i, rate) for i in range(n)]
    spacing = 0.013
    t_start = time.time() + 3.0  # the client processes connect their streams first, then all start on time
    with ProcessPoolExecutor(CLIENT_PROCESSES, mp_context=multiprocessing.get_context("spawn")) as clients:
        groups = [list(range(g, n, CLIENT_PROCESSES)) for g in range(CLIENT_PROCESSES)]
        futures = [clients.submit(client_group, url, [inputs[i] for i in ids], rate, framing, t_start + g * spacing,
                                  spacing * CLIENT_PROCESSES) for g, ids in enumerate(groups)]
        results: list[dict] = [{} for _ in range(n)]
        client_cpu_s = 0.0
        for ids, future in zip(groups, futures):
            group_results, cpu_s = future.result(SECONDS * 4 + 120)
            client_cpu_s += cpu_s
            for i, r in zip(ids, group_results):
                results[i] = r
    assert all("outs" in r for r in results), "a client failed"
    lags = np.concatenate([np.asarray(r["lags"][25:]) for r in results])  # after the first half second
    timing = max((r["timing"] for r in results), key=lambda t: t.get("hop_ms_p99") or 0)
    late = sum(r["stats"]["server"]["late_outputs"] or 0 for r in results)
    rung = {"streams": n, "framing": framing, "lag_ms_p50": round(float(np.percentile(lags, 50)), 2),
            "lag_ms_p99": round(float(np.percentile(lags, 99)), 2), "lag_ms_max": round(float(lags.max()), 2),
            "server_hop_ms_p50": timing.get("hop_ms_p50"), "server_hop_ms_p99": timing.get("hop_ms_p99"),
            "late_outputs": late, "max_client_backlog_s": round(max(r["backlog_s"] for r in results), 3),
            "client_cpu_s": round(client_cpu_s, 2)}
    rung["sustained"] = rung["lag_ms_p99"] <= 100.0 and rung["max_client_backlog_s"] < 0.1
    return rung, results


def check_against_local(bundle, x: np.ndarray, rate: int, outs) -> float:
    """Events must be equal; audio to float rounding of batched kernels (ORT's kernels round
    differently for other batch sizes): → the largest absolute sample difference."""
    from tests.conftest import flatten

    eng = Engine(bundle, classes="auto", device="cpu", input_rate=rate, input_channels=1,
                 options=EngineOptions(calibrate=False))
    ref = flatten([eng.feed(x), eng.flush()])
    got = flatten(outs)
    assert got[2] == ref[2], "events differ from a local run"
    assert ref[0].keys() == got[0].keys()
    worst = 0.0
    for label, audio in ref[0].items():
        other = got[0][label]
        n = max(audio.size, other.size)
        diff = np.abs(np.pad(other, (0, n - other.size)) - np.pad(audio, (0, n - audio.size)))
        worst = max(worst, float(diff.max()))
    assert worst <= 1e-4, f"audio differs from a local run by {worst}"
    return worst


@pytest.mark.benchmark(group="server")
def test_realtime_websocket_streams(benchmark, bundle):
    x, rate = sf.read(RECORDING, dtype="float32")
    proc, url = start_server(bundle, max(LADDER), tick_ms=TICK_MS)
    ladder = []
    try:
        for n in LADDER:
            server = [psutil.Process(proc.pid)]
            cpu0, t0 = cpu_seconds(server), time.monotonic()
            rung, results = run_rung(url, x, rate, n)
            wall = time.monotonic() - t0
            # where the 2 cores go: the server process against the client processes, over the rung
            rung["server_cores_busy"] = round((cpu_seconds(server) - cpu0) / wall, 2)
            rung["client_cores_busy"] = round(rung["client_cpu_s"] / wall, 2)
            if n == 8:
                rung["max_abs_diff_vs_local"] = max(check_against_local(bundle, client_input(x, i, rate), rate,
                                                                        r["outs"]) for i, r in enumerate(results))
                rung["events_equal_local"] = True
            ladder.append(rung)
            if not rung["sustained"] and len(ladder) >= 2 and not ladder[-2]["sustained"]:
                break
    finally:
        proc.terminate()
        proc.wait(30)
    proc, url = start_server(bundle, COMPARE_AT, tick_ms=0)
    try:
        server = [psutil.Process(proc.pid)]
        cpu0, t0 = cpu_seconds(server), time.monotonic()
        comparison, _ = run_rung(url, x, rate, COMPARE_AT)
        comparison["tick_ms"] = 0
        comparison["server_cores_busy"] = round((cpu_seconds(server) - cpu0) / (time.monotonic() - t0), 2)
    finally:
        proc.terminate()
        proc.wait(30)
    sustained = max([r["streams"] for r in ladder if r["sustained"]], default=0)
    benchmark.pedantic(lambda: None, rounds=1)
    record(benchmark, sustained_streams=sustained, seconds_per_rung=SECONDS, frame_ms=FRAME_S * 1000,
           client_processes=CLIENT_PROCESSES, tick_ms=TICK_MS, ladder=ladder, greedy_stepping=comparison, recording=str(RECORDING.relative_to(ROOT)), **bundle_info(bundle), **machine_info())


def pool_stepping_cost(bundle, x: np.ndarray, rate: int, n: int, tick_ms: float, seconds: float = 6.0,
                       feature_cache: bool = True) -> dict:
    """CPU seconds per second of audio of a StreamPool serving n streams of 20 ms frames that arrive at
    their own moments (uniform offsets within a frame), stepped after every arrival (tick 0) or at most
    once per tick, in virtual time; feature_cache=False computes every SED window whole."""
    from stream_s5.engine import EngineOptions as Options
    from stream_s5.streampool import StreamPool

    pool = StreamPool(bundle, capacity=n, options=Options(calibrate=False, sed_feature_cache=feature_cache))
    frame = int(FRAME_S * rate)
    sids = [pool.open("auto", rate, 1) for _ in range(n)]
    inputs = [client_input(x, i, rate, seconds) for i in range(n)]
    offsets = np.random.default_rng(0).uniform(0, FRAME_S, n)
    arrivals = sorted((offsets[i] + k * FRAME_S, i, k) for i in range(n) for k in range(int(seconds / FRAME_S)))
    hops0, next_tick, steps = pool.frames_done, 0.0, 0
    cpu0 = time.process_time()
    for t, i, k in arrivals:
        while tick_ms and next_tick <= t:
            if pool.ready():
                pool.step(4)
                steps += 1
            next_tick += tick_ms / 1000
        pool.push(sids[i], inputs[i][k * frame : (k + 1) * frame])
        if not tick_ms:
            pool.step(4)
            steps += 1
    cpu = time.process_time() - cpu0
    hops = pool.frames_done - hops0
    # where the pool's time goes (wall seconds per stage; "block" holds the others and the SED wait)
    stage_s = {name: round(t.total_s(), 3) for name, t in pool.timers.items()}
    sed_windows = pool.sed.windows
    pool.close_pool()
    stream_hops = n * seconds * rate / pool.hop
    return {"streams": n, "tick_ms": tick_ms, "sed_feature_cache": pool.sed.cache_stats(), "cpu_s_per_audio_s": round(cpu / seconds, 3), "pool_hops": hops,
            "steps": steps, "streams_per_pool_hop": round(stream_hops / hops, 2), "stage_s": stage_s,
            "sed_windows": sed_windows, "sed_ms_per_window": round(1000 * stage_s["sed"] / max(sed_windows, 1), 3)}


@pytest.mark.benchmark(group="server")
def test_pool_stepping_cpu(benchmark, bundle):
    x, rate = sf.read(RECORDING, dtype="float32")
    rows = [pool_stepping_cost(bundle, x, rate, n, tick) for n in (8, 16) for tick in (0, 8, 16, 24)]
    # the same pools on the 16 ms clock with every SED window computed whole (the split SED's cache off)
    rows += [pool_stepping_cost(bundle, x, rate, n, 16, feature_cache=False) for n in (8, 16)]
    benchmark.pedantic(lambda: None, rounds=1)
    record(benchmark, rows=rows, frame_ms=FRAME_S * 1000, **bundle_info(bundle), **machine_info())
