"""9. Soak (docs/reliability.md).

- `test_long_soak`: `S5_SOAK_MINUTES` (default 180) minutes of audio through one engine at accelerated
  pace, in 0.1 s chunks; RSS, open files, threads and chunk timings per 15-minute segment.
- `test_realtime_null_sink`: `S5_REALTIME_SECONDS` (default 300) of real time through the CLI on a real
  PortAudio device — the PulseAudio null sink's monitor as the microphone while paplay plays a looped
  recording into the sink; input overflows (xruns), deadline misses, the input level.
Figures go to `extra_info` (and, with `S5_SOAK_JSON=path`, a JSON file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from benchmarks.conftest import ROOT, machine_info, record
from tests.test_soak import soak


def _save(key: str, figures: dict):
    path = os.environ.get("S5_SOAK_JSON")
    if path:
        data = json.loads(open(path).read()) if os.path.exists(path) else {}
        data[key] = figures
        with open(path, "w") as f:
            f.write(json.dumps(data, indent=2, default=float) + "\n")


def test_long_soak(benchmark):
    minutes = float(os.environ.get("S5_SOAK_MINUTES", "180"))
    figures = benchmark.pedantic(lambda: soak(minutes, segment_minutes=15.0), rounds=1, iterations=1)
    figures = {**{k: v for k, v in figures.items() if k != "stats"},
               "sed_faults": figures["stats"]["faults"], "deadline_misses": figures["stats"]["deadline_misses"],
               "date": time.strftime("%Y-%m-%d"), **machine_info()}
    record(benchmark, **figures)
    _save("long_soak", figures)
    assert figures["nonfinite_samples"] == 0


def test_realtime_null_sink(benchmark, tmp_path):
    if not shutil.which("pulseaudio") or not shutil.which("paplay"):
        pytest.skip("needs PulseAudio (pulseaudio, paplay)")
    seconds = float(os.environ.get("S5_REALTIME_SECONDS", "300"))
    recording, rate = sf.read(ROOT / "tests" / "data" / "real_footsteps_speech.flac", dtype="float32")
    looped = tmp_path / "looped.wav"
    sf.write(looped, np.tile(recording, int(np.ceil((seconds + 20) * rate / recording.shape[0])))[: int((seconds + 20) * rate)],
             rate)
    subprocess.run(["pulseaudio", "--kill"], capture_output=True)
    subprocess.run(["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--load=module-native-protocol-unix",
                    "--load=module-null-sink sink_name=s5"], check=True, capture_output=True)
    time.sleep(1.0)
    out = tmp_path / "out"
    env = {**os.environ, "PULSE_SOURCE": "s5.monitor"}
    try:
        player = subprocess.Popen(["paplay", "--device=s5", str(looped)])
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "stream_s5", "--input", "mic", "--input-device", "pulse", "--rate",
                               "16000", "--channels", "1", "--duration", str(seconds), "--output", str(out),
                               "--no-view"], env=env, capture_output=True, text=True, timeout=seconds + 120)
        wall = time.perf_counter() - t0
        player.terminate()
    finally:
        subprocess.run(["pulseaudio", "--kill"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    figures = {"seconds": summary["input_seconds"], "wall_s": wall, "overflows": summary["overflows"],
               "deadline_misses": summary["deadline_misses"], "hops": summary["hops"],
               "block_ms": summary["timings"]["block"], "input_rms_dbfs": summary["input_rms_dbfs"],
               "detected_classes": summary["detected_classes"], "faults": summary["faults"],
               "date": time.strftime("%Y-%m-%d"), **machine_info()}
    record(benchmark, **figures)
    _save("realtime_null_sink", figures)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert summary["input_seconds"] >= seconds - 0.5 and summary["input_rms_dbfs"] > -60  # sound did flow
