"""Scene generator: determinism, SNR rule, event boundaries, counts, mixture identity, I/O."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_s5.synth.dsp import frame_energy_db
from stream_s5.synth.scenes import (
    SceneConfig,
    active_region,
    generate_scene,
    generate_scenes,
    load_scene,
    save_scene,
    scene_seed,
)
from stream_s5.synth.soundbank import Soundbank

SR = 16000
CFG = SceneConfig(duration=4.0, max_targets=3, max_interferers=2)


@pytest.fixture(scope="module")
def bank():
    return Soundbank.procedural(SR, seed=0)


@pytest.fixture(scope="module")
def scenes(bank):
    return [generate_scene(CFG, seed, bank) for seed in range(8)]


def _rms(x):
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def test_determinism(bank):
    a = generate_scene(CFG, 123, bank)
    b = generate_scene(CFG, 123, Soundbank.procedural(SR, seed=0))
    assert np.array_equal(a.mixture, b.mixture)
    assert a.sources.keys() == b.sources.keys()
    assert all(np.array_equal(a.sources[k], b.sources[k]) for k in a.sources)
    assert a.events == b.events and a.snrs == b.snrs
    c = generate_scene(CFG, 124, bank)
    assert not np.array_equal(a.mixture, c.mixture)
    d = generate_scene(CFG, 123, Soundbank.procedural(SR, seed=1))  # other bank seed, other material
    assert not np.array_equal(a.mixture, d.mixture)


def test_shapes_and_dtypes(scenes):
    n = round(CFG.duration * SR)
    for scene in scenes:
        assert scene.mixture.shape == (1, n) and scene.mixture.dtype == np.float32
        assert scene.interferers.shape == (n,) and scene.noise.shape == (n,)
        for ref in scene.sources.values():
            assert ref.shape == (n,) and ref.dtype == np.float32
        assert scene.labels == sorted({e.label for e in scene.events})
        assert np.all(np.isfinite(scene.mixture))


def test_mixture_identity_and_no_clipping(scenes):
    for scene in scenes:
        total = sum(scene.sources.values(), np.zeros(scene.n_samples, np.float64)) + scene.interferers + scene.noise
        assert np.max(np.abs(scene.mixture[0] - total)) < 1e-6
        assert np.max(np.abs(scene.mixture)) <= 0.99 + 1e-6


def test_target_snrs_match_drawn_values(scenes):
    checked = 0
    for scene in scenes:
        noise_rms = _rms(scene.noise)
        for event in scene.events:
            a, b = round(event.onset * SR), round(event.offset * SR)
            measured = 20 * np.log10(_rms(scene.sources[event.label][a:b]) / noise_rms)
            assert measured == pytest.approx(scene.snrs[event.label], abs=0.5)
            assert CFG.target_snr_db[0] <= scene.snrs[event.label] <= CFG.target_snr_db[1]
            checked += 1
        # Interferers: their sum equals the single one when there is exactly one.
        if len(scene.interferer_events) == 1:
            event = scene.interferer_events[0]
            a, b = round(event.onset * SR), round(event.offset * SR)
            measured = 20 * np.log10(_rms(scene.interferers[a:b]) / noise_rms)
            assert measured == pytest.approx(scene.interferer_snrs[0], abs=0.5)
    assert checked > 5


def test_event_boundaries(scenes):
    for scene in scenes:
        assert [e.onset for e in scene.events] == sorted(e.onset for e in scene.events)
        for event in scene.events:
            ref = scene.sources[event.label].astype(np.float64)
            a, b = round(event.onset * SR), round(event.offset * SR)
            assert 0 <= a < b <= scene.n_samples
            inside, outside = np.sum(ref[a:b] ** 2), np.sum(ref[:a] ** 2) + np.sum(ref[b:] ** 2)
            assert outside < 1e-2 * inside, "reference should be ~silent outside its event"
            energy = frame_energy_db(ref, SR // 100)
            threshold = energy.max() - 40
            assert energy[a // 160] > threshold and energy[(b - 1) // 160] > threshold, "edges must be active"


def test_event_keeps_min_duration_inside(bank):
    """Events cut by the scene end keep at least min_event_s (stationary classes: long clips)."""
    stationary = ("VacuumCleaner", "HairDryer", "MechanicalFans")
    cfg = SceneConfig(duration=3.0, classes=stationary, min_targets=3, max_targets=3, p_no_target=0.0, min_event_s=0.8, max_interferers=0)
    cut = 0
    for seed in range(8):
        scene = generate_scene(cfg, seed, bank)
        for event in scene.events:
            assert event.offset - event.onset >= 0.8 - 0.02
            cut += event.offset >= 3.0 - 1e-9
    assert cut > 0, "no event ran past the scene end: the check did not exercise cutting"


def test_counts_in_range(bank):
    cfg = SceneConfig(duration=2.0, min_targets=2, max_targets=3, p_no_target=0.0, min_interferers=1, max_interferers=2)
    for seed in range(6):
        scene = generate_scene(cfg, seed, bank)
        assert 2 <= len(scene.events) <= 3 and len(scene.labels) == len(scene.events)
        assert 1 <= len(scene.interferer_events) <= 2
        assert np.any(scene.interferers)


def test_no_target_probability(bank):
    empty = generate_scene(SceneConfig(duration=2.0, p_no_target=1.0), 0, bank)
    assert empty.events == [] and empty.sources == {} and empty.labels == []
    assert np.all(empty.activity("Speech", 640) == 0)


def test_restricted_classes_and_duplicates(bank):
    cfg = SceneConfig(duration=2.0, classes=("Speech", "Cough"), min_targets=3, max_targets=3, p_no_target=0.0, distinct_classes=False)
    scene = generate_scene(cfg, 4, bank)
    assert len(scene.events) == 3 and set(scene.labels) <= {"Speech", "Cough"}


def test_activity_matches_events(scenes):
    hop = 640
    for scene in scenes:
        for event in scene.events:
            activity = scene.activity(event.label, hop)
            assert activity.shape == (-(-scene.n_samples // hop),)
            active = np.flatnonzero(activity)
            assert active[0] * hop <= event.onset * SR + hop and (active[-1] + 1) * hop >= event.offset * SR - hop


def test_generate_scenes_seeds(bank):
    cfg = SceneConfig(duration=1.5)
    scenes = list(generate_scenes(cfg, 3, seed=9, soundbank=bank))
    assert [s.seed for s in scenes] == [scene_seed(9, i) for i in range(3)]
    again = generate_scene(cfg, scenes[2].seed, bank)
    assert np.array_equal(again.mixture, scenes[2].mixture)


def test_save_load_round_trip(scenes, tmp_path):
    scene = next(s for s in scenes if s.events)
    save_scene(scene, tmp_path / "scene")
    loaded = load_scene(tmp_path / "scene")
    assert np.array_equal(loaded.mixture, scene.mixture)
    assert loaded.sources.keys() == scene.sources.keys()
    assert all(np.array_equal(loaded.sources[k], scene.sources[k]) for k in scene.sources)
    assert np.array_equal(loaded.noise, scene.noise) and np.array_equal(loaded.interferers, scene.interferers)
    assert loaded.events == scene.events and loaded.snrs == scene.snrs
    assert loaded.config == scene.config and loaded.seed == scene.seed


def test_invalid_configs():
    with pytest.raises(ValueError):
        SceneConfig(channels=4).validate()  # multichannel needs a room
    with pytest.raises(ValueError):
        SceneConfig(room=True, channels=3).validate()
    with pytest.raises(ValueError):
        SceneConfig(classes=("Unicorn",)).validate()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000), st.integers(1, 2000), st.integers(0, 3000))
def test_active_region_finds_the_sound(lead, length, trail):
    """Boundaries are the 10 ms frames (160 samples) holding the first and last non-silent sample."""
    x = np.concatenate([np.zeros(lead), np.ones(length), np.zeros(trail)])
    start, stop = active_region(x, SR)
    assert start == lead // 160 * 160
    assert stop == min(len(x), -(-(lead + length) // 160) * 160)
    assert active_region(np.zeros(100), SR) is None


def test_no_target_rate(bank):
    cfg = SceneConfig(duration=0.5, p_no_target=0.3, max_interferers=0, min_event_s=0.1)
    empty = sum(not generate_scene(cfg, seed, bank).events for seed in range(80))
    assert 10 <= empty <= 40  # binomial(80, 0.3): mean 24, sd 4.1
