import numpy as np
import pytest

from stream_s5.conditioning import InputConditioner, InputError


def test_nonfinite_and_clip_are_repaired_and_counted():
    c = InputConditioner(16000, 1, 16000, 1)
    x = np.array([0.1, np.nan, np.inf, -np.inf, 5.0, -1000.0, 0.2], np.float32)
    y = c(x)
    assert y.shape == (1, 7)
    np.testing.assert_allclose(y[0], [0.1, 0, 0, 0, 1.0, -1.0, 0.2])
    assert c.counters.nonfinite_samples == 3
    assert c.counters.clipped_samples == 2


def test_downmix_is_channel_mean_and_int16_scaled():
    c = InputConditioner(16000, 2, 16000, 1)
    x = np.array([[16384, -16384], [32767, 32767]], np.int16)
    y = c(x)
    np.testing.assert_allclose(y[0], [0.0, 32767 / 32768], atol=1e-6)
    assert c.counters.downmixed


def test_wrong_channel_count_and_bad_input_are_clear_errors():
    c = InputConditioner(16000, 2, 16000, 1)
    with pytest.raises(InputError, match="channel"):
        c(np.zeros((10, 3), np.float32))
    with pytest.raises(InputError, match="numeric"):
        c(np.array(["a", "b"]))
    with pytest.raises(InputError, match="sample rate"):
        InputConditioner(100, 1, 16000, 1)
    with pytest.raises(InputError, match="4 input channels"):
        InputConditioner(16000, 2, 16000, 4)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 7919, 96000])
def test_streaming_resample_keeps_length_and_timing(rate):
    c = InputConditioner(rate, 1, 16000, 1)
    n = rate * 2
    x = np.zeros(n, np.float32)
    x[rate // 2] = 1.0  # an impulse at 0.5 s
    chunks = [c(x[i : i + 777]) for i in range(0, n, 777)] + [c.flush()]
    y = np.concatenate(chunks, axis=1)[0]
    assert abs(y.size - c.expected_output_length()) <= 1
    assert abs(int(np.argmax(np.abs(y))) - 8000) <= 1


def test_mono_upmix_for_spatial_bundles():
    c = InputConditioner(16000, 1, 16000, 4)
    y = c(np.arange(5, dtype=np.float32) / 10)
    assert y.shape == (4, 5) and c.counters.upmixed
    np.testing.assert_array_equal(y[0], y[3])


def test_float64_beyond_float32_range_is_clipped_not_made_infinite():
    import warnings

    from stream_s5.conditioning import repair, to_float32

    x = np.array([1e300, -1e300, np.nan, np.inf, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in the cast
        y = to_float32(x)
    nonfinite, clipped = repair(y, 1.0)
    assert (nonfinite, clipped) == (2, 2)  # NaN and inf repaired to 0; the two huge finite values clipped
    np.testing.assert_array_equal(y, [1.0, -1.0, 0.0, 0.0, 0.5])
