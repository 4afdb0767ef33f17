"""The separation loss and the training log's collapse check (export/train.py)."""

import json

import pytest

torch = pytest.importorskip("torch")

from export.train import main as train_main  # noqa: E402
from export.train import separation_loss, separator_health  # noqa: E402


def _batch(seed=0, batch=8, length=4000):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(batch, length, generator=g)
    noise = torch.randn(batch, length, generator=g)
    present = torch.tensor([1.0] * (batch - 2) + [0.0, 0.0])
    target[~present.bool()] = 0.0
    return target, target + noise, present


def test_silent_output_scores_zero_on_present_and_the_floor_on_absent_items():
    target, mix, present = _batch()
    silent = torch.zeros_like(target)
    for weight, floor in [(1.0, -30.0), (0.5, -12.0)]:
        loss = separation_loss(silent, target, mix, present, absent_weight=weight, absent_floor_db=floor)
        # 6 present items at ~0 dB, 2 absent items at the (weighted) floor
        assert loss.item() == pytest.approx(2 * weight * floor / 8, abs=0.05)


def test_separating_beats_silence_and_suppression_stops_paying_below_the_floor():
    target, mix, present = _batch()
    good = target + 0.1 * (mix - target)  # 20 dB SNR on present items, −20 dB leak on absent ones
    silent = torch.zeros_like(target)
    assert separation_loss(good, target, mix, present, absent_floor_db=-12).item() < \
        separation_loss(silent, target, mix, present, absent_floor_db=-12).item() - 10
    # An absent item already 25 dB below the mixture gains almost nothing from going silent with a
    # −12 dB floor (no pull towards saturated masks), but still ~5 dB with the deep −30 dB floor.
    absent_only = torch.zeros(2)
    quiet = 10 ** (-25 / 20) * mix[-2:]
    shallow = separation_loss(quiet, target[-2:], mix[-2:], absent_only, absent_floor_db=-12) - \
        separation_loss(torch.zeros_like(quiet), target[-2:], mix[-2:], absent_only, absent_floor_db=-12)
    deep = separation_loss(quiet, target[-2:], mix[-2:], absent_only, absent_floor_db=-30) - \
        separation_loss(torch.zeros_like(quiet), target[-2:], mix[-2:], absent_only, absent_floor_db=-30)
    assert shallow.item() < 0.25
    assert deep.item() > 4.0


def test_health_reports_a_silent_pass():
    target, mix, present = _batch()
    good = target + 0.1 * (mix - target)
    health = separator_health([good, torch.zeros_like(target)], target, present, mix)
    assert health["snr_k1"] == pytest.approx(20.0, abs=0.5)
    assert health["level_k1"] == pytest.approx(0.0, abs=0.5)
    assert health["snr_k2"] == pytest.approx(0.0, abs=0.01)
    assert health["level_k2"] < -60


def test_training_log_carries_per_pass_health_and_the_loss_settings(tmp_path):
    train_main(["--preset", "test", "--out", str(tmp_path), "--quiet", "--absent-floor-db", "-12"])
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    final = lines[-1]
    assert {"snr_k1", "level_k1", "snr_k3", "level_k3"} <= set(final["present"])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    recipe = json.loads(state["recipe_json"])
    assert recipe["absent_floor_db"] == -12.0 and recipe["absent_weight"] == 1.0


def test_mixed_precision_fine_tuning_from_a_checkpoint_with_real_material(tmp_path):
    """--amp on CPU runs in bfloat16; --init takes another run's weights; the recipe records it all;
    a folder bank with --p-real mixes real and procedural clips."""
    import numpy as np
    import soundfile as sf

    first = tmp_path / "first"
    train_main(["--preset", "test", "--out", str(first), "--quiet"])
    bank = tmp_path / "bank"
    (bank / "Speech").mkdir(parents=True)
    t = np.arange(16000) / 16000
    sf.write(str(bank / "Speech" / "a.wav"), (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    second = tmp_path / "second"
    train_main(["--preset", "test", "--out", str(second), "--quiet", "--amp", "--init", str(first / "checkpoint.pt"),
                "--soundbank", str(bank), "--p-real", "0.5", "--device", "auto"])
    state = torch.load(second / "checkpoint.pt", weights_only=True)
    recipe = json.loads(state["recipe_json"])
    assert recipe["init"] == str(first / "checkpoint.pt") and recipe["amp"] == "torch.bfloat16"
    assert recipe["p_real"] == 0.5 and recipe["device"] in ("cpu", "cuda")
    assert all(torch.isfinite(v).all() for v in state["sed"].values() if v.is_floating_point())


def test_a_32k_config_keeps_the_durations_and_the_sed_features_of_16k():
    from export.models import SedNet
    from export.train import PRESETS, build_config, parse_args

    low = build_config(PRESETS["full"], parse_args(["--out", "x"]))
    high = build_config(PRESETS["full"], parse_args(["--out", "x", "--sample-rate", "32000", "--channels", "4"]))
    assert high.sed.window / 32000 == low.sed.window / 16000 and high.sed.frame_hop / 32000 == low.sed.frame_hop / 16000
    assert high.separator.hop / 32000 == low.separator.hop / 16000 and high.separator.channels == 4
    assert (high.sed.n_patches, high.sed.fmax) == (low.sed.n_patches, 8000.0)
    # same mel bands: a 1 kHz tone lands in the same mel bin at both rates
    import torch

    def peak_bin(cfg, rate):
        net = SedNet(cfg).eval()
        t = torch.arange(cfg.window) / rate
        return int(net.log_mel(torch.sin(2 * torch.pi * 1000 * t)[None]).mean(-1).argmax())

    assert peak_bin(high.sed, 32000) == peak_bin(low.sed, 16000)


def test_transfer_copies_matching_weights_and_leaves_the_rest_fresh(tmp_path):
    import torch

    from export.models import SeparatorNet
    from export.train import PRESETS, build_config, parse_args, transfer_weights

    mono = SeparatorNet(build_config(PRESETS["full"], parse_args(["--out", "x"])).separator)
    spatial = SeparatorNet(build_config(PRESETS["full"], parse_args(["--out", "x", "--sample-rate", "32000",
                                                                     "--channels", "4"])).separator)
    before = {k: v.clone() for k, v in spatial.state_dict().items()}
    fresh = transfer_weights(spatial, mono.state_dict())
    assert {"in_proj.weight", "out.2.weight"} <= set(fresh) and "gru.weight_hh_l0" not in fresh
    assert torch.equal(spatial.state_dict()["gru.weight_hh_l0"], mono.state_dict()["gru.weight_hh_l0"])
    assert torch.equal(spatial.state_dict()["in_proj.weight"], before["in_proj.weight"])


def test_rehearsal_distils_towards_the_teacher_and_is_zero_gradient_at_the_teacher(tmp_path):
    """--rehearse: the distillation term is minimal (its gradient vanishes) when the student equals the
    frozen teacher, grows when the student moves away, and the run records it."""
    from export.data import ScenePool
    from export.models import ModelConfig, SedNet
    from export.train import rehearsal_loss
    from stream_s5.synth.scenes import SceneConfig

    parent = tmp_path / "parent"
    train_main(["--preset", "test", "--out", str(parent), "--quiet"])
    state = torch.load(parent / "checkpoint.pt", weights_only=True)
    cfg = ModelConfig.from_dict(json.loads(state["config_json"]))
    teacher, student = SedNet(cfg.sed), SedNet(cfg.sed)
    teacher.load_state_dict(state["sed"])
    student.load_state_dict(state["sed"])
    teacher.eval(), student.eval()
    pool = ScenePool(SceneConfig(sr=16000, duration=3.0), None, 5, 4, workers=0)
    import numpy as np

    from export.data import sed_batch

    audio = sed_batch(pool.sample(4), cfg.sed.window, cfg.sed.n_patches, cfg.sed.frame_hop, 16000, np.random.default_rng(0))[0]

    def loss_and_grad(net):
        net.zero_grad()
        loss = rehearsal_loss(net, teacher, audio, torch.device("cpu"), None)
        loss.backward()
        return loss.item(), sum(float(p.grad.abs().sum()) for p in net.parameters() if p.grad is not None)

    same_loss, same_grad = loss_and_grad(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved_loss, moved_grad = loss_and_grad(student)
    assert moved_loss > same_loss and same_grad < 1e-3 * moved_grad

    run = tmp_path / "run"
    train_main(["--preset", "test", "--out", str(run), "--quiet", "--init", str(parent / "checkpoint.pt"),
                "--rehearse", str(parent / "checkpoint.pt"), "--rehearse-weight", "0.5", "--steps", "4"])
    recipe = json.loads(torch.load(run / "checkpoint.pt", weights_only=True)["recipe_json"])
    assert recipe["rehearse"] == {"teacher": str(parent / "checkpoint.pt"), "weight": 0.5, "separator_share": 0.5}
    assert "distill" in json.loads((run / "log.jsonl").read_text().splitlines()[-1])

    # The GPU path: a SED-only run with feeders takes the teacher's windows from feeder processes too.
    fed = tmp_path / "fed"
    train_main(["--preset", "test", "--out", str(fed), "--quiet", "--init", str(parent / "checkpoint.pt"),
                "--rehearse", str(parent / "checkpoint.pt"), "--train", "sed", "--sed-feeders", "1", "--steps", "3"])
    last = json.loads((fed / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 3 and np.isfinite(last["distill"]) and last["distill"] >= 0

    # A teacher of another size (a small parent teaching a larger SED) is taken; one whose windows differ is not.
    wider = {**cfg.to_dict(), "sed": {**cfg.to_dict()["sed"], "dim": cfg.sed.dim + 16, "depth": cfg.sed.depth + 1}}
    torch.save({**state, "config_json": json.dumps(wider), "sed": SedNet(ModelConfig.from_dict(wider).sed).state_dict()},
               tmp_path / "wider.pt")
    train_main(["--preset", "test", "--out", str(tmp_path / "taught"), "--quiet", "--train", "sed",
                "--rehearse", str(tmp_path / "wider.pt"), "--steps", "2"])
    assert np.isfinite(json.loads((tmp_path / "taught" / "log.jsonl").read_text().splitlines()[-1])["distill"])
    longer = {**cfg.to_dict(), "sed": {**cfg.to_dict()["sed"], "window": cfg.sed.window * 2}}
    torch.save({**state, "config_json": json.dumps(longer)}, tmp_path / "longer.pt")
    with pytest.raises(SystemExit, match="window"):
        train_main(["--preset", "test", "--out", str(tmp_path / "refused"), "--quiet", "--train", "sed",
                    "--rehearse", str(tmp_path / "longer.pt"), "--steps", "2"])


def test_a_feeder_trained_sed_only_run_stops_at_its_time_budget_and_records_it(tmp_path):
    """--sed-feeders: batches cut by worker processes (the GPU path) train the SED; --minutes stops the run
    with a checkpoint before its steps are done, and the recipe says how it was made."""
    train_main(["--preset", "test", "--out", str(tmp_path), "--quiet", "--train", "sed", "--sed-feeders", "1",
                "--sed-batch", "3", "--windows-per-scene", "2", "--steps", "100000", "--minutes", "0.05"])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    recipe = json.loads(state["recipe_json"])
    assert recipe["sed_feeders"] == 1 and recipe["windows_per_scene"] == 2.0 and recipe["sed_batch"] == 3
    assert recipe["minutes"] == 0.05
    assert 0 < state["step"] < 100000 and state["elapsed_s"] >= 3.0
    assert all(torch.isfinite(v).all() for v in state["sed"].values() if v.is_floating_point())


def test_on_cpu_moves_every_tensor_of_a_nested_checkpoint(monkeypatch):
    from export.train import on_cpu

    moved = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self: moved.append(self.shape) or real_cpu(self))
    state = {"sed": {"w": torch.ones(2)}, "opt": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"params": [0]}]},
             "pair": (torch.ones(4), 5), "step": 7}
    out = on_cpu(state)
    assert sorted(moved) == sorted([torch.Size([2]), torch.Size([3]), torch.Size([4])])
    assert out["step"] == 7 and out["opt"]["param_groups"] == [{"params": [0]}] and isinstance(out["pair"], tuple)


def test_a_time_boxed_run_anneals_after_its_warm_up(tmp_path):
    """The cosine's share of the budget starts where warm-up ended: a warm-up that takes most of the budget
    still leaves a gradual anneal, not a drop from the peak to the floor."""
    train_main(["--preset", "test", "--out", str(tmp_path), "--quiet", "--train", "sed", "--steps", "100000",
                "--minutes", "0.1", "--lr", "1e-3"])
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert lines[-1]["step"] == state["step"]  # the stop on the budget writes its log line
    assert 0 <= state["warm_s"] < state["elapsed_s"]  # the test preset warms up in one step
    rates = [line["lr"] for line in lines]
    assert rates[-1] < 0.5e-3 and all(b <= a + 1e-12 for a, b in zip(rates, rates[1:]))


def test_the_learning_rate_anneals_over_whichever_of_steps_and_time_is_further():
    from export.train import lr_at

    assert lr_at(10, 1000, 100, 1.0) == pytest.approx(0.11)  # warm-up by steps
    by_steps = lr_at(550, 1000, 100, 1.0)
    assert by_steps == pytest.approx(0.05 + 0.95 * 0.5, abs=1e-9)  # half-way through the cosine
    assert lr_at(550, 1000, 100, 1.0, time_progress=0.25) == by_steps  # time behind the steps: steps rule
    assert lr_at(200, 1000, 100, 1.0, time_progress=1.0) == pytest.approx(0.05)  # budget spent: the floor


def _as_if_written_on_a_gpu(path):
    """Re-save a checkpoint with every storage tagged 'cuda:0', as torch.save wrote them on the GPU machine
    (a CPU-only torch.load refuses such a file unless told where to put it)."""
    from torch import serialization

    state = torch.load(path, weights_only=True)

    def tagger(obj):
        return "cuda:0" if getattr(obj, "device", None) is not None and obj.device.type == "cpu" else None

    serialization.register_package(1, tagger, lambda obj, location: None)
    try:
        torch.save(state, path)
    finally:
        serialization._package_registry[:] = [e for e in serialization._package_registry if e[1] is not tagger]
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)


def test_a_checkpoint_from_a_gpu_machine_exports_and_resumes_on_a_cpu_one(tmp_path):
    from export.bundle import load_checkpoint

    train_main(["--preset", "test", "--out", str(tmp_path), "--quiet"])
    _as_if_written_on_a_gpu(tmp_path / "checkpoint.pt")
    cfg, sed, sep, recipe = load_checkpoint(tmp_path / "checkpoint.pt")
    assert recipe["preset"] == "test"
    train_main(["--preset", "test", "--out", str(tmp_path), "--quiet", "--resume", "--steps", "4"])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4
