"""Procedural generator families, one per target class.

Each public generator has the signature ``fn(rng, sr, duration) -> float32 mono`` and returns exactly
``round(duration * sr)`` samples, peak-normalised to 0.5. Every family is strongly randomised
(pitch, timbre, rhythm, envelopes) and every clip goes through a random "recording colour"
(:func:`stream_s5.synth.dsp.recording_colour`), so a model trained on them has to learn the class,
not one synthesiser.

Internally the family functions take ``(rng, sr, n)`` and return float64; :func:`_register` wraps
them with length fitting, recording colour and normalisation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import signal

from stream_s5.labels import CLASSES

from .dsp import (
    coloured_noise,
    damped_modes,
    exp_reverb_ir,
    fit_length,
    gate_from_segments,
    glottal_pulses,
    harmonic_tone,
    impulse_train,
    loguniform,
    n_samples,
    peak_normalise,
    place,
    random_curve,
    recording_colour,
    resonance_gain,
    soft_clip,
    sos_filter,
    spectral_shape,
    waveform_amplitudes,
)
from .speech import synth_speech_raw

__all__ = [
    "Generator",
    "CLASS_GENERATORS",
    "CLASS_DURATION_RANGE",
    "synth_event",
]

Generator = Callable[[np.random.Generator, int, float], np.ndarray]

CLASS_GENERATORS: dict[str, Generator] = {}

# Natural clip lengths (seconds) per class; the soundbank intersects them with its own range.
# Short impulsive classes rarely last 6 s in real recordings; stationary machines easily do.
CLASS_DURATION_RANGE: dict[str, tuple[float, float]] = {
    "AlarmClock": (1.5, 6.0),
    "BicycleBell": (1.0, 3.5),
    "Blender": (1.5, 6.0),
    "Buzzer": (1.0, 5.0),
    "Clapping": (1.0, 6.0),
    "Cough": (0.8, 3.5),
    "CupboardOpenClose": (1.0, 4.0),
    "Dishes": (1.0, 6.0),
    "Doorbell": (1.5, 4.5),
    "FootSteps": (1.5, 6.0),
    "HairDryer": (1.5, 6.0),
    "MechanicalFans": (2.0, 6.0),
    "MusicalKeyboard": (1.5, 6.0),
    "Percussion": (1.5, 6.0),
    "Pour": (1.5, 6.0),
    "Speech": (1.5, 6.0),
    "Typing": (1.5, 6.0),
    "VacuumCleaner": (2.0, 6.0),
}


def _register(name: str):
    """Turn a raw ``(rng, sr, n) -> float64`` family into a finished class generator."""

    def decorate(raw: Callable[[np.random.Generator, int, int], np.ndarray]):
        def generate(rng: np.random.Generator, sr: int, duration: float) -> np.ndarray:
            n = n_samples(sr, duration)
            clip = fit_length(np.asarray(raw(rng, sr, n), dtype=np.float64), n)
            return peak_normalise(recording_colour(rng, clip, sr), 0.5)

        generate.__name__ = f"synth_{name}"
        generate.__doc__ = raw.__doc__
        CLASS_GENERATORS[name] = generate
        return raw

    return decorate


def synth_event(cls: str, rng: np.random.Generator, sr: int, duration: float) -> np.ndarray:
    """One clip of target class ``cls`` (float32 mono, ``round(duration*sr)`` samples, peak 0.5)."""
    try:
        generator = CLASS_GENERATORS[cls]
    except KeyError:
        raise KeyError(f"no generator for class {cls!r}; known: {', '.join(CLASS_GENERATORS)}") from None
    return generator(rng, sr, duration)


# ----------------------------------------------------------------------------------------------
# Shared building blocks


def _jittered_times(rng, start: float, stop: float, period: float, jitter: float) -> np.ndarray:
    """Roughly periodic event times in [start, stop) with relative Gaussian period jitter."""
    count = int((stop - start) / period) + 2
    if count <= 0:
        return np.zeros(0)
    periods = period * np.clip(1.0 + jitter * rng.standard_normal(count), 0.3, 2.0)
    times = start + np.concatenate([[0.0], np.cumsum(periods[:-1])])
    return times[times < stop]


def _poisson_times(rng, start: float, stop: float, rate: float) -> np.ndarray:
    if stop <= start or rate <= 0:
        return np.zeros(0)
    count = rng.poisson(rate * (stop - start))
    return np.sort(rng.uniform(start, stop, count))


def _click(rng, sr: int, low: float = 1500.0, high: float = 6000.0, decay: float = 0.004) -> np.ndarray:
    """Short band-passed noise transient: the contact sound of hard objects."""
    length = n_samples(sr, 6 * decay + 0.002)
    t = np.arange(length) / sr
    burst = rng.standard_normal(length) * np.exp(-t / decay)
    return sos_filter(burst, sr, "bandpass", (low, high), order=2)


def _convolve_train(n: int, sr: int, times, amps, kernel: np.ndarray) -> np.ndarray:
    """Place the same kernel at many times (one FFT convolution instead of a Python loop)."""
    train = impulse_train(n, np.round(np.asarray(times) * sr).astype(np.int64), amps)
    if not np.any(train):
        return np.zeros(n)
    return signal.oaconvolve(train, kernel)[:n]


def _strike_modes(rng, sr: int, freqs, amps, decays, length_s: float) -> np.ndarray:
    """Struck resonator: modes plus a short broadband contact click at the start."""
    length = n_samples(sr, length_s)
    phases = rng.uniform(0, 0.3, len(np.atleast_1d(freqs)))
    body = damped_modes(sr, length, freqs, amps, decays, phases)
    click = _click(rng, sr, 2000.0, 0.45 * sr, rng.uniform(0.0005, 0.002))
    place(body, click, 0, rng.uniform(0.05, 0.3) * np.max(np.abs(body) + 1e-9) / (np.max(np.abs(click)) + 1e-9))
    return body


def _smooth_gate(gate: np.ndarray, sr: int, rise: float, fall: float) -> np.ndarray:
    """Asymmetric smoothing of an on/off gate: motors spin up faster than they spin down.

    The max of a fast and a slow one-pole follower approximates an asymmetric follower
    without a per-sample Python loop.
    """
    up = np.exp(-1.0 / (rise * sr))
    down = np.exp(-1.0 / (fall * sr))
    rising = signal.lfilter([1 - up], [1, -up], gate)
    falling = signal.lfilter([1 - down], [1, -down], gate)
    return np.maximum(rising, falling).clip(0, 1)


def _on_off_segments(rng, duration: float, on: tuple[float, float], off: tuple[float, float], start=(0.0, 0.3)):
    t = min(rng.uniform(*start), 0.5 * duration)  # very short clips still get one segment
    segments = []
    while t < duration:
        length = rng.uniform(*on)
        segments.append((t, min(duration, t + length)))
        t += length + rng.uniform(*off)
    return segments


def _unit(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS, so mixing weights between components are explicit."""
    return x / (np.sqrt(np.mean(x**2)) + 1e-9)


def _speed_profile(rng, sr: int, n: int, wobble: float) -> np.ndarray:
    duration = n / sr
    return random_curve(rng, n, int(duration * rng.uniform(1, 3)) + 2, 1 - wobble, 1 + wobble)


# ----------------------------------------------------------------------------------------------
# Target classes


@_register("AlarmClock")
def _alarm_clock(rng, sr, n):
    """Electronic beep patterns, mechanical twin-bell ringing or a warbling electronic alarm."""
    style = rng.choice(["beeps", "bell", "warble"], p=[0.5, 0.3, 0.2])
    duration = n / sr
    if style == "bell":
        return _mechanical_bell(rng, sr, n)
    if style == "warble":
        f_low = loguniform(rng, 600.0, min(2500.0, 0.3 * sr))
        f_high = f_low * rng.uniform(1.15, 1.6)
        rate = rng.uniform(3.0, 12.0)
        t = np.arange(n) / sr
        switch = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * rate * t)) if rng.random() < 0.6 else 0.5 + 0.5 * np.sin(2 * np.pi * rate * t)
        freq = f_low + (f_high - f_low) * switch
        amps = waveform_amplitudes(rng.choice(["sine", "square", "triangle"]), 8) * np.arange(1, 9) ** -rng.uniform(0, 1)
        gate = gate_from_segments(n, sr, _on_off_segments(rng, duration, (0.4, 1.5), (0.15, 0.6)), ramp=0.01)
        return harmonic_tone(freq, sr, amps) * gate
    # Groups of short beeps, optionally alternating pitch and speeding up.
    freq = loguniform(rng, 900.0, min(4200.0, 0.4 * sr))
    alt_ratio = rng.uniform(1.1, 1.5) if rng.random() < 0.3 else 1.0
    per_group = int(rng.integers(1, 5))
    beep, gap = rng.uniform(0.04, 0.16), rng.uniform(0.03, 0.12)
    pause = rng.uniform(0.15, 0.8)
    speed_up = rng.uniform(0.85, 0.97) if rng.random() < 0.3 else 1.0
    t = rng.uniform(0.0, 0.25)
    on_segments, alt_segments = [], []
    index = 0
    while t < duration:
        for b in range(per_group):
            start = t + b * (beep + gap)
            (alt_segments if index % 2 else on_segments).append((start, start + beep))
            index += 1 if alt_ratio != 1.0 else 0
        t += per_group * (beep + gap) + pause
        pause = max(0.06, pause * speed_up)
    ramp = rng.uniform(0.002, 0.008)
    gate_main = gate_from_segments(n, sr, on_segments, ramp)
    gate_alt = gate_from_segments(n, sr, alt_segments, ramp)
    n_harm = int(max(1, min(12, 0.45 * sr / (freq * alt_ratio))))
    amps = waveform_amplitudes(rng.choice(["sine", "square", "triangle", "pulse"], p=[0.35, 0.35, 0.15, 0.15]), n_harm, rng.uniform(0.2, 0.5))
    amps = amps * np.arange(1, n_harm + 1) ** -rng.uniform(0.0, 1.0)
    tone = harmonic_tone(freq, sr, amps, n) * gate_main
    if alt_segments:
        tone += harmonic_tone(freq * alt_ratio, sr, amps, n) * gate_alt
    if rng.random() < 0.3:  # alarms that get louder the longer they ring
        tone *= np.linspace(rng.uniform(0.2, 0.6), 1.0, n)
    return tone


def _mechanical_bell(rng, sr, n):
    """Hammer alternating between one or two bells at 12-28 Hz, in ringing bursts."""
    duration = n / sr
    rate = rng.uniform(12.0, 28.0)
    n_bells = int(rng.integers(1, 3))
    segments = [(rng.uniform(0, 0.2), duration)] if rng.random() < 0.4 else _on_off_segments(rng, duration, (0.5, 2.0), (0.25, 1.0))
    times = np.concatenate([np.zeros(0)] + [_jittered_times(rng, a, b, 1.0 / rate, rng.uniform(0.02, 0.08)) for a, b in segments])
    out = np.zeros(n)
    base = loguniform(rng, 1500.0, min(3800.0, 0.4 * sr))
    for bell in range(n_bells):
        f0 = base * (1.0 if bell == 0 else rng.uniform(1.05, 1.3))
        ratios = np.array([1.0, rng.uniform(2.0, 2.9), rng.uniform(3.4, 4.8), rng.uniform(5.2, 7.2)])
        amps = np.array([1.0, rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.3)])
        decays = rng.uniform(0.08, 0.35) / ratios ** rng.uniform(0.3, 0.8)
        ir = _strike_modes(rng, sr, f0 * ratios, amps, decays, min(duration, 5 * decays.max()))
        mine = times[bell::n_bells]
        out += _convolve_train(n, sr, mine, rng.uniform(0.7, 1.0, len(mine)), ir)
    rattle = _click(rng, sr, 3000.0, 0.45 * sr, 0.002)
    out += _convolve_train(n, sr, times, rng.uniform(0.0, 0.3, len(times)), rattle) * rng.uniform(0.0, 0.5)
    return out


@_register("BicycleBell")
def _bicycle_bell(rng, sr, n):
    """Bright inharmonic dome bell: one to three dings or a rotary 'ring-ring' trill, long decay."""
    duration = n / sr
    f0 = loguniform(rng, 1800.0, min(4500.0, 0.35 * sr))
    ratios = np.array([1.0, rng.uniform(1.35, 1.8), rng.uniform(2.1, 2.9), rng.uniform(3.0, 4.0), rng.uniform(4.2, 5.4)])
    amps = np.array([1.0, rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.7), rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.3)])
    tau = rng.uniform(0.35, 1.4)
    decays = tau / ratios ** rng.uniform(0.4, 1.0)
    # Each mode split into a slightly detuned pair: the beating shimmer of a real bell dome.
    detune = 1.0 + rng.uniform(0.0005, 0.003, len(ratios))
    freqs = np.concatenate([f0 * ratios, f0 * ratios * detune])
    all_amps = np.concatenate([amps, amps * rng.uniform(0.3, 1.0, len(amps))])
    ir = _strike_modes(rng, sr, freqs, all_amps, np.concatenate([decays, decays]), min(duration, 4 * tau))
    times: list[float] = []
    t = rng.uniform(0.0, 0.2)
    if rng.random() < 0.55:
        for _ in range(int(rng.integers(1, 4))):
            times.append(t)
            t += rng.uniform(0.15, 0.7)
    else:
        for _ in range(int(rng.integers(1, 3))):
            trill_rate = rng.uniform(8.0, 20.0)
            for k in range(int(rng.integers(2, 8))):
                times.append(t + k / trill_rate + rng.normal(0, 0.004))
            t = times[-1] + rng.uniform(0.4, 1.0)
    if duration - t > 1.5 and rng.random() < 0.4:
        times.append(rng.uniform(t, duration - 0.5))  # another ding later in a long clip
    return _convolve_train(n, sr, times, rng.uniform(0.6, 1.0, len(times)), ir)


@_register("Blender")
def _blender(rng, sr, n):
    """Motor harmonic buzz plus broadband grinding with speed changes, load dips and pulsing."""
    duration = n / sr
    t = np.arange(n) / sr
    speed = _speed_profile(rng, sr, n, 0.04)
    spin_up = rng.uniform(0.05, 0.4)
    speed *= 0.3 + 0.7 * (1 - np.exp(-t / (spin_up / 3)))
    for _ in range(int(rng.integers(0, 4))):  # load dips when the blades hit food
        centre, width, depth = rng.uniform(0, duration), rng.uniform(0.1, 0.6), rng.uniform(0.08, 0.3)
        speed *= 1 - depth * np.exp(-(((t - centre) / width) ** 2))
    level = np.ones(n)
    if rng.random() < 0.3:  # pulse mode: on/off bursts with spin-down in between
        gate = gate_from_segments(n, sr, _on_off_segments(rng, duration, (0.4, 1.5), (0.2, 0.7)), 0.01)
        smooth = _smooth_gate(gate, sr, 0.06, 0.25)
        speed *= 0.25 + 0.75 * smooth
        level *= smooth
    if rng.random() < 0.4:
        stop = rng.uniform(0.3, 0.8)
        tail = np.clip((t - (duration - stop)) / stop, 0, 1)
        speed *= 1 - 0.7 * tail
        level *= 1 - tail
    f_motor = rng.uniform(110.0, 360.0)
    freq = f_motor * np.maximum(speed, 0.05)
    n_harm = 30
    amps = np.arange(1, n_harm + 1) ** -rng.uniform(0.6, 1.2) * rng.uniform(0.3, 1.0, n_harm)
    buzz = harmonic_tone(freq, sr, amps)
    whine = harmonic_tone(freq * int(rng.integers(6, 17)), sr, [1.0, rng.uniform(0, 0.4)])
    grind = sos_filter(rng.standard_normal(n), sr, "bandpass", (rng.uniform(300, 900), rng.uniform(2500, 7000)), 2)
    blade_phase = 2 * np.pi * np.cumsum(freq / rng.uniform(1.0, 3.0)) / sr
    grind *= (1 + rng.uniform(0.2, 0.8) * np.sin(blade_phase)) * random_curve(rng, n, int(duration * 3) + 2, 0.4, 1.0)
    chunk = _click(rng, sr, 800.0, 5000.0, rng.uniform(0.005, 0.02))
    impacts = _poisson_times(rng, 0, duration, rng.uniform(3.0, 30.0))
    grind += _convolve_train(n, sr, impacts, rng.uniform(0.5, 3.0, len(impacts)), chunk)
    mix = _unit(buzz) + rng.uniform(0.05, 0.3) * _unit(whine) + rng.uniform(0.3, 1.5) * _unit(grind)
    return mix * level * np.maximum(speed, 0) ** 2


@_register("Buzzer")
def _buzzer(rng, sr, n):
    """Sustained harsh square/saw tone: mains buzzer, electronic buzzer or piezo, in presses."""
    duration = n / sr
    style = rng.choice(["mains", "electronic", "piezo"], p=[0.35, 0.4, 0.25])
    if style == "mains":
        f0 = float(rng.choice([50.0, 60.0]) * rng.choice([1, 2]))
        shape, drive = rng.choice(["saw", "pulse", "square"]), rng.uniform(2.0, 6.0)
    elif style == "electronic":
        f0 = loguniform(rng, 150.0, 900.0)
        shape, drive = rng.choice(["square", "saw", "pulse"]), rng.uniform(1.0, 4.0)
    else:
        f0 = loguniform(rng, 1800.0, min(4200.0, 0.4 * sr))
        shape, drive = "square", rng.uniform(1.0, 2.5)
    n_harm = int(max(1, min(40, 0.45 * sr / f0)))
    amps = waveform_amplitudes(shape, n_harm, rng.uniform(0.1, 0.45))
    freq = f0 * random_curve(rng, n, 4, 0.995, 1.005)
    tone = harmonic_tone(freq, sr, amps)
    tone = soft_clip(tone / (np.max(np.abs(tone)) + 1e-9), drive)
    if style == "mains":  # loose armature rattling at the mains rate
        t = np.arange(n) / sr
        tone *= 1 + rng.uniform(0.2, 0.8) * np.abs(np.sin(np.pi * f0 * t)) ** rng.uniform(1, 4)
    if rng.random() < 0.5:
        start = rng.uniform(0, 0.2 * duration)
        segments = [(start, start + rng.uniform(0.6, 1.0) * (duration - start))]
    else:
        segments = _on_off_segments(rng, duration, (0.3, 2.0), (0.1, 0.6))
    return tone * gate_from_segments(n, sr, segments, rng.uniform(0.003, 0.02))


@_register("Clapping")
def _clapping(rng, sr, n):
    """Trains of short band-passed noise bursts: one clapper, a few, or an applauding crowd."""
    duration = n / sr
    mode = rng.choice(["single", "few", "crowd"], p=[0.5, 0.25, 0.25])
    n_clappers = {"single": 1, "few": int(rng.integers(2, 5)), "crowd": int(rng.integers(6, 26))}[mode]
    out = np.zeros(n)
    t_env = np.arange(n_samples(sr, 0.08)) / sr
    for _ in range(n_clappers):
        rate = rng.uniform(2.2, 6.0) if mode != "crowd" else rng.uniform(2.5, 7.0)
        if mode == "single":
            segments = _on_off_segments(rng, duration, (0.8, 4.0), (0.3, 1.2), (0.0, 0.3))
        else:
            start = rng.uniform(0, 0.4)
            segments = [(start, rng.uniform(0.6, 1.0) * (duration - start) + start)]
        jitter = rng.uniform(0.02, 0.1)
        times = np.concatenate([np.zeros(0)] + [_jittered_times(rng, a, b, 1 / rate, jitter) for a, b in segments])
        if len(times) == 0:
            continue
        decay = rng.uniform(0.003, 0.012)
        envelope_kernel = np.exp(-t_env / decay) * np.minimum(1.0, t_env / 0.0005 + 0.05)
        envelope = _convolve_train(n, sr, times, rng.uniform(0.5, 1.0, len(times)), envelope_kernel)
        centre = loguniform(rng, 600.0, 2500.0)
        half_width = 1.0 / (2 * rng.uniform(0.7, 3.0))
        noise = rng.standard_normal(n)
        cavity = sos_filter(noise, sr, "bandpass", (centre * (1 - half_width * 0.8), centre * (1 + half_width)), 2)
        broadband = sos_filter(noise, sr, "highpass", 300.0, 1)
        out += envelope * (cavity + rng.uniform(0.1, 0.5) * broadband) * rng.uniform(0.4, 1.0)
    if mode == "crowd":
        out *= random_curve(rng, n, 4, 0.5, 1.0)
    ir = exp_reverb_ir(rng, sr, rng.uniform(0.15, 0.6), rng.uniform(0.3, 0.9))
    wet = signal.oaconvolve(out, ir)[:n]
    return out + rng.uniform(0.1, 0.5) * wet * (np.std(out) / (np.std(wet) + 1e-9))


@_register("Cough")
def _cough(rng, sr, n):
    """Bouts of 1-3 coughs: explosive voiced onset, formant-filtered turbulent noise, decay."""
    duration = n / sr
    f0_person = loguniform(rng, 90.0, 320.0)
    formants = np.array([rng.uniform(450, 900), rng.uniform(1100, 2000), rng.uniform(2300, min(3200, 0.42 * sr))])
    bandwidths = formants / rng.uniform(4.0, 10.0, 3)
    out = np.zeros(n)
    t = rng.uniform(0.0, min(0.3, 0.2 * duration))
    while t < duration - 0.15:
        for _ in range(int(rng.integers(1, 4))):
            length = rng.uniform(0.22, 0.55)
            place(out, _one_cough(rng, sr, length, f0_person, formants, bandwidths), int(t * sr), rng.uniform(0.6, 1.0))
            t += length + rng.uniform(0.05, 0.35)
        t += rng.uniform(0.8, 2.5)
        if rng.random() < 0.5:
            break
    return out


def _one_cough(rng, sr, length, f0_person, formants, bandwidths):
    m = n_samples(sr, length)
    t = np.arange(m) / sr
    attack = rng.uniform(0.003, 0.01)
    envelope = np.minimum(t / attack, 1.0) * np.exp(-np.maximum(t - attack, 0) / rng.uniform(0.05, 0.14))
    voiced_len = rng.uniform(0.03, 0.12)
    voiced_gate = np.clip((voiced_len - t) / 0.01, 0, 1)
    if rng.random() < 0.4:  # voiced 'uh' at the end of the cough
        tail_start = length * rng.uniform(0.5, 0.8)
        voiced_gate = np.maximum(voiced_gate, np.clip((t - tail_start) / 0.02, 0, 1) * np.exp(-(t - tail_start).clip(0) / 0.08))
        envelope = np.maximum(envelope, 0.3 * voiced_gate)
    f0 = f0_person * rng.uniform(0.9, 1.2) * (1 - 0.25 * t / length)
    voiced = glottal_pulses(f0, sr)
    voiced *= voiced_gate / (np.std(voiced) + 1e-9)
    excitation = (rng.uniform(0.4, 1.0) * rng.standard_normal(m) + rng.uniform(0.3, 1.5) * voiced) * envelope
    out = np.zeros(m)
    for freq, bw, gain in zip(formants * rng.uniform(0.92, 1.08, 3), bandwidths, (1.0, 0.7, 0.4)):
        b, a = signal.iirpeak(freq, freq / bw, fs=sr)
        out += gain * signal.lfilter(b, a, excitation)
    burst_len = n_samples(sr, rng.uniform(0.01, 0.03))
    out[:burst_len] += sos_filter(rng.standard_normal(burst_len), sr, "highpass", 800.0, 2) * np.std(out) * rng.uniform(0.5, 2.0)
    return out


@_register("CupboardOpenClose")
def _cupboard(rng, sr, n):
    """Latch click, glided wooden/hinge creak, thud and rattle of a door closing."""
    duration = n / sr
    out = np.zeros(n)
    variant = rng.choice(["open_close", "close", "open"], p=[0.45, 0.3, 0.25])
    t = rng.uniform(0.0, 0.3)
    cycles = 2 if duration > 3.0 and rng.random() < 0.25 else 1
    for _ in range(cycles):
        if variant in ("open_close", "open"):
            place(out, _latch_click(rng, sr), int(t * sr), rng.uniform(0.3, 1.0))
            t += rng.uniform(0.02, 0.15)
            if rng.random() < 0.75:
                length = rng.uniform(0.3, 1.4)
                place(out, _creak(rng, sr, length), int(t * sr), rng.uniform(0.4, 1.0))
                t += length
            t += rng.uniform(0.3, 1.5)
        if variant in ("open_close", "close") and t < duration - 0.2:
            if rng.random() < 0.4:
                length = rng.uniform(0.2, 0.8)
                place(out, _creak(rng, sr, length), int(t * sr), rng.uniform(0.3, 0.8))
                t += length
            place(out, _thud(rng, sr), int(t * sr), 1.0)
            t += rng.uniform(0.6, 1.5)
        if t > duration - 0.5:
            break
    return out


def _latch_click(rng, sr):
    freqs = loguniform(rng, 1500.0, min(5000.0, 0.42 * sr), 3)
    return _strike_modes(rng, sr, freqs, rng.uniform(0.3, 1.0, 3), rng.uniform(0.005, 0.025, 3), 0.12)


def _creak(rng, sr, length):
    """Stick-slip friction: an irregular pulse train through gliding resonances."""
    m = n_samples(sr, length)
    rate = loguniform(rng, 25.0, 250.0) * random_curve(rng, m, int(rng.integers(3, 7)), 0.6, 1.6)
    rate *= np.exp(0.15 * np.cumsum(rng.standard_normal(m)) / np.sqrt(sr))  # irregular slips
    pulses = np.diff(np.floor(np.cumsum(rate) / sr), prepend=0.0)
    envelope = np.sin(np.pi * np.arange(m) / m) ** rng.uniform(0.5, 2.0) * random_curve(rng, m, 5, 0.5, 1.0)
    kernel = rng.standard_normal(n_samples(sr, 0.001)) * np.exp(-np.arange(n_samples(sr, 0.001)) / (0.0003 * sr))
    excitation = signal.oaconvolve(pulses * envelope, kernel)[:m]
    n_res = int(rng.integers(3, 6))
    centres = loguniform(rng, 300.0, min(2500.0, 0.4 * sr), n_res)
    qs = rng.uniform(8.0, 30.0, n_res)
    glides = rng.uniform(-0.3, 0.3, n_res)
    weights = rng.uniform(0.3, 1.0, n_res)

    def gains(freqs, times):
        position = times / length - 0.5
        total = 0.03 * np.ones_like(freqs * times)
        for centre, q, glide, weight in zip(centres, qs, glides, weights):
            moving = centre * (1 + glide * position)
            total = total + weight * resonance_gain(freqs, moving, moving / q)
        return total

    return spectral_shape(excitation, sr, gains)


def _thud(rng, sr):
    length = 0.45
    m = n_samples(sr, length)
    base = rng.uniform(70.0, 250.0)
    ratios = np.array([1.0, rng.uniform(1.4, 2.2), rng.uniform(2.5, 3.5)])
    body = damped_modes(sr, m, base * ratios, rng.uniform(0.3, 1.0, 3), rng.uniform(0.03, 0.15, 3))
    t = np.arange(m) / sr
    knock = sos_filter(rng.standard_normal(m) * np.exp(-t / rng.uniform(0.008, 0.025)), sr, "lowpass", rng.uniform(800, 2500), 2)
    out = body / (np.max(np.abs(body)) + 1e-9) + knock / (np.max(np.abs(knock)) + 1e-9) * rng.uniform(0.3, 1.0)
    place(out, _latch_click(rng, sr), 0, rng.uniform(0.1, 0.6))
    for _ in range(int(rng.integers(0, 4))):  # things rattling inside the cupboard
        place(out, _click(rng, sr, 1500, 6000, rng.uniform(0.002, 0.006)), int(rng.uniform(0.015, 0.12) * sr), rng.uniform(0.1, 0.4))
    return out


@_register("Dishes")
def _dishes(rng, sr, n):
    """Clinks of ceramic, glass and cutlery (high inharmonic modes) at random times and clusters."""
    duration = n / sr
    objects = []
    for _ in range(int(rng.integers(2, 5))):
        material = rng.choice(["ceramic", "glass", "metal"])
        if material == "ceramic":
            count, f_range, d_range = int(rng.integers(4, 8)), (900.0, 6500.0), (0.015, 0.12)
        elif material == "glass":
            count, f_range, d_range = int(rng.integers(2, 5)), (1800.0, 7000.0), (0.1, 0.6)
        else:
            count, f_range, d_range = int(rng.integers(5, 10)), (1500.0, 7500.0), (0.04, 0.35)
        freqs = np.sort(loguniform(rng, f_range[0], min(f_range[1], 0.45 * sr), count))
        objects.append((freqs, rng.uniform(*d_range, count)))
    times = list(_poisson_times(rng, rng.uniform(0, 0.3), duration - 0.05, rng.uniform(1.0, 6.0)))
    if not times:
        times = [rng.uniform(0, max(0.01, duration * 0.5))]
    for t in list(times):
        if rng.random() < 0.3:  # clatter: a few hits in quick succession
            times.extend(t + np.cumsum(rng.uniform(0.015, 0.09, int(rng.integers(1, 5)))))
    out = np.zeros(n)
    for t in times:
        freqs, decays = objects[int(rng.integers(len(objects)))]
        hit = _strike_modes(
            rng, sr, freqs * rng.uniform(0.98, 1.02), rng.uniform(0.1, 1.0, len(freqs)), decays * rng.uniform(0.8, 1.2), min(1.0, 5 * decays.max())
        )
        place(out, hit, int(t * sr), loguniform(rng, 0.2, 1.0) / (np.max(np.abs(hit)) + 1e-9))
    if rng.random() < 0.3:  # something sliding over a plate
        length = rng.uniform(0.2, 1.0)
        m = n_samples(sr, length)
        scrape = sos_filter(rng.standard_normal(m), sr, "bandpass", (rng.uniform(1200, 2500), rng.uniform(3500, 7000)), 2)
        scrape *= np.sin(np.pi * np.arange(m) / m) * random_curve(rng, m, 6, 0.3, 1.0)
        place(out, scrape, int(rng.uniform(0, max(0.01, duration - length)) * sr), rng.uniform(0.05, 0.2) * np.max(np.abs(out)) / (np.max(np.abs(scrape)) + 1e-9))
    return out


@_register("Doorbell")
def _doorbell(rng, sr, n):
    """Struck-bar ding-dong (two/three tones, decaying inharmonic partials) or an electronic melody."""
    duration = n / sr
    out = np.zeros(n)
    base = loguniform(rng, 450.0, 1100.0)
    if rng.random() < 0.6:
        steps = [0, -int(rng.choice([3, 4, 5, 7, 8]))]
        if rng.random() < 0.3:
            steps = [0, -int(rng.choice([3, 4])), -int(rng.choice([7, 8, 9]))]
        if rng.random() < 0.6:
            ratios = np.array([1.0, 2.756, 5.404, 8.933]) * (1 + rng.normal(0, 0.02, 4))  # free-free bar
        else:
            k = np.arange(1, 6)
            ratios = k * (1 + rng.uniform(0.0, 0.004) * k**2)  # tube, slightly stretched
        ratios[0] = 1.0
        amps = np.concatenate([[1.0], rng.uniform(0.05, 0.7, len(ratios) - 1) / np.arange(1, len(ratios))])
        tau = rng.uniform(0.6, 2.0)
        decays = tau / np.arange(1, len(ratios) + 1) ** rng.uniform(0.5, 1.2)
        gap = rng.uniform(0.35, 0.9)
        t = rng.uniform(0.0, 0.3)
        repeats = 2 if rng.random() < 0.35 else 1
        for _ in range(repeats):
            for step in steps:
                freq = base * 2 ** (step / 12)
                note = _strike_modes(rng, sr, freq * ratios, amps, decays, min(duration, 4 * tau))
                place(out, note, int(t * sr), rng.uniform(0.8, 1.0) / (np.max(np.abs(note)) + 1e-9))
                t += gap
            t += rng.uniform(1.0, 2.0)
            if t > duration - 0.5:
                break
        return out
    scale = np.array(rng.choice([[0, 2, 4, 5, 7, 9, 11, 12], [0, 2, 4, 7, 9, 12, 14, 16]]))
    n_notes = int(rng.integers(3, 9))
    degrees = np.clip(np.cumsum(rng.integers(-2, 3, n_notes)) + int(rng.integers(2, 6)), 0, len(scale) - 1)
    note_len = rng.uniform(0.25, 0.55)
    tau = rng.uniform(0.3, 0.9)
    amps = np.array([1.0, rng.uniform(0, 0.3), rng.uniform(0, 0.15)])
    t = rng.uniform(0.0, 0.3)
    for degree in degrees:
        freq = base * 2 ** ((scale[degree] - 7) / 12)
        m = n_samples(sr, min(duration, 5 * tau))
        env = np.exp(-np.arange(m) / (tau * sr)) * np.minimum(1, np.arange(m) / (0.004 * sr))
        place(out, harmonic_tone(freq, sr, amps, m) * env, int(t * sr))
        t += note_len * rng.choice([1.0, 1.0, 2.0])
        if t > duration:
            break
    return out


@_register("FootSteps")
def _footsteps(rng, sr, n):
    """Walking/running steps on hard, soft, gravel or wooden floors: heel thump, toe, scuffs."""
    duration = n / sr
    surface = rng.choice(["hard", "soft", "gravel", "wood"])
    rate = rng.uniform(2.6, 3.4) if rng.random() < 0.15 else rng.uniform(1.4, 2.4)
    start = rng.uniform(0.0, 0.5)
    stop = duration if rng.random() < 0.6 else start + rng.uniform(0.6, 1.0) * (duration - start)
    times = _jittered_times(rng, start, stop, 1.0 / rate, rng.uniform(0.02, 0.08))
    foot_offset_db = rng.uniform(0.0, 1.5)
    gain_db = np.linspace(rng.uniform(-12, 0), rng.uniform(-12, 0), len(times)) if rng.random() < 0.5 else np.zeros(len(times))
    heel_freq = rng.uniform(50.0, 160.0)
    out = np.zeros(n)
    p_scuff = rng.uniform(0.0, 0.6)
    for index, t in enumerate(times):
        step = _one_step(rng, sr, surface, heel_freq, p_scuff)
        db = gain_db[index] + (foot_offset_db if index % 2 else -foot_offset_db) + rng.uniform(-2, 2)
        place(out, step, int(t * sr), 10 ** (db / 20))
    return out


def _one_step(rng, sr, surface, heel_freq, p_scuff):
    m = n_samples(sr, 0.4)
    t = np.arange(m) / sr
    freqs = heel_freq * rng.uniform(0.9, 1.1) * np.array([1.0, rng.uniform(1.5, 2.5)])
    heel = damped_modes(sr, m, freqs, [1.0, rng.uniform(0.2, 0.6)], rng.uniform(0.015, 0.06, 2))
    heel /= np.max(np.abs(heel)) + 1e-9
    thump = sos_filter(rng.standard_normal(m) * np.exp(-t / rng.uniform(0.005, 0.02)), sr, "lowpass", rng.uniform(300, 1500), 2)
    step = heel + thump / (np.max(np.abs(thump)) + 1e-9) * rng.uniform(0.3, 0.8)
    place(step, step.copy(), int(rng.uniform(0.05, 0.15) * sr), rng.uniform(0.2, 0.6))  # toe after heel
    if surface == "hard":
        place(step, _click(rng, sr, 1500, 5000, rng.uniform(0.002, 0.006)), 0, rng.uniform(0.3, 1.0) * 8)
    elif surface == "soft":
        step = sos_filter(step, sr, "lowpass", rng.uniform(400, 1200), 2)
    elif surface == "gravel":
        n_grains = int(rng.integers(15, 90))
        grains = impulse_train(m, rng.integers(0, int(rng.uniform(0.08, 0.2) * sr), n_grains), rng.uniform(0.2, 1.0, n_grains))
        crunch = sos_filter(signal.oaconvolve(grains, np.exp(-np.arange(16) / 4.0))[:m] * rng.standard_normal(m), sr, "bandpass", (1000, 6000), 2)
        step += crunch / (np.max(np.abs(crunch)) + 1e-9) * rng.uniform(0.4, 1.0)
    else:
        creak = damped_modes(sr, m, [rng.uniform(150, 500)], [1.0], [rng.uniform(0.05, 0.15)])
        step += creak * rng.uniform(0.1, 0.4)
    if rng.random() < p_scuff:
        length = n_samples(sr, rng.uniform(0.05, 0.15))
        centre = rng.uniform(1000, 4000)
        scuff = sos_filter(rng.standard_normal(length), sr, "bandpass", (centre / 1.5, centre * 1.5), 2) * np.sin(np.pi * np.arange(length) / length)
        place(step, scuff / (np.max(np.abs(scuff)) + 1e-9), int(rng.uniform(0.0, 0.1) * sr), rng.uniform(0.1, 0.4))
    return step


@_register("HairDryer")
def _hair_dryer(rng, sr, n):
    """Steady broadband airflow noise with a fan whine; switch-on/off ramps and hand movement."""
    duration = n / sr
    t = np.arange(n) / sr
    speed = _speed_profile(rng, sr, n, 0.005)
    level = np.ones(n)
    if rng.random() < 0.5:
        ramp = rng.uniform(0.15, 0.5)
        speed *= 0.4 + 0.6 * (1 - np.exp(-t / (ramp / 3)))
        level *= np.minimum(1.0, t / ramp)
    if rng.random() < 0.2:  # user switches the speed setting
        switch = rng.uniform(0.3, 0.8) * duration
        speed *= 1 - (1 - rng.uniform(0.7, 0.85)) / (1 + np.exp(-(t - switch) / 0.05))
    if rng.random() < 0.25:
        stop = rng.uniform(0.2, 0.5)
        level *= np.clip((duration - t) / stop, 0, 1)
    f_rot = rng.uniform(200.0, 420.0)
    blades = int(rng.integers(5, 10))
    while f_rot * blades > 0.4 * sr and blades > 2:
        blades -= 1
    noise = coloured_noise(rng, n, rng.uniform(0.0, 0.8))
    noise = sos_filter(noise, sr, "bandpass", (rng.uniform(150, 500), rng.uniform(4000, 7500)), 2)
    peak_gain, peak_freq = rng.uniform(0.5, 2.0), rng.uniform(1000, 3500)
    noise = spectral_shape(noise, sr, lambda f, _times: 1 + peak_gain * resonance_gain(f, peak_freq, 1500.0))
    noise /= np.std(noise) + 1e-9
    whine = harmonic_tone(f_rot * blades * speed, sr, [1.0, rng.uniform(0.1, 0.5), rng.uniform(0.0, 0.3)])
    hum = harmonic_tone(f_rot * speed, sr, [1.0, 0.5, 0.3])
    out = noise + rng.uniform(0.05, 0.35) * _unit(whine) + rng.uniform(0.02, 0.1) * _unit(hum)
    out *= 10 ** (random_curve(rng, n, int(duration * rng.uniform(0.5, 2)) + 2, -1, 1) * rng.uniform(0.5, 3.0) / 20)
    if rng.random() < 0.3:  # airflow hitting the microphone
        gusts = sos_filter(rng.standard_normal(n), sr, "lowpass", rng.uniform(30, 150), 2)
        out += _unit(gusts) * random_curve(rng, n, int(duration * 2) + 2, 0.0, 1.0) * rng.uniform(0.2, 0.8)
    return out * level * speed**2


@_register("MechanicalFans")
def _fans(rng, sr, n):
    """Stationary low hum, blade-rate amplitude modulation of soft coloured noise, optional ticks."""
    duration = n / sr
    t = np.arange(n) / sr
    computer = rng.random() < 0.4
    f_rot = rng.uniform(25.0, 60.0) if computer else rng.uniform(6.0, 22.0)
    blades = int(rng.integers(7, 12)) if computer else int(rng.choice([3, 4, 5, 6, 7]))
    speed = _speed_profile(rng, sr, n, 0.01)
    if rng.random() < 0.15:
        speed *= 1 - np.exp(-t / rng.uniform(0.3, 1.0))
    bpf = f_rot * blades * speed
    blade_phase = 2 * np.pi * np.cumsum(bpf) / sr
    noise = coloured_noise(rng, n, rng.uniform(0.7, 1.8))
    noise = sos_filter(noise, sr, "lowpass", rng.uniform(2000, 6000) if computer else rng.uniform(600, 3000), 2)
    noise /= np.std(noise) + 1e-9
    depth = rng.uniform(0.15, 0.6)
    noise *= 1 + depth * (0.5 + 0.5 * np.cos(blade_phase)) ** rng.uniform(1.0, 4.0)
    tonal = harmonic_tone(bpf, sr, [1.0, rng.uniform(0, 0.6), rng.uniform(0, 0.4), rng.uniform(0, 0.3)])
    out = noise + rng.uniform(0.05, 0.4) * _unit(tonal)
    if rng.random() < 0.6:
        mains = float(rng.choice([50.0, 60.0]))
        hum = harmonic_tone(2 * mains, sr, [1.0, rng.uniform(0, 0.4), rng.uniform(0, 0.2)], n)
    else:
        hum = harmonic_tone(f_rot * rng.uniform(2, 6) * speed, sr, [1.0, 0.3])
    out += rng.uniform(0.05, 0.4) * _unit(hum)
    if rng.random() < 0.2:  # worn bearing ticking once per revolution
        ticks = _jittered_times(rng, 0, duration, 1 / f_rot, 0.01)
        out += _convolve_train(n, sr, ticks, rng.uniform(0.5, 1.0, len(ticks)), _click(rng, sr, 1000, 5000, 0.001)) * rng.uniform(0.5, 2.0)
    return out * speed**2


_SCALES = {
    "major": [0, 2, 4, 5, 7, 9, 11],
    "minor": [0, 2, 3, 5, 7, 8, 10],
    "pentatonic": [0, 2, 4, 7, 9],
    "dorian": [0, 2, 3, 5, 7, 9, 10],
    "blues": [0, 3, 5, 6, 7, 10],
}


@_register("MusicalKeyboard")
def _keyboard(rng, sr, n):
    """Melodies, chords, bass lines or arpeggios in a random scale with a random synth timbre."""
    duration = n / sr
    scale = np.array(_SCALES[rng.choice(list(_SCALES))])
    root = int(rng.integers(48, 68))
    beat = 60.0 / rng.uniform(70.0, 160.0)
    texture = rng.choice(["melody", "chords", "melody_bass", "arpeggio"])
    timbre = rng.choice(["piano", "organ", "fm", "synth", "pluck"])
    notes = _compose(rng, duration, scale, root, beat, texture)
    render = _keyboard_timbre(rng, sr, timbre, max_len=min(duration, 2.2 * beat + 1.2))
    out = np.zeros(n)
    cache: dict[int, np.ndarray] = {}
    release = n_samples(sr, 0.08 if timbre in ("organ", "synth") else rng.uniform(0.1, 0.3))
    for start, length, midi, velocity in notes:
        if midi not in cache:
            cache[midi] = render(440.0 * 2 ** ((midi - 69) / 12))
        sample = cache[midi]
        end = min(len(sample), n_samples(sr, length) + release)
        note = sample[:end].copy()
        fade_start = max(0, end - release)
        note[fade_start:] *= np.linspace(1.0, 0.0, end - fade_start)  # key release / damper
        place(out, note, int(start * sr), velocity)
    return out


def _compose(rng, duration, scale, root, beat, texture):
    """Note list (start, length, midi, velocity) for the chosen texture."""

    def pitch(degree: int) -> int:
        octave, step = divmod(degree, len(scale))
        return root + 12 * octave + int(scale[step])

    notes = []
    t = rng.uniform(0.0, 0.3)
    degree = int(rng.integers(0, len(scale)))
    while t < duration:
        if texture == "arpeggio":
            chord_root = int(rng.integers(-2, len(scale)))
            step = beat * rng.choice([0.25, 0.5])
            for k in range(int(rng.choice([4, 8]))):
                notes.append((t, step * 1.5, pitch(chord_root + 2 * (k % 4 if k % 4 < 3 else 1)), rng.uniform(0.5, 1.0)))
                t += step
            continue
        length = beat * rng.choice([0.5, 1.0, 1.0, 1.0, 1.5, 2.0])
        if rng.random() < 0.1:  # rest
            t += length
            continue
        if texture == "chords":
            chord_root = int(rng.integers(-2, len(scale)))
            for offset in (0, 2, 4):
                notes.append((t, length, pitch(chord_root + offset), rng.uniform(0.5, 0.9)))
        else:
            degree = int(np.clip(degree + rng.integers(-3, 4), -len(scale), 2 * len(scale)))
            notes.append((t, length, pitch(degree), rng.uniform(0.6, 1.0)))
            if texture == "melody_bass" and rng.random() < 0.5:
                notes.append((t, length, pitch(int(rng.integers(0, len(scale)))) - 12, rng.uniform(0.4, 0.7)))
        t += length
    return notes


def _keyboard_timbre(rng, sr, timbre, max_len):
    """A note renderer ``freq -> samples`` with timbre parameters drawn once per clip."""
    m = n_samples(sr, max_len)
    t = np.arange(m) / sr
    if timbre in ("piano", "pluck"):
        stretch = loguniform(rng, 1e-4, 1e-3) if timbre == "piano" else 0.0
        slope = rng.uniform(0.8, 1.5)
        tau = rng.uniform(0.6, 2.5) if timbre == "piano" else rng.uniform(0.2, 0.8)
        tau_slope = rng.uniform(0.3, 0.8) if timbre == "piano" else rng.uniform(0.8, 1.2)
        hammer = rng.uniform(0.0, 0.3)

        def render(freq):
            k = np.arange(1, 11)
            freqs = k * freq * np.sqrt(1 + stretch * k**2)
            decays = tau * np.sqrt(261.0 / freq) / k**tau_slope
            note = damped_modes(sr, m, freqs, k**-slope, decays, np.zeros(10))
            note *= np.minimum(1.0, t / 0.002)
            note[: n_samples(sr, 0.01)] += hammer * rng.standard_normal(n_samples(sr, 0.01)) * np.exp(-np.arange(n_samples(sr, 0.01)) / 30)
            return note

        return render
    if timbre == "fm":
        ratio = float(rng.choice([0.5, 1.0, 2.0, 3.0, 3.5, 1.41]))
        index0, index_tau = rng.uniform(0.5, 5.0), rng.uniform(0.05, 0.8)
        tau = rng.uniform(0.3, 1.5) if rng.random() < 0.6 else 1e9

        def render(freq):
            index = index0 * np.exp(-t / index_tau)
            envelope = np.exp(-t / tau) * np.minimum(1.0, t / 0.004)
            return envelope * np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * freq * ratio * t))

        return render
    if timbre == "organ":
        drawbars = np.zeros(8)
        drawbars[[0, 1, 2, 3, 5, 7]] = rng.uniform(0, 1, 6) * (rng.random(6) < 0.7)
        drawbars[0] = 1.0
        attack = rng.uniform(0.005, 0.02)

        def render(freq):
            return harmonic_tone(freq, sr, drawbars, m) * np.minimum(1.0, t / attack)

        return render
    shape = rng.choice(["saw", "square", "pulse"])
    cutoff_ratio = rng.uniform(2.0, 10.0)
    attack, decay, sustain = rng.uniform(0.005, 0.08), rng.uniform(0.05, 0.4), rng.uniform(0.4, 1.0)
    vibrato = rng.uniform(0.0, 0.006)

    def render(freq):
        k = np.arange(1, 25)
        amps = waveform_amplitudes(shape, 24, 0.3) / (1 + (k / cutoff_ratio) ** 4)
        curve = freq * (1 + vibrato * np.sin(2 * np.pi * 5.5 * t))
        envelope = np.minimum(1.0, t / attack) * (sustain + (1 - sustain) * np.exp(-np.maximum(t - attack, 0) / decay))
        return harmonic_tone(curve, sr, amps) * envelope

    return render


@_register("Percussion")
def _percussion(rng, sr, n):
    """Drum-kit or hand-drum patterns: kick, snare, toms, hi-hats, congas, woodblock, shaker, cowbell."""
    duration = n / sr
    hand_drums = rng.random() < 0.3
    if hand_drums:
        names = ["conga", "conga", "bongo"] + list(rng.choice(["woodblock", "shaker", "cowbell"], int(rng.integers(0, 3)), replace=False))
    else:
        names = ["kick", "snare", "hihat"] + list(rng.choice(["tom_low", "tom_high", "open_hat", "woodblock", "cowbell", "shaker"], int(rng.integers(0, 3)), replace=False))
    step = 60.0 / rng.uniform(80.0, 170.0) / 4  # sixteenth notes
    swing = rng.uniform(0.0, 0.15)
    patterns = {}
    for index, name in enumerate(names):
        key = f"{name}{index}"
        base = np.full(16, rng.uniform(0.05, 0.3))
        if name == "kick":
            base[[0, 8]] = 0.95
            base[[6, 10, 14]] = rng.uniform(0.1, 0.5)
        elif name == "snare":
            base[:] = 0.05
            base[[4, 12]] = 0.95
        elif name in ("hihat", "shaker"):
            base[:] = rng.choice([0.0, 0.3]) + (np.arange(16) % int(rng.choice([1, 2])) == 0) * 0.9
        patterns[key] = (name, rng.random(16) < base, [_drum_hit(rng, sr, name) for _ in range(3)])
    out = np.zeros(n)
    t0 = rng.uniform(0.0, 0.2)
    n_steps = int((duration - t0) / step) + 1
    for key, (name, pattern, variants) in patterns.items():
        for i in range(n_steps):
            if not pattern[i % 16] or rng.random() < 0.1:
                continue
            t = t0 + i * step + (swing * step if i % 2 else 0.0) + rng.normal(0, 0.004)
            place(out, variants[int(rng.integers(3))], int(max(0.0, t) * sr), rng.uniform(0.5, 1.0))
    return out


def _drum_hit(rng, sr, name):
    """One hit of a drum model, normalised to peak 1."""
    length = {"kick": 0.5, "snare": 0.4, "tom_low": 0.6, "tom_high": 0.5, "conga": 0.4, "bongo": 0.3, "open_hat": 0.6}.get(name, 0.25)
    m = n_samples(sr, length)
    t = np.arange(m) / sr
    if name in ("kick", "tom_low", "tom_high"):
        f_end = {"kick": rng.uniform(40, 70), "tom_low": rng.uniform(80, 140), "tom_high": rng.uniform(140, 300)}[name]
        f_start = f_end * rng.uniform(1.2, 3.0)
        freq = f_end + (f_start - f_end) * np.exp(-t / rng.uniform(0.01, 0.04))
        tau = rng.uniform(0.1, 0.35)
        hit = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / tau)
        hit += sos_filter(rng.standard_normal(m) * np.exp(-t / 0.002), sr, "lowpass", 3000, 2) * rng.uniform(0.1, 0.6)
    elif name == "snare":
        body = damped_modes(sr, m, [rng.uniform(160, 260) * r for r in (1.0, 1.6)], [1.0, 0.5], rng.uniform(0.04, 0.1, 2))
        wires = sos_filter(rng.standard_normal(m), sr, "bandpass", (rng.uniform(1000, 2000), 0.45 * sr), 2) * np.exp(-t / rng.uniform(0.06, 0.2))
        hit = body / (np.max(np.abs(body)) + 1e-9) * rng.uniform(0.3, 1.0) + wires / (np.max(np.abs(wires)) + 1e-9)
    elif name in ("hihat", "open_hat"):
        freqs = rng.uniform(300, 900, 6)
        metal = sum(np.sign(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28))) for f in freqs)
        noise = rng.standard_normal(m)
        hit = sos_filter(metal * rng.uniform(0.2, 1.0) + noise, sr, "highpass", min(rng.uniform(5000, 7000), 0.4 * sr), 4)
        hit *= np.exp(-t / (rng.uniform(0.015, 0.05) if name == "hihat" else rng.uniform(0.15, 0.4)))
    elif name in ("conga", "bongo"):
        f0 = rng.uniform(180, 300) if name == "conga" else rng.uniform(300, 500)
        ratios = np.array([1.0, 1.59, 2.14, 2.30, 2.65, 2.92])
        f_curve = 1 + rng.uniform(0.0, 0.08) * np.exp(-t / 0.02)
        partials = [np.sin(2 * np.pi * np.cumsum(f0 * r * f_curve) / sr) * np.exp(-t / (rng.uniform(0.05, 0.25) / r)) for r in ratios]
        hit = sum(a * p for a, p in zip(rng.uniform(0.1, 1.0, 6) * np.array([1, 0.8, 0.6, 0.5, 0.4, 0.3]), partials))
        hit[: n_samples(sr, 0.004)] += rng.standard_normal(n_samples(sr, 0.004)) * rng.uniform(0.1, 0.5)
    elif name == "woodblock":
        hit = damped_modes(sr, m, [rng.uniform(800, 2500)], [1.0], [rng.uniform(0.01, 0.04)])
        place(hit, _click(rng, sr, 2000, 6000, 0.001), 0, 0.5)
    elif name == "shaker":
        envelope = np.minimum(1.0, t / rng.uniform(0.01, 0.03)) * np.exp(-t / rng.uniform(0.04, 0.08))
        hit = sos_filter(rng.standard_normal(m), sr, "highpass", rng.uniform(2000, 6000), 2) * envelope
    else:  # cowbell: two detuned square tones through a band-pass
        f1 = rng.uniform(500, 600)
        tone = np.sign(np.sin(2 * np.pi * f1 * t)) + np.sign(np.sin(2 * np.pi * f1 * rng.uniform(1.45, 1.5) * t))
        hit = sos_filter(tone, sr, "bandpass", (600, 1200), 2) * np.exp(-t / rng.uniform(0.06, 0.3))
    return hit / (np.max(np.abs(hit)) + 1e-9)


@_register("Pour")
def _pour(rng, sr, n):
    """Liquid pouring: bubble resonances gliding upwards, splash noise, a container filling up."""
    duration = n / sr
    start = rng.uniform(0.0, 0.3)
    stop = duration - rng.uniform(0.0, 0.3) if rng.random() < 0.6 else start + rng.uniform(0.5, 1.0) * (duration - start)
    flow = gate_from_segments(n, sr, [(start, stop)], rng.uniform(0.02, 0.2)) * random_curve(rng, n, int(duration * 3) + 2, 0.4, 1.0)
    centre, spread = loguniform(rng, 500.0, 2500.0), rng.uniform(0.3, 0.9)
    rate = loguniform(rng, 30.0, 300.0)
    times = _poisson_times(rng, start, stop, rate)
    times = times[rng.random(len(times)) < flow[np.minimum((times * sr).astype(int), n - 1)]]
    bubbles = _bubbles(rng, sr, n, times, centre, spread)
    if rng.random() < 0.35:  # bottle 'glug': big low bubbles when air enters the bottle
        glugs = _jittered_times(rng, start, stop, 1 / rng.uniform(3.0, 8.0), 0.15)
        bubbles += 3 * _bubbles(rng, sr, n, glugs, rng.uniform(150, 500), 0.2)
    splash = sos_filter(rng.standard_normal(n), sr, "bandpass", (rng.uniform(500, 1500), rng.uniform(4000, 7500)), 2) * flow
    # Filling container: its air-column resonance rises as the liquid level goes up.
    f_start, rise = rng.uniform(250.0, 800.0), rng.uniform(1.2, 3.0)
    q = rng.uniform(2.0, 8.0)
    span = max(stop - start, 0.1)
    splash = spectral_shape(
        splash,
        sr,
        lambda f, tt: 0.3 + resonance_gain(f, f_start * rise ** np.clip((tt - start) / span, 0, 1), f_start / q),
    )
    splash /= np.std(splash) + 1e-9
    bubbles /= np.std(bubbles) + 1e-9
    return bubbles + rng.uniform(0.05, 0.5) * splash * np.sqrt(flow + 1e-3)


def _bubbles(rng, sr, n, times, centre, spread):
    """Minnaert bubbles with the upward pitch glide of a rising bubble, overlap-added at once."""
    if len(times) == 0:
        return np.zeros(n)
    f0 = centre * np.exp(spread * rng.standard_normal(len(times)))
    f0 = np.clip(f0, 100.0, 0.4 * sr)
    damping = (0.043 * f0 + 0.0014 * f0**1.5) * rng.uniform(0.5, 1.5, len(times))
    glide = rng.uniform(0.05, 0.4, len(times))
    length = n_samples(sr, 0.08)
    tt = np.arange(length) / sr
    freq = f0[:, None] * (1 + glide[:, None] * damping[:, None] * tt[None, :])
    phase = 2 * np.pi * np.cumsum(freq, axis=1) / sr
    wave = np.sin(phase) * np.exp(-damping[:, None] * tt[None, :]) * rng.uniform(0.2, 1.0, (len(times), 1))
    index = (np.round(times * sr).astype(np.int64)[:, None] + np.arange(length)[None, :]).ravel()
    keep = index < n
    return np.bincount(index[keep], weights=wave.ravel()[keep], minlength=n)[:n]


@_register("Speech")
def _speech(rng, sr, n):
    """espeak-ng speech with a random voice, rate and pitch (formant babble when unavailable)."""
    return synth_speech_raw(rng, sr, n)


@_register("Typing")
def _typing(rng, sr, n):
    """Irregular key clicks in word bursts, key releases, space-bar thumps and pauses."""
    duration = n / sr
    mechanical = rng.random() < 0.4
    key_modes = loguniform(rng, 1500.0, min(6000.0, 0.42 * sr), 3)
    thump_freq = rng.uniform(200.0, 600.0)

    def key_sound(space: bool):
        freqs = np.concatenate([key_modes * rng.uniform(0.85, 1.15, 3), [thump_freq * (0.5 if space else 1.0) * rng.uniform(0.9, 1.1)]])
        decays = np.concatenate([rng.uniform(0.003, 0.015, 3) * (0.6 if mechanical else 1.0), [rng.uniform(0.01, 0.03) * (2.0 if space else 1.0)]])
        amps = np.concatenate([rng.uniform(0.2, 1.0, 3) * (1.5 if mechanical else 0.7), [1.5 if space else rng.uniform(0.3, 1.0)]])
        return _strike_modes(rng, sr, freqs, amps, decays, 0.12)

    keys = [key_sound(False) for _ in range(6)]
    spaces = [key_sound(True) for _ in range(2)]
    release = key_sound(False) * 0.5
    mean_gap, sigma = rng.uniform(0.08, 0.2), rng.uniform(0.3, 0.5)
    out = np.zeros(n)
    t = rng.uniform(0.0, 0.3)
    while t < duration:
        for _ in range(int(rng.integers(2, 10))):
            gain = 10 ** (rng.uniform(-4, 4) / 20)
            place(out, keys[int(rng.integers(len(keys)))], int(t * sr), gain)
            place(out, release, int((t + rng.uniform(0.04, 0.12)) * sr), gain * rng.uniform(0.2, 0.7 if mechanical else 0.4))
            t += mean_gap * np.exp(sigma * rng.standard_normal())
        place(out, spaces[int(rng.integers(2))], int(t * sr), rng.uniform(0.8, 1.3))
        t += mean_gap * np.exp(sigma * rng.standard_normal()) * 1.3
        if rng.random() < 0.1:  # thinking pause
            t += rng.uniform(0.4, 1.5)
    return out


@_register("VacuumCleaner")
def _vacuum(rng, sr, n):
    """Loud broadband airflow, low rumble and a strong high motor whine, slowly varying as it is pushed."""
    duration = n / sr
    t = np.arange(n) / sr
    speed = _speed_profile(rng, sr, n, 0.01)
    level = np.ones(n)
    if rng.random() < 0.4:
        ramp = rng.uniform(0.5, 1.5)
        speed *= 0.3 + 0.7 * (1 - np.exp(-t / (ramp / 3)))
        level *= np.minimum(1.0, 0.2 + t / ramp)
    if rng.random() < 0.2:
        stop = rng.uniform(0.5, 1.2)
        fade = np.clip((duration - t) / stop, 0, 1)
        speed *= 0.4 + 0.6 * fade
        level *= fade
    blocked = np.zeros(n)
    for _ in range(int(rng.integers(0, 3))):  # nozzle blocked: pitch up, airflow down
        centre, width = rng.uniform(0, duration), rng.uniform(0.2, 0.8)
        blocked = np.maximum(blocked, np.exp(-(((t - centre) / width) ** 2)))
    whine_speed = speed * (1 + rng.uniform(0.05, 0.15) * blocked)
    f_rot = rng.uniform(300.0, 700.0)
    blade_pass = f_rot * int(rng.integers(4, 10))
    while blade_pass > 0.42 * sr:
        blade_pass /= 2
    whine = harmonic_tone(blade_pass * whine_speed, sr, [1.0, rng.uniform(0, 0.4)])
    motor = harmonic_tone(f_rot * whine_speed, sr, np.arange(1, 9) ** -rng.uniform(0.5, 1.5))
    air = coloured_noise(rng, n, rng.uniform(0.3, 1.2))
    air = sos_filter(air, sr, "highpass", rng.uniform(40, 120), 2)
    air /= np.std(air) + 1e-9
    rumble = sos_filter(rng.standard_normal(n), sr, "lowpass", rng.uniform(150, 400), 2)
    push = 10 ** (rng.uniform(2, 5) * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t + rng.uniform(0, 6.3)) / 20)
    out = air * push * (1 - 0.5 * blocked)
    out += rng.uniform(0.2, 0.8) * _unit(rumble)
    out += rng.uniform(0.15, 0.6) * _unit(whine)
    out += rng.uniform(0.1, 0.4) * _unit(motor)
    if rng.random() < 0.3:  # brush roll flutter on carpet
        out *= 1 + rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(20, 40) * t)
    return out * level * speed**2


assert set(CLASS_GENERATORS) == set(CLASSES), "every target class needs a generator"
