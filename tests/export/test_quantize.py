"""export.quantize: int8-weight SED graphs, verified against the float ones, in a bundle that loads and runs."""

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime.quantization")
onnx = pytest.importorskip("onnx")

from export.bundle import VerificationError  # noqa: E402
from export.quantize import quantize_bundle  # noqa: E402
from stream_s5 import Engine  # noqa: E402
from stream_s5.bundle import default_bundle_path, load_bundle  # noqa: E402
from stream_s5.sessions import SedModel  # noqa: E402
from stream_s5.synth.scenes import SceneConfig, generate_scene  # noqa: E402


@pytest.fixture(scope="module")
def quantised(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    manifest = quantize_bundle(None, out, scenes=2)
    return out, manifest


def test_the_sed_body_gets_int8_matmuls_and_the_rest_is_unchanged(quantised):
    out, manifest = quantised
    source = json.loads((default_bundle_path() / "bundle.json").read_text())
    ops = [node.op_type for node in onnx.load(out / "sed_body.onnx").graph.node]
    assert ops.count("MatMul") == 23  # 14 with weights, each now between Quantize/DequantizeLinear pairs
    assert ops.count("QuantizeLinear") >= 14 and ops.count("DequantizeLinear") >= 28
    assert manifest["files"]["sed_body.onnx"] != source["files"]["sed_body.onnx"]
    assert (out / "sed_body.onnx").stat().st_size < (default_bundle_path() / "sed_body.onnx").stat().st_size / 2
    for name in ("separator.onnx", "sed_front.onnx", "sed.onnx"):  # left float
        assert manifest["files"][name] == source["files"][name]
    assert manifest["tracker"] == source["tracker"]
    report = manifest["provenance"]["quantization"]
    graph = report["graphs"]["sed_body.onnx"]
    assert graph["quantised_matmuls"] == 14 and graph["batch_vs_rows_max_abs_diff"] == 0.0
    assert 0 < graph["abs_diff"]["frame_probs"]["max"] <= report["verification"]["atol"]
    assert graph["abs_diff"]["frame_probs"]["mean"] < 0.01


def test_quantised_bundle_streams_close_to_the_float_one(quantised):
    out, _ = quantised
    scene = generate_scene(SceneConfig(sr=16000, duration=4.0, channels=1), 7)
    x = scene.mixture[0]
    bundles = [load_bundle(None), load_bundle(out)]
    window, sed_hop = int(bundles[0].sed["window"]), int(bundles[0].sed["hop"])
    windows = np.stack([x[i : i + window] for i in range(0, len(x) - window + 1, sed_hop)])
    frames = [SedModel(b, ["CPUExecutionProvider"])(windows)[1] for b in bundles]
    gap = np.abs(frames[0] - frames[1])
    assert 0 < gap.max() < 0.1 and gap.mean() < 0.01  # the int8 graph ran, and stays close
    # each window alone gives what it gives in the batch: streams sharing a SED call do not affect each other
    model = SedModel(bundles[1], ["CPUExecutionProvider"])
    alone = np.concatenate([model(windows[i : i + 1])[1] for i in range(len(windows))])
    np.testing.assert_array_equal(alone, frames[1])
    # the whole runtime on it: split SED with the feature cache, tracker, separator
    engine = Engine(out, classes="auto", device="cpu")
    outs = [engine.feed(x[i : i + 1600]) for i in range(0, len(x), 1600)] + [engine.flush()]
    assert sum(o.length for o in outs) == len(x)
    assert all(np.isfinite(a).all() for o in outs for a in o.audio.values())


def test_refuses_a_quantised_bundle_and_an_unmet_tolerance(quantised, tmp_path):
    out, _ = quantised
    with pytest.raises(VerificationError, match="already quantised"):
        quantize_bundle(out, tmp_path / "again", scenes=1)
    with pytest.raises(VerificationError, match="differ from the float graph"):
        quantize_bundle(None, tmp_path / "strict", atol=1e-7, scenes=1)
    assert not (tmp_path / "strict").exists()  # nothing written when a check fails
