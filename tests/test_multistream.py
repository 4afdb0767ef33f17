import numpy as np
import pytest

from stream_s5 import Engine, EngineOptions
from stream_s5.conditioning import InputError
from stream_s5.multistream import MultiStreamEngine
from tests.conftest import HOP, RATE, SED_HOP, flatten, tone_bursts

OPTS = EngineOptions(calibrate=False)


def stream_inputs(n, seconds=5.0):
    """Different scenes per stream: bursts at different times (some streams never fire twice)."""
    xs = []
    for i in range(n):
        on = 0.6 + 0.37 * i
        bursts = ((on, on + 1.1),) if i % 3 == 2 else ((on, on + 0.9), (on + 2.0, on + 2.6))
        xs.append(tone_bursts(seconds=seconds, bursts=bursts, freq=300.0 + 110 * i, seed=i, amp=0.2 + 0.05 * i))
    return xs


def sizes_for(total, seed=0):
    rng = np.random.default_rng(seed)
    sizes = list(rng.integers(1, 300, size=60)) + list(rng.integers(1, 4000, size=200))
    out, acc = [], 0
    for s in sizes:
        if acc >= total:
            break
        s = min(int(s), total - acc)
        out.append(s)
        acc += s
    if acc < total:
        out.append(total - acc)
    return out


def run_single(bundle, x, sizes, classes, refine=None):
    eng = Engine(str(bundle), classes=classes, refine=refine, device="cpu", options=OPTS)
    outs, i = [], 0
    for n in sizes:
        outs.append(eng.feed(x[i : i + n]))
        i += n
    outs.append(eng.flush())
    return flatten(outs), eng


def run_multi(eng, xs, sizes):
    per_stream = [[] for _ in xs]
    i = 0
    for n in sizes:
        for acc, out in zip(per_stream, eng.feed([x[i : i + n] for x in xs])):
            acc.append(out)
        i += n
    for acc, out in zip(per_stream, eng.flush()):
        acc.append(out)
    return [flatten(o) for o in per_stream]


def assert_same(ref, got):
    (ra, rb, re_, rs), (ga, gb, ge, gs) = ref, got
    assert rs == gs  # same start/length per call
    assert ra.keys() == ga.keys()
    for k in ra:
        np.testing.assert_allclose(ga[k], ra[k], atol=1e-6, rtol=0)
    assert [b[:2] for b in rb] == [b[:2] for b in gb]
    for a, b in zip(rb, gb):
        np.testing.assert_allclose(b[2], a[2], atol=1e-6, rtol=0)
    assert re_ == ge


def count_runs(session):
    """Wrap an ORT session's run() to count calls and record batch sizes."""
    calls = []
    run = session.run

    def counted(output_names, feeds, *args, **kwargs):
        calls.append(next(iter(feeds.values())).shape[0])
        return run(output_names, feeds, *args, **kwargs)

    session.run = counted
    return calls


@pytest.mark.parametrize("classes,refine", [("auto", None), ("Speech,AlarmClock", 3)])
def test_streams_match_separate_engines(toy_bundle, classes, refine):
    n = 4
    xs = stream_inputs(n)
    sizes = sizes_for(xs[0].size)
    refs = [run_single(toy_bundle, x, sizes, classes, refine) for x in xs]
    eng = MultiStreamEngine(str(toy_bundle), n_streams=n, classes=classes, refine=refine, options=OPTS)
    got = run_multi(eng, xs, sizes)
    for (ref, single), g in zip(refs, got):
        assert_same(ref, g)
    # separator states carried per stream, slot and pass exactly as in the single engines
    states = eng.bank.states.reshape(eng.passes, n, eng.slots, *eng.bank.state_shape)
    for i, (_, single) in enumerate(refs):
        np.testing.assert_array_equal(states[:, i], single.bank.states)
    if classes == "auto":
        assert all(len(r[0][2]) >= 2 for r in refs)  # events happened: the comparison is not vacuous
        assert all(r[0][1] for r in refs)  # and backfills


def test_io_bound_step_session_gives_the_same_output(toy_bundle):
    # the GPU path's fixed-shape IO-bound separator (sized for all slots of all streams), on the CPU
    n = 3
    xs = stream_inputs(n, seconds=4.0)
    sizes = sizes_for(xs[0].size, seed=2)
    plain = run_multi(MultiStreamEngine(str(toy_bundle), n_streams=n, options=OPTS), xs, sizes)
    eng = MultiStreamEngine(str(toy_bundle), n_streams=n, options=EngineOptions(calibrate=False, io_binding=True))
    assert eng.bank.step_model is not eng.bank.model and eng.bank.step_model.slots == n * eng.slots
    for a, b in zip(plain, run_multi(eng, xs, sizes)):
        assert_same(a, b)


def test_batching_one_call_per_pass_and_one_sed_call_per_hop(toy_bundle):
    hops = 100  # 10 SED hops
    for n in (1, 6):
        eng = MultiStreamEngine(str(toy_bundle), n_streams=n, classes="Speech,Doorbell,Dishes", refine=2, options=OPTS)
        sep = count_runs(eng.sep_model.session)
        sed = count_runs(eng.sed_model.session)
        for _ in range(hops):
            eng.feed(np.zeros((n, HOP), np.float32))
        assert len(sep) == 2 * hops and set(sep) == {3 * n}  # B = all slots of all streams
        assert len(sed) == hops * HOP // SED_HOP and set(sed) == {n}
        assert eng.stats()["separator_calls"] == len(sep) and eng.stats()["sed_calls"] == len(sed)


def test_auto_mode_call_count_independent_of_streams(toy_bundle):
    # with auto classes the only per-stream calls are the onset backfills (one per pass each)
    xs = stream_inputs(5)
    counts = {}
    for n in (1, 5):
        eng = MultiStreamEngine(str(toy_bundle), n_streams=n, options=OPTS)
        sep = count_runs(eng.sep_model.session)
        sed = count_runs(eng.sed_model.session)
        backfills = sum(len(r[1]) for r in run_multi(eng, xs[:n], [HOP] * (xs[0].size // HOP)))
        per_hop = len(sep) - eng.passes * backfills
        assert per_hop <= eng.passes * eng.frames_done
        assert len(sed) == eng.frames_done * HOP // SED_HOP
        counts[n] = (per_hop, len(sed))
    assert counts[5][1] == counts[1][1]
    # one batched separator call per pass and hop for all streams: five streams with classes active in more
    # hops need at most the hops' calls, not five times one stream's
    assert 0 < counts[1][0] <= counts[5][0] <= eng.passes * eng.frames_done < 5 * counts[1][0]


def test_overlap_sed_gives_identical_output(toy_bundle):
    xs = stream_inputs(3, seconds=4.0)
    sizes = [HOP * 7] * (xs[0].size // (HOP * 7) + 1)
    plain = run_multi(MultiStreamEngine(str(toy_bundle), n_streams=3, options=OPTS), xs, sizes)
    eng = MultiStreamEngine(str(toy_bundle), n_streams=3, options=OPTS, overlap_sed=True)
    overlapped = run_multi(eng, xs, sizes)
    eng.close()
    for a, b in zip(plain, overlapped):
        assert_same(a, b)


def test_staggered_sed_spreads_calls_and_keeps_stream_semantics(toy_bundle):
    n = 10
    xs = [tone_bursts(seconds=4.0, bursts=((1.0, 2.5),), seed=i) for i in range(n)]
    eng = MultiStreamEngine(str(toy_bundle), n_streams=n, options=OPTS, stagger_sed=True)
    sed = count_runs(eng.sed_model.session)
    hops = xs[0].size // HOP
    got = run_multi(eng, xs, [HOP] * hops)
    hops_per_sed = SED_HOP // HOP
    assert len(eng.groups) == hops_per_sed and max(sed) == 1  # one window per hop instead of 10 every 10th
    assert sum(sed) == eng.sed_windows and abs(eng.sed_windows - n * eng.frames_done / hops_per_sed) <= n
    for x, (audio, backfill, events, _) in zip(xs, got):
        events = [e for e in events if e[2] is not None]  # closed events (opened ones are reported too)
        assert [e[0] for e in events] == ["AlarmClock"]
        assert abs(events[0][1] - 1.0) <= 0.045 and abs(events[0][2] - 2.5) <= 0.045 + SED_HOP / RATE
        on = int(1.0 * RATE)
        stream = audio["AlarmClock"].copy()
        for label, start, samples in backfill:
            stream[start : start + samples.size] = samples
        np.testing.assert_allclose(stream[on : on + 1600], x[on : on + 1600], atol=1e-5)


def test_fixed_class_streams_are_their_inputs(toy_bundle):
    n = 3
    xs = stream_inputs(n, seconds=2.0)
    eng = MultiStreamEngine(str(toy_bundle), n_streams=n, classes="Speech", options=OPTS, stagger_sed=True)
    for x, (audio, _, _, starts) in zip(xs, run_multi(eng, xs, sizes_for(xs[0].size, seed=4))):
        assert sum(length for _, length in starts) == x.size
        assert audio["Speech"].size == x.size
        np.testing.assert_allclose(audio["Speech"], x, atol=1e-5)


def test_input_validation_and_repairs(toy_bundle):
    eng = MultiStreamEngine(str(toy_bundle), n_streams=2, classes="Speech", options=OPTS)
    with pytest.raises(InputError, match="one block per stream"):
        eng.feed([np.zeros(10, np.float32)])
    with pytest.raises(InputError, match="same number of samples"):
        eng.feed([np.zeros(10, np.float32), np.zeros(11, np.float32)])
    with pytest.raises(InputError, match="channel"):
        eng.feed([np.zeros((10, 2), np.float32)] * 2)
    with pytest.raises(InputError, match="numeric"):
        eng.feed([np.array(["a"] * 10)] * 2)
    with pytest.raises(ValueError, match="n_streams"):
        MultiStreamEngine(str(toy_bundle), n_streams=0, options=OPTS)
    with pytest.raises(ValueError, match="unknown class"):
        MultiStreamEngine(str(toy_bundle), n_streams=1, classes="Unicorn", options=OPTS)
    bad = np.zeros(HOP * 4, np.float32)
    bad[3], bad[5] = np.nan, 2.0
    ints = (np.ones(HOP * 4) * 16384).astype(np.int16)
    eng.feed([bad, ints.astype(np.float32) / 32768])
    eng.feed(np.stack([bad, bad]))  # an [N, n] array works too
    repairs = eng.stats()["repairs"]
    assert repairs[0]["nonfinite_samples"] == 2 and repairs[0]["clipped_samples"] == 2
    assert repairs[1]["nonfinite_samples"] == 1 and repairs[1]["input_samples"] == HOP * 8
    # integer input is scaled as Engine does
    single = Engine(str(toy_bundle), classes="Speech", device="cpu", options=OPTS)
    multi = MultiStreamEngine(str(toy_bundle), n_streams=1, classes="Speech", options=OPTS)
    a, b = single.feed(ints), multi.feed([ints])[0]
    np.testing.assert_array_equal(a.audio["Speech"], b.audio["Speech"])


def test_flush_reset_and_stats(toy_bundle):
    eng = MultiStreamEngine(str(toy_bundle), n_streams=2, classes="auto", options=OPTS)
    x = np.zeros(RATE + 17, np.float32)
    total = sum(o[0].length for o in [eng.feed([x, x]), eng.flush()])
    assert total == x.size
    with pytest.raises(RuntimeError):
        eng.feed([x, x])
    with pytest.raises(RuntimeError):
        eng.flush()
    st = eng.stats()
    assert st["hops"] == eng.frames_done and st["streams"] == 2
    assert {"p50_ms", "p99_ms"} <= st["timings"]["block"].keys()
    eng.reset(classes="Speech")
    out = eng.feed([x[:HOP * 3], x[:HOP * 3]])
    assert out[0].length == out[1].length == 2 * HOP and list(out[0].audio) == ["Speech"]
    assert eng.slot_labels(1) == ["Speech"]


def test_calibration_budget(toy_bundle):
    from stream_s5 import BudgetError

    with pytest.raises(BudgetError, match="stream"):
        MultiStreamEngine(str(toy_bundle), n_streams=4, refine=3, options=EngineOptions(budget_ms=1e-6))
    eng = MultiStreamEngine(str(toy_bundle), n_streams=4, refine="auto", options=EngineOptions())
    assert eng.calibration["slots"] == 12 and eng.calibration["hop_cost_ms"] <= eng.budget_ms


def test_auto_refinement_of_the_pool_lowers_the_pass_count_for_all_streams(toy_bundle, monkeypatch):
    # the machine's speed fixed: 1 ms per pass over all slots, the SED free
    from stream_s5.engine import _EngineCore

    monkeypatch.setattr(_EngineCore, "_measure", lambda self, *a: (1.0, 0.0))
    eng = MultiStreamEngine(str(toy_bundle), n_streams=4, refine="auto", options=EngineOptions(budget_ms=1.5))
    assert eng.passes == 1 and eng.calibration["passes"] == 1 and eng.calibration["hop_cost_ms"] == pytest.approx(1.0)
    eng = MultiStreamEngine(str(toy_bundle), n_streams=4, refine="auto", options=EngineOptions(budget_ms=2.5))
    assert eng.passes == 2  # the bundle's count fits: kept


def test_a_guided_bundle_gives_each_stream_what_a_single_engine_gives(tmp_path):
    from pathlib import Path

    import soundfile as sf

    from stream_s5.bundle import default_bundle_path
    from tests.conftest import make_guided_bundle

    guided = make_guided_bundle(default_bundle_path(), tmp_path / "guided")
    audio, rate = sf.read(Path(__file__).parent / "data" / "real_footsteps_speech.flac", dtype="float32")
    assert rate == RATE
    xs = [audio[: 4 * rate], audio[-4 * rate :]]
    sizes = sizes_for(xs[0].size)
    classes = "Speech,FootSteps"
    refs = [run_single(guided, x, sizes, classes) for x in xs]
    eng = MultiStreamEngine(str(guided), n_streams=2, classes=classes, options=OPTS)
    for (ref, _), got in zip(refs, run_multi(eng, xs, sizes)):
        assert_same(ref, got)
    plain = run_single(default_bundle_path(), xs[0], sizes, classes)[0]
    assert np.abs(plain[0]["Speech"] - refs[0][0][0]["Speech"]).max() > 1e-4  # the guide is in effect
