import shutil

from stream_s5.bundle import default_bundle_path, load_bundle, update_manifest


def test_update_manifest_edits_bundle_json_and_keeps_the_bundle_valid(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), copy)
    update_manifest(copy, lambda m: m.setdefault("provenance", {}).update(note="edited"))
    reloaded = load_bundle(copy)  # hashes still verify: bundle.json is not hashed
    assert reloaded.manifest["provenance"]["note"] == "edited"
    assert not list(copy.glob("*.tmp"))


# ---------------------------------------------------------------- refusing what cannot be vouched for
import json  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from stream_s5.bundle import BundleError, validate_manifest  # noqa: E402
from stream_s5.engine import Engine, EngineOptions  # noqa: E402


@pytest.fixture
def bundle_copy(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), copy)
    return copy


def _edit(folder, edit):
    path = folder / "bundle.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_tampered_graph_is_refused(bundle_copy):
    _tamper(bundle_copy / "sed.onnx")
    with pytest.raises(BundleError, match="sed.onnx: sha256 .* does not match"):
        load_bundle(bundle_copy)


def test_a_bundle_without_files_is_refused_even_with_a_tampered_graph(bundle_copy):
    _tamper(bundle_copy / "sed.onnx")
    _edit(bundle_copy, lambda m: m.pop("files"))
    with pytest.raises(BundleError, match="'files' is a required property"):
        load_bundle(bundle_copy)


def test_a_graph_missing_from_files_is_refused(bundle_copy):
    _tamper(bundle_copy / "sed.onnx")
    _edit(bundle_copy, lambda m: m["files"].pop("sed.onnx"))
    with pytest.raises(BundleError, match="sed.file 'sed.onnx' is not listed in files"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["../x/sed.onnx", "../../etc/passwd", "/etc/passwd", "..", "sub/sed.onnx"])
def test_files_outside_the_bundle_folder_are_refused(bundle_copy, tmp_path, name):
    outside = tmp_path / "x"
    outside.mkdir()
    shutil.copy(bundle_copy / "sed.onnx", outside / "sed.onnx")
    _tamper(outside / "sed.onnx")

    def edit(m):
        m["sed"]["file"] = name
        m["files"][name] = m["files"]["sed.onnx"]

    _edit(bundle_copy, edit)
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(bundle_copy)


def test_a_symbolic_link_out_of_the_folder_is_refused(bundle_copy, tmp_path):
    target = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle_copy / "sed.onnx", target)
    (bundle_copy / "sed.onnx").unlink()
    os.symlink(target, bundle_copy / "sed.onnx")
    with pytest.raises(BundleError, match="resolves outside the bundle folder"):
        load_bundle(bundle_copy)


def test_every_missing_field_is_named_in_one_error(bundle_copy):
    _edit(bundle_copy, lambda m: [m.pop(k) for k in ("classes", "sample_rate", "channels")])
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_copy)
    message = str(info.value)
    assert "3 problem(s)" in message
    for key in ("classes", "sample_rate", "channels"):
        assert f"'{key}' is a required property" in message


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["tracker"].update(on_threshold=5), "tracker.on_threshold: 5 is greater than the maximum of 1"),
    (lambda m: m["tracker"].update(off_threshold=0.9), "off_threshold .* must not exceed"),
    (lambda m: m["tracker"].update(min_on_hops=0), "min_on_hops: 0 is less than the minimum of 1"),
    (lambda m: m["tracker"].update(unknown_knob=1), "Additional properties are not allowed"),
    (lambda m: m["tracker"].update(class_thresholds={"Speech": [0.4, 0.6]}), r"class_thresholds\['Speech'\]: off"),
    (lambda m: m["tracker"].update(class_thresholds={"Thunder": [0.6, 0.4]}), "names 'Thunder'"),
    (lambda m: m["tracker"].update(class_thresholds={"Speech": [1.5, 0.4]}), "1.5 is greater than the maximum of 1"),
    (lambda m: m["tracker"].update(class_thresholds={"Speech": [0.6]}), "too short"),
    (lambda m: m["sed"].update(window=16000), "sed.frames × sed.frame_hop"),
    (lambda m: m["separator"].update(hop=100), "must be a multiple of separator.hop"),
    (lambda m: m["separator"].update(passes=9), "exceeds separator.max_passes"),
    (lambda m: m.update(sample_rate="16000"), "sample_rate: '16000' is not of type 'integer'"),
    (lambda m: m.update(budget_ms=0), "budget_ms: 0 is less than or equal to the minimum of 0"),
    (lambda m: m.update(classes=["Speech", "Speech"]), "non-unique elements"),
    (lambda m: m.update(format="stream_s5.bundle/2"), "format: 'stream_s5.bundle/1' was expected"),
    (lambda m: m["files"].update({"sed.onnx": "abc"}), "does not match"),
    (lambda m: m["sed"]["front_end"].update(mel_frames=100), r"sed.front_end.mel_frames × mel_hop \(100 × 160\)"),
    (lambda m: m["sed"]["front_end"].update(mel_hop=300), "must be a multiple of sed.front_end.mel_hop"),
    (lambda m: m["sed"]["front_end"].update(typo=1), "Additional properties are not allowed"),
    (lambda m: m["files"].pop("sed_body.onnx"), "sed.front_end.body 'sed_body.onnx' is not listed in files"),
    (lambda m: m["files"].update({"sed_front.onnx": "0" * 64}), "sed_front.onnx: sha256 .* does not match"),
    (lambda m: m["sed"]["front_end"].update(guide_body="unlisted_guide.onnx"),
     "sed.front_end.guide_body 'unlisted_guide.onnx' is not listed in files"),
    (lambda m: m["sed"]["front_end"].update(guide_body="sed_body.onnx"), "guide_body must be a graph of its own"),
    (lambda m: m["sed"]["front_end"].update(guide_body="../sed_body.onnx"), "guide_body: '../sed_body.onnx' does not match"),
    (lambda m: m["sed"]["front_end"].update(guide_detects=["Thunder"]), "guide_detects names 'Thunder'"),
    (lambda m: m["sed"]["front_end"].update(guide_detects=["Speech", "Speech"]), "non-unique elements"),
    (lambda m: (m["sed"]["front_end"].pop("guide_body"), m["sed"]["front_end"].update(guide_detects=["Speech"])),
     "guide_detects needs sed.front_end.guide_body"),
])
def test_out_of_range_or_inconsistent_values_are_refused(bundle_copy, edit, match):
    _edit(bundle_copy, edit)
    with pytest.raises(BundleError, match=match):
        load_bundle(bundle_copy)


def test_non_finite_numbers_in_the_manifest_are_refused(bundle_copy):
    path = bundle_copy / "bundle.json"
    path.write_text(path.read_text().replace('"budget_ms": 8.0', '"budget_ms": NaN'))
    with pytest.raises(BundleError, match="not valid JSON.*NaN"):
        load_bundle(bundle_copy)


def test_a_manifest_that_is_not_an_object_is_refused(bundle_copy):
    (bundle_copy / "bundle.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="must hold a JSON object"):
        load_bundle(bundle_copy)


def _fast(bundle):
    return Engine(bundle, device="cpu", options=EngineOptions(calibrate=False, sed_worker=False))


def test_a_class_list_that_disagrees_with_the_graphs_is_refused_at_session_time(bundle_copy):
    def drop_last_class(m):
        m["classes"] = m["classes"][:17]
        m["tracker"]["class_thresholds"] = {c: v for c, v in (m["tracker"].get("class_thresholds") or {}).items()
                                            if c in m["classes"]}

    _edit(bundle_copy, drop_last_class)
    bundle = load_bundle(bundle_copy)  # the manifest alone is consistent
    with pytest.raises(BundleError, match=r"sed(_body)?.onnx: the graph does not match bundle.json:\n.*clip_probs' axis 1 is 18, "
                                          r"bundle.json implies 17"):
        _fast(bundle)


def test_a_window_that_disagrees_with_the_graph_is_refused_at_session_time(bundle_copy):
    _edit(bundle_copy, lambda m: (m["sed"].update(window=25600, frames=40), m["sed"].pop("front_end")))
    with pytest.raises(BundleError, match="input 'audio' axis 1 is 20480, bundle.json implies 25600"):
        _fast(load_bundle(bundle_copy))


def test_a_window_that_disagrees_with_the_split_graphs_is_refused_at_session_time(bundle_copy):
    _edit(bundle_copy, lambda m: (m["sed"].update(window=25600, frames=40), m["sed"]["front_end"].update(mel_frames=160)))
    with pytest.raises(BundleError, match="(?s)sed_body.onnx: .*input 'log_mel' axis 2 is 128, bundle.json implies 160"):
        _fast(load_bundle(bundle_copy))


def test_a_state_shape_that_disagrees_with_the_separator_is_refused(bundle_copy):
    _edit(bundle_copy, lambda m: m["separator"]["inputs"].update(state_in=["B", 2, 100]))
    with pytest.raises(BundleError, match="(?s)separator.onnx: .*state_in' axis 2 is 192, bundle.json implies 100"):
        _fast(load_bundle(bundle_copy))


def test_sessions_run_the_bytes_that_were_hashed_not_a_later_swap(bundle_copy):
    bundle = load_bundle(bundle_copy)
    for name in bundle.manifest["files"]:
        (bundle_copy / name).write_bytes(b"not a graph any more")
    engine = _fast(bundle)  # built from the verified bytes kept by load_bundle
    assert engine.feed(__import__("numpy").zeros(16000, "float32")).length > 0


@pytest.mark.parametrize("name", ["sed.onnx", "sed_front.onnx", "sed_body.onnx"])
def test_a_graph_onnx_runtime_cannot_parse_is_a_bundle_error(bundle_copy, name):
    import hashlib

    (bundle_copy / name).write_bytes(b"garbage")
    _edit(bundle_copy, lambda m: m["files"].update({name: hashlib.sha256(b"garbage").hexdigest()}))
    if name == "sed.onnx":  # the single SED graph is what runs when the bundle has no split
        _edit(bundle_copy, lambda m: m["sed"].pop("front_end"))
    with pytest.raises(BundleError, match=f"{name}: ONNX Runtime cannot load the graph"):
        _fast(load_bundle(bundle_copy))


def test_update_manifest_refuses_an_edit_that_breaks_the_bundle(bundle_copy):
    with pytest.raises(BundleError, match="edit refused"):
        update_manifest(bundle_copy, lambda m: m["tracker"].update(on_threshold=float("nan")))
    load_bundle(bundle_copy)  # unchanged on disk


def test_the_default_manifest_is_valid():
    assert validate_manifest(load_bundle().manifest) == []


def test_shipped_bundles_load_by_name(tmp_path, monkeypatch):
    from stream_s5.bundle import BundleError, load_bundle, shipped_bundles

    assert "default" in shipped_bundles()
    assert load_bundle("default").path == load_bundle().path
    spatial = load_bundle("spatial")
    assert (spatial.channels, spatial.sample_rate) == (4, 32000)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleError, match="shipped bundles by name: default"):
        load_bundle("no-such-bundle")


def test_a_front_end_graph_that_does_not_match_the_manifest_is_refused(bundle_copy):
    # the body declared for 64 mel bands gets a graph that is not a SED body at all
    shutil.copy(bundle_copy / "separator.onnx", bundle_copy / "sed_body.onnx")
    digest = __import__("hashlib").sha256((bundle_copy / "sed_body.onnx").read_bytes()).hexdigest()
    _edit(bundle_copy, lambda m: m["files"].update({"sed_body.onnx": digest}))
    with pytest.raises(BundleError, match=r"sed_body.onnx: the graph does not match bundle.json:\n.*input 'log_mel' is missing"):
        Engine(bundle_copy, device="cpu", options=EngineOptions(calibrate=False))


def test_a_guide_body_whose_frames_do_not_fit_the_manifest_is_refused_at_session_time(tmp_path):
    from .conftest import make_guided_bundle

    guided = make_guided_bundle(default_bundle_path(), tmp_path / "guided", frames=16)  # the bundle's SED has 32
    load_bundle(guided)  # hashes and manifest are in order: the graph itself is what is wrong
    with pytest.raises(BundleError, match=r"sed_guide_body.onnx: the graph does not match bundle.json:\n.*frame_probs' axis 1 is 16"):
        Engine(guided, device="cpu", options=EngineOptions(calibrate=False))
