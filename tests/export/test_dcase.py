"""export.dcase: the official development-set layout, its recipe, SOFA rooms, and training from the layout."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")
pytest.importorskip("h5py")

from export.dcase import (  # noqa: E402
    DcaseRecipe,
    DcaseSceneGenerator,
    DevSet,
    DevSetError,
    ReplicaSize,
    read_sofa,
    write_replica,
    write_sofa,
)
from stream_s5.labels import CLASSES  # noqa: E402

SMALL = ReplicaSize(clips_per_class={"train": 1, "valid": 1}, noise_files={"train": 1, "valid": 1},
                    rooms={"train": 1, "valid": 1}, valid_scenes=2, test_scenes=2)


@pytest.fixture(scope="module")
def dev_set(tmp_path_factory):
    return write_replica(tmp_path_factory.mktemp("replica"), seed=1, size=SMALL)


def test_replica_has_the_official_layout(dev_set):
    for sub in ("sound_event", "interference", "noise", "room_ir"):
        for split in ("train", "valid"):
            assert (dev_set / sub / split).is_dir()
    assert sorted(p.name for p in (dev_set / "sound_event" / "train").iterdir()) == sorted(CLASSES)
    listing = json.loads((dev_set / "metadata" / "valid.json").read_text())
    assert len(listing) == 2 and all((dev_set / "metadata" / item["metadata_path"]).is_file() for item in listing)
    scapes = sorted((dev_set / "test" / "soundscape").iterdir())
    assert len(scapes) == 2
    info = sf.info(str(scapes[0]))
    assert (info.samplerate, info.channels, info.frames) == (32000, 4, 320000)
    noise = sf.info(str(next((dev_set / "noise" / "train").iterdir())))
    assert noise.channels == 4
    room = read_sofa(next((dev_set / "room_ir" / "train").iterdir()))
    assert room.irs.shape[:2] == (SMALL.positions_per_room, 4) and room.sr == 32000


def test_sofa_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    irs = rng.standard_normal((3, 4, 100))
    write_sofa(tmp_path / "r.sofa", irs, 48000, rng.uniform(0, 3, (3, 3)), rng.uniform(0, 3, (4, 3)), {"rt60": 0.3})
    back = read_sofa(tmp_path / "r.sofa")
    np.testing.assert_array_equal(back.irs, irs)
    assert back.sr == 48000 and back.source_positions.shape == (3, 3)
    (tmp_path / "bad.sofa").write_bytes(b"not hdf5")
    with pytest.raises(DevSetError, match="not a readable SOFA"):
        read_sofa(tmp_path / "bad.sofa")


def test_generator_follows_the_official_recipe(dev_set):
    generator = DcaseSceneGenerator(DevSet.open(dev_set, "train"), sr=32000, channels=4)
    counts = []
    for seed in range(8):
        scene = generator.scene(seed)
        assert scene.mixture.shape == (4, 320000) and scene.mixture.dtype == np.float32
        assert 1 <= len(scene.sources) <= 3 and len(set(scene.sources)) == len(scene.sources)
        assert 1 <= len(scene.interferer_events) <= 2
        assert all(5.0 <= snr <= 20.0 for snr in scene.snrs.values())
        assert all(0.0 <= snr <= 15.0 for snr in scene.interferer_snrs)
        assert all(np.isfinite(v).all() for v in (scene.mixture, *scene.sources.values()))
        counts.append(len(scene.sources))
        # background at ref_db: −50 dB mean power over the four channels (here: the reference channel's share)
        assert abs(10 * np.log10(np.mean(scene.noise.astype(np.float64) ** 2)) + 50.0) < 6.0
    assert len(set(counts)) > 1
    again = generator.scene(5)
    np.testing.assert_array_equal(again.mixture, generator.scene(5).mixture)


def test_reference_is_the_direct_path_and_early_reflections(dev_set):
    """One target, no interferer, no background: the reference channel of the mixture minus the dry
    reference is exactly the late reverberation (after peak + 50 ms of the RIR)."""
    devset = DevSet.open(dev_set, "train")
    quiet = DevSet(root=devset.root, split="train", events=devset.events, interference={}, noise=[], rooms=devset.rooms)
    generator = DcaseSceneGenerator(quiet, sr=32000, channels=4, recipe=DcaseRecipe(n_events=(1, 1), n_interferers=(0, 0)))
    scene = generator.scene(2)
    (label, reference), = scene.sources.items()
    late = scene.mixture[0].astype(np.float64) - reference
    onset = int(np.flatnonzero(reference)[0])
    # before the direct sound + 6 ms pre-window nothing differs; the early part is in the reference
    assert np.max(np.abs(late[: onset])) < 1e-6
    early = slice(onset, onset + int(0.05 * 32000))
    assert np.sum(late[early] ** 2) < 0.05 * np.sum(reference[early] ** 2)
    assert np.sum(late**2) > 0  # the late reverberation is in the mixture only


def test_mono_variant_is_the_reference_channel_of_the_same_scene(dev_set):
    devset = DevSet.open(dev_set, "train")
    four = DcaseSceneGenerator(devset, sr=32000, channels=4).scene(4)
    one = DcaseSceneGenerator(devset, sr=32000, channels=1).scene(4)
    np.testing.assert_array_equal(one.mixture[0], four.mixture[0])
    assert one.sources.keys() == four.sources.keys()
    low = DcaseSceneGenerator(devset, sr=16000, channels=1, recipe=DcaseRecipe(duration=4.0)).scene(4)
    assert low.mixture.shape == (1, 64000)


def test_devset_errors(dev_set, tmp_path):
    with pytest.raises(DevSetError, match="point --dcase at the dev_set folder"):
        DevSet.open(dev_set.parent)
    broken = tmp_path / "dev_set"
    shutil.copytree(dev_set / "sound_event", broken / "sound_event")
    with pytest.raises(DevSetError, match="no room_ir/train/"):
        DevSet.open(broken)
    shutil.copytree(dev_set / "room_ir", broken / "room_ir")
    (broken / "sound_event" / "train" / "Kazoo").mkdir()
    with pytest.raises(DevSetError, match="not DCASE classes: Kazoo"):
        DevSet.open(broken)


@pytest.mark.parametrize("channels, rate, extra", [(4, 32000, []), (4, 32000, ["--spatial-stats"]), (1, 16000, [])])
def test_training_from_the_layout_end_to_end(dev_set, tmp_path, channels, rate, extra):
    """export.train --dcase → export.bundle (its step-by-step ONNX check included) → stream-s5 eval --dcase on the
    replica's test folder."""
    from export.bundle import main as bundle_main
    from export.train import main as train_main
    from stream_s5.bundle import load_bundle
    from stream_s5.cli import main as cli_main

    run = tmp_path / "run"
    train_main(["--preset", "test", "--dcase", str(dev_set), "--channels", str(channels), "--sample-rate", str(rate),
                "--out", str(run), "--quiet", *extra])
    state_log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert state_log[-1]["step"] == 3
    bundle_main(["--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "bundle")])
    bundle = load_bundle(tmp_path / "bundle")
    assert (bundle.channels, bundle.sample_rate) == (channels, rate)
    if extra:  # the GRU state and the spatial statistics share one flat state tensor
        assert len(bundle.separator["inputs"]["state_in"]) == 2
    out = tmp_path / "eval.json"
    assert cli_main(["eval", "--dcase", str(dev_set / "test"), "--model", str(tmp_path / "bundle"), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["scenes"] == 2 and summary["settings"]["bundle_channels"] == channels
    # resumable: two more steps continue from the checkpoint
    train_main(["--preset", "test", "--dcase", str(dev_set), "--channels", str(channels), "--sample-rate", str(rate),
                "--out", str(run), "--quiet", "--resume", "--steps", "5"])
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 5


def test_training_refuses_a_wrong_folder(tmp_path):
    from export.train import main as train_main

    with pytest.raises(SystemExit, match="export.train: .*not a folder"):
        train_main(["--preset", "test", "--dcase", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
