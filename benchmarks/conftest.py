"""Shared fixtures and helpers for `pytest benchmarks` (pytest-benchmark).

The bundle under test is `load_bundle(os.environ.get("STREAM_S5_BENCH_BUNDLE"))` — the default bundle
when the variable is unset; benchmarks that need it skip with the reason when there is none.
Every benchmark writes its figures into `benchmark.extra_info` (carried by `--benchmark-json`).
Benchmarks measure and never fail on slowness; they fail on wrong output."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_ENV = "STREAM_S5_BENCH_BUNDLE"


def _load():
    from stream_s5.bundle import BundleError, load_bundle

    path = os.environ.get(BUNDLE_ENV)
    try:
        return load_bundle(path), None
    except (BundleError, OSError) as exc:
        where = f"{BUNDLE_ENV}={path}" if path else "the default bundle (stream_s5/models/default)"
        return None, f"no model bundle for benchmarks: {where}: {exc} (set {BUNDLE_ENV} to a bundle folder)"


@pytest.fixture(scope="session")
def bundle():
    b, why = _load()
    if b is None:
        pytest.skip(why)
    return b


@pytest.fixture(scope="session")
def toy_bundle_dir(tmp_path_factory) -> Path:
    """The hand-built toy bundle of tests/conftest.py (exactly known graphs, no training)."""
    from tests.conftest import make_toy_bundle

    return make_toy_bundle(tmp_path_factory.mktemp("bench_toy_bundle"))


def bundle_info(b) -> dict:
    prov = b.manifest.get("provenance", {})
    recipe = prov.get("recipe")
    return {"bundle": str(b.path), "bundle_created": prov.get("created"),
            "bundle_trained_steps": recipe.get("step") if isinstance(recipe, dict) else None}


def machine_info() -> dict:
    import onnxruntime

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"nproc": os.cpu_count(), "cpu": model, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(), "loadavg_1m": os.getloadavg()[0]}


def summarise(times_s, drop: int = 0) -> dict:
    """Durations in seconds → p50/p99/max/mean in ms (after dropping `drop` warm-up values)."""
    v = np.asarray(times_s[drop:], np.float64) * 1000.0
    return {"p50_ms": round(float(np.percentile(v, 50)), 4), "p99_ms": round(float(np.percentile(v, 99)), 4),
            "max_ms": round(float(v.max()), 4), "mean_ms": round(float(v.mean()), 4), "samples": int(v.size)}


def record(benchmark, **info):
    for k, v in info.items():
        benchmark.extra_info[k] = v


class Timed:
    """Proxy that adds the time spent in calls of a callable object to `clock[key]`, forwarding
    every other attribute (used to split a block's time between stages)."""

    def __init__(self, inner, clock: dict, key: str):
        self._inner, self._clock, self._key = inner, clock, key

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self._inner(*args, **kwargs)
        finally:
            self._clock[self._key] = self._clock.get(self._key, 0.0) + time.perf_counter() - t

    def __getattr__(self, name):
        return getattr(self._inner, name)


def timed_method(obj, name: str, clock: dict, key: str):
    """Replace obj.name (a bound method or callable attribute) with a timed one on that instance."""
    setattr(obj, name, Timed(getattr(obj, name), clock, key))


def scene(rate: int, seconds: float, channels: int = 1, seed: int = 7) -> tuple[np.ndarray, str]:
    """A test scene [channels, n]: `stream_s5.synth.scenes.generate_scene` when it is importable,
    otherwise a synthetic one (noise floor, tones, chirps, noise bursts and clicks at random times)."""
    try:
        from stream_s5.synth.scenes import SceneConfig, generate_scene
        from stream_s5.synth.soundbank import Soundbank

        cfg = SceneConfig(sr=rate, duration=seconds, channels=channels, room=channels > 1)
        sc = generate_scene(cfg, seed, Soundbank.procedural(rate, seed))
        return np.ascontiguousarray(sc.mixture, dtype=np.float32), "stream_s5.synth.scenes.generate_scene"
    except Exception as exc:  # not there yet (or broken): synthetic fallback
        reason = f"synthetic ({type(exc).__name__}: {str(exc)[:80]})"
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    x = 0.003 * rng.standard_normal(n)
    for _ in range(int(seconds * 0.8)):
        on = rng.uniform(0, seconds - 1)
        dur = rng.uniform(0.2, 2.5)
        m = (t >= on) & (t < on + dur)
        kind = rng.integers(4)
        tt = t[m] - on
        env = np.minimum(1.0, np.minimum(tt, dur - tt) / 0.02) * rng.uniform(0.05, 0.3)
        if kind == 0:
            sig = np.sin(2 * np.pi * rng.uniform(200, 2000) * tt)
        elif kind == 1:
            f0, f1 = rng.uniform(200, 4000, 2)
            sig = np.sin(2 * np.pi * (f0 * tt + (f1 - f0) * tt ** 2 / (2 * dur)))
        elif kind == 2:
            sig = rng.standard_normal(tt.size)
        else:
            sig = (rng.random(tt.size) < 0.002) * rng.standard_normal(tt.size) * 5
        x[m] += env * sig
    x = np.clip(x, -1, 1).astype(np.float32)
    return np.repeat(x[None], channels, axis=0), reason


def run_python(code: str, timeout: float = 120.0, env: dict | None = None) -> tuple[float, str]:
    """Run `python -c code` in a fresh process from the repository root → (wall seconds, stdout)."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                **(env or {})}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout
