import json
import shutil

from export.report import main as report_main
from stream_s5.bundle import load_bundle
from stream_s5.evaluate import EvalOptions, evaluate


def test_report_renders_measured_figures_and_records_them_in_the_bundle(toy_bundle, tmp_path, capsys):
    bundle_dir = tmp_path / "b"
    shutil.copytree(toy_bundle, bundle_dir)
    summary = evaluate(str(bundle_dir), EvalOptions(scenes=2, seed=5, duration=2.0, refine=1))
    path = tmp_path / "toy_stream_k1.json"
    path.write_text(json.dumps(summary))
    report_main(["--bundle", str(bundle_dir), str(path)])
    table = capsys.readouterr().out
    assert "toy_stream_k1<br>(stream, K=1)" in table
    assert f"| label accuracy | {summary['label_accuracy']:.3f} |" in table
    recorded = load_bundle(bundle_dir).manifest["provenance"]["metrics"]["toy_stream_k1"]  # still verifies
    assert recorded["label_accuracy"] == summary["label_accuracy"]
    assert recorded["settings"]["seed"] == 5 and "bundle" not in recorded["settings"]
