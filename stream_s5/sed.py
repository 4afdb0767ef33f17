"""Sliding-window SED: every SED hop, the SED graph sees the newest window of the ring; its frame
probabilities are written onto a per-class activity timeline at the separator's frame rate, which
is what conditions the separator over time."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from stream_s5.sessions import SedModel
from stream_s5.timing import StageTimer

__all__ = ["SedResult", "SedScheduler", "ActivityTimeline", "stacked_timelines"]


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


def stacked_timelines(n_streams: int, n_classes: int, history: int, hop: int):
    """One timeline per stream whose values live in one [streams, history, classes] array, so that
    the activity of every occupied slot of every stream is one gather per hop → (values, timelines)."""
    values = np.zeros((n_streams, history, n_classes), np.float32)
    timelines = []
    for i in range(n_streams):
        timeline = ActivityTimeline(n_classes, history, hop)
        timeline.values = values[i]
        timelines.append(timeline)
    return values, timelines


class SedScheduler:
    """Runs the SED on the newest window(s) every SED hop. A hop submits its windows; the engine takes
    the results at the start of the next hop (or at the end of the stream) and applies them there,
    which gives the same output as applying them at once. With an executor the inference runs on its
    worker thread in the meantime (ONNX Runtime releases the GIL), so the output does not depend on
    timing."""

    def __init__(self, model: SedModel, window: int, hop: int, frame_hop: int,
                 executor: ThreadPoolExecutor | None = None):
        self.model, self.window, self.hop, self.frame_hop = model, window, hop, frame_hop
        self.executor = executor
        self.calls = 0  # inference calls
        self.windows = 0  # windows analysed (one per stream)
        self.timer = StageTimer()  # inference
        self.wait_timer = StageTimer()  # waiting for a result when it is taken
        self._pending: tuple[int, list[int], Future] | None = None

    def due(self, end: int, phase: int = 0) -> bool:
        """Whether a SED hop ends at ring end `end` for streams at SED phase `phase` (samples)."""
        return end > 0 and end % self.hop == phase

    def _infer(self, audio: np.ndarray, end: int) -> list[SedResult]:
        t0 = time.perf_counter()
        clip, frame = self.model(audio)
        self.timer.add(time.perf_counter() - t0)
        return [SedResult(end, end - self.window, clip[i], frame[i], self.frame_hop) for i in range(len(audio))]

    def submit(self, audio: np.ndarray, end: int, frame_index: int, streams=(0,)) -> None:
        """audio [len(streams), window]: the windows ending at `end`, copied out of the ring (it moves
        on before the inference ends), submitted at hop `frame_index`."""
        self.calls += 1
        self.windows += audio.shape[0]
        if self.executor is not None:
            future = self.executor.submit(self._infer, audio, end)
        else:
            future = Future()
            future.set_result(self._infer(audio, end))
        self._pending = (frame_index, list(streams), future)

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def take(self) -> tuple[int, list[tuple[int, SedResult]]]:
        """The pending submission: (its hop, [(stream, result)]), waiting for it if needed."""
        frame_index, streams, future = self._pending
        self._pending = None
        t0 = time.perf_counter()
        results = future.result()
        self.wait_timer.add(time.perf_counter() - t0)
        return frame_index, list(zip(streams, results))
