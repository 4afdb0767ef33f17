"""Quantise a bundle's SED body to int8 (ONNX Runtime static quantisation), verified against the float graph.

    python -m export.quantize --model stream_s5/models/default --out runs/bundles/default_int8

The SED's transformer is mostly MatMul. Its 14 MatMuls with a weight (patch embedding, attention
projections, feed-forward, the class-token heads) get int8 weights per output channel and uint8
activations with scales fixed by calibration on windows of synthetic scenes (the project's generator;
MinMax), in QDQ form; ONNX Runtime runs them with integer kernels. The attention's activation×activation
MatMuls, the front end (STFT + mel), the single `sed.onnx` graph (the float reference, and what runs a
bundle without the split) and the separator stay float: the separator is mostly a GRU, which ONNX
Runtime's quantisers do not cover (its few MatMuls gained ~10 % for a 2–4 % error, measured).

Static, not dynamic, quantisation: dynamic quantisation scales activations by the min/max of the whole
input tensor, the batch included, so that one stream's SED probabilities would depend on which other
streams share its batch (measured: a server stream's event peaks then differ from a local run's). With
fixed scales every window is computed on its own, as in float: checked here, batch against row by row.

Nothing is written unless, on other synthetic-scene windows (and silence and noise), the int8 body's clip
and frame probabilities stay within `--atol` of the float body's, a batch equals its rows one by one, and
the graph passes the bundle checks (ONNX checker, no control flow). The new bundle keeps the source's
manifest (tracker settings included); `files` carries the new hash and `provenance.quantization` says what
was done and measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from export.bundle import VerificationError, _session, check_graphs, sha256
from stream_s5.bundle import graph_names, load_bundle, resolve_bundle_path, validate_manifest
from stream_s5.synth.scenes import SceneConfig, generate_scene

__all__ = ["quantize_bundle", "QUANTISED_GRAPH"]

QUANTISED_GRAPH = "sed_body"  # graph key (bundle.graph_names)
# Probability units. Measured on the default bundle: mean difference ~0.001, p99 ~0.015, worst window
# ~0.05; a graph quantised wrongly differs by far more. Whether the small differences matter is decided
# end to end (stream-s5 eval on the real and synthetic sets, docs/evaluation.md), not here.
DEFAULT_ATOL = 0.1


class _Windows(CalibrationDataReader):
    def __init__(self, log_mel: np.ndarray, batch: int = 8):
        self._feeds = iter([{"log_mel": log_mel[i : i + batch]} for i in range(0, len(log_mel) - batch + 1, batch)])

    def get_next(self):
        return next(self._feeds, None)


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose second input is a constant weight."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for node in model.graph.node if node.op_type == "Constant" for o in node.output}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in constants]


def _quantise_graph(src: Path, dst: Path, calibration: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference + constant folding first, so that every MatMul's weight is a plain initializer
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        nodes = weight_matmuls(onnx.load(prepared))
        if not nodes:
            raise VerificationError(f"{src.name}: nothing to quantise (no MatMul with a constant weight)")
        # reduce_range: 7-bit weights, so that the u8×s8 products cannot saturate on x86 CPUs without VNNI
        # (measured no slower here)
        quantize_static(str(prepared), str(dst), _Windows(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return {"bytes_before": src.stat().st_size, "bytes_after": dst.stat().st_size, "quantised_matmuls": len(nodes),
            "calibration_windows": int(len(calibration))}


def verification_windows(bundle, scenes: int = 6, seed: int = 0) -> np.ndarray:
    """SED windows [N, window] from synthetic scenes at the bundle's rate (reference channel), plus a
    silent window and two of random noise at different levels."""
    window, rate = int(bundle.sed["window"]), int(bundle.sample_rate)
    cfg = SceneConfig(sr=rate, duration=max(4.0, 2 * window / rate), channels=1)
    out = []
    for index in range(scenes):
        mixture = np.asarray(generate_scene(cfg, seed + index).mixture, np.float32).reshape(-1)
        for start in (0, len(mixture) - window, (len(mixture) - window) // 2):
            out.append(mixture[start : start + window])
    rng = np.random.default_rng(seed)
    out += [np.zeros(window, np.float32), rng.standard_normal(window).astype(np.float32) * 0.3,
            rng.standard_normal(window).astype(np.float32) * 1e-3]
    return np.stack(out).astype(np.float32)


def _log_mel(front: ort.InferenceSession, windows: np.ndarray, context: int) -> np.ndarray:
    padded = np.concatenate([np.zeros((len(windows), context), np.float32), windows], axis=1)
    return front.run(None, {"audio": padded})[0]


def quantize_bundle(model, out, atol: float = DEFAULT_ATOL, scenes: int = 6, calibration_scenes: int = 24) -> dict:
    """Write a copy of bundle `model` with an int8 SED body to `out` → its manifest."""
    source = load_bundle(model)  # verifies the source's hashes
    src_dir = resolve_bundle_path(model)
    manifest = json.loads(json.dumps(source.manifest))
    if manifest.get("provenance", {}).get("quantization"):
        raise VerificationError(f"{src_dir}: already quantised")
    front_end = manifest["sed"].get("front_end")
    if front_end is None:
        raise VerificationError(f"{src_dir}: the bundle's SED is a single graph (export it split: python -m export.bundle)")
    names = graph_names(manifest)
    front = _session(src_dir / names["sed_front"])
    context = int(front_end["context"])
    # calibration and verification on different scenes (seeds 10_000 + i against i)
    calibration = _log_mel(front, verification_windows(source, calibration_scenes, seed=10_000), context)
    log_mel = _log_mel(front, verification_windows(source, scenes), context)
    name = names[QUANTISED_GRAPH]
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        for file in manifest["files"]:
            shutil.copyfile(src_dir / file, staging / file)
        graph = _quantise_graph(src_dir / name, staging / name, calibration)
        check_graphs(staging)  # the bundle's graph checks: ONNX checker (full), no control-flow ops
        ref = _session(src_dir / name).run(None, {"log_mel": log_mel})[:2]
        int8 = _session(staging / name)
        got = int8.run(None, {"log_mel": log_mel})[:2]
        gaps = {what: np.abs(r - g) for what, r, g in zip(("clip_probs", "frame_probs"), ref, got)}
        graph["abs_diff"] = {what: {"max": float(f"{gap.max():.3e}"), "p99": float(f"{np.quantile(gap, 0.99):.3e}"),
                                    "mean": float(f"{gap.mean():.3e}")} for what, gap in gaps.items()}
        worst = max(float(gap.max()) for gap in gaps.values())
        if not np.isfinite(worst) or worst > atol:
            raise VerificationError(f"{name}: the int8 graph's probabilities differ from the float graph's by "
                                    f"{worst:.3g} (> {atol})")
        # a window's result must not depend on the other windows of its batch (streams sharing a SED call)
        rows = np.concatenate([int8.run(None, {"log_mel": log_mel[i : i + 1]})[1] for i in range(len(log_mel))])
        batch_gap = float(np.abs(rows - got[1]).max())
        if batch_gap > 1e-5:
            raise VerificationError(f"{name}: a window's int8 result depends on its batch (by {batch_gap:.3g})")
        graph["batch_vs_rows_max_abs_diff"] = batch_gap
        manifest["files"] = {file: sha256(staging / file) for file in manifest["files"]}
        manifest.setdefault("provenance", {})["quantization"] = {
            "method": "onnxruntime static quantisation (QDQ): weight MatMuls int8 per output channel (7-bit range), "
                      "activations uint8 with MinMax-calibrated scales", "onnxruntime": ort.__version__,
            "graphs": {name: graph}, "float": sorted(set(manifest["files"]) - {name}),
            "verification": {"windows": int(len(log_mel)), "atol": atol},
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "source": str(src_dir)}
        problems = validate_manifest(manifest)
        if problems:
            raise VerificationError("the quantised manifest is invalid: " + "; ".join(problems))
        (staging / "bundle.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for file in (*manifest["files"], "bundle.json"):
            shutil.copyfile(staging / file, out / file)
    load_bundle(out)  # the written bundle loads and its hashes hold
    return manifest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="source bundle (folder or shipped name; default: the default bundle)")
    p.add_argument("--out", required=True, help="folder for the quantised bundle (may equal --model to replace it)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="largest probability difference accepted")
    p.add_argument("--scenes", type=int, default=6, help="synthetic scenes whose windows verify the graph")
    p.add_argument("--calibration-scenes", type=int, default=24, help="synthetic scenes whose windows set the scales")
    args = p.parse_args(argv)
    manifest = quantize_bundle(args.model, args.out, args.atol, args.scenes, args.calibration_scenes)
    print(json.dumps(manifest["provenance"]["quantization"]["graphs"], indent=1))
    print(f"bundle written to {args.out}")


if __name__ == "__main__":
    main()
