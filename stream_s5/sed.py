"""Sliding-window SED: every SED hop, the SED graph sees the newest window of the ring; its frame
probabilities are written onto a per-class activity timeline at the separator's frame rate, which
is what conditions the separator over time."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from stream_s5.ring import RingBuffer
from stream_s5.sessions import SedModel
from stream_s5.timing import StageTimer

__all__ = ["SedResult", "SedScheduler", "ActivityTimeline"]


@dataclass
class SedResult:
    end: int  # absolute sample index (exclusive) where the window ends
    window_start: int
    clip_probs: np.ndarray  # [C]
    frame_probs: np.ndarray  # [frames, C]
    frame_hop: int

    def frame_start(self, j: int) -> int:
        return self.window_start + j * self.frame_hop


class ActivityTimeline:
    """Per-class SED activity at separator-frame resolution, kept for `history` frames. The newest
    SED window overwrites what it covers; frames after its end hold its last value (causal)."""

    def __init__(self, n_classes: int, history: int, hop: int):
        self.values = np.zeros((history, n_classes), dtype=np.float32)
        self.history, self.hop = history, hop
        self.latest = -1  # newest separator frame index covered by a SED window

    def reset(self):
        self.values[:] = 0.0
        self.latest = -1

    def write(self, result: SedResult) -> None:
        first = max(result.window_start // self.hop, result.end // self.hop - self.history, 0)
        frames = np.arange(first, result.end // self.hop)
        sed_index = (frames * self.hop - result.window_start) // result.frame_hop
        self.values[frames % self.history] = result.frame_probs[np.clip(sed_index, 0, len(result.frame_probs) - 1)]
        self.latest = int(frames[-1])

    def at(self, frame: int, class_index: int) -> float:
        """One frame, one class (the per-hop path)."""
        if self.latest < 0:
            return 0.0
        return float(self.values[min(frame, self.latest) % self.history, class_index])

    def get(self, frames: np.ndarray, class_index: int) -> np.ndarray:
        if self.latest < 0:
            return np.zeros(len(frames), np.float32)
        held = np.minimum(frames, self.latest)
        return self.values[held % self.history, class_index]


class SedScheduler:
    """Runs the SED on the newest window every SED hop. With an executor the inference runs on its
    worker thread (ONNX Runtime releases the GIL), so it overlaps the next hop's separator work
    instead of stretching the hop it falls on; the engine applies the result at a fixed later hop,
    so the output does not depend on timing."""

    def __init__(self, model: SedModel, window: int, hop: int, frame_hop: int, channels: int,
                 executor: ThreadPoolExecutor | None = None):
        self.model, self.window, self.hop, self.frame_hop = model, window, hop, frame_hop
        self.calls = 0
        self.timer = StageTimer()
        self._executor = executor

    def due(self, end: int) -> bool:
        return end > 0 and end % self.hop == 0

    def _infer(self, audio: np.ndarray, end: int) -> SedResult:
        t0 = time.perf_counter()
        # Spatial bundles: SED listens to the reference (first) channel.
        clip, frame = self.model(audio[:1])
        self.timer.add(time.perf_counter() - t0)
        return SedResult(end, end - self.window, clip[0], frame[0], self.frame_hop)

    def submit(self, ring: RingBuffer, end: int) -> Future:
        """Copy the window now (the ring moves on) and start the inference."""
        audio = ring.read(end - self.window, end)
        self.calls += 1
        if self._executor is not None:
            return self._executor.submit(self._infer, audio, end)
        done: Future = Future()
        done.set_result(self._infer(audio, end))
        return done

    def run(self, ring: RingBuffer, end: int) -> SedResult:
        return self.submit(ring, end).result()
