"""10. Where the SED graph spends its time: ONNX Runtime's per-operator profile of the bundled `sed.onnx`
(one thread, a batch of 8 windows, as the server's pool batches them). The STFT front end recomputes all
128 mel frames of every 1.28 s window although consecutive windows share 120 of them (docs/server.md)."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.conftest import bundle_info, machine_info, record

BATCH = 8
CALLS = 30


@pytest.mark.benchmark(group="sed")
def test_sed_operator_profile(benchmark, bundle, tmp_path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "sed")
    session = ort.InferenceSession(str(bundle.path / bundle.sed["file"]), opts, providers=["CPUExecutionProvider"])
    audio = (np.random.default_rng(0).standard_normal((BATCH, int(bundle.sed["window"]))) * 0.1).astype(np.float32)
    feed = {session.get_inputs()[0].name: audio}
    for _ in range(5):
        session.run(None, feed)
    times = []
    for _ in range(CALLS):
        t = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    per_op: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    assert total > 0, "the profile holds no operator times"
    shares = {op: round(us / total, 3) for op, us in per_op.most_common(10)}
    benchmark.pedantic(lambda: None, rounds=1)
    record(benchmark, batch=BATCH, call_ms_median=round(1000 * float(np.median(times)), 3),
           window_ms_median=round(1000 * float(np.median(times)) / BATCH, 3), operator_share=shares,
           **bundle_info(bundle), **machine_info())
