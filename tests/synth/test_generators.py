"""Procedural generators: contract (length, dtype, level), determinism, class distinctness."""

import numpy as np
import pytest
from scipy import signal, stats

from stream_s5.labels import CLASSES
from stream_s5.synth.background import INTERFERER_GENERATORS, NOISE_RMS, synth_interferer, synth_noise
from stream_s5.synth.generators import CLASS_GENERATORS, synth_event
from stream_s5.synth.speech import ESPEAK_AVAILABLE, babble_speech, espeak_speech, synth_speech_raw

SR = 16000


def test_every_class_has_a_generator():
    assert set(CLASS_GENERATORS) == set(CLASSES)


@pytest.mark.parametrize("cls", CLASSES)
def test_generator_contract(cls):
    for seed, duration in ((0, 1.3), (1, 2.7)):
        clip = synth_event(cls, np.random.default_rng(seed), SR, duration)
        assert clip.dtype == np.float32
        assert clip.shape == (round(duration * SR),)
        assert np.all(np.isfinite(clip))
        assert np.max(np.abs(clip)) == pytest.approx(0.5, abs=1e-3)
        assert np.sqrt(np.mean(clip.astype(np.float64) ** 2)) > 1e-3, "clip is (nearly) silent"


@pytest.mark.parametrize("cls", ["AlarmClock", "Dishes", "MusicalKeyboard", "Pour", "Speech"])
def test_generator_determinism(cls):
    a = synth_event(cls, np.random.default_rng(7), SR, 2.0)
    b = synth_event(cls, np.random.default_rng(7), SR, 2.0)
    c = synth_event(cls, np.random.default_rng(8), SR, 2.0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def _features(x):
    """Crude clip descriptor: band-energy profile, flatness, level dynamics, centroid."""
    f, _, spec = signal.spectrogram(x.astype(np.float64), SR, nperseg=512, noverlap=256)
    power = spec + 1e-12
    frame_energy = power.sum(0)
    active = frame_energy > frame_energy.max() * 1e-4
    edges = np.geomspace(60, 8000, 13)
    bands = np.array([power[(f >= lo) & (f < hi)][:, active].sum(0).mean() for lo, hi in zip(edges[:-1], edges[1:])])
    profile = 10 * np.log10(bands)
    flatness = np.exp(np.mean(np.log(power[:, active]), 0)) / np.mean(power[:, active], 0)
    centroid = (f[:, None] * power[:, active]).sum(0) / power[:, active].sum(0)
    level = 10 * np.log10(frame_energy[active])
    return np.concatenate([(profile - profile.max()) / 10, [np.log(flatness.mean()), level.std() / 10, active.mean(), np.log(np.median(centroid))]])


def test_classes_are_acoustically_distinct():
    """Leave-one-out nearest class centroid on simple features must beat chance (1/18) by far.

    If generators collapsed into one sound (or lost their character), accuracy drops to ~chance.
    """
    per_class = 4
    features, labels = [], []
    centroids = {}
    for index, cls in enumerate(CLASSES):
        for seed in range(per_class):
            clip = synth_event(cls, np.random.default_rng(1000 + seed), SR, 2.0)
            features.append(_features(clip))
            labels.append(index)
        centroids[cls] = [f[-1] for f in features[-per_class:]]
    x = np.array(features)
    y = np.array(labels)
    z = (x - x.mean(0)) / (x.std(0) + 1e-9)
    correct = 0
    for i in range(len(z)):
        others = np.arange(len(z)) != i
        means = np.stack([z[others & (y == c)].mean(0) for c in range(len(CLASSES))])
        correct += int(np.argmin(((means - z[i]) ** 2).sum(1)) == y[i])
    accuracy = correct / len(z)
    print(f"nearest-centroid accuracy {accuracy:.2f}")
    assert accuracy > 0.35, f"classes not distinct enough: nearest-centroid accuracy {accuracy:.2f}"
    # Spectral centroid distributions differ between classes (Kruskal-Wallis).
    assert stats.kruskal(*centroids.values()).pvalue < 1e-3


@pytest.mark.parametrize("kind", sorted(INTERFERER_GENERATORS))
def test_interferers(kind):
    clip = synth_interferer(np.random.default_rng(3), SR, 1.5, kind=kind)
    assert clip.dtype == np.float32 and clip.shape == (24000,)
    assert np.all(np.isfinite(clip)) and np.max(np.abs(clip)) == pytest.approx(0.5, abs=1e-3)


def test_random_interferer_is_deterministic():
    a = synth_interferer(np.random.default_rng(11), SR, 1.0)
    b = synth_interferer(np.random.default_rng(11), SR, 1.0)
    assert np.array_equal(a, b)


def test_noise_is_stationary_and_at_level():
    noise = synth_noise(np.random.default_rng(5), SR, 3 * SR)
    assert noise.dtype == np.float32 and noise.shape == (3 * SR,)
    assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(NOISE_RMS, rel=1e-3)
    quarter_rms = [np.sqrt(np.mean(q.astype(np.float64) ** 2)) for q in np.array_split(noise, 4)]
    assert max(quarter_rms) / min(quarter_rms) < 10 ** (5 / 20), "background should drift by a few dB at most"
    assert not np.array_equal(noise, synth_noise(np.random.default_rng(6), SR, 3 * SR))


def test_babble_fallback():
    clip = babble_speech(np.random.default_rng(2), SR, 2 * SR)
    assert clip.shape == (2 * SR,) and np.all(np.isfinite(clip)) and np.std(clip) > 0
    assert np.array_equal(clip, babble_speech(np.random.default_rng(2), SR, 2 * SR))
    assert synth_speech_raw(np.random.default_rng(2), SR, 100, engine="babble").shape == (100,)


@pytest.mark.skipif(not ESPEAK_AVAILABLE, reason="espeak-ng is not installed")
def test_espeak_speech():
    clip = espeak_speech(np.random.default_rng(4), SR, 2 * SR)
    assert clip is not None and clip.shape == (2 * SR,)
    assert np.all(np.isfinite(clip))
    # Speech has pauses and syllables: strongly modulated 20 ms frame energy.
    frames = clip[: len(clip) // 320 * 320].reshape(-1, 320)
    energy_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    assert energy_db.max() > -40 and np.ptp(energy_db) > 20
    assert np.array_equal(clip, espeak_speech(np.random.default_rng(4), SR, 2 * SR))
