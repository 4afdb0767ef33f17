import numpy as np

from stream_s5.dsp import OverlapAdd, offline_istft, offline_stft, sqrt_hann, stft_frames


def test_stft_istft_perfect_reconstruction():
    x = np.random.default_rng(0).standard_normal((1, 4096)).astype(np.float32)
    y = offline_istft(offline_stft(x, 256, 128)[:, 0], 256, 128)
    np.testing.assert_allclose(y[:-128], x[0, :-128], atol=1e-5)


def test_streaming_frames_match_offline():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1280)).astype(np.float32)
    spec = offline_stft(x, 256, 128)
    padded = np.concatenate([np.zeros((2, 128), np.float32), x], axis=1)
    for t in range(spec.shape[0]):
        frame = stft_frames(padded[:, t * 128 : t * 128 + 256], sqrt_hann(256))
        np.testing.assert_allclose(frame, spec[t], atol=1e-5)
    ola = OverlapAdd(256, 128, 2)
    out = np.concatenate([ola(spec[t : t + 1, 0][None].repeat(2, 0)) for t in range(spec.shape[0])], axis=1)
    np.testing.assert_allclose(out[0, 128:], x[0, : out.shape[1] - 128], atol=1e-5)


def test_numpy_stft_matches_torch_twin():
    torch = __import__("pytest").importorskip("torch")
    from export.models import causal_istft, causal_stft

    x = np.random.default_rng(2).standard_normal((3, 3000)).astype(np.float32)
    ref = causal_stft(torch.from_numpy(x), 256, 128).numpy().transpose(1, 0, 2, 3)
    np.testing.assert_allclose(offline_stft(x, 256, 128), ref, atol=1e-4)
    wave = causal_istft(torch.from_numpy(ref[:, 0][None]), 256, 128).numpy()[0]
    np.testing.assert_allclose(offline_istft(ref[:, 0], 256, 128)[:-128], wave[:-128], atol=1e-5)
