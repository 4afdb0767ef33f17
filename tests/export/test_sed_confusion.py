"""export.sed_confusion: each class scored on its own stems, without the rest of the scene."""

import json


def test_sed_confusion_scores_each_class_on_its_own_stems(toy_bundle, tmp_path, capsys):
    from export.sed_confusion import main as confusion_main
    from stream_s5.synth.soundbank import write_soundbank

    write_soundbank(tmp_path / "valid", sr=16000, n_per_class=1, n_interference=1, n_noise=1, seed=3,
                    classes=("AlarmClock", "Speech"), duration_range=(1.0, 2.0), noise_duration=3.0)
    assert confusion_main(["--model", str(toy_bundle), "--soundbank", str(tmp_path / "valid"), "--scenes", "3",
                           "--json", str(tmp_path / "c.json")]) == 0
    table = json.loads((tmp_path / "c.json").read_text())["classes"]
    assert set(table) <= {"AlarmClock", "Speech"} and table
    for label, row in table.items():
        assert row["stems"] >= 1 and 0.0 <= row["own"] <= 1.0
        scores = [v for _, v in row["top"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 4
        assert row["own"] <= scores[0] and (row["own"] in scores or row["own"] <= scores[-1])
    assert "own" in capsys.readouterr().out
