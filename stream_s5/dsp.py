"""The separator's STFT, in numpy: causal framing (frame t ends at sample (t+1)*hop), sqrt-Hann
analysis and synthesis windows (perfect reconstruction at 50 % overlap). `export.models` has the
torch twin; tests check that both agree."""

from __future__ import annotations

import numpy as np

__all__ = ["sqrt_hann", "stft_frames", "OverlapAdd", "offline_stft", "offline_istft"]


def sqrt_hann(n: int) -> np.ndarray:
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def stft_frames(framed: np.ndarray, window: np.ndarray) -> np.ndarray:
    """[..., n_fft] windowed frames → [..., 2, F] float32 (real, imag)."""
    spec = np.fft.rfft(framed * window, axis=-1)
    return np.stack([spec.real, spec.imag], axis=-2).astype(np.float32)


class OverlapAdd:
    """Synthesis for a batch of streams: each call takes one frame per stream and returns the hop of
    samples that no later frame will touch. The tail of n_fft - hop samples is the explicit state."""

    def __init__(self, n_fft: int, hop: int, streams: int = 1):
        self.n_fft, self.hop = n_fft, hop
        self.window = sqrt_hann(n_fft)
        self.tail = np.zeros((streams, n_fft - hop), dtype=np.float32)

    def reset(self, index: int | None = None):
        if index is None:
            self.tail[:] = 0.0
        else:
            self.tail[index] = 0.0

    def __call__(self, spec: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """spec [S, T, 2, F] for streams `rows` (default: all) → [S, T * hop] finished samples."""
        rows = np.arange(self.tail.shape[0]) if rows is None else rows
        frames = np.fft.irfft(spec[:, :, 0] + 1j * spec[:, :, 1], n=self.n_fft, axis=-1).astype(np.float32) * self.window
        n_streams, n_frames = frames.shape[:2]
        out = np.empty((n_streams, n_frames * self.hop), dtype=np.float32)
        tail = self.tail[rows]
        overlap = self.n_fft - self.hop
        for t in range(n_frames):
            buf = frames[:, t].copy()
            buf[:, :overlap] += tail
            out[:, t * self.hop : (t + 1) * self.hop] = buf[:, : self.hop]
            tail = buf[:, self.hop :]
        self.tail[rows] = tail
        return out


def offline_stft(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[C, N] → [T, C, 2, F], T = N // hop, zeros before the signal (the runtime's ring starts empty)."""
    frames = audio.shape[-1] // hop
    padded = np.concatenate([np.zeros((audio.shape[0], n_fft - hop), np.float32), audio[:, : frames * hop]], axis=-1)
    index = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
    framed = padded[:, index]  # [C, T, n_fft]
    return stft_frames(framed, sqrt_hann(n_fft)).transpose(1, 0, 2, 3)


def offline_istft(spec: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[T, 2, F] → [T * hop] aligned with the input timeline (the last n_fft - hop samples are
    unfinished: they need frames that do not exist)."""
    ola = OverlapAdd(n_fft, hop, 1)
    out = ola(spec[None])[0]
    # Output of frame t's hop starts at (t + 1) * hop - n_fft: shift left by n_fft - hop.
    delay = n_fft - hop
    return np.concatenate([out[delay:], ola.tail[0, :0], np.zeros(delay, np.float32)])[: spec.shape[0] * hop]
