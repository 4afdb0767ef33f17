import time

import pytest

torch = pytest.importorskip("torch")

from export.data import ScenePool  # noqa: E402
from stream_s5.synth.scenes import SceneConfig  # noqa: E402


def test_refresh_takes_every_scene_the_worker_has_made_up_to_the_limit():
    pool = ScenePool(SceneConfig(sr=16000, duration=1.0), None, seed=0, size=4, workers=1, stream=5)  # queue holds 16
    try:
        deadline = time.time() + 60
        while pool.ready() < 10 and time.time() < deadline:
            time.sleep(0.05)
        assert pool.ready() >= 10
        # all ten are taken at once, not just what happens to be in the pipe already
        assert pool.refresh(max_new=10) == 10
        assert pool.received == 4 + 10
    finally:
        pool.close()


def test_inline_pool_is_deterministic_per_stream():
    cfg = SceneConfig(sr=16000, duration=1.0)
    a, b, c = (ScenePool(cfg, None, seed=0, size=2, workers=0, stream=s) for s in (0, 0, 7))
    assert a.refresh(2) == 2 and b.refresh(2) == 2 and c.refresh(2) == 2
    same = all((x.mixture == y.mixture).all() for x, y in zip(a.pool, b.pool))
    other = any(x.mixture.shape != y.mixture.shape or (x.mixture != y.mixture).any() for x, y in zip(a.pool, c.pool))
    assert same and other


def test_linear_channel_is_one_linear_filter_for_mixture_and_reference():
    import numpy as np

    from export.data import augment_window, linear_channel

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 16000)).astype(np.float32) * 0.1
    for seed in range(20):
        chain = linear_channel(np.random.default_rng(seed), 16000)
        np.testing.assert_allclose(chain(a + b), chain(a) + chain(b), atol=1e-5)  # mixture = sum of parts still
    outputs = [augment_window(a, np.random.default_rng(s), 16000, p_channel=1.0) for s in range(20)]
    assert all(o.shape == a.shape and np.isfinite(o).all() for o in outputs)
    assert sum(not np.allclose(o, a) for o in outputs) >= 15
    assert augment_window(a, np.random.default_rng(0), 16000, p_channel=0.0) is a


def test_sed_and_separator_batches_with_channel_randomisation():
    import numpy as np

    from export.data import sed_batch, separator_batch

    pool = ScenePool(SceneConfig(sr=16000, duration=2.0, p_no_target=0.0), None, seed=0, size=3, workers=0)
    rng = np.random.default_rng(0)
    audio, clips, frames = sed_batch(pool.sample(4), 20480, 32, 640, 16000, rng, p_channel=1.0)
    assert audio.shape == (4, 20480) and bool(audio.isfinite().all())
    mix, target, onehot, activity, present = separator_batch(pool.sample(4), 8192, 128, 640, 16000, rng, p_channel=1.0)
    assert mix.shape == (4, 1, 8192) and bool(mix.isfinite().all()) and bool(target.isfinite().all())


def test_training_labels_split_an_event_at_its_long_pauses_only():
    """A door opened, 2 s of nothing, then shut is one scene event but two training events: a SED window
    inside the pause hears no cupboard and must not be told it does. Footfall-length pauses stay inside."""
    import numpy as np

    from export.data import audible_events

    sr, rng = 16000, np.random.default_rng(0)
    door = np.zeros(6 * sr)
    door[sr : sr + 4000] = rng.standard_normal(4000)  # the opening, 1.0–1.25 s
    door[int(3.5 * sr) : int(3.5 * sr) + 2400] = 0.3 * rng.standard_normal(2400)  # the closing, 3.5–3.65 s
    door[int(1.25 * sr) : int(3.5 * sr)] = 1e-3 * rng.standard_normal(int(2.25 * sr))  # a room tone 50 dB down
    events = audible_events("CupboardOpenClose", door, sr, 1.0, 3.65)
    assert [label for label, _, _ in events] == ["CupboardOpenClose"] * 2
    (_, on1, off1), (_, on2, off2) = events
    assert on1 == 1.0 and abs(off1 - 1.25) <= 0.01 and abs(on2 - 3.5) <= 0.01 and off2 == 3.65

    steps = np.zeros(6 * sr)
    for k in range(6):  # a footfall every 0.6 s: 0.5 s pauses
        steps[sr + k * 9600 : sr + k * 9600 + 1600] = rng.standard_normal(1600)
    assert audible_events("FootSteps", steps, sr, 1.0, 4.1) == [("FootSteps", 1.0, 4.1)]


def test_scene_records_carry_the_split_labels_and_leave_contiguous_events_whole():
    import numpy as np

    from export.data import _record
    from stream_s5.synth.scenes import generate_scene

    for seed in range(40):
        scene = generate_scene(SceneConfig(sr=16000, duration=10.0, p_no_target=0.0), seed)
        record = _record(scene)
        for event in scene.events:
            pieces = [(on, off) for label, on, off in record.events if label == event.label]
            assert pieces and all(event.onset - 1e-9 <= on < off <= event.offset + 1e-9 for on, off in pieces)
            # what is left out between pieces is a pause longer than a second, and each piece sounds
            for (_, off), (on, _) in zip(pieces, pieces[1:]):
                assert on - off > 1.0
            for on, off in pieces:
                part = scene.sources[event.label][int(on * 16000) : int(off * 16000)]
                assert np.abs(part).max() > 0


def test_sed_batch_feed_workers_deliver_labelled_batches_of_real_scenes():
    from export.data import SedBatchFeed

    cfg = SceneConfig(duration=2.0)
    feed = SedBatchFeed(cfg, None, seed=0, workers=2, batch=4, window=20480, n_frames=32, frame_hop=640,
                        local_pool=2, windows_per_scene=4)
    try:
        batches = [feed.get(timeout=120) for _ in range(3)]
    finally:
        feed.close()
    for audio, clips, frames in batches:
        assert audio.shape == (4, 20480) and clips.shape == (4, 18) and frames.shape == (4, 32, 18)
        assert torch.isfinite(audio).all() and audio.abs().max() > 0
        assert torch.equal(clips, frames.amax(dim=1))
    assert not torch.equal(batches[0][0], batches[1][0]) and feed.batches == 3
    with pytest.raises(ValueError):
        SedBatchFeed(cfg, None, seed=0, workers=0, batch=4, window=20480, n_frames=32, frame_hop=640)


def test_the_compressor_leaves_a_silent_window_silent_without_dividing_by_zero():
    import warnings

    import numpy as np

    from export.data import nonlinear_channel

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the GPU run's log showed 'divide by zero' from here
        for seed in range(20):
            y = nonlinear_channel(np.zeros(20480, np.float32), np.random.default_rng(seed), 16000)
            assert np.isfinite(y).all() and not y.any()


def test_a_dead_feed_worker_is_reported_at_once_not_after_the_timeout(tmp_path):
    from export.data import SedBatchFeed

    missing = tmp_path / "no_such_bank"  # the workers fail opening it
    feed = SedBatchFeed(SceneConfig(duration=2.0), str(missing), seed=0, workers=1, batch=2, window=20480, n_frames=32,
                        frame_hop=640, local_pool=1, windows_per_scene=4)
    start = time.time()
    try:
        with pytest.raises(RuntimeError, match="died"):
            feed.get(timeout=300)
    finally:
        feed.close()
    assert time.time() - start < 60


def test_the_handover_measurement_times_both_paths():
    from export.train_speed import measure_handover

    rows = measure_handover(batch=4, repeats=2, settle_s=0.05)
    assert [r["part"] for r in rows] == ["handover_pipe", "handover_shared_memory"]
    assert all(r["median_s"] > 0 and r["repeats"] == 2 for r in rows)
