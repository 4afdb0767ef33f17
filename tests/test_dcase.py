"""`stream-s5 eval --dcase`: the official figures on a DCASE-layout test folder (a replica made in the test)."""

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from stream_s5.cli import main
from stream_s5.dcase import DcaseLayoutError, official_scene_score, read_test_folder
from stream_s5.labels import CLASSES


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    from export.dcase import ReplicaSize, write_replica

    root = tmp_path_factory.mktemp("dcase")
    size = ReplicaSize(clips_per_class={"train": 1, "valid": 1}, noise_files={"train": 1, "valid": 1},
                       rooms={"train": 1, "valid": 1}, valid_scenes=1, test_scenes=5)
    return write_replica(root, seed=3, size=size)


def official_ca_sdri(test_dir, estimate_dir):
    """The official evaluator's figures, written independently of stream_s5: DatasetS5Waveform's file matching
    (`<name>_<Class>.wav`, padded with 'silence' to 3 sources) and `ca_metric` with torchmetrics' SNR, in float32
    torch as the official code runs."""
    import torch
    from torchmetrics.functional.audio import signal_noise_ratio

    def load(folder, name):
        files = sorted(f for f in os.listdir(folder) if f.startswith(name + "_") and f.endswith(".wav"))
        labels = [f[len(name) + 1 : -4] for f in files]
        assert all(label in CLASSES for label in labels)
        waves = [torch.from_numpy(sf.read(os.path.join(folder, f), dtype="float32")[0]) for f in files]
        return labels + ["silence"] * (3 - len(labels)), waves

    metrics, checks = [], []
    for scape in sorted(os.listdir(test_dir / "soundscape")):
        name = scape[:-4]
        mixture = torch.from_numpy(sf.read(str(test_dir / "soundscape" / scape), dtype="float32", always_2d=True)[0].T)[0]
        ref_lb, ref_wf = load(test_dir / "oracle_target", name)
        est_lb, est_wf = load(estimate_dir, name)
        est, ref = dict(zip(est_lb, est_wf)), dict(zip(ref_lb, ref_wf))
        tp = set(est_lb) & set(ref_lb) - {"silence"}
        fp = set(est_lb) - tp - {"silence"}
        fn = set(ref_lb) - tp - {"silence"}
        result = torch.tensor([])
        if tp:
            e = torch.stack([est[k] for k in tp])
            r = torch.stack([ref[k] for k in tp])
            improvement = signal_noise_ratio(e, r) - signal_noise_ratio(mixture.unsqueeze(0).repeat(len(tp), 1), r)
            result = torch.cat((result, improvement))
        result = torch.cat((result, torch.zeros(len(fp) + len(fn))))
        metrics.append(result.mean().item())
        checks.append((set(est_lb) - {"silence"}) == (set(ref_lb) - {"silence"}))
    return float(np.mean(metrics)), float(np.mean(checks))


def test_eval_dcase_equals_the_official_formula_on_the_written_estimates(replica, tmp_path):
    est, out = tmp_path / "est", tmp_path / "dcase.json"
    assert main(["eval", "--dcase", str(replica / "test"), "--write-estimates", str(est), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    ca_sdri, accuracy = official_ca_sdri(replica / "test", est)
    assert summary["scenes"] == 5
    assert abs(summary["ca_sdri_db"] - ca_sdri) < 0.01
    assert summary["label_accuracy"] == accuracy
    # the estimates are mono, at the soundscape's rate and length, one per reported class, at most 3
    for scene in summary["per_scene"]:
        info = sf.info(str(replica / "test" / "soundscape" / f"{scene['name']}.wav"))
        assert len(scene["predicted"]) <= 3
        for label in scene["predicted"]:
            written = sf.info(str(est / f"{scene['name']}_{label}.wav"))
            assert (written.samplerate, written.channels, written.frames) == (32000, 1, info.frames)
    # the model is not a placeholder here: it finds most classes of these (procedural) scenes
    assert summary["ca_sdri_db"] > 2.0


def test_official_scene_score_counts_false_positives_and_negatives_as_zero():
    rng = np.random.default_rng(0)
    ref = {"Speech": rng.standard_normal(800).astype(np.float32), "Cough": rng.standard_normal(800).astype(np.float32)}
    mixture = ref["Speech"] + ref["Cough"]
    perfect = {"Speech": ref["Speech"].copy()}
    score, terms = official_scene_score({**perfect, "Doorbell": ref["Cough"]}, ref, mixture)
    assert set(terms) == {"Speech"}
    assert score == pytest.approx(terms["Speech"] / 3)  # Speech term + FP Doorbell + FN Cough
    assert official_scene_score({}, {}, mixture) == (None, {})


def _copy(replica, tmp_path):
    target = tmp_path / "test"
    shutil.copytree(replica / "test", target)
    return target


def test_layout_errors_are_clear_and_exit_2(replica, tmp_path, capsys):
    with pytest.raises(DcaseLayoutError, match="point --dcase at dev_set/test"):
        read_test_folder(replica)
    assert main(["eval", "--dcase", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err

    missing = _copy(replica, tmp_path / "a")
    name = sorted(p.stem for p in (missing / "soundscape").iterdir())[0]
    for path in (missing / "oracle_target").glob(f"{name}_*.wav"):
        path.unlink()
    assert main(["eval", "--dcase", str(missing)]) == 2
    assert f"no oracle target for 1 soundscape(s): {name}" in capsys.readouterr().err

    wrong_rate = _copy(replica, tmp_path / "b")
    path = sorted((wrong_rate / "soundscape").iterdir())[0]
    audio, _ = sf.read(str(path))
    sf.write(str(path), audio, 16000)
    with pytest.raises(DcaseLayoutError, match="16000 Hz, the DCASE layout has 32000 Hz"):
        read_test_folder(wrong_rate)

    wrong_channels = _copy(replica, tmp_path / "c")
    path = sorted((wrong_channels / "soundscape").iterdir())[0]
    sf.write(str(path), sf.read(str(path))[0][:, :2], 32000)
    assert main(["eval", "--dcase", str(wrong_channels)]) == 2
    assert "2 channel(s), the DCASE layout has 4" in capsys.readouterr().err

    bad_name = _copy(replica, tmp_path / "d")
    shutil.copy(next((bad_name / "oracle_target").iterdir()), bad_name / "oracle_target" / f"{name}_Kazoo.wav")
    with pytest.raises(DcaseLayoutError, match="class 'Kazoo'"):
        read_test_folder(bad_name)

    short_ref = _copy(replica, tmp_path / "e")
    path = next((short_ref / "oracle_target").iterdir())
    sf.write(str(path), sf.read(str(path))[0][:1000], 32000)
    with pytest.raises(DcaseLayoutError, match="must be mono at 32000 Hz"):
        read_test_folder(short_ref)


def test_estimates_folder_with_old_files_is_refused(replica, tmp_path, capsys):
    est = tmp_path / "est"
    est.mkdir()
    (est / "old_Speech.wav").write_bytes(b"")
    assert main(["eval", "--dcase", str(replica / "test"), "--write-estimates", str(est)]) == 2
    assert "holds .wav files" in capsys.readouterr().err
    assert main(["eval", "--write-estimates", str(est)]) == 2
    assert "needs --dcase" in capsys.readouterr().err
