"""`stream-s5 eval`: the three modes on a few short scenes, deterministic, and the JSON it writes."""

import json

import pytest

from stream_s5.cli import main
from stream_s5.evaluate import EvalOptions, evaluate

KEYS = {"ca_sdri_db", "label_accuracy", "si_sdri_db", "sdri_detected_db", "segment_f1", "event_f1",
        "event_onset_f1", "median_onset_delay_s", "false_alarms_per_hour", "scenes", "no_target_scenes", "rtf"}


@pytest.mark.parametrize("mode", ["stream", "oracle", "offline"])
def test_every_mode_scores_every_scene(mode):
    opt = EvalOptions(scenes=4, seed=3, duration=3.0, mode=mode, p_no_target=0.25)
    summary = evaluate(None, opt)  # the bundled model
    assert KEYS <= set(summary)
    assert summary["scenes"] == 4 and summary["settings"]["mode"] == mode
    assert 0.0 <= summary["label_accuracy"] <= 1.0 and 0.0 <= summary["segment_f1"] <= 1.0
    if mode == "oracle":
        assert summary["label_accuracy"] == 1.0  # the true class set is given
    assert summary["rtf"] > 0


def test_same_seed_same_numbers_and_bad_mode_is_refused():
    opt = EvalOptions(scenes=2, seed=11, duration=2.0)
    a, b = evaluate(None, opt), evaluate(None, opt)
    for key in KEYS - {"rtf"}:
        assert a[key] == b[key], key
    with pytest.raises(ValueError, match="mode"):
        evaluate(None, EvalOptions(mode="best"))


def test_cli_eval_writes_the_summary(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "--scenes", "2", "--duration", "2", "--seed", "4", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert KEYS <= set(summary) and summary["settings"]["seed"] == 4


def test_eval_on_a_folder_soundbank_reports_per_class_detection(tmp_path, capsys):
    from stream_s5.synth.soundbank import write_soundbank

    write_soundbank(tmp_path / "valid", sr=16000, n_per_class=2, n_interference=2, n_noise=2, seed=9,
                    classes=("Speech", "FootSteps"), duration_range=(1.0, 2.0), noise_duration=3.0)
    summary = evaluate(None, EvalOptions(scenes=5, seed=2, duration=3.0, soundbank=str(tmp_path), split="valid",
                                         p_no_target=0.2))
    true = {c for c, row in summary["per_class"].items() if row["present"]}
    assert true and true <= {"Speech", "FootSteps"}  # targets only from the bank's classes
    for row in summary["per_class"].values():
        assert row["detected"] <= row["present"]
        assert row["recall"] is None or 0.0 <= row["recall"] <= 1.0
    assert summary["settings"]["soundbank_material"]["kind"] == "folder"
    assert main(["eval", "--soundbank", str(tmp_path), "--split", "nope"]) == 2
    assert "not found" in capsys.readouterr().err
