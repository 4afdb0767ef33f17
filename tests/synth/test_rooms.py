"""Spatial scenes: simulated rooms, measured RIRs from a bank, early references, diffuse noise."""

import time

import numpy as np
import pytest
import soundfile as sf

from stream_s5.synth.rooms import array_positions, early_part, impose_diffuse_coherence, simulate_room
from stream_s5.synth.scenes import SceneConfig, generate_scene
from stream_s5.synth.soundbank import Soundbank

SR = 16000


@pytest.fixture(scope="module")
def bank():
    return Soundbank.procedural(SR, seed=0)


def test_room_scene(bank):
    cfg = SceneConfig(duration=3.0, room=True, channels=4, p_no_target=0.0, min_targets=2, max_targets=2, max_interferers=1)
    start = time.perf_counter()
    scene = generate_scene(cfg, 3, bank)
    assert time.perf_counter() - start < 3.0
    n = 3 * SR
    assert scene.mixture.shape == (4, n) and scene.mixture.dtype == np.float32
    assert np.all(np.isfinite(scene.mixture)) and np.max(np.abs(scene.mixture)) <= 0.99 + 1e-6
    assert len(scene.sources) == 2 and all(ref.shape == (n,) for ref in scene.sources.values())
    assert scene.noise.shape == (n,) and scene.interferers.shape == (n,)
    room = scene.room
    assert room["kind"] == "shoebox" and 0.2 <= room["rt60"] <= 0.8 and len(room["mic_positions"]) == 4
    # Channels differ (spatial image), but are strongly related (a few cm apart).
    assert not np.array_equal(scene.mixture[0], scene.mixture[1])
    assert np.corrcoef(scene.mixture[0], scene.mixture[1])[0, 1] > 0.3
    # The early references are not the reverberant mixture: the late tail is left out.
    residual = scene.mixture[0] - sum(scene.sources.values()) - scene.interferers - scene.noise
    assert np.std(residual) > 0
    assert generate_scene(cfg, 3, bank).mixture.tobytes() == scene.mixture.tobytes()


def test_single_mic_room(bank):
    scene = generate_scene(SceneConfig(duration=2.0, room=True, channels=1), 1, bank)
    assert scene.mixture.shape == (1, 2 * SR)


def test_simulated_rt60_and_geometry():
    rng = np.random.default_rng(0)
    draw = simulate_room(rng, SR, 2, rt60_range=(0.6, 0.7))
    rir = draw.rirs[0][0]
    energy = np.cumsum(rir[::-1] ** 2)[::-1]
    decay_db = 10 * np.log10(energy / energy[0] + 1e-30)
    t5, t25 = np.argmax(decay_db < -5), np.argmax(decay_db < -25)
    rt60_estimate = 3 * (t25 - t5) / SR  # T20 extrapolated to 60 dB
    assert 0.45 < rt60_estimate < 0.85
    mics = draw.mic_positions
    distances = np.linalg.norm(mics - mics.mean(axis=1, keepdims=True), axis=0)
    assert np.allclose(distances, distances[0]) and 0.02 <= distances[0] <= 0.05
    room_dim = np.array(draw.info["room_dim"])
    for source in draw.info["source_positions"]:
        assert np.all(np.array(source) >= 0.5 - 1e-9) and np.all(np.array(source) <= room_dim - 0.5 + 1e-9)
        assert np.linalg.norm(np.array(source) - mics.mean(axis=1)) >= 0.5


def test_early_part_window():
    rir = np.zeros(2000)
    rir[500] = 1.0
    rir[501:] = 0.01
    early = early_part(rir, SR, early_ms=50.0, pre_ms=6.0)
    nonzero = np.flatnonzero(early)
    assert nonzero[0] == 500 and nonzero[-1] == 500 + 800
    rir[400] = 0.2  # pre-echo inside the 6 ms (96 samples) window is kept
    assert early_part(rir, SR)[400] == 0.0 and early_part(rir, SR, pre_ms=7.0)[400] == 0.2


def test_diffuse_coherence_keeps_reference_channel():
    rng = np.random.default_rng(1)
    mics = array_positions("tetrahedral", np.zeros(3), 0.03)
    signals = rng.standard_normal((4, SR))
    mixed = impose_diffuse_coherence(signals, mics, SR)
    assert np.array_equal(mixed[0], signals[0])
    # Low frequencies are nearly coherent across a 5 cm array; white inputs were not.
    from scipy import signal

    f, coherence = signal.coherence(mixed[0], mixed[1], fs=SR, nperseg=256)
    assert coherence[(f > 50) & (f < 500)].mean() > 0.8
    assert coherence[f > 5000].mean() < 0.5


def test_bank_rirs_are_used(tmp_path, bank):
    rirs = tmp_path / "rirs" / "kitchen"
    rirs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        rir = np.zeros((800, 4))
        rir[40 + k, :] = 1.0
        rir[41 + k :, :] = 0.05 * rng.standard_normal((800 - 41 - k, 4)) * np.exp(-np.arange(800 - 41 - k) / 200)[:, None]
        sf.write(str(rirs / f"r{k}.wav"), rir, SR, subtype="FLOAT")
    (tmp_path / "Speech").mkdir()
    sf.write(str(tmp_path / "Speech" / "s.wav"), bank.event("Speech", np.random.default_rng(2), 1.5), SR)
    folder_bank = Soundbank.from_folder(tmp_path, SR)
    assert folder_bank.has_rirs and folder_bank.rir_rooms == ("kitchen",)
    scene = generate_scene(SceneConfig(duration=2.0, room=True, channels=4, p_no_target=0.0), 0, folder_bank)
    assert scene.room == {"kind": "measured", "room": "kitchen"}
    assert scene.mixture.shape == (4, 2 * SR) and scene.labels == ["Speech"]
