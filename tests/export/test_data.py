import time

import pytest

pytest.importorskip("torch")

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
