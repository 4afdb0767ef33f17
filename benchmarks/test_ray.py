"""9. Ray Serve scale-out on this machine (docs/scaling.md): the driver of benchmarks/test_server.py
(N real-time clients, threads of two client processes, each streaming a rotation of a real recording in 20 ms
frames on an absolute schedule) against, in one run:
- the plain server (one process, no Ray) — the reference for the lag Ray's proxy adds;
- `stream-s5 serve --ray --replicas 1`, then `--replicas 2` (a local Ray on the same 2 cores), behind the
  ingress named by $S5_BENCH_RAY_INGRESS (default haproxy, the CLI's default; or proxy).
Per rung: lag p50/p99, the worst replica's pool-hop p50/p99 against the hop, outputs later than 100 ms,
how the streams spread over replicas. "Sustained" = lag p99 ≤ 100 ms and no client fell behind. At N = 8
on two replicas every client's events and audio are checked against a local `Engine`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest
import soundfile as sf

from benchmarks.conftest import ROOT, bundle_info, machine_info, record
from benchmarks.test_server import FRAME_S, RECORDING, TICK_MS, check_against_local, client_input, cpu_seconds, run_rung, start_server

pytest.importorskip("ray.serve", reason="needs the ray extra")

from stream_s5.serve.ray_app import free_port  # noqa: E402

PLAIN_LADDER = (4, 8, 16)
RAY_LADDER = {1: (4, 8, 12, 16), 2: (8, 12, 16, 20, 24)}
INGRESS = os.environ.get("S5_BENCH_RAY_INGRESS", "haproxy")


def start_ray_server(bundle, replicas: int, max_streams: int, tick_ms: float | None = None):
    port = free_port()
    tick = ["--tick-ms", str(tick_ms)] if tick_ms is not None else []
    proc = subprocess.Popen([sys.executable, "-m", "stream_s5", "serve", "--ray", "--replicas", str(replicas),
                             "--port", str(port), "--max-streams", str(max_streams), "--model", str(bundle.path),
                             "--max-speed", "1.5", "--ingress", INGRESS, *tick], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    t0 = time.monotonic()
    for line in proc.stdout:
        if line.startswith("open http://"):
            return proc, f"ws://127.0.0.1:{port}/ws", time.monotonic() - t0
        if time.monotonic() - t0 > 180:
            break
    proc.kill()
    raise RuntimeError("stream-s5 serve --ray did not start")


def machine_jiffies() -> list[int]:
    """/proc/stat's first line: user, nice, system, idle, iowait, … (Ray runs its workers at nice 15)."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def ladder_on(url, x, rate, ladder, check_at=None, bundle=None):
    rungs = []
    for n in ladder:
        before = machine_jiffies()
        rung, results = run_rung(url, x, rate, n)
        d = [b - a for a, b in zip(before, machine_jiffies())]
        total = sum(d) or 1
        # is the machine saturated? (clients, proxy and replicas share its cores)
        rung["machine_busy"] = round(1 - (d[3] + d[4]) / total, 3)
        rung["machine_split"] = {"user": round(d[0] / total, 3), "nice": round(d[1] / total, 3),
                                 "system": round(d[2] / total, 3)}
        rung["replicas_used"] = dict(Counter(r["stats"]["server"]["replica"] for r in results))
        if n == check_at:
            rung["max_abs_diff_vs_local"] = max(check_against_local(bundle, client_input(x, i, rate), rate, r["outs"])
                                                for i, r in enumerate(results))
            rung["events_equal_local"] = True
        rungs.append(rung)
        if not rung["sustained"] and len(rungs) >= 2 and not rungs[-2]["sustained"]:
            break
    return rungs


def sustained(rungs):
    return max([r["streams"] for r in rungs if r["sustained"]], default=0)


@pytest.mark.benchmark(group="ray")
def test_ray_serve_scale_out(benchmark, bundle):
    x, rate = sf.read(RECORDING, dtype="float32")
    hop_ms = 1000.0 * bundle.hop / bundle.sample_rate
    result = {"hop_ms": hop_ms}
    proc, url = start_server(bundle, 24, tick_ms=TICK_MS)
    try:
        result["plain"] = ladder_on(url, x, rate, PLAIN_LADDER)
    finally:
        proc.terminate()
        proc.wait(30)
    for replicas, ladder in RAY_LADDER.items():
        proc, url, started_s = start_ray_server(bundle, replicas, 16, tick_ms=TICK_MS)
        try:
            rungs = ladder_on(url, x, rate, ladder, check_at=8 if replicas == 2 else None, bundle=bundle)
        finally:
            proc.terminate()
            proc.wait(90)
        result[f"ray_{replicas}"] = {"start_s": round(started_s, 1), "rungs": rungs}
    for r in [*result["plain"], *result["ray_1"]["rungs"], *result["ray_2"]["rungs"]]:
        r["hop_p99_within_hop"] = (r["server_hop_ms_p99"] or 0) <= hop_ms
    plain = {r["streams"]: r for r in result["plain"]}
    ray1 = {r["streams"]: r for r in result["ray_1"]["rungs"]}
    result["ray_proxy_extra_lag_ms"] = {
        n: {"p50": round(ray1[n]["lag_ms_p50"] - plain[n]["lag_ms_p50"], 2),
            "p99": round(ray1[n]["lag_ms_p99"] - plain[n]["lag_ms_p99"], 2)} for n in (4, 8) if n in ray1 and n in plain}
    result["sustained_streams"] = {"plain": sustained(result["plain"]), "ray_1_replica": sustained(result["ray_1"]["rungs"]),
                                   "ray_2_replicas": sustained(result["ray_2"]["rungs"])}
    benchmark.pedantic(lambda: None, rounds=1)
    record(benchmark, **result, ingress=INGRESS, frame_ms=FRAME_S * 1000, tick_ms=TICK_MS, recording=str(RECORDING.relative_to(ROOT)), **bundle_info(bundle), **machine_info())


def _ray_processes() -> dict:
    import psutil

    found: dict[str, list] = {}
    for p in psutil.process_iter(["cmdline", "name"]):
        text = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
        for key in ("ProxyActor", "ServeReplica", "ServeController", "raylet", "gcs_server"):
            if key in text:
                found.setdefault(key, []).append(p)
    return found


@pytest.mark.benchmark(group="ray")
def test_cpu_per_process_at_eight_streams(benchmark, bundle):
    """Where the CPU goes at 8 real-time streams: plain server vs two Ray replicas (+ proxy, controller)."""
    import psutil

    x, rate = sf.read(RECORDING, dtype="float32")
    out = {}
    for mode in ("plain", "ray_2_replicas"):
        if mode == "plain":
            proc, url = start_server(bundle, 16)
            groups = {"server": [psutil.Process(proc.pid)]}
        else:
            proc, url, _ = start_ray_server(bundle, 2, 16)
            groups = _ray_processes()
        try:
            before = {k: cpu_seconds(v) for k, v in groups.items()}
            t0 = time.monotonic()
            rung, _ = run_rung(url, x, rate, 8)
            wall = time.monotonic() - t0
            busy = {k: round((cpu_seconds(v) - before[k]) / wall, 2) for k, v in groups.items()}
            busy["clients"] = round(rung["client_cpu_s"] / wall, 2)  # the client processes' own count
        finally:
            proc.terminate()
            proc.wait(90)
        out[mode] = {"cores_busy": busy, "rung": rung}
    benchmark.pedantic(lambda: None, rounds=1)
    record(benchmark, **out, **bundle_info(bundle), **machine_info())
