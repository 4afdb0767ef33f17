"""Input conditioning: whatever comes in is turned into what the bundle declares, by documented and
counted repairs, never silently.

Rules, in order:
1. Layout: 1-D input is one channel; 2-D input is frames × channels (soundfile/PortAudio layout).
   A channel count other than the one the stream was opened with is an error.
2. Integers are scaled to [-1, 1) (int16 / 32768, int32 / 2**31); other dtypes become float32.
3. NaN and ±Inf samples become 0 (counted: `nonfinite_samples`).
4. Samples beyond ±clip_level are clipped (counted: `clipped_samples`).
5. Channels: to a mono bundle, the mean of all channels (`downmixed`); to an N-channel bundle, the
   first N channels of a wider input, or a mono input copied to all N (`upmixed`: no spatial cues).
6. Rate: streaming soxr (HQ) to the bundle's rate; its delay is compensated, so that the output
   timeline stays sample-aligned with the input (`resampled`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import soxr

__all__ = ["InputConditioner", "RepairCounters", "InputError", "as_frames", "to_float32", "repair"]

MIN_RATE, MAX_RATE = 4000, 384000


class InputError(ValueError):
    pass


@dataclass
class RepairCounters:
    input_samples: int = 0  # frames received, at the input rate
    nonfinite_samples: int = 0
    clipped_samples: int = 0
    downmixed: bool = False
    upmixed: bool = False
    resampled: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def as_frames(samples, prefix: str = "") -> np.ndarray:
    """Rule 1's layout check: numeric 1-D or frames × channels input → frames × channels (a view)."""
    x = np.asarray(samples)
    if x.dtype.kind not in "fiu":
        raise InputError(f"{prefix}audio must be numeric, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise InputError(f"{prefix}audio must be 1-D or frames × channels, got shape {x.shape}")
    return x


def to_float32(x: np.ndarray) -> np.ndarray:
    """Rule 2 → a float32 copy (the repairs then work in place)."""
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        x = (x.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
    elif x.dtype.kind == "f" and x.dtype.itemsize > 4:
        # finite float64 beyond float32's range: kept finite, so rule 4 counts it clipped (not non-finite)
        limit = np.finfo(np.float32).max
        x = np.where(np.isfinite(x), np.clip(x, -limit, limit), x)  # NaN and ±inf stay (rule 3)
    return x.astype(np.float32, copy=True)


def repair(x: np.ndarray, clip_level: float, axis=None) -> tuple:
    """Rules 3 and 4, in place on float `x` → (non-finite, clipped) sample counts, summed over `axis`
    (0 when there are none)."""
    nonfinite = clipped = 0
    bad = ~np.isfinite(x)
    if bad.any():
        nonfinite = bad.sum(axis=axis)
        x[bad] = 0.0
    over = np.abs(x) > clip_level
    if over.any():
        clipped = over.sum(axis=axis)
        np.clip(x, -clip_level, clip_level, out=x)
    return nonfinite, clipped


class InputConditioner:
    def __init__(self, in_rate: int, in_channels: int, out_rate: int, out_channels: int, clip_level: float = 1.0):
        if not isinstance(in_rate, (int, np.integer)) or not MIN_RATE <= in_rate <= MAX_RATE:
            raise InputError(f"unsupported input sample rate {in_rate!r}: must be an integer in {MIN_RATE}..{MAX_RATE} Hz")
        if not isinstance(in_channels, (int, np.integer)) or isinstance(in_channels, bool) or in_channels < 1:
            raise InputError(f"input must have at least one channel, not {in_channels}")
        self.in_rate, self.in_channels = int(in_rate), int(in_channels)
        self.out_rate, self.out_channels = out_rate, out_channels
        self.clip_level = clip_level
        self.counters = RepairCounters(
            downmixed=out_channels == 1 and in_channels > 1,
            upmixed=out_channels > 1 and in_channels == 1,
            resampled=in_rate != out_rate,
        )
        if out_channels > 1 and 1 < in_channels < out_channels:
            raise InputError(f"a {out_channels}-channel bundle needs {out_channels} input channels (or mono), got {in_channels}")
        self._resampler = (
            soxr.ResampleStream(self.in_rate, out_rate, out_channels, dtype="float32", quality="HQ")
            if self.counters.resampled else None
        )

    def reset(self):
        self.__init__(self.in_rate, self.in_channels, self.out_rate, self.out_channels, self.clip_level)

    def _validate(self, samples) -> np.ndarray:
        x = as_frames(samples)
        if x.shape[1] != self.in_channels:
            raise InputError(f"expected {self.in_channels} channel(s) (frames × channels), got shape {x.shape}")
        return to_float32(x)

    def __call__(self, samples) -> np.ndarray:
        """→ [out_channels, n] float32 at the bundle's rate (n may be 0 while the resampler fills)."""
        x = self._validate(samples)
        self.counters.input_samples += x.shape[0]
        nonfinite, clipped = repair(x, self.clip_level)
        self.counters.nonfinite_samples += int(nonfinite)
        self.counters.clipped_samples += int(clipped)
        x = self._mix(x)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        return np.ascontiguousarray(x.T, dtype=np.float32)

    def _mix(self, x: np.ndarray) -> np.ndarray:
        if self.out_channels == 1:
            return x.mean(axis=1, keepdims=True) if x.shape[1] > 1 else x
        if x.shape[1] == 1:
            return np.repeat(x, self.out_channels, axis=1)
        return x[:, : self.out_channels]

    def flush(self) -> np.ndarray:
        """The resampler's remaining output at end of stream."""
        if self._resampler is None:
            return np.zeros((self.out_channels, 0), np.float32)
        tail = self._resampler.resample_chunk(np.zeros((0, self.out_channels), np.float32), last=True)
        return np.ascontiguousarray(tail.T, dtype=np.float32)

    def expected_output_length(self) -> int:
        """Samples at the bundle's rate that the input received so far maps to."""
        return int(round(self.counters.input_samples * self.out_rate / self.in_rate))
