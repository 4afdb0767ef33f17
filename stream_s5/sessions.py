"""ONNX Runtime sessions for the two graphs, with execution-provider choice.

`device="auto"` takes CUDA when onnxruntime has a working CUDA provider and falls back to the CPU
with a message otherwise; `device="cuda"` asks for CUDA and falls back the same way (the engine
never fails for want of a GPU)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from stream_s5.bundle import Bundle, BundleError

__all__ = ["choose_providers", "SedModel", "SeparatorModel", "BoundSeparatorModel", "graph_session", "EngineFault"]


class EngineFault(RuntimeError):
    """A fault the stream cannot ride out (the SED failing call after call, the input device gone):
    the stream stops; what was produced up to it is complete and valid (docs/reliability.md)."""


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


def _expected_io(bundle: Bundle, key: str) -> tuple[dict, dict]:
    """What the runtime will feed and read: name → (element type, shape; None = any size)."""
    classes, channels = len(bundle.classes), bundle.channels
    sed_outputs = {"clip_probs": ("tensor(float)", [None, classes]),
                   "frame_probs": ("tensor(float)", [None, int(bundle.sed["frames"]), classes])}
    if key == "sed":
        return {"audio": ("tensor(float)", [None, int(bundle.sed["window"])])}, sed_outputs
    if key in ("sed_front", "sed_body", "sed_guide"):
        front_end = bundle.sed_front_end
        features = ("tensor(float)", [None, int(front_end["n_mels"]), None if key == "sed_front" else int(front_end["mel_frames"])])
        if key == "sed_front":
            return {"audio": ("tensor(float)", [None, None])}, {"log_mel": features}
        return {"log_mel": features}, sed_outputs
    sep = bundle.separator
    n_freq = int(sep["n_fft"]) // 2 + 1
    state = [int(d) for d in sep["inputs"]["state_in"][1:]]
    return ({"mix": ("tensor(float)", [None, None, channels, 2, n_freq]), "prev": ("tensor(float)", [None, None, 2, n_freq]),
             "class_onehot": ("tensor(float)", [None, classes]), "activity": ("tensor(float)", [None, None]),
             "pass_index": ("tensor(int64)", [None]), "state_in": ("tensor(float)", [None, *state])},
            {"est": ("tensor(float)", [None, None, 2, n_freq]), "state_out": ("tensor(float)", [None, *state])})


def _check_io(session: ort.InferenceSession, bundle: Bundle, key: str) -> None:
    """The graph's own inputs and outputs against what bundle.json declares, one line per mismatch
    (a 17-class graph under an 18-class manifest fails here, not as an odd shape error mid-stream)."""
    inputs, outputs = _expected_io(bundle, key)
    problems = []
    for kind, expected, nodes in (("input", inputs, session.get_inputs()), ("output", outputs, session.get_outputs())):
        actual = {node.name: node for node in nodes}
        for io_name, (dtype, shape) in expected.items():
            if io_name not in actual:
                problems.append(f"{kind} {io_name!r} is missing (graph has {sorted(actual)})")
                continue
            got = actual[io_name]
            if got.type != dtype:
                problems.append(f"{kind} {io_name!r} is {got.type}, expected {dtype}")
            if len(got.shape) != len(shape):
                problems.append(f"{kind} {io_name!r} has rank {len(got.shape)}, expected {len(shape)}")
                continue
            for axis, (have, want) in enumerate(zip(got.shape, shape)):
                if want is not None and isinstance(have, int) and have != want:
                    problems.append(f"{kind} {io_name!r} axis {axis} is {have}, bundle.json implies {want}")
    if problems:
        name = bundle.file(key)
        raise BundleError(f"{name}: the graph does not match bundle.json:\n  " + "\n  ".join(problems))


_state = ort.capi.onnxruntime_pybind11_state
_ORT_LOAD_ERRORS = (_state.Fail, _state.InvalidGraph, _state.InvalidProtobuf, _state.InvalidArgument,
                    _state.NoSuchFile, _state.NotImplemented, RuntimeError)


def graph_session(bundle: Bundle, key: str, options: ort.SessionOptions, providers: list) -> ort.InferenceSession:
    """A session on the verified bytes of graph `key`, its inputs and outputs checked against the manifest."""
    try:
        session = ort.InferenceSession(bundle.graph(key), options, providers=providers)
    except KeyError:
        raise BundleError(f"{bundle.path}: the {key} graph was not loaded through load_bundle") from None
    except _ORT_LOAD_ERRORS as exc:
        raise BundleError(f"{bundle.file(key)}: ONNX Runtime cannot load the graph ({str(exc).splitlines()[0]})") from None
    _check_io(session, bundle, key)
    return session


class SedModel:
    """Sliding-window SED graph: audio [B, window] → clip_probs [B, C], frame_probs [B, frames, C].

    A bundle whose SED also comes split at its log-mel features (sed.front_end) is run as its two
    graphs: `log_mel` (the front end: audio [B, context + n·mel_hop] → features [B, M, n]) and
    `from_log_mel` (the body: [B, M, mel_frames] → probabilities), so that the SED scheduler can
    cache each stream's features and compute only the new frames (sed.MelFrameCache). `split`
    says which; `__call__` is the whole SED either way.

    A split SED may carry a second body on the same features (sed.front_end.guide_body): its frame
    probabilities condition the separator (`guide_from_log_mel`) while the first body's decide the
    classes — one SED can be the better detector on real recordings and the other the better guide
    for the separator it was trained with (docs/bundle.md). `guided` says whether there is one. Where
    the manifest lists classes in sed.front_end.guide_detects, the guide body decides those classes
    too: its clip and frame probabilities replace the first body's in their columns (`with_guide`)."""

    def __init__(self, bundle: Bundle, providers: list, threads: int = 1):
        self.window = int(bundle.sed["window"])
        self.front_end = bundle.sed_front_end
        self.guide = None
        self.guide_detects = np.zeros(0, np.int64)  # class indices the guide body decides
        if self.front_end is None:
            self.session = graph_session(bundle, "sed", _options(threads), providers)
        else:
            self.front = graph_session(bundle, "sed_front", _options(threads), providers)
            self.body = graph_session(bundle, "sed_body", _options(threads), providers)
            if self.front_end.get("guide_body") is not None:
                self.guide = graph_session(bundle, "sed_guide", _options(threads), providers)
                classes = list(bundle.classes)
                self.guide_detects = np.array([classes.index(c) for c in self.front_end.get("guide_detects", [])], np.int64)
            self.context, self.mel_hop = int(self.front_end["context"]), int(self.front_end["mel_hop"])

    @property
    def split(self) -> bool:
        return self.front_end is not None

    @property
    def guided(self) -> bool:
        return self.guide is not None

    def __call__(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if audio.ndim != 2 or audio.shape[1] != self.window:
            raise ValueError(f"SED expects [B, {self.window}] audio, got {audio.shape}")
        if self.split:
            log_mel = self.window_log_mel(audio)
            clip, frame = self.from_log_mel(log_mel)
            return self.with_guide(clip, frame, log_mel)[:2] if len(self.guide_detects) else (clip, frame)
        clip, frame, _ = self.session.run(None, {"audio": np.ascontiguousarray(audio, dtype=np.float32)})
        return clip, frame

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """Front end: [B, context + n·mel_hop] → log-mel [B, M, n] (split bundles only)."""
        return self.front.run(None, {"audio": np.ascontiguousarray(audio, dtype=np.float32)})[0]

    def window_log_mel(self, audio: np.ndarray) -> np.ndarray:
        """Whole windows [B, window] → their log-mel [B, M, mel_frames]: each window after `context`
        zeros, as the single graph pads it (split bundles only)."""
        padded = np.zeros((audio.shape[0], self.context + self.window), np.float32)
        padded[:, self.context :] = audio
        return self.log_mel(padded)

    def from_log_mel(self, log_mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        clip, frame, _ = self.body.run(None, {"log_mel": np.ascontiguousarray(log_mel, dtype=np.float32)})
        return clip, frame

    def guide_from_log_mel(self, log_mel: np.ndarray) -> np.ndarray:
        """The guide body's frame probabilities [B, frames, C] (guided bundles only)."""
        return self.guide.run(["frame_probs"], {"log_mel": np.ascontiguousarray(log_mel, dtype=np.float32)})[0]

    def with_guide(self, clip: np.ndarray, frame: np.ndarray, log_mel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first body's (clip_probs, frame_probs) of `log_mel` → what the tracker reads and the
        guide body's frame probabilities (guided bundles only): the guide body runs once; in the
        columns of guide_detects its clip and frame probabilities replace the first body's."""
        if not len(self.guide_detects):
            return clip, frame, self.guide_from_log_mel(log_mel)
        guide_clip, guide_frame = self.guide.run(["clip_probs", "frame_probs"], {"log_mel": np.ascontiguousarray(log_mel, dtype=np.float32)})
        clip, frame = clip.copy(), frame.copy()
        clip[:, self.guide_detects] = guide_clip[:, self.guide_detects]
        frame[:, :, self.guide_detects] = guide_frame[:, :, self.guide_detects]
        return clip, frame, guide_frame


class SeparatorModel:
    """One refinement pass of the separator graph. Stateless here: the caller owns and passes the
    per-slot, per-pass GRU states (explicit state in, explicit state out)."""

    INPUTS = ("mix", "prev", "class_onehot", "activity", "pass_index", "state_in")

    def __init__(self, bundle: Bundle, providers: list, threads: int = 1):
        self.session = graph_session(bundle, "separator", _options(threads), providers)
        self.state_shape = tuple(bundle.separator["inputs"]["state_in"][1:])

    def __call__(self, mix, prev, class_onehot, activity, pass_index, state_in) -> tuple[np.ndarray, np.ndarray]:
        feeds = dict(zip(self.INPUTS, (mix, prev, class_onehot, activity, pass_index, state_in)))
        est, state_out = self.session.run(None, feeds)
        return est, state_out


class BoundSeparatorModel:
    """The separator with IO binding on fixed shapes ([slots, 1] per call), for the GPU path:
    inputs and outputs live in preallocated device buffers that are updated in place, so that the
    CUDA execution provider can capture the call in a CUDA graph and replay it (`cuda_graph=True`).
    On the CPU it runs the same code path with host buffers (what the tests check).

    Unused slots are fed as zero rows: the shapes never change, and their outputs are ignored."""

    INPUTS = SeparatorModel.INPUTS

    def __init__(self, bundle: Bundle, providers: list, slots: int, threads: int = 1, cuda_graph: bool = False):
        device = "cuda" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"
        if cuda_graph and device != "cuda":
            raise ValueError("CUDA graphs need the CUDA execution provider")
        provider_list = [("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"] if cuda_graph else providers
        self.session = graph_session(bundle, "separator", _options(threads), provider_list)
        self.device, self.slots = device, slots
        self.state_shape = tuple(bundle.separator["inputs"]["state_in"][1:])
        channels, n_freq = int(bundle.channels), int(bundle.separator["n_fft"]) // 2 + 1
        shapes = {"mix": (slots, 1, channels, 2, n_freq), "prev": (slots, 1, 2, n_freq),
                  "class_onehot": (slots, len(bundle.classes)), "activity": (slots, 1), "pass_index": (slots,),
                  "state_in": (slots, *self.state_shape)}
        self.host = {k: np.zeros(v, np.int64 if k == "pass_index" else np.float32) for k, v in shapes.items()}
        self.inputs = {k: ort.OrtValue.ortvalue_from_numpy(v, device, 0) for k, v in self.host.items()}
        self.outputs = {"est": ort.OrtValue.ortvalue_from_shape_and_type(shapes["prev"], np.float32, device, 0),
                        "state_out": ort.OrtValue.ortvalue_from_shape_and_type(shapes["state_in"], np.float32, device, 0)}
        self.binding = self.session.io_binding()
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name, value in self.outputs.items():
            self.binding.bind_ortvalue_output(name, value)

    def __call__(self, mix, prev, class_onehot, activity, pass_index, state_in) -> tuple[np.ndarray, np.ndarray]:
        batch = mix.shape[0]
        if batch > self.slots or mix.shape[1] != 1:
            raise ValueError(f"bound separator takes at most {self.slots} slots × 1 frame, got {mix.shape[:2]}")
        for name, value in zip(self.INPUTS, (mix, prev, class_onehot, activity, pass_index, state_in)):
            host = self.host[name]
            host[:batch] = value
            host[batch:] = 0
            self.inputs[name].update_inplace(host)
        self.session.run_with_iobinding(self.binding)
        return self.outputs["est"].numpy()[:batch], self.outputs["state_out"].numpy()[:batch]
