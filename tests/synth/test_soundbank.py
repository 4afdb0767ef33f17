"""Folder soundbanks: write_soundbank -> Soundbank.from_folder round trip, real-file handling."""

import json
import time

import numpy as np
import pytest
import soundfile as sf

from stream_s5.labels import CLASSES
from stream_s5.synth.scenes import SceneConfig, generate_scene
from stream_s5.synth.soundbank import Soundbank, write_soundbank

SR = 16000
SOME = ("Speech", "Doorbell", "Typing")


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bank")
    calls = []
    start = time.perf_counter()
    manifest = write_soundbank(
        folder, sr=SR, n_per_class=2, n_interference=3, n_noise=2, seed=5, classes=SOME,
        duration_range=(1.0, 2.0), noise_duration=2.0, progress=lambda done, total: calls.append((done, total)),
    )
    elapsed = time.perf_counter() - start
    assert calls[-1] == (len(SOME) * 2 + 3 + 2, len(SOME) * 2 + 3 + 2)
    assert elapsed < 10.0
    assert manifest["counts"]["Speech"] == 2
    return folder


def test_layout_and_manifest(bank_dir):
    for cls in SOME:
        files = sorted((bank_dir / cls).glob("*.wav"))
        assert len(files) == 2
        info = sf.info(str(files[0]))
        assert info.samplerate == SR and info.channels == 1 and 1.0 <= info.duration <= 2.0 + 1e-3
    assert len(list((bank_dir / "interference").glob("*.wav"))) == 3
    assert len(list((bank_dir / "noise").glob("*.wav"))) == 2
    manifest = json.loads((bank_dir / "soundbank.json").read_text())
    assert manifest["seed"] == 5 and manifest["sr"] == SR


def test_write_is_deterministic(bank_dir, tmp_path):
    write_soundbank(tmp_path, sr=SR, n_per_class=1, n_interference=1, n_noise=0, seed=5, classes=("Typing",), duration_range=(1.0, 2.0))
    a, _ = sf.read(str(bank_dir / "Typing" / "Typing_00000.wav"))
    b, _ = sf.read(str(tmp_path / "Typing" / "Typing_00000.wav"))
    assert np.array_equal(a, b)


def test_from_folder_reports_missing_classes(bank_dir):
    bank = Soundbank.from_folder(bank_dir, SR)
    assert bank.available_classes == tuple(c for c in CLASSES if c in SOME)
    assert set(bank.missing_classes) == set(CLASSES) - set(SOME)
    assert bank.fallbacks == () and not bank.has_rirs
    with pytest.raises(KeyError):
        bank.event("Cough", np.random.default_rng(0))


def test_from_folder_draws(bank_dir):
    bank = Soundbank.from_folder(bank_dir, SR)
    rng = np.random.default_rng(0)
    clip = bank.event("Speech", rng, max_duration=0.5)
    assert clip.dtype == np.float32 and len(clip) <= SR // 2
    assert len(bank.interferer(rng, 1.0)) <= SR
    noise = bank.noise(rng, 5 * SR)  # longer than any noise file: files are chained
    assert noise.shape == (5 * SR,) and np.all(np.isfinite(noise)) and np.std(noise) > 0
    assert bank.rir(rng) is None


def test_scene_from_folder(bank_dir):
    bank = Soundbank.from_folder(bank_dir, SR)
    cfg = SceneConfig(duration=3.0, p_no_target=0.0, min_targets=2, max_targets=2)
    scene = generate_scene(cfg, 1, bank)
    assert set(scene.labels) <= set(SOME) and len(scene.labels) == 2
    again = generate_scene(cfg, 1, Soundbank.from_folder(bank_dir, SR, cache_mb=0))
    assert np.array_equal(scene.mixture, again.mixture)


def test_real_files_resampled_downmixed_and_fallbacks(tmp_path):
    """Stereo 44.1 kHz files are resampled and downmixed; missing noise/ falls back to procedural."""
    (tmp_path / "cough").mkdir()  # folder names match case-insensitively
    (tmp_path / "misc").mkdir()
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.3
    sf.write(str(tmp_path / "cough" / "a.flac"), stereo, 44100)
    bank = Soundbank.from_folder(tmp_path, SR)
    assert bank.available_classes == ("Cough",)
    assert bank.unknown_folders == ("misc",)
    assert set(bank.fallbacks) == {"interference", "noise"}
    clip = bank.event("Cough", np.random.default_rng(0))
    assert clip.ndim == 1 and abs(len(clip) - SR) <= 1
    assert np.max(np.abs(clip)) == pytest.approx(0.3, abs=0.01)
    assert bank.noise(np.random.default_rng(0), 1000).shape == (1000,)
    scene = generate_scene(SceneConfig(duration=2.0, p_no_target=0.0), 0, bank)
    assert scene.labels == ["Cough"]


def test_mixed_bank_draws_real_where_it_has_recordings_and_procedural_elsewhere(bank_dir):
    from stream_s5.synth.soundbank import MixedSoundbank

    real = Soundbank.from_folder(bank_dir, SR)
    procedural = Soundbank.procedural(SR, seed=3)
    files = {name: [sf.read(str(p), dtype="float32")[0] for p in sorted((bank_dir / name).iterdir())] for name in SOME}

    def is_real(clip, name):
        return any(len(clip) <= len(f) and any(np.allclose(clip, f[i : i + len(clip)], atol=1e-4)
                                               for i in range(0, len(f) - len(clip) + 1, 1)) for f in files[name])

    always = MixedSoundbank(real, procedural, p_real=1.0, p_colour=0.0)
    never = MixedSoundbank(real, procedural, p_real=0.0, p_colour=0.0)
    assert always.available_classes == CLASSES  # classes without recordings stay procedural
    rng = np.random.default_rng(0)
    assert is_real(always.event("Speech", rng, 1.0), "Speech")
    assert not is_real(never.event("Speech", rng, 1.0), "Speech")
    assert always.event("Cough", rng, 1.0).size > 0  # no recordings of Cough: procedural
    coloured = MixedSoundbank(real, procedural, p_real=1.0, p_colour=1.0).event("Typing", rng, 1.0)
    assert np.isfinite(coloured).all() and not is_real(coloured, "Typing")
    scene_a = generate_scene(SceneConfig(duration=2.0), 7, MixedSoundbank(real, procedural))
    scene_b = generate_scene(SceneConfig(duration=2.0), 7, MixedSoundbank(real, procedural))
    assert np.array_equal(scene_a.mixture, scene_b.mixture)
    with pytest.raises(ValueError, match="probability"):
        MixedSoundbank(real, procedural, p_real=1.5)
    with pytest.raises(ValueError, match="rates"):
        MixedSoundbank(real, Soundbank.procedural(32000))


def test_p_room_reverberates_some_dry_scenes_and_leaves_others_unchanged():
    plain = generate_scene(SceneConfig(duration=2.0, p_no_target=0.0), 3)
    again = generate_scene(SceneConfig(duration=2.0, p_no_target=0.0, p_room=0.0), 3)
    assert np.array_equal(plain.mixture, again.mixture)  # p_room=0 draws nothing: old scenes unchanged
    rooms = [generate_scene(SceneConfig(duration=2.0, p_no_target=0.0, p_room=1.0), s).room for s in range(2)]
    assert all(r is not None and r["kind"] == "shoebox" for r in rooms)
    with pytest.raises(ValueError, match="p_room"):
        SceneConfig(p_room=2.0).validate()


def test_packed_bank_reads_back_the_same_clips_without_decoding(bank_dir, tmp_path):
    from stream_s5.synth.soundbank import write_packed

    info = write_packed(bank_dir, tmp_path / "bank.npz", sr=SR)
    assert info["clips"] == len(SOME) * 2 + 3 + 2
    packed = Soundbank.from_folder(tmp_path / "bank.npz", SR)
    folder = Soundbank.from_folder(bank_dir, SR)
    assert packed.available_classes == folder.available_classes and packed.fallbacks == ()
    a = packed.event("Speech", np.random.default_rng(4))
    b = folder.event("Speech", np.random.default_rng(4))
    np.testing.assert_allclose(a, b, atol=np.max(np.abs(b)) / 30000)
    scene = generate_scene(SceneConfig(duration=2.0), 1, packed)
    assert np.isfinite(scene.mixture).all()
    small = write_packed(bank_dir, tmp_path / "small.npz", sr=SR, max_per_folder=1)
    assert small["clips"] == len(SOME) + 2
    short = write_packed(bank_dir, tmp_path / "short.npz", sr=SR, max_seconds=0.25)
    assert short["clips"] == info["clips"] and short["seconds"] <= 0.25 * info["clips"] + 1e-9
    assert Soundbank.from_folder(tmp_path / "short.npz", SR).event("Speech", np.random.default_rng(4)).size > 0
    with pytest.raises(ValueError, match="Hz"):
        Soundbank.from_folder(tmp_path / "bank.npz", 32000)
