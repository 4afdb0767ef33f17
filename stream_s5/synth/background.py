"""Non-target material: interferers (sounds that are none of the 18 classes) and background noise.

Interferers teach the models what *not* to detect or separate, so they deliberately include
tonal, impulsive and noisy sounds that share low-level features with target classes (a ringtone
is tonal like an alarm, rain is clicky like typing) while being different sound events.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .dsp import (
    coloured_noise,
    damped_modes,
    fit_length,
    gate_from_segments,
    harmonic_tone,
    impulse_train,
    loguniform,
    n_samples,
    peak_normalise,
    place,
    random_curve,
    recording_colour,
    resonance_gain,
    sos_filter,
    spectral_shape,
    waveform_amplitudes,
)

__all__ = ["INTERFERER_GENERATORS", "synth_interferer", "synth_noise", "NOISE_RMS"]

# Level of synth_noise output; scenes rescale noise to their own drawn level anyway.
NOISE_RMS = 0.05

INTERFERER_GENERATORS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {}


def _interferer(name: str):
    def decorate(raw):
        INTERFERER_GENERATORS[name] = raw
        return raw

    return decorate


def synth_interferer(rng: np.random.Generator, sr: int, duration: float, kind: str | None = None) -> np.ndarray:
    """One non-target clip (float32 mono, ``round(duration*sr)`` samples, peak 0.5).

    ``kind`` picks a family from :data:`INTERFERER_GENERATORS`; random when None.
    """
    n = n_samples(sr, duration)
    if kind is None:
        names = sorted(INTERFERER_GENERATORS)
        kind = names[int(rng.integers(len(names)))]
    clip = fit_length(np.asarray(INTERFERER_GENERATORS[kind](rng, sr, n), dtype=np.float64), n)
    return peak_normalise(recording_colour(rng, clip, sr), 0.5)


def _segments_times(rng, duration, on, off):
    t = rng.uniform(0.0, 0.4)
    segments = []
    while t < duration:
        length = rng.uniform(*on)
        segments.append((t, t + length))
        t += length + rng.uniform(*off)
    return segments


@_interferer("bird")
def _bird(rng, sr, n):
    """Songbird phrases: repeated FM chirp syllables, trills and whistles."""
    duration = n / sr
    out = np.zeros(n)
    motif = []
    for _ in range(int(rng.integers(1, 5))):
        f_start = loguniform(rng, 1800.0, min(6500.0, 0.4 * sr))
        motif.append((f_start, f_start * rng.uniform(0.5, 1.8), rng.uniform(0.02, 0.15), rng.uniform(0.0, 0.3)))
    for start, _ in _segments_times(rng, duration, (0.5, 1.5), (0.3, 1.5)):
        t = start
        for _ in range(int(rng.integers(1, 4))):
            for f_a, f_b, length, wobble in motif:
                m = n_samples(sr, length)
                tt = np.linspace(0, 1, m)
                freq = f_a + (f_b - f_a) * tt + wobble * f_a * np.sin(2 * np.pi * rng.uniform(20, 60) * tt * length)
                chirp = harmonic_tone(np.clip(freq, 100, 0.45 * sr), sr, [1.0, rng.uniform(0, 0.2)]) * np.sin(np.pi * tt) ** 0.7
                place(out, chirp, int(t * sr), rng.uniform(0.6, 1.0))
                t += length + rng.uniform(0.01, 0.06)
    return out


@_interferer("engine")
def _engine(rng, sr, n):
    """Idling or passing combustion engine: firing-rate harmonics over low noise."""
    duration = n / sr
    firing = rng.uniform(20.0, 80.0) * random_curve(rng, n, int(duration) + 3, 0.85, 1.2)
    amps = np.arange(1, 25) ** -rng.uniform(0.5, 1.2) * rng.uniform(0.3, 1.0, 24)
    tone = harmonic_tone(firing, sr, amps)
    rumble = sos_filter(coloured_noise(rng, n, 1.5), sr, "lowpass", rng.uniform(300, 1200), 2)
    out = tone / (np.std(tone) + 1e-9) + rng.uniform(0.3, 1.0) * rumble / (np.std(rumble) + 1e-9)
    if rng.random() < 0.4:  # passing vehicle: level swell
        t = np.arange(n) / sr
        out *= np.exp(-(((t - rng.uniform(0.3, 0.7) * duration) / (0.3 * duration)) ** 2)) + 0.05
    return out


@_interferer("rain")
def _rain(rng, sr, n):
    """Dense random droplet clicks over a hiss."""
    duration = n / sr
    count = int(rng.uniform(200, 2000) * duration)
    drops = impulse_train(n, rng.integers(0, n, count), rng.lognormal(0, 0.8, count))
    kernel = damped_modes(sr, n_samples(sr, 0.01), loguniform(rng, 1000.0, 0.4 * sr, 3), [1.0, 0.6, 0.3], [0.001, 0.0015, 0.002])
    crackle = np.convolve(drops, kernel)[:n]
    hiss = sos_filter(rng.standard_normal(n), sr, "highpass", rng.uniform(500, 2000), 2)
    return crackle / (np.std(crackle) + 1e-9) + rng.uniform(0.3, 1.5) * hiss / (np.std(hiss) + 1e-9)


@_interferer("siren")
def _siren(rng, sr, n):
    """Emergency siren: slow wail, fast yelp or two-tone hi-lo, far away."""
    t = np.arange(n) / sr
    low, high = rng.uniform(500.0, 900.0), rng.uniform(1100.0, 1700.0)
    style = rng.choice(["wail", "yelp", "hilo"])
    period = {"wail": rng.uniform(2.0, 5.0), "yelp": rng.uniform(0.2, 0.5), "hilo": rng.uniform(0.8, 1.6)}[style]
    sweep = 0.5 - 0.5 * np.cos(2 * np.pi * t / period)
    if style == "hilo":
        sweep = (sweep > 0.5).astype(np.float64)
    tone = harmonic_tone(low + (high - low) * sweep, sr, waveform_amplitudes("saw", 6))
    tone = sos_filter(tone, sr, "lowpass", rng.uniform(1500, 4000), 2)  # distance
    # Approaching or receding vehicle.
    return tone * (0.3 + 0.7 * np.linspace(rng.uniform(0, 1), rng.uniform(0, 1), n) ** 2)


@_interferer("wind")
def _wind(rng, sr, n):
    """Gusty low-frequency wind noise, sometimes with a whistling resonance."""
    duration = n / sr
    gusts = random_curve(rng, n, int(duration * rng.uniform(1, 4)) + 2, 0.05, 1.0) ** 2
    noise = sos_filter(coloured_noise(rng, n, rng.uniform(1.0, 2.0)), sr, "lowpass", rng.uniform(100, 800), 2) * gusts
    if rng.random() < 0.3:
        centre = rng.uniform(400, 1500)
        whistle = spectral_shape(rng.standard_normal(n), sr, lambda f, times: resonance_gain(f, centre * (1 + 0.2 * np.sin(times)), 20.0))
        noise = noise / (np.std(noise) + 1e-9) + 0.3 * whistle / (np.std(whistle) + 1e-9) * gusts
    return noise


@_interferer("bark")
def _bark(rng, sr, n):
    """Dog-bark-like bursts: harsh harmonic cry with falling pitch and a noisy formant."""
    duration = n / sr
    out = np.zeros(n)
    f0_dog = rng.uniform(300.0, 800.0)
    t = rng.uniform(0.0, 0.5)
    while t < duration:
        for _ in range(int(rng.integers(1, 5))):
            length = rng.uniform(0.08, 0.25)
            m = n_samples(sr, length)
            tt = np.arange(m) / sr
            f0 = f0_dog * rng.uniform(0.9, 1.1) * (1 - 0.4 * tt / length)
            voice = harmonic_tone(f0, sr, np.arange(1, 16) ** -0.8) + rng.uniform(0.2, 0.8) * rng.standard_normal(m)
            envelope = np.minimum(1.0, tt / 0.01) * np.exp(-tt / (0.4 * length))
            formant = rng.uniform(600, 1500)
            bark = spectral_shape(voice * envelope, sr, lambda f, _times: 0.2 + resonance_gain(f, formant, 400.0))
            place(out, bark, int(t * sr))
            t += length + rng.uniform(0.1, 0.35)
        t += rng.uniform(0.8, 2.5)
    return out


@_interferer("ringtone")
def _ringtone(rng, sr, n):
    """Phone ringing: classic two-tone ring bursts or a repeated random-melody ringtone."""
    duration = n / sr
    if rng.random() < 0.4:
        t = np.arange(n) / sr
        f1, f2 = rng.uniform(400, 1000), rng.uniform(400, 1000)
        warble = (np.sin(2 * np.pi * rng.uniform(15, 25) * t) > 0).astype(np.float64)
        tone = harmonic_tone(f1 + (f2 - f1) * warble, sr, [1.0, 0.3, 0.1])
        return tone * gate_from_segments(n, sr, _segments_times(rng, duration, (0.8, 2.0), (0.5, 2.0)), 0.01)
    out = np.zeros(n)
    scale = [0, 2, 4, 5, 7, 9, 11, 12, 14, 16]
    base = loguniform(rng, 600.0, 1500.0)
    melody = [scale[int(i)] for i in rng.integers(0, len(scale), int(rng.integers(6, 14)))]
    note = rng.uniform(0.08, 0.17)
    amps = waveform_amplitudes(rng.choice(["sine", "square", "triangle"]), 6)
    t = rng.uniform(0.0, 0.3)
    while t < duration:
        for step in melody:
            m = n_samples(sr, note)
            tone = harmonic_tone(base * 2 ** (step / 12), sr, amps, m) * np.minimum(1, np.arange(m)[::-1] / (0.01 * sr))
            place(out, tone, int(t * sr))
            t += note
        t += rng.uniform(0.3, 1.0)
    return out


@_interferer("hum")
def _hum(rng, sr, n):
    """Static mains hum / transformer buzz, sometimes with a fluorescent-light hiss."""
    mains = float(rng.choice([50.0, 60.0]))
    amps = rng.uniform(0.0, 1.0, 12) * np.arange(1, 13) ** -rng.uniform(0.3, 1.5)
    amps[int(rng.integers(0, 3))] = 1.0
    out = harmonic_tone(mains, sr, amps, n)
    if rng.random() < 0.4:
        hiss = sos_filter(rng.standard_normal(n), sr, "highpass", 3000, 2)
        out = out / (np.std(out) + 1e-9) + 0.2 * hiss / (np.std(hiss) + 1e-9)
    return out


@_interferer("water_running")
def _water_running(rng, sr, n):
    """Tap or stream: steady broadband noise with fast random modulation, no discrete bubbles."""
    duration = n / sr
    noise = sos_filter(rng.standard_normal(n), sr, "bandpass", (rng.uniform(300, 800), rng.uniform(4000, 7500)), 2)
    flutter = sos_filter(rng.standard_normal(n), sr, "lowpass", rng.uniform(20, 80), 2)
    noise *= 1 + rng.uniform(0.2, 0.6) * flutter / (np.std(flutter) + 1e-9)
    start = rng.uniform(0.0, 0.3 * duration)
    return noise * gate_from_segments(n, sr, [(start, duration)], 0.1)


@_interferer("ticking")
def _ticking(rng, sr, n):
    """Clock ticking once or twice per second (tick and tock slightly different)."""
    duration = n / sr
    period = float(rng.choice([0.5, 1.0])) * rng.uniform(0.98, 1.02)
    freqs = loguniform(rng, 1500.0, 6000.0, 3)
    out = np.zeros(n)
    for index, t in enumerate(np.arange(rng.uniform(0, period), duration, period)):
        shift = 1.0 if index % 2 else rng.uniform(0.85, 0.95)
        place(out, damped_modes(sr, n_samples(sr, 0.03), freqs * shift, [1.0, 0.6, 0.4], [0.003, 0.004, 0.002]), int(t * sr))
    return out


@_interferer("rustle")
def _rustle(rng, sr, n):
    """Paper or plastic rustling: bursts of dense crackle through a moving band-pass."""
    duration = n / sr
    density = random_curve(rng, n, int(duration * 3) + 2, 0.0, 1.0) ** 3
    count = int(rng.uniform(300, 3000) * duration)
    crackle = impulse_train(n, rng.integers(0, n, count), rng.lognormal(0, 1.0, count)) * density
    crackle = np.convolve(crackle, np.exp(-np.arange(24) / 4.0))[:n] * rng.standard_normal(n)
    return sos_filter(crackle, sr, "bandpass", (rng.uniform(800, 2000), rng.uniform(4000, 7500)), 2)


@_interferer("insect")
def _insect(rng, sr, n):
    """Cricket-like chirps: trains of rapid pulses of a high narrow-band tone."""
    duration = n / sr
    carrier = rng.uniform(3000.0, min(6000.0, 0.42 * sr))
    t = np.arange(n) / sr
    pulse_rate = rng.uniform(20.0, 60.0)
    pulses = np.maximum(0.0, np.sin(2 * np.pi * pulse_rate * t)) ** 2
    chirps = gate_from_segments(n, sr, _segments_times(rng, duration, (0.1, 0.4), (0.2, 0.8)), 0.01)
    return np.sin(2 * np.pi * carrier * t) * pulses * chirps


def synth_noise(rng: np.random.Generator, sr: int, n_samples_out: int) -> np.ndarray:
    """Stationary background noise (float32, RMS ~ NOISE_RMS).

    A random white/pink/brown power mix with a random smooth spectral EQ, a slow level drift of a
    dB or two, and sometimes a faint mains hum: the "room tone" a scene's SNRs refer to.
    """
    n = int(n_samples_out)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    weights = rng.dirichlet([1.0, 1.0, 0.7])
    reference = 200.0  # frequency where the three colours have equal power density
    rel = np.maximum(freqs, 20.0) / reference
    power = weights[0] + weights[1] / rel + weights[2] / rel**2
    # Smooth random EQ over log-frequency (±6 dB), plus a global tilt.
    log_f = np.log2(np.maximum(freqs, 20.0) / 20.0)
    knots = rng.uniform(-6.0, 6.0, 8)
    eq_db = np.interp(log_f, np.linspace(0, log_f[-1], len(knots)), knots)
    eq_db += rng.uniform(-3.0, 3.0) * (log_f - log_f.mean()) / max(log_f.std(), 1e-9)
    if rng.random() < 0.5:  # band-limited recording chain
        eq_db -= 40.0 * np.clip((freqs - rng.uniform(0.25, 0.45) * sr) / (0.1 * sr), 0, 1)
    gain = np.sqrt(power) * 10 ** (eq_db / 20.0)
    gain[freqs < 15.0] = 0.0  # no subsonic drift
    noise = np.fft.irfft(spectrum * gain, n)
    noise /= np.std(noise) + 1e-12
    drift_db = random_curve(rng, n, int(rng.integers(2, 7)), -1.0, 1.0) * rng.uniform(0.0, 2.0)
    noise *= 10 ** (drift_db / 20.0)
    if rng.random() < 0.25:
        mains = float(rng.choice([50.0, 60.0]))
        hum = harmonic_tone(mains, sr, rng.uniform(0, 1, 6) * np.arange(1, 7) ** -1.0, n, phase0=rng.uniform(0, 6.28))
        noise += hum / (np.std(hum) + 1e-12) * 10 ** (rng.uniform(-30, -12) / 20)
    noise *= NOISE_RMS / (np.std(noise) + 1e-12)
    return noise.astype(np.float32)
