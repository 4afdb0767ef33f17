"""3. The whole engine on a 60 s scene, fed hop by hop as a live source would: RTF = compute time /
audio time (SED included where it runs: amortised), p50/p99 block time against hop/4; fixed 3 classes
× 2 passes and "auto"; ONNX Runtime intra-op threads 1 and 2.
Also: where the time of a block goes (Python vs ONNX Runtime vs STFT/overlap-add vs conditioning)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.conftest import bundle_info, machine_info, record, scene, summarise, timed_method, Timed
from stream_s5 import Engine, EngineOptions

SECONDS = 60.0
FIXED = "Speech,Dishes,Doorbell"


@pytest.fixture(scope="module")
def scene60(bundle):
    x, source = scene(bundle.sample_rate, SECONDS, bundle.channels)
    return x.T.copy(), source  # frames × channels, as a source delivers it


def feed_all(eng: Engine, frames: np.ndarray, block: int):
    times, outs = [], []
    for i in range(0, frames.shape[0], block):
        t = time.perf_counter()
        out = eng.feed(frames[i : i + block])
        times.append(time.perf_counter() - t)
        outs.append(out)
    t = time.perf_counter()
    outs.append(eng.flush())
    times.append(time.perf_counter() - t)
    return times, outs


def check_outputs(outs, n_in: int, fixed: tuple[str, ...] | None):
    assert sum(o.length for o in outs) == n_in, "output length ≠ input length"
    pos = 0
    for o in outs:
        assert o.start == pos
        pos += o.length
        for label, a in o.audio.items():
            assert a.size == o.length and np.isfinite(a).all(), f"bad audio for {label}"
            if fixed:
                assert label in fixed
        for bf in o.backfill:
            assert np.isfinite(bf.audio).all()
    if fixed:
        assert all(set(o.audio) == set(fixed) for o in outs if o.length)


@pytest.mark.parametrize("classes,threads", [(FIXED, 1), ("auto", 1), (FIXED, 2)],
                         ids=["3slots-2passes-1thread", "auto-1thread", "3slots-2passes-2threads"])
def test_engine_rtf(benchmark, bundle, scene60, classes, threads):
    frames, source = scene60
    hop = bundle.hop
    eng = Engine(bundle, classes=classes, refine=2, device="cpu",
                 options=EngineOptions(threads=threads, calibrate=False))
    result = {}

    def run():
        eng.reset()
        t, cpu = time.perf_counter(), time.process_time()
        result["times"], result["outs"] = feed_all(eng, frames, hop)
        result["wall"], result["cpu"] = time.perf_counter() - t, time.process_time() - cpu

    benchmark.pedantic(run, rounds=1, iterations=1)
    fixed = tuple(FIXED.split(",")) if classes != "auto" else None
    check_outputs(result["outs"], frames.shape[0], fixed)
    st = eng.stats()
    audio_s = frames.shape[0] / bundle.sample_rate
    hop_ms = 1000.0 * hop / bundle.sample_rate
    block = st["timings"]["block"]
    feed = summarise(result["times"][:-1])
    # rtf: wall clock (what a live stream sees); cpu_rtf: CPU time of this process (all its threads),
    # which another job on the machine disturbs much less
    record(benchmark, rtf=round(result["wall"] / audio_s, 5), cpu_rtf=round(result["cpu"] / audio_s, 5),
           audio_s=audio_s, compute_s=round(result["wall"], 4),
           classes=classes, slots=eng.bank.n_slots, passes=eng.passes, threads=threads, hop_ms=hop_ms,
           p50_ms=round(block["p50_ms"], 4), p99_ms=round(block["p99_ms"], 4), max_ms=round(block["max_ms"], 4),
           p99_over_quarter_hop=round(block["p99_ms"] / (hop_ms / 4), 4),
           feed_p50_ms=feed["p50_ms"], feed_p99_ms=feed["p99_ms"],
           sed_p50_ms=round(st["timings"]["sed"].get("p50_ms", 0.0), 4),
           separator_p50_ms=round(st["timings"]["separator"].get("p50_ms", 0.0), 4),
           separator_calls_per_hop=round(st["separator_calls"] / max(st["hops"], 1), 4),
           sed_calls=st["sed_calls"], deadline_misses=st["deadline_misses"],
           backfills=sum(len(o.backfill) for o in result["outs"]), scene=source, **bundle_info(bundle),
           **machine_info())


@pytest.mark.parametrize("input_format", ["bundle-rate", "44k1-stereo"])
def test_block_profile(benchmark, bundle, scene60, input_format):
    """Where a block's time goes, measured on 20 s fed hop by hop (3 slots × 2 passes, 1 thread):
    every ONNX Runtime call, the STFT, the overlap-add and the input conditioning are timed in
    place; the rest of the block is Python (engine glue, ring, tracker, output assembly)."""
    import soxr

    frames = scene60[0][: int(20 * bundle.sample_rate)]
    in_rate, block = bundle.sample_rate, bundle.hop
    if input_format == "44k1-stereo":
        in_rate = 44100
        frames = soxr.resample(frames, bundle.sample_rate, in_rate).astype(np.float32)
        frames = np.repeat(frames[:, :1], 2, axis=1)
        block = round(bundle.hop * in_rate / bundle.sample_rate)  # ≈ one hop per feed
    eng = Engine(bundle, classes=FIXED, refine=2, device="cpu", input_rate=in_rate,
                 input_channels=frames.shape[1], options=EngineOptions(threads=1, calibrate=False))
    clock: dict[str, float] = {}
    result = {}

    def run():
        eng.reset(input_rate=in_rate, input_channels=frames.shape[1])
        clock.clear()
        # instrument this stream's objects (reset() rebuilt them)
        eng.sep_model.session.run = Timed(eng.sep_model.session.run, clock, "ort_separator")
        sed_sessions = [eng.sed_model.front, eng.sed_model.body] if eng.sed_model.split else [eng.sed_model.session]
        for session in sed_sessions:  # a split SED: front end (new frames) + body, both counted as the SED
            session.run = Timed(session.run, clock, "ort_sed")
        guide = eng.sed_model.guide  # a guided bundle's second body: its own line, not "python_other"
        if guide is not None:
            guide.run = Timed(guide.run, clock, "ort_sed_guide")
        timed_method(eng.bank, "analyse", clock, "stft")
        eng.bank.ola = Timed(eng.bank.ola, clock, "istft_overlap_add")
        eng.conditioner = Timed(eng.conditioner, clock, "conditioning_resampling")
        t = time.perf_counter()
        result["times"], result["outs"] = feed_all(eng, frames, block)
        result["wall"] = time.perf_counter() - t
        eng.sep_model.session.run = eng.sep_model.session.run._inner
        for session in sed_sessions:
            session.run = session.run._inner
        if guide is not None:
            guide.run = guide.run._inner

    benchmark.pedantic(run, rounds=1, iterations=1)
    check_outputs(result["outs"], round(frames.shape[0] * bundle.sample_rate / in_rate), tuple(FIXED.split(",")))
    wall = result["wall"]
    hops = eng.frames_done
    measured = sum(clock.values())
    parts = {k: round(1000.0 * v / hops, 5) for k, v in sorted(clock.items())}
    parts["python_other"] = round(1000.0 * (wall - measured) / hops, 5)
    shares = {f"share_{k}": round(v / (1000.0 * wall / hops), 4) for k, v in parts.items()}
    record(benchmark, input_format=input_format, hops=hops, per_hop_ms=round(1000.0 * wall / hops, 5),
           per_hop_breakdown_ms=parts, **shares, slots=3, passes=2, threads=1,
           rtf=round(wall / (frames.shape[0] / in_rate), 5), **bundle_info(bundle))


@pytest.mark.parametrize("sed_worker", [True, False], ids=["sed-worker-thread", "sed-inline"])
def test_engine_realtime_paced(benchmark, bundle, scene60, sed_worker):
    """A live source: one hop arrives every 8 ms (paced with the wall clock, 15 s), 3 classes ×
    2 passes, one ORT thread. The block time that matters live is the time from a hop's arrival to
    its output; with the SED on its worker thread the SED runs between hops instead of inside one."""
    frames = scene60[0][: int(15 * bundle.sample_rate)]
    hop = bundle.hop
    hop_s = hop / bundle.sample_rate
    eng = Engine(bundle, classes=FIXED, refine=2, device="cpu",
                 options=EngineOptions(threads=1, calibrate=False, sed_worker=sed_worker))
    result = {}

    def run():
        eng.reset()
        outs, late = [], 0
        start = time.perf_counter()
        for k, i in enumerate(range(0, frames.shape[0], hop)):
            arrival = start + (k + 1) * hop_s
            wait = arrival - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                late += 1  # the previous hop overran: this one starts late
            outs.append(eng.feed(frames[i : i + hop]))
        outs.append(eng.flush())
        result["outs"], result["late"] = outs, late

    benchmark.pedantic(run, rounds=1, iterations=1)
    check_outputs(result["outs"], frames.shape[0], tuple(FIXED.split(",")))
    st = eng.stats()
    hop_ms = 1000.0 * hop_s
    block = st["timings"]["block"]
    record(benchmark, paced=True, sed_worker=sed_worker, hop_ms=hop_ms, slots=3, passes=2, threads=1,
           p50_ms=round(block["p50_ms"], 4), p99_ms=round(block["p99_ms"], 4), max_ms=round(block["max_ms"], 4),
           p99_over_quarter_hop=round(block["p99_ms"] / (hop_ms / 4), 4), late_hops=result["late"],
           deadline_misses=st["deadline_misses"], sed_p50_ms=round(st["timings"]["sed"].get("p50_ms", 0.0), 4),
           sed_wait_p99_ms=round(st["timings"]["sed_wait"].get("p99_ms", 0.0), 4), **bundle_info(bundle),
           **machine_info())


def test_denormals_as_zero(benchmark, bundle, scene60, monkeypatch):
    """Does flushing denormals in ONNX Runtime (`session.set_denormal_as_zero`) save CPU? 20 s fed hop by
    hop, 3 slots × 2 passes, 1 thread; the two settings alternate, three runs each, CPU seconds per run."""
    from stream_s5 import sessions

    frames = scene60[0][: int(20 * bundle.sample_rate)]
    plain_options = sessions._options

    def flushing_options(threads):
        opts = plain_options(threads)
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        return opts

    cpu: dict[str, list[float]] = {"plain": [], "denormals_as_zero": []}
    outputs = {}

    def run():
        for _ in range(3):
            for key, options in (("plain", plain_options), ("denormals_as_zero", flushing_options)):
                monkeypatch.setattr(sessions, "_options", options)
                eng = Engine(bundle, classes=FIXED, refine=2, device="cpu", options=EngineOptions(threads=1, calibrate=False))
                t = time.process_time()
                _, outs = feed_all(eng, frames, bundle.hop)
                cpu[key].append(time.process_time() - t)
                outputs[key] = outs

    benchmark.pedantic(run, rounds=1, iterations=1)
    for outs in outputs.values():
        check_outputs(outs, frames.shape[0], tuple(FIXED.split(",")))
    plain, flushed = float(np.median(cpu["plain"])), float(np.median(cpu["denormals_as_zero"]))
    record(benchmark, cpu_s_plain=[round(v, 3) for v in cpu["plain"]],
           cpu_s_denormals_as_zero=[round(v, 3) for v in cpu["denormals_as_zero"]],
           median_ratio=round(flushed / plain, 4), audio_s=20.0, **bundle_info(bundle), **machine_info())
