"""Signal primitives shared by the procedural generators.

Everything here is vectorised numpy/scipy: the soundbank renders thousands of clips, so no
per-sample Python loops. All randomness comes from the ``np.random.Generator`` passed in, which
keeps every generator deterministic from a seed.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

__all__ = [
    "n_samples",
    "loguniform",
    "coloured_noise",
    "random_curve",
    "sos_filter",
    "peaking_eq",
    "shelf_eq",
    "resonance_gain",
    "bandpass_noise",
    "damped_modes",
    "harmonic_tone",
    "waveform_amplitudes",
    "place",
    "impulse_train",
    "gate_from_segments",
    "spectral_shape",
    "exp_reverb_ir",
    "recording_colour",
    "soft_clip",
    "peak_normalise",
    "fit_length",
    "frame_energy_db",
    "glottal_pulses",
]

EPS = 1e-12


def n_samples(sr: int, duration: float) -> int:
    return max(1, int(round(duration * sr)))


def loguniform(rng: np.random.Generator, low: float, high: float, size=None):
    """Log-uniform draw: frequencies and time constants are perceived on a log scale."""
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def coloured_noise(rng: np.random.Generator, n: int, exponent: float = 0.0) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    white = rng.standard_normal(n)
    if exponent != 0.0:
        spectrum = np.fft.rfft(white)
        # Flat below bin 4 and no DC, so brown noise does not turn into a slow offset drift.
        freqs = np.maximum(np.arange(len(spectrum), dtype=np.float64), 4.0)
        spectrum *= freqs ** (-exponent / 2.0)
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n)
    return white / (np.sqrt(np.mean(white**2)) + EPS)


def random_curve(rng: np.random.Generator, n: int, n_knots: int, low: float, high: float) -> np.ndarray:
    """Slow control curve: random knot values in [low, high], cosine-interpolated over n samples."""
    n_knots = max(2, int(n_knots))
    knots = rng.uniform(low, high, n_knots)
    position = np.linspace(0.0, n_knots - 1.0, n)
    index = np.minimum(position.astype(np.int64), n_knots - 2)
    frac = position - index
    # Cosine interpolation avoids the audible corners of a linear ramp at the knots.
    weight = 0.5 - 0.5 * np.cos(np.pi * frac)
    return knots[index] * (1.0 - weight) + knots[index + 1] * weight


def _clamp_freq(freq: float, sr: int) -> float:
    return float(np.clip(freq, 10.0, 0.45 * sr))


def sos_filter(x: np.ndarray, sr: int, kind: str, cutoff, order: int = 2) -> np.ndarray:
    """Butterworth low/high/band-pass; cut-offs are clamped below Nyquist so random draws stay valid."""
    if np.ndim(cutoff) == 0:
        wn = _clamp_freq(cutoff, sr)
    else:
        low, high = _clamp_freq(cutoff[0], sr), _clamp_freq(cutoff[1], sr)
        if high <= low * 1.05:
            high = min(low * 1.3, 0.45 * sr)
            low = min(low, high / 1.3)
        wn = (low, high)
    sos = signal.butter(order, wn, btype=kind, fs=sr, output="sos")
    return signal.sosfilt(sos, x, axis=-1)


def peaking_eq(sr: int, freq: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Peaking biquad (RBJ audio-EQ cookbook formulas)."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * _clamp_freq(freq, sr) / sr
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * amp, -2.0 * np.cos(w0), 1.0 - alpha * amp])
    a = np.array([1.0 + alpha / amp, -2.0 * np.cos(w0), 1.0 - alpha / amp])
    return b / a[0], a / a[0]


def shelf_eq(sr: int, freq: float, gain_db: float, high: bool) -> tuple[np.ndarray, np.ndarray]:
    """Low or high shelf biquad (RBJ cookbook, shelf slope 1)."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * _clamp_freq(freq, sr) / sr
    cos_w0 = np.cos(w0)
    alpha = np.sin(w0) / 2.0 * np.sqrt(2.0)
    root = 2.0 * np.sqrt(amp) * alpha
    sign = -1.0 if high else 1.0
    b = amp * np.array(
        [
            (amp + 1) + sign * (amp - 1) * cos_w0 + root,
            -2 * sign * ((amp - 1) + sign * (amp + 1) * cos_w0),
            (amp + 1) + sign * (amp - 1) * cos_w0 - root,
        ]
    )
    a = np.array(
        [
            (amp + 1) - sign * (amp - 1) * cos_w0 + root,
            2 * sign * ((amp - 1) - sign * (amp + 1) * cos_w0),
            (amp + 1) - sign * (amp - 1) * cos_w0 - root,
        ]
    )
    return b / a[0], a / a[0]


def resonance_gain(freqs: np.ndarray, centre, bandwidth) -> np.ndarray:
    """Magnitude of a second-order resonance (peak 1 at ``centre``); broadcasts over arrays.

    Used for time-varying formants/resonances applied in the STFT domain, which is far cheaper
    than re-designing an IIR filter every few samples.
    """
    centre = np.asarray(centre, dtype=np.float64)
    bandwidth = np.asarray(bandwidth, dtype=np.float64)
    num = centre * bandwidth
    den = np.sqrt((centre**2 - freqs**2) ** 2 + (bandwidth * freqs) ** 2) + EPS
    return np.minimum(num / den, 1.0)


def bandpass_noise(rng: np.random.Generator, n: int, sr: int, low: float, high: float, order: int = 2):
    return sos_filter(rng.standard_normal(n), sr, "bandpass", (low, high), order)


def damped_modes(
    sr: int,
    n: int,
    freqs,
    amps,
    decays,
    phases=None,
) -> np.ndarray:
    """Sum of exponentially decaying sinusoids (modal synthesis of struck objects)."""
    freqs = np.atleast_1d(np.asarray(freqs, dtype=np.float64))
    amps = np.atleast_1d(np.asarray(amps, dtype=np.float64)) * np.ones_like(freqs)
    decays = np.atleast_1d(np.asarray(decays, dtype=np.float64)) * np.ones_like(freqs)
    keep = (freqs > 0) & (freqs < 0.48 * sr)
    if not np.any(keep):
        return np.zeros(n)
    freqs, amps, decays = freqs[keep], amps[keep], decays[keep]
    phases = np.zeros_like(freqs) if phases is None else np.atleast_1d(np.asarray(phases))[keep]
    t = np.arange(n) / sr
    modes = np.exp(-t[None, :] / decays[:, None]) * np.sin(2.0 * np.pi * freqs[:, None] * t[None, :] + phases[:, None])
    return amps @ modes


def waveform_amplitudes(shape: str, n_harmonics: int, duty: float = 0.5) -> np.ndarray:
    """Fourier-series amplitudes of classic oscillator shapes (band-limited by construction)."""
    k = np.arange(1, n_harmonics + 1, dtype=np.float64)
    if shape == "sine":
        amps = (k == 1).astype(np.float64)
    elif shape == "saw":
        amps = 1.0 / k
    elif shape == "square":
        amps = np.where(k % 2 == 1, 1.0 / k, 0.0)
    elif shape == "triangle":
        amps = np.where(k % 2 == 1, 1.0 / k**2, 0.0) * np.where((k // 2) % 2 == 0, 1.0, -1.0)
    elif shape == "pulse":
        amps = np.abs(np.sin(np.pi * k * duty)) / k
    else:
        raise ValueError(f"unknown waveform {shape!r}")
    return amps


def harmonic_tone(freq, sr: int, amps, n: int | None = None, phase0: float = 0.0, partial_ratios=None) -> np.ndarray:
    """Additive tone following ``freq`` (scalar or per-sample curve) with given partial amplitudes.

    Partials above ~0.95 Nyquist are faded out sample by sample, so gliding tones never alias.
    ``partial_ratios`` (default 1, 2, 3, ...) allows stretched/inharmonic partials.
    """
    amps = np.asarray(amps, dtype=np.float64)
    if np.ndim(freq) == 0:
        if n is None:
            raise ValueError("n is required for a constant frequency")
        freq = np.full(n, float(freq))
    freq = np.asarray(freq, dtype=np.float64)
    ratios = np.arange(1, len(amps) + 1, dtype=np.float64) if partial_ratios is None else np.asarray(partial_ratios)
    phase = 2.0 * np.pi * np.cumsum(freq) / sr + phase0
    nyquist = 0.5 * sr
    out = np.zeros_like(freq)
    for ratio, amp in zip(ratios, amps):
        if amp == 0.0:
            continue
        partial_freq = ratio * freq
        fade = np.clip((0.95 * nyquist - partial_freq) / (0.05 * nyquist), 0.0, 1.0)
        if not np.any(fade):
            continue
        out += amp * fade * np.sin(ratio * phase)
    return out


def place(out: np.ndarray, clip: np.ndarray, start: int, gain: float = 1.0) -> None:
    """Add ``clip`` into ``out`` at ``start`` (either end may hang over the edges)."""
    start = int(start)
    lo = max(0, start)
    hi = min(len(out), start + len(clip))
    if hi > lo:
        out[lo:hi] += gain * clip[lo - start : hi - start]


def impulse_train(n: int, positions, amplitudes=None) -> np.ndarray:
    """Sparse excitation: impulses at sample positions (out-of-range ones dropped)."""
    positions = np.asarray(positions, dtype=np.int64)
    amplitudes = np.ones(len(positions)) if amplitudes is None else np.asarray(amplitudes, dtype=np.float64)
    keep = (positions >= 0) & (positions < n)
    return np.bincount(positions[keep], weights=amplitudes[keep], minlength=n)[:n].astype(np.float64)


def gate_from_segments(n: int, sr: int, segments, ramp: float = 0.005) -> np.ndarray:
    """On/off envelope from (start_s, stop_s) pairs with raised-cosine ramps (no clicks)."""
    gate = np.zeros(n)
    ramp_n = max(1, int(ramp * sr))
    ramp_shape = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, ramp_n))
    for start_s, stop_s in segments:
        start, stop = int(start_s * sr), int(stop_s * sr)
        length = stop - start
        if length <= 0:
            continue
        seg = np.ones(length)
        r = min(ramp_n, length // 2)
        if r > 0:
            seg[:r] = ramp_shape[np.linspace(0, ramp_n - 1, r).astype(int)]
            seg[-r:] = seg[:r][::-1]
        lo, hi = max(0, start), min(n, stop)
        if hi > lo:
            gate[lo:hi] = np.maximum(gate[lo:hi], seg[lo - start : hi - start])
    return gate


def spectral_shape(x: np.ndarray, sr: int, gain_fn, nperseg: int = 512) -> np.ndarray:
    """Time-varying filtering in the STFT domain.

    ``gain_fn(freqs [F, 1], times [1, T]) -> gains [F, T]`` returns the magnitude response per frame
    (a static response [F, 1] broadcasts).
    """
    n = len(x)
    if n < nperseg:  # short inputs: zero-pad so the STFT has at least one full frame
        x = np.pad(x, (0, nperseg - n))
    hop = nperseg // 4
    _, _, spec = signal.stft(x, fs=sr, nperseg=nperseg, noverlap=nperseg - hop, boundary="even", padded=True)
    freqs = np.linspace(0.0, sr / 2.0, spec.shape[0])[:, None]
    times = (np.arange(spec.shape[1]) * hop / sr)[None, :]
    spec = spec * gain_fn(freqs, times)
    _, y = signal.istft(spec, fs=sr, nperseg=nperseg, noverlap=nperseg - hop, boundary=True)
    return fit_length(y, n)


def exp_reverb_ir(rng: np.random.Generator, sr: int, rt60: float, brightness: float = 0.5) -> np.ndarray:
    """Short synthetic room tail: exponentially decaying noise (−60 dB at ``rt60``), no direct path."""
    n = n_samples(sr, rt60 * 1.1)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    # Darker rooms: high frequencies die out faster; a one-pole lowpass is enough for that colour.
    coeff = float(np.clip(1.0 - brightness, 0.0, 0.95))
    tail = signal.lfilter([1.0 - coeff], [1.0, -coeff], tail)
    onset = int(rng.uniform(0.002, 0.012) * sr)  # pre-delay before the first reflections
    tail[:onset] = 0.0
    return tail / (np.sqrt(np.sum(tail**2)) + EPS)


def recording_colour(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """Random 'recording chain': EQ, tilt, band-limiting, mild saturation, short reverb.

    Applied to every clip so a model has to learn the class, not one microphone or one room.
    """
    y = np.asarray(x, dtype=np.float64)
    for _ in range(rng.integers(0, 4)):
        b, a = peaking_eq(sr, loguniform(rng, 80.0, 0.4 * sr), rng.uniform(-8.0, 8.0), rng.uniform(0.5, 3.0))
        y = signal.lfilter(b, a, y)
    if rng.random() < 0.5:
        b, a = shelf_eq(sr, loguniform(rng, 150.0, 800.0), rng.uniform(-6.0, 6.0), high=False)
        y = signal.lfilter(b, a, y)
    if rng.random() < 0.5:
        b, a = shelf_eq(sr, loguniform(rng, 1500.0, 0.35 * sr), rng.uniform(-8.0, 5.0), high=True)
        y = signal.lfilter(b, a, y)
    if rng.random() < 0.3:
        y = sos_filter(y, sr, "lowpass", rng.uniform(0.2, 0.45) * sr, order=int(rng.integers(2, 5)))
    if rng.random() < 0.4:
        y = sos_filter(y, sr, "highpass", loguniform(rng, 40.0, 250.0), order=2)
    if rng.random() < 0.25:
        peak = np.max(np.abs(y)) + EPS
        y = soft_clip(y / peak, rng.uniform(1.5, 4.0)) * peak
    if rng.random() < 0.45:
        ir = exp_reverb_ir(rng, sr, rng.uniform(0.12, 0.6), brightness=rng.uniform(0.2, 0.9))
        wet = signal.fftconvolve(y, ir)[: len(y)]
        dry_rms, wet_rms = np.sqrt(np.mean(y**2)) + EPS, np.sqrt(np.mean(wet**2)) + EPS
        y = y + rng.uniform(0.05, 0.4) * wet * (dry_rms / wet_rms)
    return y


def soft_clip(x: np.ndarray, drive: float) -> np.ndarray:
    """tanh saturation at 4x oversampling, so the new harmonics do not alias back into the band."""
    up = signal.resample_poly(np.asarray(x, dtype=np.float64), 4, 1)
    shaped = np.tanh(drive * up) / np.tanh(drive)
    return fit_length(signal.resample_poly(shaped, 1, 4), len(x))


def peak_normalise(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    top = np.max(np.abs(x)) if x.size else 0.0
    if top < EPS:
        return x.astype(np.float32)
    return (x * (peak / top)).astype(np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad the last axis to exactly n samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])]
    return np.pad(x, pad)


def frame_energy_db(x: np.ndarray, frame: int) -> np.ndarray:
    """Mean-square energy (dB) of consecutive non-overlapping frames; the last frame may be partial."""
    n = len(x)
    n_frames = -(-n // frame)
    padded = np.zeros(n_frames * frame)
    padded[:n] = np.asarray(x, dtype=np.float64) ** 2
    counts = np.full(n_frames, float(frame))
    counts[-1] = n - (n_frames - 1) * frame
    energy = padded.reshape(n_frames, frame).sum(axis=1) / counts
    return 10.0 * np.log10(energy + 1e-30)


def glottal_pulses(f0: np.ndarray, sr: int, tilt: float = 0.96) -> np.ndarray:
    """Voiced excitation following an f0 curve: one impulse per period, then a spectral tilt.

    The one-pole lowpass (``tilt``) gives the roughly −6 dB/octave slope of a glottal source
    after lip radiation; plain impulses would sound like a buzzer, not a voice.
    """
    phase = np.cumsum(np.asarray(f0, dtype=np.float64) / sr)
    crossings = np.flatnonzero(np.diff(np.floor(phase)) > 0) + 1
    pulses = np.zeros(len(phase))
    pulses[crossings] = 1.0
    pulses = signal.lfilter([1.0], [1.0, -tilt], pulses)
    # DC blocker: the tilted pulse train has a large mean that would thump when gated.
    return signal.lfilter([1.0, -1.0], [1.0, -0.995], pulses)
