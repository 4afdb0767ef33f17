"""Export a checkpoint to a verified model bundle (ONNX graphs + bundle.json).

    python -m export.bundle --checkpoint runs/full/checkpoint.pt --out stream_s5/models/default

Nothing is written unless every check passes:
1. `onnx.checker.check_model(full_check=True)` on both graphs, and no control-flow ops (Loop/Scan/If);
2. ONNX Runtime equals torch (allclose) on random inputs, for several batch and frame counts;
3. stepping the separator graph frame by frame, K chained passes with per-pass state carried
   through the graph's state outputs, equals the offline torch model run over the whole sequence.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.models import (ModelConfig, SedBodyExport, SedEnsemble, SedExport, SedFrontEnd, SedNet, SeparatorNet,
                           ensemble_class_weights, ensemble_weights, mixture_stft)
from stream_s5.bundle import BundleError, load_bundle
from stream_s5.labels import CLASSES
from stream_s5.tracker import TrackerOptions

BUNDLE_FORMAT = "stream_s5.bundle/1"
OPSET = 17
FORBIDDEN_OPS = {"Loop", "Scan", "If"}
SEP_INPUTS = ["mix", "prev", "class_onehot", "activity", "pass_index", "state_in"]
SEP_OUTPUTS = ["est", "state_out"]
GRAPH_FILES = ("sed.onnx", "sed_front.onnx", "sed_body.onnx", "separator.onnx")
GUIDE_FILE = "sed_guide_body.onnx"  # optional: a second SED body whose frames guide the separator
FRONT_END_FIELDS = ("sample_rate", "window", "n_fft", "win_length", "mel_hop", "n_mels", "fmax", "patch_frames", "n_classes")


class VerificationError(RuntimeError):
    pass


def load_checkpoint(path) -> tuple[ModelConfig, SedNet, SeparatorNet, dict]:
    state = torch.load(path, weights_only=True, map_location="cpu")  # checkpoints from a GPU run export here too
    cfg = ModelConfig.from_dict(json.loads(state["config_json"]))
    sed, sep = SedNet(cfg.sed), SeparatorNet(cfg.separator)
    sed.load_state_dict(state["sed"])
    sep.load_state_dict(state["separator"])
    recipe = json.loads(state.get("recipe_json", "{}"))
    recipe.update(step=int(state["step"]), train_minutes=round(float(state["elapsed_s"]) / 60, 1))
    return cfg, sed.eval(), sep.eval(), recipe


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: graph-optimiser notes are not findings of the checks
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_graphs(cfg: ModelConfig, sed: SedNet, sep: SeparatorNet, folder: Path):
    sed.eval(), sep.eval()
    sep_cfg = sep.cfg
    batch, frames = 2, 3
    example = (
        torch.randn(batch, frames, sep_cfg.channels, 2, sep_cfg.n_freq),
        torch.randn(batch, frames, 2, sep_cfg.n_freq),
        torch.eye(len(CLASSES))[:batch],
        torch.rand(batch, frames),
        torch.zeros(batch, dtype=torch.long),
        torch.zeros(batch, *sep_cfg.state_shape),
    )
    dyn = {"mix": {0: "B", 1: "T"}, "prev": {0: "B", 1: "T"}, "class_onehot": {0: "B"}, "activity": {0: "B", 1: "T"},
           "pass_index": {0: "B"}, "state_in": {0: "B"}, "est": {0: "B", 1: "T"}, "state_out": {0: "B"}}
    # The fused fast path of nn.TransformerEncoder in eval mode traces into a wrong graph: export the
    # plain path (numerically identical in torch, checked below against ONNX Runtime).
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(sep, example, folder / "separator.onnx", input_names=SEP_INPUTS, output_names=SEP_OUTPUTS,
                          dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
        torch.onnx.export(SedExport(sed), (torch.randn(batch, cfg.sed.window),), folder / "sed.onnx",
                          input_names=["audio"], output_names=["clip_probs", "frame_probs", "class_embeddings"],
                          dynamic_axes={"audio": {0: "B"}, "clip_probs": {0: "B"}, "frame_probs": {0: "B"},
                                        "class_embeddings": {0: "B"}},
                          opset_version=OPSET, dynamo=False)
        # the same SED split at its log-mel features, for the runtime's per-stream feature cache
        front = SedFrontEnd(sed)
        torch.onnx.export(front, (torch.randn(batch, front.context + 8 * front.hop),), folder / "sed_front.onnx",
                          input_names=["audio"], output_names=["log_mel"],
                          dynamic_axes={"audio": {0: "B", 1: "L"}, "log_mel": {0: "B", 2: "N"}},
                          opset_version=OPSET, dynamo=False)
        export_sed_body(cfg, sed, folder / "sed_body.onnx")
    torch.backends.mha.set_fastpath_enabled(fastpath)


def export_sed_body(cfg: ModelConfig, sed: SedNet, path: Path) -> None:
    """A SED body graph: log-mel [B, n_mels, n_frames] → probabilities (the detector's or a guide's),
    traced on the transformer's plain path (see export_graphs)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SedBodyExport(sed.eval()), (torch.randn(2, cfg.sed.n_mels, cfg.sed.n_frames),), path,
                          input_names=["log_mel"], output_names=["clip_probs", "frame_probs", "class_embeddings"],
                          dynamic_axes={"log_mel": {0: "B"}, "clip_probs": {0: "B"}, "frame_probs": {0: "B"},
                                        "class_embeddings": {0: "B"}},
                          opset_version=OPSET, dynamo=False)
    torch.backends.mha.set_fastpath_enabled(fastpath)


def check_same_front_end(sed: SedNet, guide: SedNet, what: str = "the guide SED") -> None:
    """A guide body (or a detector ensemble's member) reads the detector's log-mel features (both SEDs
    must compute the same ones) and gives frames at the same rate for the same classes."""
    differ = [name for name in FRONT_END_FIELDS
              if getattr(sed.cfg, name, None) != getattr(guide.cfg, name, None)]
    if differ or not torch.equal(sed.mel, guide.mel) or not torch.equal(sed.stft_window, guide.stft_window):
        raise VerificationError(f"{what}'s front end differs from the detector's "
                                f"({', '.join(differ) or 'mel filterbank or window'}): it cannot share its features")


def verify_guide(cfg: ModelConfig, sed: SedNet, guide: SedNet, folder: Path, seed: int = 0, atol: float = 1e-4) -> float:
    """The guide body on the detector's exported front end equals the guide SED in torch."""
    rng = torch.Generator().manual_seed(seed)
    front_session, guide_session = _session(folder / "sed_front.onnx"), _session(folder / GUIDE_FILE)
    front = SedFrontEnd(sed)
    worst = 0.0
    with torch.no_grad():
        for batch in (1, 3):
            audio = torch.randn(batch, cfg.sed.window, generator=rng) * 0.1
            ref = SedExport(guide)(audio)
            log_mel = front_session.run(None, {"audio": torch.nn.functional.pad(audio, (front.context, 0)).numpy()})[0]
            for r, g in zip(ref, guide_session.run(None, {"log_mel": log_mel})):
                worst = max(worst, float(np.abs(r.numpy() - g).max()))
    if worst > atol:
        raise VerificationError(f"sed_guide: ONNX Runtime differs from torch by {worst:.2e} (> {atol:.0e})")
    return float(f"{worst:.3e}")


def check_graphs(folder: Path, names=GRAPH_FILES) -> dict:
    report = {}
    for name in names:
        model = onnx.load(folder / name)
        onnx.checker.check_model(model, full_check=True)
        ops = sorted({node.op_type for node in model.graph.node})
        bad = FORBIDDEN_OPS.intersection(ops)
        if bad:
            raise VerificationError(f"{name} contains control-flow ops {sorted(bad)}")
        report[name] = {"ops": ops, "nodes": len(model.graph.node)}
    return report


def verify_against_torch(cfg: ModelConfig, sed: SedNet, sep: SeparatorNet, folder: Path, seed: int = 0,
                         atol: float = 1e-4) -> dict:
    rng = torch.Generator().manual_seed(seed)
    sed_session, sep_session = _session(folder / "sed.onnx"), _session(folder / "separator.onnx")
    front_session, body_session = _session(folder / "sed_front.onnx"), _session(folder / "sed_body.onnx")
    front = SedFrontEnd(sed)
    worst = {"sed": 0.0, "sed_split": 0.0, "sed_front": 0.0, "separator": 0.0, "streaming": 0.0}
    with torch.no_grad():
        for batch in (1, 3):
            audio = torch.randn(batch, cfg.sed.window, generator=rng) * 0.1
            ref = SedExport(sed)(audio)
            got = sed_session.run(None, {"audio": audio.numpy()})
            for r, g in zip(ref, got):
                worst["sed"] = max(worst["sed"], float(np.abs(r.numpy() - g).max()))
            # split graphs: front end over the left-padded window, then the body
            padded = torch.nn.functional.pad(audio, (front.context, 0)).numpy()
            log_mel = front_session.run(None, {"audio": padded})[0]
            worst["sed_front"] = max(worst["sed_front"], float(np.abs(sed.log_mel(audio).numpy() - log_mel).max()))
            for r, g in zip(ref, body_session.run(None, {"log_mel": log_mel})):
                worst["sed_split"] = max(worst["sed_split"], float(np.abs(r.numpy() - g).max()))

        sc = sep.cfg
        for batch, frames in ((1, 1), (3, 7)):
            feeds = {
                "mix": torch.randn(batch, frames, sc.channels, 2, sc.n_freq, generator=rng),
                "prev": torch.randn(batch, frames, 2, sc.n_freq, generator=rng),
                "class_onehot": torch.eye(len(CLASSES))[:batch],
                "activity": torch.rand(batch, frames, generator=rng),
                "pass_index": torch.arange(batch) % sc.max_passes,
                "state_in": torch.randn(batch, *sc.state_shape, generator=rng) * 0.5,
            }
            ref = sep(*feeds.values())
            got = sep_session.run(None, {k: v.numpy() for k, v in feeds.items()})
            for r, g in zip(ref, got):
                worst["separator"] = max(worst["separator"], float(np.abs(r.numpy() - g).max()))

        # Streaming equals offline: 0.5 s of audio, frame-by-frame graph steps vs whole-sequence torch.
        audio = torch.randn(2, sc.channels, sc.sample_rate // 2, generator=rng) * 0.1
        spec = mixture_stft(audio, sc.n_fft, sc.hop)
        onehot = torch.eye(len(CLASSES))[[3, 15]]
        activity = torch.rand(2, spec.shape[1], generator=rng)
        passes = sc.max_passes
        offline = sep.refine(spec, onehot, activity, passes)[-1].numpy()
        states = [np.zeros((2, *sc.state_shape), np.float32) for _ in range(passes)]
        streamed = np.zeros_like(offline)
        for t in range(spec.shape[1]):
            prev = np.zeros((2, 1, 2, sc.n_freq), np.float32)
            for k in range(passes):
                est, states[k] = sep_session.run(None, {
                    "mix": spec[:, t : t + 1].numpy(), "prev": prev, "class_onehot": onehot.numpy(),
                    "activity": activity[:, t : t + 1].numpy(), "pass_index": np.full(2, k, np.int64),
                    "state_in": states[k]})
                prev = est
            streamed[:, t] = prev[:, 0]
        scale = float(np.abs(offline).max()) + 1e-9
        worst["streaming"] = float(np.abs(offline - streamed).max()) / scale
    tolerance = {"sed_front": 1e-3}  # log-mel: log(power + 1e-6) magnifies float noise in near-silent bins
    for key, value in worst.items():
        limit = tolerance.get(key, atol)
        if value > limit:
            raise VerificationError(f"{key}: ONNX Runtime differs from torch by {value:.2e} (> {limit:.0e})")
    return {k: float(f"{v:.3e}") for k, v in worst.items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundle_manifest(cfg: ModelConfig, recipe: dict, passes: int, slots: int, checks: dict, folder: Path,
                    metrics: dict | None = None, files=GRAPH_FILES, guide_detects=()) -> dict:
    """files: the graph files written to `folder` (GRAPH_FILES, plus GUIDE_FILE for a guided bundle);
    guide_detects: classes the guide body decides as well as guides."""
    sc, sd = cfg.separator, cfg.sed
    front_end = {"file": "sed_front.onnx", "body": "sed_body.onnx", "mel_hop": sd.mel_hop,
                 "context": sd.n_fft - sd.mel_hop, "n_mels": sd.n_mels, "mel_frames": sd.n_frames}
    if GUIDE_FILE in files:
        front_end["guide_body"] = GUIDE_FILE
        if guide_detects:
            front_end["guide_detects"] = list(guide_detects)
    return {
        "format": BUNDLE_FORMAT,
        "sample_rate": sc.sample_rate,
        "channels": sc.channels,
        "classes": list(CLASSES),
        "separator": {
            "file": "separator.onnx",
            "n_fft": sc.n_fft, "hop": sc.hop, "window": "sqrt_hann",
            "lookahead": 0,
            "algorithmic_latency": sc.n_fft,
            "class_slots": slots, "passes": passes, "max_passes": sc.max_passes,
            "guidance": sc.guidance,
            "inputs": {
                "mix": ["B", "T", sc.channels, 2, sc.n_freq], "prev": ["B", "T", 2, sc.n_freq],
                "class_onehot": ["B", len(CLASSES)], "activity": ["B", "T"], "pass_index": ["B"],
                "state_in": ["B", *sc.state_shape],
            },
            "outputs": {"est": ["B", "T", 2, sc.n_freq], "state_out": ["B", *sc.state_shape]},
            "state": [{"input": "state_in", "output": "state_out", "shape": list(sc.state_shape),
                       "per": "slot and refinement pass"}],
        },
        "sed": {
            "file": "sed.onnx",
            "window": sd.window, "hop": sd.frame_hop * 2,
            "frames": sd.n_patches, "frame_hop": sd.frame_hop,
            "inputs": {"audio": ["B", sd.window]},
            "outputs": {"clip_probs": ["B", len(CLASSES)], "frame_probs": ["B", sd.n_patches, len(CLASSES)],
                        "class_embeddings": ["B", len(CLASSES), sd.dim]},
            # the same SED in two graphs: the runtime computes each stream's new log-mel frames only
            "front_end": front_end,
        },
        # event tracker settings; export/tune_tracker.py replaces them by values tuned on validation scenes
        "tracker": TrackerOptions().to_manifest(),
        "budget_ms": round(1000.0 * sc.hop / sc.sample_rate, 3),
        "files": {name: sha256(folder / name) for name in files},
        "provenance": {
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "recipe": recipe, "model_config": cfg.to_dict(), "verification": checks, "metrics": metrics or {},
        },
    }


def export_bundle(checkpoint, out, passes: int = 2, slots: int = 3, metrics: dict | None = None,
                  sed_checkpoint=None, guide_checkpoint=None, guide_detects=(), sed_weights=None,
                  sed_class_weights=None) -> dict:
    """sed_checkpoint: take the SED from another run (ablations that change only the separator); a list of
    two or more: the detector is their mean (SedEnsemble), weighted by sed_weights if given, and for the
    classes in sed_class_weights ({class: weights}) by those.
    guide_checkpoint: a second run's SED becomes the guide body — its frame probabilities condition
    the separator, the first SED's decide the classes (sed.front_end.guide_body), except those in
    guide_detects, which the guide body decides too (sed.front_end.guide_detects)."""
    guide_detects = list(dict.fromkeys(guide_detects))  # named twice is named once
    unknown = [c for c in guide_detects if c not in CLASSES]
    if unknown:
        raise VerificationError(f"--guide-detects: {', '.join(unknown)} not among the classes ({', '.join(CLASSES)})")
    if guide_detects and guide_checkpoint is None:
        raise VerificationError("--guide-detects needs --guide-sed-from (the guide body that decides those classes)")
    cfg, sed, sep, recipe = load_checkpoint(checkpoint)
    sed_checkpoints = [sed_checkpoint] if isinstance(sed_checkpoint, (str, Path)) else list(sed_checkpoint or ())
    if sed_weights is not None:  # checked before any checkpoint is read
        try:
            ensemble_weights(sed_weights, len(sed_checkpoints))
        except ValueError as exc:
            raise VerificationError(f"--sed-weights (one per --sed-from): {exc}") from None
    if sed_class_weights:
        try:
            ensemble_class_weights(sed_class_weights, len(sed_checkpoints), list(CLASSES))
        except ValueError as exc:
            raise VerificationError(f"--sed-class-weights (one weight per --sed-from): {exc}") from None
    if len(sed_checkpoints) == 1:
        sed_cfg, sed, _, sed_recipe = load_checkpoint(sed_checkpoints[0])
        cfg.sed = sed_cfg.sed
        recipe = {**recipe, "sed_from": {"checkpoint": str(sed_checkpoints[0]), **sed_recipe}}
    elif sed_checkpoints:
        # the detector is the mean of several SEDs (one graph); the first gives the front end and config
        loaded = [load_checkpoint(path) for path in sed_checkpoints]
        for path, (_, member, _, _) in zip(sed_checkpoints[1:], loaded[1:]):
            check_same_front_end(loaded[0][1], member, f"the SED of {path}")
        cfg.sed = loaded[0][0].sed
        sed = SedEnsemble([member for _, member, _, _ in loaded], sed_weights, sed_class_weights, list(CLASSES))
        recipe = {**recipe, "sed_from": {"ensemble": [{"checkpoint": str(path), "weight": weight, **member_recipe}
                                                      for path, weight, (_, _, _, member_recipe)
                                                      in zip(sed_checkpoints, sed.weights, loaded)]}}
        if sed.class_weights:
            recipe["sed_from"]["class_weights"] = sed.class_weights
    guide = None
    if guide_checkpoint is not None:
        _, guide, _, guide_recipe = load_checkpoint(guide_checkpoint)
        check_same_front_end(sed, guide)
        recipe = {**recipe, "guide_sed_from": {"checkpoint": str(guide_checkpoint), **guide_recipe}}
    if not 1 <= passes <= cfg.separator.max_passes:
        raise ValueError(f"passes must be in 1..{cfg.separator.max_passes}")
    out = Path(out)
    files = (*GRAPH_FILES, GUIDE_FILE) if guide is not None else GRAPH_FILES
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        export_graphs(cfg, sed, sep, staging)
        if guide is not None:
            export_sed_body(cfg, guide, staging / GUIDE_FILE)
        checks = {"graphs": check_graphs(staging, files), "max_abs_diff": verify_against_torch(cfg, sed, sep, staging)}
        if guide is not None:
            checks["max_abs_diff"]["sed_guide"] = verify_guide(cfg, sed, guide, staging)
        manifest = bundle_manifest(cfg, recipe, passes, slots, checks, staging, metrics, files, guide_detects)
        (staging / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
        load_bundle(staging)  # the runtime's own checks (schema, rules, hashes) before anything reaches `out`
        out.mkdir(parents=True, exist_ok=True)
        stale = out / GUIDE_FILE
        if guide is None and stale.exists():
            stale.unlink()  # an earlier guided export into this folder: not part of this bundle
        for name in (*files, "bundle.json"):
            shutil.copyfile(staging / name, out / name)
    return manifest


def parse_class_weights(entries: list[str] | None) -> dict[str, list[float]] | None:
    """--sed-class-weights' CLASS=W1,W2 entries as {class: [w1, w2]}, or a VerificationError naming the entry."""
    if not entries:
        return None
    parsed = {}
    for entry in entries:
        name, sep, values = entry.partition("=")
        try:
            if not sep or name in parsed:
                raise ValueError
            parsed[name] = [float(v) for v in values.split(",")]
        except ValueError:
            raise VerificationError(f"--sed-class-weights: {entry!r} is not CLASS=W1,W2,... (each class once)") from None
    return parsed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--passes", type=int, default=2, help="refinement passes the bundle runs per block")
    p.add_argument("--slots", type=int, default=3, help="separator class slots")
    p.add_argument("--sed-from", action="append", default=None,
                   help="take the SED from this checkpoint instead; given more than once, the detector is the "
                        "mean of those SEDs' probabilities (one graph; they must share the front end)")
    p.add_argument("--sed-weights", type=float, nargs="+", default=None,
                   help="with --sed-from given N times: N weights of that mean (normalised; default equal)")
    p.add_argument("--sed-class-weights", nargs="+", default=None, metavar="CLASS=W1,W2",
                   help="with --sed-from given N times: N weights for one class, overriding --sed-weights for it "
                        "(e.g. Buzzer=1,0: only the first SED decides Buzzer)")
    p.add_argument("--guide-sed-from", default=None,
                   help="add this checkpoint's SED as the guide body: its frame probabilities condition the "
                        "separator, the first SED's decide the classes")
    p.add_argument("--guide-detects", nargs="+", default=(), metavar="CLASS",
                   help="classes the guide body decides as well (its clip and frame probabilities replace the "
                        "first SED's for them); needs --guide-sed-from")
    args = p.parse_args(argv)
    try:
        class_weights = parse_class_weights(args.sed_class_weights)
        manifest = export_bundle(args.checkpoint, args.out, args.passes, args.slots, sed_checkpoint=args.sed_from,
                                 guide_checkpoint=args.guide_sed_from, guide_detects=args.guide_detects,
                                 sed_weights=args.sed_weights, sed_class_weights=class_weights)
    except (VerificationError, BundleError) as exc:  # BundleError: the runtime's own checks refused the staged bundle
        p.exit(2, f"export.bundle: nothing written: {exc}\n")
    print(json.dumps(manifest["provenance"]["verification"]["max_abs_diff"]))
    print(f"bundle written to {args.out}")


if __name__ == "__main__":
    main()
