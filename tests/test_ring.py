import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_s5.ring import RingBuffer, SpscRing


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 64), channels=st.integers(1, 3), sizes=st.lists(st.integers(0, 100), max_size=20),
       data=st.data())
def test_ring_reads_back_what_was_written(capacity, channels, sizes, data):
    ring = RingBuffer(channels, capacity)
    history = np.zeros((channels, 0), np.float32)
    rng = np.random.default_rng(len(sizes))
    for n in sizes:
        block = rng.standard_normal((channels, n)).astype(np.float32)
        ring.write(block)
        history = np.concatenate([history, block], axis=1)
        assert ring.written == history.shape[1]
        lo = data.draw(st.integers(ring.oldest, ring.written))
        hi = data.draw(st.integers(lo, ring.written))
        np.testing.assert_array_equal(ring.read(lo, hi), history[:, lo:hi])


def test_ring_zero_history_before_start_and_errors():
    ring = RingBuffer(1, 8)
    ring.write(np.arange(1, 4, dtype=np.float32)[None])
    np.testing.assert_array_equal(ring.read(-2, 3)[0], [0, 0, 1, 2, 3])
    with pytest.raises(IndexError):
        ring.read(0, 4)  # not written yet
    ring.write(np.arange(10, dtype=np.float32)[None])
    with pytest.raises(IndexError):
        ring.read(0, 5)  # overwritten


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 50), ops=st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=40))
def test_spsc_ring_fifo_and_overflow_count(capacity, ops):
    ring = SpscRing(2, capacity)
    pushed, popped, dropped = [], [], 0
    counter = 0
    for is_push, n in ops:
        if is_push:
            frames = np.arange(counter, counter + n, dtype=np.float32)[:, None].repeat(2, axis=1)
            counter += n
            free = capacity - ring.available()
            dropped += max(0, n - free)
            pushed.extend(frames[: min(n, free), 0])
            ring.push(frames)
        else:
            popped.extend(ring.pop(n)[:, 0])
    popped.extend(ring.pop()[:, 0])
    assert popped == pushed
    assert ring.overflow_frames == dropped
