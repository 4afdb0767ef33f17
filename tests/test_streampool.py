import numpy as np
import pytest

from stream_s5 import Engine, EngineOptions
from stream_s5.conditioning import InputError
from stream_s5.streampool import PoolFull, StreamPool
from tests.conftest import HOP, flatten, tone_bursts
from tests.test_multistream import sizes_for, stream_inputs

OPTS = EngineOptions(calibrate=False)


def engine_run(bundle, x, classes="auto", rate=None, channels=None):
    eng = Engine(str(bundle), classes=classes, device="cpu", input_rate=rate, input_channels=channels, options=OPTS)
    outs = [eng.feed(x[i : i + 1000]) for i in range(0, len(x), 1000)] + [eng.flush()]
    return flatten(outs)


def assert_same_stream(ref, got):
    """Same audio per class on the timeline, same backfills and events (call boundaries may differ)."""
    (ra, rb, re_, rs), (ga, gb, ge, gs) = ref, got
    assert sum(n for _, n in rs) == sum(n for _, n in gs)  # same total output length
    assert ra.keys() == ga.keys()
    for k in ra:
        n = max(ra[k].size, ga[k].size)
        np.testing.assert_allclose(np.pad(ga[k], (0, n - ga[k].size)), np.pad(ra[k], (0, n - ra[k].size)),
                                   atol=1e-6, rtol=0)
    assert [b[:2] for b in rb] == [b[:2] for b in gb]
    for a, b in zip(rb, gb):
        np.testing.assert_allclose(b[2], a[2], atol=1e-6, rtol=0)
    assert re_ == ge


class Feeder:
    """Pushes a stream's input in its own chunk sizes, from a given pool step on, with pauses."""

    def __init__(self, pool, x, sizes, start_step=0, pause=(None, None), classes="auto", rate=None, channels=None):
        self.pool, self.x, self.sizes = pool, x, list(sizes)
        self.start_step, self.pause = start_step, pause
        self.classes, self.rate, self.channels = classes, rate, channels
        self.sid, self.pos, self.outs, self.done = None, 0, [], False

    def tick(self, step):
        if self.done or step < self.start_step:
            return
        if self.sid is None:
            self.sid = self.pool.open(self.classes, self.rate, self.channels)
        if self.pause[0] is not None and self.pause[0] <= step < self.pause[1]:
            return  # the client sends nothing for a while
        if self.sizes:
            n = self.sizes.pop(0)
            self.pool.push(self.sid, self.x[self.pos : self.pos + n])
            self.pos += n
            if not self.sizes:
                self.pool.end(self.sid)

    def collect(self, outs):
        if self.sid is not None and not self.done and self.sid in outs:
            out = outs[self.sid]
            self.outs.append(out)
            self.done = out.final


def drive(pool, feeders, max_steps=10_000, max_hops=None):
    for step in range(max_steps):
        for f in feeders:
            f.tick(step)
        outs = pool.step(max_hops)
        for f in feeders:
            f.collect(outs)
        if all(f.done for f in feeders):
            return step
    raise AssertionError("streams did not finish")


def test_streams_that_join_pause_and_leave_match_separate_engines(toy_bundle):
    xs = stream_inputs(4)
    pool = StreamPool(str(toy_bundle), capacity=4, options=OPTS)
    feeders = [
        Feeder(pool, xs[0], sizes_for(xs[0].size, seed=1)),
        Feeder(pool, xs[1], sizes_for(xs[1].size, seed=2), start_step=7),  # joins later, mid SED period
        Feeder(pool, xs[2], sizes_for(xs[2].size, seed=3), start_step=3, pause=(20, 45)),  # stalls a while
        Feeder(pool, xs[3], [HOP * 3 + 5] * (xs[3].size // (HOP * 3 + 5)) + [xs[3].size % (HOP * 3 + 5)]),
    ]
    drive(pool, feeders, max_hops=3)  # few hops per step: streams interleave at different clocks
    for f, x in zip(feeders, xs):
        ref = engine_run(toy_bundle, x)
        assert ref[2] and ref[1]  # events and backfills happened: the comparison is not vacuous
        assert_same_stream(ref, flatten(f.outs))
    assert pool.active == [] and pool.stats()["finished"] == 4
    # the SED was batched over streams whose own SED hops fell together
    assert pool.sed.windows > pool.sed.calls


def test_a_reused_slot_starts_clean_and_others_are_undisturbed(toy_bundle):
    xs = stream_inputs(3)
    pool = StreamPool(str(toy_bundle), capacity=2, options=OPTS)
    a = Feeder(pool, xs[0], [4000] * (xs[0].size // 4000 + 1))
    short = Feeder(pool, xs[1][: 30000], [3000] * 10)
    drive(pool, [a, short], max_hops=4)  # `short` ends first; `a` goes on
    assert pool.active == []
    # a third stream takes the freed slot while another one is running
    b = Feeder(pool, xs[2], sizes_for(xs[2].size, seed=9))
    c = Feeder(pool, xs[0], sizes_for(xs[0].size, seed=5), start_step=11)
    drive(pool, [b, c], max_hops=2)
    for f, x in [(a, xs[0]), (short, xs[1][:30000]), (b, xs[2]), (c, xs[0])]:
        assert_same_stream(engine_run(toy_bundle, x), flatten(f.outs))


def test_abandoned_stream_frees_its_slot_and_late_sed_results_are_dropped(toy_bundle):
    xs = stream_inputs(2)
    pool = StreamPool(str(toy_bundle), capacity=2, options=OPTS)
    keep = Feeder(pool, xs[0], sizes_for(xs[0].size, seed=1))
    gone = pool.open()
    for step in range(400):
        keep.tick(step)
        if step < 30:
            pool.push(gone, xs[1][step * 800 : (step + 1) * 800])
        if step == 30:
            pool.close(gone)  # vanished mid-stream, its SED maybe in flight
            again = pool.open("Speech")
            assert again == gone  # slot reused
        keep.collect(pool.step(5))
        if keep.done:
            break
    assert_same_stream(engine_run(toy_bundle, xs[0]), flatten(keep.outs))
    assert pool.stats()["abandoned"] == 1 and pool.slot_labels(again) == ["Speech", None, None]


def test_resampled_multichannel_input_and_fixed_classes(toy_bundle):
    rng = np.random.default_rng(0)
    x = np.stack([tone_bursts(rate=48000, seconds=3.0, seed=1), rng.normal(0, 0.01, 3 * 48000)], axis=1)
    pool = StreamPool(str(toy_bundle), capacity=1, options=OPTS)
    f = Feeder(pool, x, [960] * 150, classes="Speech,AlarmClock", rate=48000, channels=2)
    drive(pool, [f])
    assert_same_stream(engine_run(toy_bundle, x, "Speech,AlarmClock", 48000, 2), flatten(f.outs))
    assert f.outs[-1].final and sum(o.length for o in f.outs) == 3 * 16000


def test_capacity_and_bad_requests(toy_bundle):
    pool = StreamPool(str(toy_bundle), capacity=1, options=OPTS)
    sid = pool.open()
    with pytest.raises(PoolFull, match="1 streams"):
        pool.open()
    with pytest.raises(ValueError, match="unknown class"):
        StreamPool(str(toy_bundle), capacity=1, options=OPTS).open("Unicorn")
    with pytest.raises(ValueError, match="at most 3 fixed"):
        StreamPool(str(toy_bundle), capacity=1, options=OPTS).open("Speech,AlarmClock,Dishes,Doorbell")
    with pytest.raises(InputError, match="sample rate"):
        StreamPool(str(toy_bundle), capacity=1, options=OPTS).open(input_rate=10)
    with pytest.raises(InputError, match="numeric"):
        pool.push(sid, np.array(["x"]))
    with pytest.raises(KeyError):
        pool.push(sid + 1, np.zeros(10))
    with pytest.raises(ValueError, match="capacity"):
        StreamPool(str(toy_bundle), capacity=0, options=OPTS)
    pool.end(sid)
    with pytest.raises(RuntimeError, match="ended"):
        pool.push(sid, np.zeros(10))
    outs = pool.step()
    assert outs[sid].final and outs[sid].length == 0 and pool.active == []


def test_the_sed_runs_ahead_on_queued_input_and_waits_only_when_a_result_is_due(toy_bundle):
    xs = stream_inputs(2)
    pool = StreamPool(str(toy_bundle), capacity=2, options=OPTS)
    sed_hop = pool.sed_hop
    a, b = pool.open(), pool.open()
    outs = {a: [], b: []}

    def collect(step_outs):
        for sid, out in step_outs.items():
            outs[sid].append(out)

    head_a, head_b = 3 * sed_hop + 7, sed_hop // 2
    pool.push(a, xs[0][:head_a])  # three SED windows' worth queued
    pool.push(b, xs[1][:head_b])  # not one window yet
    collect(pool.step(max_hops=1))
    # one hop run, and a's first window already went to the SED (read from its queue); none of b's
    assert pool.info(a).hops == 1 and pool.sed.windows == 1
    assert pool.streams[a].sed_next == 2 * sed_hop and pool.streams[b].sed_next == sed_hop
    collect(pool.step(max_hops=1))  # a's next window follows the first, in order
    assert pool.sed.windows == 2
    # the rest in other chunks: each stream still equals a separate engine (windows partly ring, partly queue)
    pool.push(a, xs[0][head_a:])
    pool.end(a)
    chunks = sizes_for(xs[1].size - head_b, seed=4)
    pos = head_b
    while not (outs[a] and outs[a][-1].final and outs[b] and outs[b][-1].final):
        if chunks:
            n = chunks.pop(0)
            pool.push(b, xs[1][pos : pos + n])
            pos += n
            if not chunks:
                pool.end(b)
        collect(pool.step(max_hops=2))
    for sid, x in ((a, xs[0]), (b, xs[1])):
        assert_same_stream(engine_run(toy_bundle, x), flatten(outs[sid]))


@pytest.mark.parametrize("sed_worker", [True, False])
def test_a_failing_sed_call_is_a_missed_update_for_the_streams_in_it(toy_bundle, sed_worker):
    xs = stream_inputs(2)
    pool = StreamPool(str(toy_bundle), capacity=2, options=EngineOptions(calibrate=False, sed_worker=sed_worker))
    model, calls = pool.sed.model, {"n": 0}

    class Failing:
        split = model.split

        def __getattr__(self, name):
            return getattr(model, name)

        def _maybe_fail(self, graph, *args):
            calls["n"] += 1
            if calls["n"] in (5, 6):
                raise RuntimeError("injected failure")
            return graph(*args)

        def __call__(self, *args):
            return self._maybe_fail(model, *args)

        def from_log_mel(self, *args):
            return self._maybe_fail(model.from_log_mel, *args)

    pool.sed.model = Failing()
    if pool.sed.cache is not None:
        pool.sed.cache.model = pool.sed.model
    feeders = [Feeder(pool, x, sizes_for(x.size, seed=i)) for i, x in enumerate(xs)]
    drive(pool, feeders, max_hops=3)
    stats = pool.stats()
    assert stats["faults"]["sed_failures"] == 2 and stats["finished"] == 2
    for f, x in zip(feeders, xs):
        got = flatten(f.outs)
        assert sum(n for _, n in got[3]) == x.size  # whole
        assert all(np.isfinite(a).all() for a in got[0].values())


def test_a_guided_bundle_gives_each_pooled_stream_what_a_single_engine_gives(tmp_path):
    from pathlib import Path

    import soundfile as sf

    from stream_s5.bundle import default_bundle_path
    from tests.conftest import make_guided_bundle

    guided = make_guided_bundle(default_bundle_path(), tmp_path / "guided")
    audio, rate = sf.read(Path(__file__).parent / "data" / "real_footsteps_speech.flac", dtype="float32")
    xs = [audio[: 4 * rate], audio[-4 * rate :]]
    pool = StreamPool(str(guided), capacity=2, options=OPTS)
    feeders = [Feeder(pool, xs[0], sizes_for(xs[0].size, seed=1), classes="Speech,FootSteps"),
               Feeder(pool, xs[1], sizes_for(xs[1].size, seed=2), start_step=5, classes="Speech,FootSteps")]
    drive(pool, feeders, max_hops=3)
    for f, x in zip(feeders, xs):
        assert_same_stream(engine_run(guided, x, "Speech,FootSteps"), flatten(f.outs))
