import json
import shutil

from export.tune_tracker import GRID, main as tune_main
from stream_s5 import Engine, EngineOptions
from stream_s5.bundle import load_bundle


def test_tuning_writes_settings_from_the_grid_that_the_engine_uses(toy_bundle, tmp_path, capsys):
    bundle_dir = tmp_path / "b"
    shutil.copytree(toy_bundle, bundle_dir)
    tune_main(["--model", str(bundle_dir), "--scenes", "2", "--seed", "5"])
    printed = json.loads(capsys.readouterr().out)
    manifest = load_bundle(bundle_dir).manifest  # still loads: the graphs' sha256 are untouched
    for key, values in GRID.items():
        assert manifest["tracker"][key] in values
    assert printed["score"] >= printed["defaults"]["score"]
    engine = Engine(str(bundle_dir), device="cpu", options=EngineOptions(calibrate=False))
    assert engine.tracker.options.on_threshold == manifest["tracker"]["on_threshold"]
    assert engine.tracker.options.min_off_hops == manifest["tracker"]["min_off_hops"]
