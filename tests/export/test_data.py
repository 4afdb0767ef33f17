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
