"""Train the seconds-long test preset, export it, and check the bundle contract end to end
(mono and the 4-channel room-simulated path)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from export.bundle import VerificationError, export_bundle, verify_against_torch  # noqa: E402
from export.train import main as train_main  # noqa: E402
from stream_s5.bundle import BundleError, load_bundle  # noqa: E402
from stream_s5.labels import CLASSES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=[1, 4], ids=["mono", "tetrahedral"])
def trained(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"run{request.param}")
    train_main(["--preset", "test", "--out", str(out), "--quiet", "--channels", str(request.param)])
    return out / "checkpoint.pt", request.param


def test_checkpoint_is_a_plain_state_dict(trained):
    import torch

    state = torch.load(trained[0], weights_only=True)
    assert {"sed", "separator", "config_json", "step"} <= set(state)
    assert state["step"] == 3


def test_export_writes_verified_bundle_that_runs_without_torch(trained, tmp_path):
    ckpt, channels = trained
    manifest = export_bundle(ckpt, tmp_path / "bundle", passes=2, slots=3)
    assert manifest["channels"] == channels
    ops = set(manifest["provenance"]["verification"]["graphs"]["separator.onnx"]["ops"])
    assert not ops & {"Loop", "Scan", "If"}
    assert manifest["provenance"]["verification"]["max_abs_diff"]["streaming"] < 1e-4
    # the SED also split at its log-mel features (front end with a length-following output + body)
    worst = manifest["provenance"]["verification"]["max_abs_diff"]
    assert worst["sed_split"] < 1e-4 and worst["sed_front"] < 1e-3
    assert not set(manifest["provenance"]["verification"]["graphs"]["sed_front.onnx"]["ops"]) & {"STFT", "Loop", "Scan", "If"}
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.sed_front_end == {"file": "sed_front.onnx", "body": "sed_body.onnx", "mel_hop": 160, "context": 352,
                                    "n_mels": bundle.sed_front_end["n_mels"], "mel_frames": bundle.sed["window"] // 160}
    assert bundle.separator["state"][0]["input"] == "state_in"
    # the runtime runs it in a process where torch cannot be imported at all
    code = (
        "import sys, numpy as np; sys.modules['torch'] = None\n"
        "from stream_s5 import Engine\n"
        f"e = Engine({str(tmp_path / 'bundle')!r}, classes='Speech', device='cpu', input_channels={channels})\n"
        f"x = (np.random.default_rng(0).standard_normal((16000, {channels})) * 0.05).astype('float32')\n"
        "n = e.feed(x).length + e.flush().length\n"
        "assert n == 16000, n\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_tampered_bundle_is_refused(trained, tmp_path):
    export_bundle(trained[0], tmp_path / "b")
    with open(tmp_path / "b" / "separator.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    manifest["format"] = "something/else"
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format"):
        load_bundle(tmp_path / "b")


def test_verification_catches_a_graph_that_differs(trained, tmp_path):
    from export.bundle import export_graphs, load_checkpoint

    cfg, sed, sep, _ = load_checkpoint(trained[0])
    export_graphs(cfg, sed, sep, tmp_path)
    with __import__("torch").no_grad():
        for p in sep.parameters():
            p.add_(0.05)  # torch now disagrees with the exported graph
    with pytest.raises(VerificationError):
        verify_against_torch(cfg, sed, sep, tmp_path)


def test_default_bundle_is_packaged_and_valid():
    bundle = load_bundle()
    assert bundle.channels == 1 and bundle.sample_rate in (16000, 32000)
    assert len(bundle.classes) == 18
    assert bundle.algorithmic_latency / bundle.sample_rate <= 0.020
    recipe = bundle.manifest["provenance"]["recipe"]
    if recipe["preset"] == "blend":  # a weight interpolation of two trained models (export/blend.py)
        assert {recipe["first_recipe"]["preset"], recipe["second_recipe"]["preset"]} <= {"full", "real"}
    elif recipe["preset"] == "real":  # fine-tuning of `full` (or of an earlier such fine-tuning) on real
        # recordings, with rehearsal of `full`; the weights it started from are kept in checkpoints/
        assert recipe["init"].startswith("checkpoints/") and (REPO / recipe["init"]).is_file()
        assert recipe["rehearse"]["teacher"] == "checkpoints/full.pt"
    else:
        assert recipe["preset"] in ("quick", "full")
    assert np.isfinite(bundle.budget_ms)


def test_separator_only_training_keeps_the_sed_and_exports_with_another_sed(tmp_path):
    import torch

    ckpt = tmp_path / "both" / "checkpoint.pt"
    train_main(["--preset", "test", "--out", str(ckpt.parent), "--quiet"])
    out = tmp_path / "sep_only"
    train_main(["--preset", "test", "--out", str(out), "--quiet", "--train", "separator", "--guidance", "clip"])
    fresh = torch.load(out / "checkpoint.pt", weights_only=True)
    torch.manual_seed(0)  # the same initial weights as the run: the SED was not touched
    from export.models import SedNet, ModelConfig

    initial = SedNet(ModelConfig.from_dict(json.loads(fresh["config_json"])).sed).state_dict()
    assert all(torch.equal(initial[k], fresh["sed"][k]) for k in initial)
    assert json.loads(fresh["recipe_json"])["train"] == "separator"
    manifest = export_bundle(out / "checkpoint.pt", tmp_path / "bundle", sed_checkpoint=ckpt)
    assert manifest["provenance"]["recipe"]["sed_from"]["checkpoint"] == str(ckpt)


def test_sed_only_training_keeps_the_init_separator_and_moves_the_sed(tmp_path, capsys):
    import torch

    parent = tmp_path / "parent" / "checkpoint.pt"
    train_main(["--preset", "test", "--out", str(parent.parent), "--quiet"])
    out = tmp_path / "sed_only"
    capsys.readouterr()
    train_main(["--preset", "test", "--out", str(out), "--train", "sed", "--init", str(parent), "--steps", "4"])
    shown = capsys.readouterr()
    assert "sed " in shown.out + shown.err and "nan" not in shown.out + shown.err  # the untrained term is not shown
    start, trained = (torch.load(p, weights_only=True) for p in (parent, out / "checkpoint.pt"))
    assert all(torch.equal(start["separator"][k], trained["separator"][k]) for k in start["separator"])
    assert any(not torch.equal(start["sed"][k], trained["sed"][k]) for k in start["sed"])
    assert json.loads(trained["recipe_json"])["train"] == "sed"
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert "sed" in last and "sep" not in last and "present" not in last
    export_bundle(out / "checkpoint.pt", tmp_path / "bundle")


def test_a_guide_sed_is_exported_verified_and_run_as_the_separators_guide(trained, tmp_path):
    import torch

    ckpt, channels = trained
    state = torch.load(ckpt, weights_only=True)
    with torch.no_grad():  # another SED on the same front end: the same run with its body moved
        state["sed"] = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state["sed"].items()}
    other = tmp_path / "other.pt"
    torch.save(state, other)
    manifest = export_bundle(ckpt, tmp_path / "guided", guide_checkpoint=other)
    assert manifest["sed"]["front_end"]["guide_body"] == "sed_guide_body.onnx"
    assert manifest["provenance"]["recipe"]["guide_sed_from"]["checkpoint"] == str(other)
    assert manifest["provenance"]["verification"]["max_abs_diff"]["sed_guide"] < 1e-4
    assert "sed_guide_body.onnx" in manifest["provenance"]["verification"]["graphs"]

    from export.bundle import load_checkpoint
    from export.models import SedExport
    from stream_s5.sessions import SedModel

    bundle = load_bundle(tmp_path / "guided")
    model = SedModel(bundle, ["CPUExecutionProvider"])
    audio = (0.1 * np.random.default_rng(0).standard_normal((2, model.window))).astype(np.float32)
    log_mel = model.window_log_mel(audio)
    with torch.no_grad():
        detector = SedExport(load_checkpoint(ckpt)[1])(torch.from_numpy(audio))
        guide = SedExport(load_checkpoint(other)[1])(torch.from_numpy(audio))
    np.testing.assert_allclose(model.from_log_mel(log_mel)[1], detector[1].numpy(), atol=1e-4)
    np.testing.assert_allclose(model.guide_from_log_mel(log_mel), guide[1].numpy(), atol=1e-4)
    assert np.abs(guide[1].numpy() - detector[1].numpy()).max() > 1e-3  # the two bodies really differ

    # --guide-detects: the guide body decides the named classes too; the tracker reads its columns there
    manifest = export_bundle(ckpt, tmp_path / "guided", guide_checkpoint=other, guide_detects=["Doorbell", "Cough", "Doorbell"])
    assert manifest["sed"]["front_end"]["guide_detects"] == ["Doorbell", "Cough"]
    routed = SedModel(load_bundle(tmp_path / "guided"), ["CPUExecutionProvider"])
    clip, frame = routed(audio)
    columns = [CLASSES.index("Doorbell"), CLASSES.index("Cough")]
    others = [i for i in range(len(CLASSES)) if i not in columns]
    np.testing.assert_allclose(frame[:, :, columns], guide[1].numpy()[:, :, columns], atol=1e-4)
    np.testing.assert_allclose(clip[:, columns], guide[0].numpy()[:, columns], atol=1e-4)
    np.testing.assert_allclose(frame[:, :, others], detector[1].numpy()[:, :, others], atol=1e-4)

    # exported again without a guide into the same folder: the old guide does not linger
    manifest = export_bundle(ckpt, tmp_path / "guided")
    assert "guide_body" not in manifest["sed"]["front_end"] and not (tmp_path / "guided" / "sed_guide_body.onnx").exists()
    assert not SedModel(load_bundle(tmp_path / "guided"), ["CPUExecutionProvider"]).guided


def test_a_guide_sed_with_other_features_is_refused_and_nothing_is_written(trained, tmp_path, capsys):
    import torch

    from export.bundle import main as bundle_main
    from export.models import ModelConfig, SedNet

    ckpt = trained[0]
    state = torch.load(ckpt, weights_only=True)
    config = json.loads(state["config_json"])
    config["sed"]["n_mels"] = config["sed"]["n_mels"] // 2
    state["config_json"] = json.dumps(config)
    state["sed"] = SedNet(ModelConfig.from_dict(config).sed).state_dict()
    other = tmp_path / "other_features.pt"
    torch.save(state, other)
    with pytest.raises(VerificationError, match="n_mels"):
        export_bundle(ckpt, tmp_path / "a", guide_checkpoint=other)
    with pytest.raises(SystemExit) as exit_info:
        bundle_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "b"), "--guide-sed-from", str(other)])
    assert exit_info.value.code == 2 and "nothing written" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("extra, message", [
    (["--guide-detects", "Doorbell"], "needs --guide-sed-from"),
    (["--guide-sed-from", "GUIDE", "--guide-detects", "Doorbel"], "Doorbel not among the classes"),
])
def test_guide_detects_without_a_guide_or_with_an_unknown_class_is_refused(trained, tmp_path, capsys, extra, message):
    from export.bundle import main as bundle_main

    ckpt = trained[0]
    extra = [str(ckpt) if arg == "GUIDE" else arg for arg in extra]
    with pytest.raises(SystemExit) as exit_info:
        bundle_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "b"), *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "nothing written" in err and message in err
    assert not (tmp_path / "b").exists()


def test_a_manifest_the_runtime_would_refuse_is_never_written(trained, tmp_path, monkeypatch):
    """The exporter runs the runtime's own load checks on what it staged: a manifest that breaks a rule
    (here a tracker whose off threshold lies above its on threshold) fails the export and leaves no bundle."""
    import export.bundle as exporter

    made = exporter.bundle_manifest

    def broken(*args, **kwargs):
        manifest = made(*args, **kwargs)
        manifest["tracker"]["off_threshold"] = manifest["tracker"]["on_threshold"] + 0.2
        return manifest

    monkeypatch.setattr(exporter, "bundle_manifest", broken)
    with pytest.raises(BundleError, match="off_threshold"):
        export_bundle(trained[0], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as stop:  # the CLI: a message and exit code 2, not a traceback
        exporter.main(["--checkpoint", str(trained[0]), "--out", str(tmp_path / "bad")])
    assert stop.value.code == 2 and not (tmp_path / "bad").exists()


def test_a_larger_detector_than_its_guide_body_exports_and_runs(trained, tmp_path):
    """The `real_scratch` plan: a detector SED of another size (here wider and deeper) beside a guide body and a
    separator of the first run's architecture, on the same front end."""
    import torch

    from export.models import ModelConfig, SedNet
    from export.train import PRESETS
    from stream_s5 import Engine, EngineOptions

    ckpt, channels = trained
    if channels != 1:
        pytest.skip("the plan is for the mono bundle")
    assert PRESETS["real_scratch"]["sed"]["dim"] > 128 and "rehearse" not in PRESETS["real_scratch"]
    state = torch.load(ckpt, weights_only=True)
    cfg = ModelConfig.from_dict(json.loads(state["config_json"]))
    bigger = ModelConfig.from_dict({**cfg.to_dict(), "sed": {**cfg.to_dict()["sed"], "dim": 48, "depth": 2}})
    detector = {**state, "config_json": json.dumps(bigger.to_dict()), "sed": SedNet(bigger.sed).state_dict()}
    torch.save(detector, tmp_path / "detector.pt")
    manifest = export_bundle(ckpt, tmp_path / "b", sed_checkpoint=tmp_path / "detector.pt", guide_checkpoint=ckpt)
    assert manifest["sed"]["outputs"]["class_embeddings"][-1] == 48
    engine = Engine(load_bundle(tmp_path / "b"), classes="auto", device="cpu", options=EngineOptions(calibrate=False))
    out = [engine.feed(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1), engine.flush()]
    assert sum(o.length for o in out) == 16000


def test_several_seds_export_as_one_detector_that_gives_their_mean(trained, tmp_path, capsys):
    """--sed-from given twice: the detector graph is the mean of both SEDs' probabilities (members of different
    sizes on one front end); a member with other features is refused, naming it, and nothing is written."""
    import torch

    from export.bundle import load_checkpoint, main as bundle_main
    from export.models import ModelConfig, SedExport, SedNet
    from stream_s5.sessions import SedModel

    ckpt, channels = trained
    state = torch.load(ckpt, weights_only=True)
    cfg = ModelConfig.from_dict(json.loads(state["config_json"]))
    torch.manual_seed(1)
    wider = ModelConfig.from_dict({**cfg.to_dict(), "sed": {**cfg.to_dict()["sed"], "dim": 48, "depth": 2}})
    torch.save({**state, "config_json": json.dumps(wider.to_dict()), "sed": SedNet(wider.sed).state_dict()},
               tmp_path / "wider.pt")
    bundle_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "mean"), "--sed-from", str(ckpt),
                 "--sed-from", str(tmp_path / "wider.pt")])
    manifest = json.loads((tmp_path / "mean" / "bundle.json").read_text())
    members = manifest["provenance"]["recipe"]["sed_from"]["ensemble"]
    assert [m["checkpoint"] for m in members] == [str(ckpt), str(tmp_path / "wider.pt")]
    assert manifest["provenance"]["verification"]["max_abs_diff"]["sed_split"] < 1e-4

    model = SedModel(load_bundle(tmp_path / "mean"), ["CPUExecutionProvider"])
    audio = (0.1 * np.random.default_rng(0).standard_normal((2, model.window))).astype(np.float32)
    with torch.no_grad():
        first, second = (SedExport(load_checkpoint(p)[1])(torch.from_numpy(audio)) for p in (ckpt, tmp_path / "wider.pt"))
    clip, frame = model(audio)
    np.testing.assert_allclose(clip, (first[0] + second[0]).numpy() / 2, atol=1e-4)
    np.testing.assert_allclose(frame, (first[1] + second[1]).numpy() / 2, atol=1e-4)
    assert np.abs((first[1] - second[1]).numpy()).max() > 1e-3  # the members really differ

    # --sed-weights: a weighted mean (normalised), the weights in the manifest; one weight for two SEDs is refused
    bundle_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "weighted"), "--sed-from", str(ckpt),
                 "--sed-from", str(tmp_path / "wider.pt"), "--sed-weights", "3", "1"])
    manifest = json.loads((tmp_path / "weighted" / "bundle.json").read_text())
    assert [m["weight"] for m in manifest["provenance"]["recipe"]["sed_from"]["ensemble"]] == [0.75, 0.25]
    clip, frame = SedModel(load_bundle(tmp_path / "weighted"), ["CPUExecutionProvider"])(audio)
    np.testing.assert_allclose(frame, (0.75 * first[1] + 0.25 * second[1]).numpy(), atol=1e-4)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        bundle_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "bad"), "--sed-from", str(ckpt),
                     "--sed-from", str(tmp_path / "wider.pt"), "--sed-weights", "1"])
    assert stop.value.code == 2 and "--sed-weights" in capsys.readouterr().err and not (tmp_path / "bad").exists()

    # --sed-class-weights: some classes get their own weights (here Buzzer only the first SED, Speech only the
    # second); the others keep --sed-weights' mean; in the manifest. An unknown class or a wrong count: exit 2
    buzzer, speech = CLASSES.index("Buzzer"), CLASSES.index("Speech")
    bundle_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "per_class"), "--sed-from", str(ckpt),
                 "--sed-from", str(tmp_path / "wider.pt"), "--sed-weights", "3", "1",
                 "--sed-class-weights", "Buzzer=1,0", "Speech=0,2"])
    manifest = json.loads((tmp_path / "per_class" / "bundle.json").read_text())
    assert manifest["provenance"]["recipe"]["sed_from"]["class_weights"] == {"Buzzer": [1.0, 0.0], "Speech": [0.0, 1.0]}
    clip, frame = SedModel(load_bundle(tmp_path / "per_class"), ["CPUExecutionProvider"])(audio)
    expected = (0.75 * first[1] + 0.25 * second[1]).numpy()
    expected[..., buzzer], expected[..., speech] = first[1].numpy()[..., buzzer], second[1].numpy()[..., speech]
    np.testing.assert_allclose(frame, expected, atol=1e-4)
    np.testing.assert_allclose(clip[..., buzzer], first[0].numpy()[..., buzzer], atol=1e-4)
    for entries, named in ((["Kazoo=1,0"], "Kazoo"), (["Buzzer=1"], "Buzzer"), (["Buzzer"], "Buzzer"),
                           (["Buzzer=1,nan"], "Buzzer")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            bundle_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "bad"), "--sed-from", str(ckpt),
                         "--sed-from", str(tmp_path / "wider.pt"), "--sed-class-weights", *entries])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "--sed-class-weights" in err and named in err and not (tmp_path / "bad").exists()

    config = json.loads(state["config_json"])
    config["sed"]["n_mels"] = config["sed"]["n_mels"] // 2
    torch.save({**state, "config_json": json.dumps(config), "sed": SedNet(ModelConfig.from_dict(config).sed).state_dict()},
               tmp_path / "other_features.pt")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        bundle_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "bad"), "--sed-from", str(ckpt),
                     "--sed-from", str(tmp_path / "other_features.pt")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "other_features.pt" in err and "n_mels" in err and not (tmp_path / "bad").exists()
