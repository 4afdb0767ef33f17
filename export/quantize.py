"""Quantise a bundle's SED to int8 weights (ONNX Runtime dynamic quantisation), verified against the float graphs.

    python -m export.quantize --model stream_s5/models/default --out runs/bundles/default_int8

The SED's transformer is mostly MatMul: with int8 weights (per output channel) and activations
quantised on the fly, ONNX Runtime runs those MatMuls with integer kernels (VNNI/AVX2 here), the SED
body about 1.5× faster on one core (docs/server.md). The front end (STFT + mel) and the separator stay
float: the front end has no weights worth quantising, and the separator is mostly a GRU, which dynamic
quantisation does not cover (its few MatMuls gain ~10 % for a 2–4 % error on the estimate, measured).

Nothing is written unless, on windows of synthetic scenes (the project's own generator; targets,
interferers, noise, silence) and on random noise, the quantised SED's clip and frame probabilities stay
within `--atol` of the float graph's, and the graphs still pass the bundle checks (ONNX checker, no
control flow). The new bundle keeps the source's manifest (tracker settings included); its `files` carry
the new hashes and `provenance.quantization` says what was done and what was measured.
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
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from export.bundle import FORBIDDEN_OPS, VerificationError, sha256
from stream_s5.bundle import graph_names, load_bundle, resolve_bundle_path, validate_manifest
from stream_s5.synth.scenes import SceneConfig, generate_scene

__all__ = ["quantize_bundle", "QUANTISED_GRAPHS"]

QUANTISED_GRAPHS = ("sed", "sed_body")  # graph keys (bundle.graph_names); both hold the transformer
# Probability units. Measured on the default bundle: mean difference ~0.001, p99 ~0.02, worst window
# ~0.05; a graph quantised wrongly differs by far more. Whether the small differences matter is decided
# end to end (stream-s5 eval on the real and synthetic sets, docs/evaluation.md), not here.
DEFAULT_ATOL = 0.1


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _quantise_graph(src: Path, dst: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference + constant folding first, so that every MatMul's weight is a plain initializer
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        # reduce_range: 7-bit weights, so that the u8×s8 products cannot saturate on x86 CPUs without VNNI
        # (same results on every machine; measured no slower here)
        quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul"])
    model = onnx.load(dst)
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({node.op_type for node in model.graph.node})
    if FORBIDDEN_OPS.intersection(ops):
        raise VerificationError(f"{dst.name} contains control-flow ops {sorted(FORBIDDEN_OPS.intersection(ops))}")
    integer = sum(node.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for node in model.graph.node)
    if not integer:
        raise VerificationError(f"{dst.name}: nothing was quantised (no MatMul with a constant weight)")
    return {"bytes_before": src.stat().st_size, "bytes_after": dst.stat().st_size, "integer_nodes": integer}


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


def _sed_outputs(bundle_dir: Path, names: dict, key: str, windows: np.ndarray, front: ort.InferenceSession,
                 context: int) -> list[np.ndarray]:
    session = _session(bundle_dir / names[key])
    if key == "sed":
        return session.run(None, {"audio": windows})[:2]
    padded = np.concatenate([np.zeros((len(windows), context), np.float32), windows], axis=1)
    log_mel = front.run(None, {"audio": padded})[0]
    return session.run(None, {"log_mel": log_mel})[:2]


def quantize_bundle(model, out, atol: float = DEFAULT_ATOL, scenes: int = 6) -> dict:
    """Write a copy of bundle `model` with int8-weight SED graphs to `out` → its manifest."""
    source = load_bundle(model)  # verifies the source's hashes
    src_dir = resolve_bundle_path(model)
    manifest = json.loads(json.dumps(source.manifest))
    names = graph_names(manifest)
    keys = [k for k in QUANTISED_GRAPHS if k in names]
    if manifest.get("provenance", {}).get("quantization"):
        raise VerificationError(f"{src_dir}: already quantised")
    windows = verification_windows(source, scenes)
    front_end = manifest["sed"].get("front_end")
    front = _session(src_dir / names["sed_front"]) if front_end else None
    context = int(front_end["context"]) if front_end else 0
    report = {"method": "onnxruntime dynamic quantisation: MatMul weights int8 (7-bit range) per output "
                        "channel, activations uint8 per call", "onnxruntime": ort.__version__, "graphs": {},
              "verification": {"windows": int(len(windows)), "atol": atol}}
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        for name in manifest["files"]:
            shutil.copyfile(src_dir / name, staging / name)
        for key in keys:
            report["graphs"][names[key]] = _quantise_graph(src_dir / names[key], staging / names[key])
            ref = _sed_outputs(src_dir, names, key, windows, front, context)
            got = _sed_outputs(staging, names, key, windows, front, context)
            gaps = {what: np.abs(r - g) for what, r, g in zip(("clip_probs", "frame_probs"), ref, got)}
            diff = {what: float(gap.max()) for what, gap in gaps.items()}
            report["graphs"][names[key]]["abs_diff"] = {
                what: {"max": float(f"{gap.max():.3e}"), "p99": float(f"{np.quantile(gap, 0.99):.3e}"),
                       "mean": float(f"{gap.mean():.3e}")} for what, gap in gaps.items()}
            worst = max(diff.values())
            if not np.isfinite(worst) or worst > atol:
                raise VerificationError(f"{names[key]}: the int8 graph's probabilities differ from the float graph's "
                                        f"by {worst:.3g} (> {atol})")
        manifest["files"] = {name: sha256(staging / name) for name in manifest["files"]}
        manifest.setdefault("provenance", {})["quantization"] = {
            **report, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "source": str(src_dir)}
        problems = validate_manifest(manifest)
        if problems:
            raise VerificationError("the quantised manifest is invalid: " + "; ".join(problems))
        (staging / "bundle.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in (*manifest["files"], "bundle.json"):
            shutil.copyfile(staging / name, out / name)
    load_bundle(out)  # the written bundle loads and its hashes hold
    return manifest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="source bundle (folder or shipped name; default: the default bundle)")
    p.add_argument("--out", required=True, help="folder for the quantised bundle (may equal --model to replace it)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="largest probability difference accepted")
    p.add_argument("--scenes", type=int, default=6, help="synthetic scenes whose windows verify the graphs")
    args = p.parse_args(argv)
    manifest = quantize_bundle(args.model, args.out, args.atol, args.scenes)
    print(json.dumps(manifest["provenance"]["quantization"]["graphs"], indent=1))
    print(f"bundle written to {args.out}")


if __name__ == "__main__":
    main()
