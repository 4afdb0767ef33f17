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


def _summary(records):
    """An eval summary of hand-made scenes through the real accumulator: (true, predicted, sdri per class)."""
    import numpy as np

    from stream_s5.metrics import MetricAccumulator

    acc = MetricAccumulator()
    rng = np.random.default_rng(0)
    for i, (true, predicted, gain) in enumerate(records):
        refs = {c: rng.standard_normal(1600).astype(np.float32) for c in true}
        mix = sum(refs.values(), np.zeros(1600, np.float32)) + 0.5 * rng.standard_normal(1600).astype(np.float32)
        # an estimate closer to its reference for a larger gain; a false class gets some of the mixture
        est = {c: (refs[c] + (mix - refs[c]) / gain) if c in refs else 0.1 * mix for c in predicted}
        events = [(c, 0.0, 0.1) for c in predicted]
        acc.add(f"scene{i:04d}", refs, est, mix, [(c, 0.0, 0.1) for c in true], events, 0.1)
    return acc.summary()


SCENES = [({"Speech"}, {"Speech"}), ({"Speech", "Cough"}, {"Speech"}), (set(), {"Buzzer"}), (set(), set()),
          ({"Typing"}, {"Typing", "Pour"}), ({"Cough"}, {"Cough"})] * 5


def test_eval_summary_keeps_a_record_per_scene():
    summary = _summary([(t, p, 4.0) for t, p in SCENES])
    rows = summary["per_scene"]
    assert len(rows) == summary["scenes"] == len(SCENES)
    assert [set(r["true"]) for r in rows] == [t for t, _ in SCENES]
    assert [set(r["predicted"]) for r in rows] == [p for _, p in SCENES]


def test_compare_reproduces_the_summaries_and_finds_a_real_difference():
    from stream_s5.evaluate import compare

    base = _summary([(t, p, 2.0) for t, p in SCENES])
    same = compare(base, base, resamples=500)
    for key, row in same["metrics"].items():
        assert row["difference"] == 0.0 and row["ci_low"] == row["ci_high"] == 0.0, key
    assert same["metrics"]["ca_sdri_db"]["a"] == pytest.approx(base["ca_sdri_db"])
    assert same["metrics"]["label_accuracy"]["a"] == pytest.approx(base["label_accuracy"])
    assert same["metrics"]["false_alarms_per_minute"]["a"] == pytest.approx(base["false_alarms_per_minute"])
    # the candidate separates better everywhere and drops the false Buzzer: every interval excludes 0
    better = _summary([(t, p - {"Buzzer"}, 8.0) for t, p in SCENES])
    result = compare(base, better, resamples=2000)["metrics"]
    assert result["ca_sdri_db"]["ci_low"] > 0 and result["ca_sdri_db"]["p_b_better"] == 1.0
    assert result["label_accuracy"]["ci_low"] > 0
    assert result["false_alarms_per_minute"]["ci_high"] < 0  # a resample without a Buzzer scene ties
    assert result["false_alarms_per_minute"]["p_b_better"] > 0.99


def test_compare_refuses_other_scenes_and_old_files(tmp_path, capsys):
    from stream_s5.evaluate import compare

    base = _summary([(t, p, 2.0) for t, p in SCENES])
    other = _summary([(t, p, 2.0) for t, p in reversed(SCENES)])
    with pytest.raises(ValueError, match="same scenes"):
        compare(base, other)
    with pytest.raises(ValueError, match="per-scene"):
        compare({k: v for k, v in base.items() if k != "per_scene"}, base)
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(base))
    b.write_text(json.dumps(other))
    assert main(["compare", str(a), str(b)]) == 2 and "same scenes" in capsys.readouterr().err
    assert main(["compare", str(a), str(tmp_path / "missing.json")]) == 2 and "cannot read" in capsys.readouterr().err
    assert main(["compare", str(a), str(a), "--resamples", "200", "--json", str(c)]) == 0
    assert json.loads(c.read_text())["metrics"]["label_accuracy"]["difference"] == 0.0


def test_compare_takes_two_dcase_folder_runs_and_refuses_malformed_records(tmp_path, capsys):
    # `stream-s5 eval --dcase` names scenes by soundscape and keeps no false-alarm fields
    from stream_s5.evaluate import compare

    def dcase_run(predicted_sets, scores):
        rows = [{"name": f"soundscape_{i:04d}", "true": sorted(t), "predicted": sorted(p), "ca_sdri_db": ca,
                 "terms_db": {}, "labels_correct": t == p} for i, ((t, _), p, ca) in enumerate(zip(SCENES, predicted_sets, scores))]
        scored = [r["ca_sdri_db"] for r in rows if r["ca_sdri_db"] is not None]
        return {"ca_sdri_db": sum(scored) / len(scored), "label_accuracy": sum(r["labels_correct"] for r in rows) / len(rows),
                "per_scene": rows}

    mono = dcase_run([p for _, p in SCENES], [None if not t and not p else 3.0 for t, p in SCENES])
    spatial = dcase_run([t for t, _ in SCENES], [None if not t else 5.0 for t, _ in SCENES])
    result = compare(mono, spatial, resamples=500)
    assert set(result["metrics"]) == {"ca_sdri_db", "label_accuracy", "false_classes_per_scene"}
    assert result["metrics"]["ca_sdri_db"]["a"] == pytest.approx(mono["ca_sdri_db"])
    assert result["metrics"]["ca_sdri_db"]["b"] == pytest.approx(spatial["ca_sdri_db"])
    assert result["metrics"]["label_accuracy"]["a"] == pytest.approx(mono["label_accuracy"])
    assert result["metrics"]["label_accuracy"]["b"] == 1.0 and result["metrics"]["label_accuracy"]["ci_low"] > 0
    # a DCASE-folder run against a synthetic run is not the same scenes; a record without its fields is refused
    with pytest.raises(ValueError, match="same scenes"):
        compare(mono, _summary([(t, p, 2.0) for t, p in SCENES]))
    broken = {**mono, "per_scene": [{"name": "soundscape_0000", "true": []}] + mono["per_scene"][1:]}
    with pytest.raises(ValueError, match="per-scene records are not"):
        compare(mono, broken)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(mono))
    b.write_text(json.dumps({**mono, "per_scene": ["soundscape_0000"] * 30}))
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "per-scene records are not" in err and "Traceback" not in err
