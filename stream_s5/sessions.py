"""ONNX Runtime sessions for the two graphs, with execution-provider choice.

`device="auto"` takes CUDA when onnxruntime has a working CUDA provider and falls back to the CPU
with a message otherwise; `device="cuda"` asks for CUDA and falls back the same way (the engine
never fails for want of a GPU)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from stream_s5.bundle import Bundle

__all__ = ["choose_providers", "SedModel", "SeparatorModel"]


def choose_providers(device: str) -> tuple[list, str]:
    """→ (providers, a one-line note saying what was chosen and why)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available and _cuda_usable():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    why = "onnxruntime has no CUDA provider" if "CUDAExecutionProvider" not in available else "no usable CUDA device"
    return ["CPUExecutionProvider"], f"cpu ({why}; falling back to CPU)" if device == "cuda" else "cpu"


def _cuda_usable() -> bool:
    # The CUDA provider is compiled into onnxruntime-gpu even on machines without a GPU or driver;
    # only a real device makes it usable.
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    return False


def _options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class SedModel:
    """Sliding-window SED graph: audio [B, window] → clip_probs [B, C], frame_probs [B, frames, C]."""

    def __init__(self, bundle: Bundle, providers: list, threads: int = 1):
        self.session = ort.InferenceSession(str(bundle.file("sed")), _options(threads), providers=providers)
        self.window = int(bundle.sed["window"])

    def __call__(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if audio.ndim != 2 or audio.shape[1] != self.window:
            raise ValueError(f"SED expects [B, {self.window}] audio, got {audio.shape}")
        clip, frame, _ = self.session.run(None, {"audio": np.ascontiguousarray(audio, dtype=np.float32)})
        return clip, frame


class SeparatorModel:
    """One refinement pass of the separator graph. Stateless here: the caller owns and passes the
    per-slot, per-pass GRU states (explicit state in, explicit state out)."""

    INPUTS = ("mix", "prev", "class_onehot", "activity", "pass_index", "state_in")

    def __init__(self, bundle: Bundle, providers: list, threads: int = 1):
        self.session = ort.InferenceSession(str(bundle.file("separator")), _options(threads), providers=providers)
        self.state_shape = tuple(bundle.separator["inputs"]["state_in"][1:])

    def __call__(self, mix, prev, class_onehot, activity, pass_index, state_in) -> tuple[np.ndarray, np.ndarray]:
        feeds = dict(zip(self.INPUTS, (mix, prev, class_onehot, activity, pass_index, state_in)))
        est, state_out = self.session.run(None, feeds)
        return est, state_out
