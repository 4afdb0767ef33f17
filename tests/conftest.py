"""Shared fixtures. `toy_bundle` is a hand-built bundle (onnx.helper, no torch, no training) whose
graphs have exactly known behaviour, so that engine tests can check alignment, latency, state
carrying and backfill to the sample:
- SED: class 0 ("AlarmClock") frame probability = sigmoid(gain * (frame mean power - threshold)),
  every other class 0; clip probability = max over frames.
- separator: est = mixture (reference channel) + 0 * prev, state_out = state_in + 1.
`make_guided_bundle` gives a split bundle a hand-built guide body (known values for any input);
`make_unguided_bundle` takes a bundle's guide body away.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from stream_s5.labels import CLASSES

RATE, N_FFT, HOP = 16000, 256, 128
SED_WINDOW, SED_HOP, FRAME_HOP = 20480, 1280, 640
STATE = (1, 4)


def _toy_graphs(folder: Path, channels: int = 1):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    n_freq = N_FFT // 2 + 1
    frames = SED_WINDOW // FRAME_HOP
    c = len(CLASSES)

    def const(name, array):
        return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(array), name))

    sed_nodes = [
        const("shape_frames", np.array([0, frames, FRAME_HOP], np.int64)),
        helper.make_node("Reshape", ["audio", "shape_frames"], ["framed"]),
        helper.make_node("Mul", ["framed", "framed"], ["power"]),
        const("axes2", np.array([2], np.int64)),
        helper.make_node("ReduceMean", ["power"], ["mean_power"], axes=[2], keepdims=1),  # [B, frames, 1]
        const("threshold", np.array(1e-3, np.float32)),
        const("gain", np.array(1e4, np.float32)),
        helper.make_node("Sub", ["mean_power", "threshold"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p0"]),
        const("zero", np.array(0.0, np.float32)),
        helper.make_node("Mul", ["mean_power", "zero"], ["zcol"]),
        const("tile_rest", np.array([1, 1, c - 1], np.int64)),
        helper.make_node("Tile", ["zcol", "tile_rest"], ["rest"]),
        helper.make_node("Concat", ["p0", "rest"], ["frame_probs"], axis=2),
        helper.make_node("ReduceMax", ["frame_probs"], ["clip_probs"], axes=[1], keepdims=0),
        helper.make_node("Unsqueeze", ["clip_probs", "axes2"], ["clip3"]),
        const("tile_emb", np.array([1, 1, 8], np.int64)),
        helper.make_node("Tile", ["clip3", "tile_emb"], ["class_embeddings"]),
    ]
    sed = helper.make_graph(
        sed_nodes, "toy_sed", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["B", SED_WINDOW])],
        [helper.make_tensor_value_info("clip_probs", TensorProto.FLOAT, ["B", c]),
         helper.make_tensor_value_info("frame_probs", TensorProto.FLOAT, ["B", frames, c]),
         helper.make_tensor_value_info("class_embeddings", TensorProto.FLOAT, ["B", c, 8])])
    sep_nodes = [
        const("ref_index", np.array(0, np.int64)),
        helper.make_node("Gather", ["mix", "ref_index"], ["mix0"], axis=2),
        const("zero", np.array(0.0, np.float32)),
        helper.make_node("Mul", ["prev", "zero"], ["prev0"]),
        helper.make_node("Add", ["mix0", "prev0"], ["est"]),
        const("one", np.array(1.0, np.float32)),
        helper.make_node("Add", ["state_in", "one"], ["state_out"]),
    ]
    f = TensorProto.FLOAT
    sep = helper.make_graph(
        sep_nodes, "toy_separator",
        [helper.make_tensor_value_info("mix", f, ["B", "T", channels, 2, n_freq]),
         helper.make_tensor_value_info("prev", f, ["B", "T", 2, n_freq]),
         helper.make_tensor_value_info("class_onehot", f, ["B", c]),
         helper.make_tensor_value_info("activity", f, ["B", "T"]),
         helper.make_tensor_value_info("pass_index", TensorProto.INT64, ["B"]),
         helper.make_tensor_value_info("state_in", f, ["B", *STATE])],
        [helper.make_tensor_value_info("est", f, ["B", "T", 2, n_freq]),
         helper.make_tensor_value_info("state_out", f, ["B", *STATE])])
    for graph, name in ((sed, "sed.onnx"), (sep, "separator.onnx")):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, folder / name)


def make_toy_bundle(folder: Path, channels: int = 1, passes: int = 2, slots: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _toy_graphs(folder, channels)
    n_freq = N_FFT // 2 + 1
    manifest = {
        "format": "stream_s5.bundle/1", "sample_rate": RATE, "channels": channels, "classes": list(CLASSES),
        "separator": {"file": "separator.onnx", "n_fft": N_FFT, "hop": HOP, "window": "sqrt_hann", "lookahead": 0,
                      "algorithmic_latency": N_FFT, "class_slots": slots, "passes": passes, "max_passes": 3,
                      "guidance": "frame",
                      "inputs": {"mix": ["B", "T", channels, 2, n_freq], "prev": ["B", "T", 2, n_freq],
                                 "class_onehot": ["B", 18], "activity": ["B", "T"], "pass_index": ["B"],
                                 "state_in": ["B", *STATE]},
                      "outputs": {"est": ["B", "T", 2, n_freq], "state_out": ["B", *STATE]},
                      "state": [{"input": "state_in", "output": "state_out", "shape": list(STATE)}]},
        "sed": {"file": "sed.onnx", "window": SED_WINDOW, "hop": SED_HOP, "frames": SED_WINDOW // FRAME_HOP,
                "frame_hop": FRAME_HOP, "thresholds": {"on": 0.5, "off": 0.3}},
        "budget_ms": 8.0,
        "files": {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in ("sed.onnx", "separator.onnx")},
        "provenance": {"recipe": "hand-built test graphs"},
    }
    (folder / "bundle.json").write_text(json.dumps(manifest, indent=2))
    return folder


GUIDE_SCALE = 0.1


def guide_reference(log_mel: np.ndarray, frames: int, classes: int = len(CLASSES)) -> np.ndarray:
    """What `write_guide_body` computes: per SED frame, sigmoid(GUIDE_SCALE × the mean log-mel of its
    patch), the same for every class → [B, frames, classes]."""
    patches = log_mel.mean(axis=1).reshape(len(log_mel), frames, -1).mean(axis=2)
    value = 1.0 / (1.0 + np.exp(-GUIDE_SCALE * patches))
    return np.repeat(value[:, :, None], classes, axis=2).astype(np.float32)


def write_guide_body(path: Path, n_mels: int, mel_frames: int, frames: int, classes: int = len(CLASSES)) -> None:
    """A hand-built SED body (log_mel [B, n_mels, mel_frames] → clip_probs, frame_probs) computing
    `guide_reference`: a guide whose values are known for any input."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def const(name, array):
        return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(array), name))

    nodes = [
        helper.make_node("ReduceMean", ["log_mel"], ["per_frame"], axes=[1], keepdims=0),  # [B, mel_frames]
        const("patch_shape", np.array([0, frames, mel_frames // frames], np.int64)),
        helper.make_node("Reshape", ["per_frame", "patch_shape"], ["patches"]),
        helper.make_node("ReduceMean", ["patches"], ["patch_mean"], axes=[2], keepdims=1),  # [B, frames, 1]
        const("scale", np.array(GUIDE_SCALE, np.float32)),
        helper.make_node("Mul", ["patch_mean", "scale"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
        const("class_shape", np.array([1, 1, classes], np.int64)),
        helper.make_node("Expand", ["p", "class_shape"], ["frame_probs"]),
        helper.make_node("ReduceMax", ["frame_probs"], ["clip_probs"], axes=[1], keepdims=0),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "guide_body", [helper.make_tensor_value_info("log_mel", f, ["B", n_mels, mel_frames])],
                              [helper.make_tensor_value_info("clip_probs", f, ["B", classes]),
                               helper.make_tensor_value_info("frame_probs", f, ["B", frames, classes])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def make_unguided_bundle(source: Path, folder: Path) -> Path:
    """A copy of the split bundle `source` without a guide body: its SED body decides and guides."""
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "bundle.json").read_text())
    guide = manifest["sed"]["front_end"].pop("guide_body", None)
    if guide is not None:
        manifest["files"].pop(guide)
        (folder / guide).unlink()
    (folder / "bundle.json").write_text(json.dumps(manifest, indent=2))
    return folder


def make_guided_bundle(source: Path, folder: Path, frames: int | None = None) -> Path:
    """A copy of the split bundle `source` with a `write_guide_body` graph as its guide body
    (sed.front_end.guide_body); `frames` other than the bundle's makes a guide that does not fit."""
    make_unguided_bundle(source, folder)  # the hand-built guide replaces the bundle's own, if any
    manifest = json.loads((folder / "bundle.json").read_text())
    front_end = manifest["sed"]["front_end"]
    write_guide_body(folder / "sed_guide_body.onnx", front_end["n_mels"], front_end["mel_frames"],
                     frames or manifest["sed"]["frames"])
    front_end["guide_body"] = "sed_guide_body.onnx"
    manifest["files"]["sed_guide_body.onnx"] = hashlib.sha256((folder / "sed_guide_body.onnx").read_bytes()).hexdigest()
    (folder / "bundle.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture(scope="session")
def toy_bundle(tmp_path_factory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("toy_bundle"))


def tone_bursts(rate=RATE, seconds=6.0, bursts=((1.0, 2.5), (3.7, 4.4)), freq=440.0, amp=0.3, noise=1e-3, seed=0):
    """Quiet noise with loud tone bursts: the toy SED's class 0 turns on inside the bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = noise * rng.standard_normal(t.size)
    for on, off in bursts:
        m = (t >= on) & (t < off)
        x[m] += amp * np.sin(2 * np.pi * freq * t[m])
    return x.astype(np.float32)


def flatten(outs):
    """Engine outputs of one stream → (audio per label on the timeline, backfills, events, (start, length) per call)."""
    audio, backfill, events, starts = {}, [], [], []
    for o in outs:
        starts.append((o.start, o.length))
        for k, v in o.audio.items():
            assert v.size == o.length
            audio.setdefault(k, []).append((o.start, v))
        backfill += [(b.label, b.start, b.audio) for b in o.backfill]
        events += [(e.label, e.onset, e.offset, e.peak, e.decided_at) for e in o.events]
    merged = {}
    for k, parts in audio.items():
        end = max(s + v.size for s, v in parts)
        buf = np.zeros(end, np.float32)
        for s, v in parts:
            buf[s : s + v.size] = v
        merged[k] = buf
    return merged, backfill, events, starts


@pytest.fixture
def null_sink():
    """A real audio device: a PulseAudio daemon with a null sink `s5` (record from `s5.monitor`)."""
    if not shutil.which("pulseaudio") or not shutil.which("paplay") or not shutil.which("pactl"):
        pytest.skip("PulseAudio is not installed (CI installs it): no audio device for the microphone path")
    subprocess.run(["pulseaudio", "--kill"], capture_output=True)
    started = subprocess.run(["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--load=module-native-protocol-unix",
                              "--load=module-null-sink sink_name=s5"], capture_output=True, text=True)
    if started.returncode != 0:  # installed but broken is a failure, not a reason to drop the device tests
        pytest.fail(f"PulseAudio is installed but would not start: {started.stderr.strip()[:200]}")
    time.sleep(1.0)
    yield "s5"
    subprocess.run(["pulseaudio", "--kill"], capture_output=True)
