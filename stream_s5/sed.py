"""Sliding-window SED: every SED hop, the SED graph sees the newest window of the ring; its frame
probabilities are written onto a per-class activity timeline at the separator's frame rate, which
is what conditions the separator over time."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from stream_s5.sessions import EngineFault, SedModel
from stream_s5.timing import StageTimer

__all__ = ["SedResult", "SedScheduler", "MelFrameCache", "run_sed", "ActivityTimeline", "stacked_timelines"]


@dataclass
class SedResult:
    end: int  # absolute sample index (exclusive) where the window ends
    window_start: int
    clip_probs: np.ndarray  # [C]
    frame_probs: np.ndarray  # [frames, C]: what the tracker decides on
    frame_hop: int
    guide_probs: np.ndarray | None = None  # [frames, C] of a guide body; None: frame_probs guide too

    @property
    def activity(self) -> np.ndarray:
        """The frame probabilities that condition the separator."""
        return self.frame_probs if self.guide_probs is None else self.guide_probs

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
        activity = result.activity
        self.values[frames % self.history] = activity[np.clip(sed_index, 0, len(activity) - 1)]
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


def run_sed(model: SedModel, audio: np.ndarray, cache: "MelFrameCache | None" = None, cache_keys=None):
    """(clip_probs, frame_probs, guide_probs) of windows [B, window]: through the feature cache when
    there is one and the windows have keys, else whole. guide_probs is None unless the SED has a
    guide body, which runs on the same features (and decides the classes of guide_detects)."""
    guided = getattr(model, "guided", False)
    if cache is not None and cache_keys is not None:
        log_mel = cache.log_mel(audio, cache_keys)
    elif guided:
        log_mel = model.window_log_mel(audio)
    else:
        return (*model(audio), None)
    clip, frame = model.from_log_mel(log_mel)
    return model.with_guide(clip, frame, log_mel) if guided else (clip, frame, None)


class MelFrameCache:
    """Each stream's log-mel features of its last SED window, so that the next window (one SED hop
    later: 120 of its 128 frames already known) costs the front end only its new frames.

    A window's frame j is made of the `context` samples before its own hop; the first
    ceil(context / mel_hop) frames of a window see the window's zero left pad instead (that is how
    the graph was trained), so they are recomputed from the window's head, zero-padded — which keeps
    the features exactly those of the whole window. A window is served from the cache only when its
    stream's previous window is stored under the same key and identity and ended a whole number
    k ≥ those edge frames of mel hops before it; anything else (the first window, a skipped SED hop
    beyond the window, a new stream in a reused slot) is computed whole. Keys are slot numbers, so
    the store never outgrows the streams."""

    def __init__(self, model: SedModel):
        self.model = model
        self.context, self.mel_hop = model.context, model.mel_hop
        self.window, self.frames = model.window, model.window // model.mel_hop
        self.edge = -(-self.context // self.mel_hop)
        self._store: dict[int, tuple[object, int, np.ndarray]] = {}  # key → (identity, end, log-mel [M, frames])
        self.hits = self.misses = 0

    def forget(self, key: int | None = None) -> None:
        if key is None:
            self._store.clear()
        else:
            self._store.pop(key, None)

    def _shift(self, key: int, identity, end: int) -> int | None:
        """Mel frames since the stored window of `key`, when the stored features can be reused."""
        stored = self._store.get(key)
        if stored is None or stored[0] != identity:
            return None
        step = end - stored[1]
        if step <= 0 or step % self.mel_hop:
            return None
        k = step // self.mel_hop
        return k if self.edge <= k < self.frames else None

    def log_mel(self, audio: np.ndarray, keys: list[tuple[int, object, int]]) -> np.ndarray:
        """audio [B, window], keys [(key, identity, end)] per row → log-mel [B, M, frames]."""
        features = None
        groups: dict[int | None, list[int]] = {}
        for row, (key, identity, end) in enumerate(keys):
            groups.setdefault(self._shift(key, identity, end), []).append(row)
        for k, rows in groups.items():
            n = len(rows)
            if k is None:
                self.misses += n
                fresh = self.model.window_log_mel(audio[rows])
                if features is None:
                    features = np.empty((len(audio), *fresh.shape[1:]), np.float32)
                features[rows] = fresh
                continue
            self.hits += n
            span = self.context + k * self.mel_hop
            chunks = np.zeros((2 * n, span), np.float32)
            chunks[:n] = audio[rows, self.window - span :]  # the k new frames
            chunks[n:, self.context :] = audio[rows, : k * self.mel_hop]  # the window's head, zero-padded
            fresh = self.model.log_mel(chunks)
            if features is None:
                features = np.empty((len(audio), fresh.shape[1], self.frames), np.float32)
            for row in rows:
                features[row, :, : self.frames - k] = self._store[keys[row][0]][2][:, k:]
            features[rows, :, self.frames - k :] = fresh[:n]
            features[rows, :, : self.edge] = fresh[n:, :, : self.edge]
        for row, (key, identity, end) in enumerate(keys):
            self._store[key] = (identity, end, features[row])  # a view: each call's array is new
        return features


class SedScheduler:
    """Runs the SED on the newest window(s) every SED hop. A hop submits its windows; the engine takes
    the results at the start of the next hop (or at the end of the stream) and applies them there,
    which gives the same output as applying them at once. With an executor the inference runs on its
    worker thread in the meantime (ONNX Runtime releases the GIL), so the output does not depend on
    timing.

    Faults (docs/reliability.md) cost SED updates, never the stream: a call that raises, or that is
    not done `timeout_s` after it is taken (a stalled worker), is a missed update — the tracker keeps
    its state and the separator the last known activity — counted in `failures` / `timeouts`; while a
    stalled call still runs no new one is submitted (`skipped`). Non-finite probabilities are set to 0
    (`nonfinite_outputs`). Only `max_failures` failed calls in a row stop the stream (EngineFault)."""

    def __init__(self, model: SedModel, window: int, hop: int, frame_hop: int,
                 executor: ThreadPoolExecutor | None = None, timeout_s: float | None = 2.0, max_failures: int = 5,
                 feature_cache: bool = True):
        self.model, self.window, self.hop, self.frame_hop = model, window, hop, frame_hop
        self.executor = executor
        self.timeout_s, self.max_failures = timeout_s, max_failures
        self.calls = 0  # inference calls
        self.windows = 0  # windows analysed (one per stream)
        self.timer = StageTimer()  # inference
        self.wait_timer = StageTimer()  # waiting for a result when it is taken
        self.failures = self.timeouts = self.skipped = self.nonfinite_outputs = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        # submissions not yet taken, oldest first: Engine has at most one; StreamPool submits ahead
        self._pending: deque[tuple[int, list, Future]] = deque()
        self._stalled: Future | None = None  # a timed-out call still occupying the worker
        # a SED split at its features keeps each stream's log-mel frames between hops
        self.cache = MelFrameCache(model) if feature_cache and getattr(model, "split", False) else None

    def due(self, end: int, phase: int = 0) -> bool:
        """Whether a SED hop ends at ring end `end` for streams at SED phase `phase` (samples)."""
        return end > 0 and end % self.hop == phase

    def _infer(self, audio: np.ndarray, end: int, cache_keys) -> list[SedResult]:
        t0 = time.perf_counter()
        clip, frame, guide = run_sed(self.model, audio, self.cache, cache_keys)
        self.timer.add(time.perf_counter() - t0)
        # a graph that emits NaN must reach neither the tracker (comparisons with NaN are all False) nor the separator
        outputs = [clip, frame] + ([] if guide is None else [guide])
        bad = sum(int((~np.isfinite(x)).sum()) for x in outputs)
        if bad:
            self.nonfinite_outputs += bad
            clip, frame, guide = (None if x is None else np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
                                  for x in (clip, frame, guide))
        return [SedResult(end, end - self.window, clip[i], frame[i], self.frame_hop, None if guide is None else guide[i])
                for i in range(len(audio))]

    def submit(self, audio: np.ndarray, end: int, frame_index: int, streams=(0,), cache_keys=None) -> bool:
        """audio [len(streams), window]: the windows ending at `end`, copied out of the ring (it moves
        on before the inference ends), submitted at hop `frame_index`. cache_keys: per window
        (stream slot, stream identity, the window's end in that stream's samples), for the feature
        cache of a split SED (MelFrameCache); None computes every window whole. → False when the
        worker is stalled and nothing was submitted (a missed update)."""
        if self._stalled is not None:
            if not self._stalled.done():
                self.skipped += 1
                return False
            self._stalled = None  # it came back: its result is stale and dropped
        self.calls += 1
        self.windows += audio.shape[0]
        if self.executor is not None:
            future = self.executor.submit(self._infer, audio, end, cache_keys)
        else:
            future = Future()
            try:
                future.set_result(self._infer(audio, end, cache_keys))
            except Exception as exc:  # noqa: BLE001 — any graph failure is one missed update
                future.set_exception(exc)
        self._pending.append((frame_index, list(streams), future))
        return True

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def oldest_streams(self) -> list:
        """The stream tags of the oldest pending submission (what `take` returns results for, or none)."""
        return self._pending[0][1]

    def oldest_done(self) -> bool:
        """Whether the oldest pending submission has finished (taking it would not wait)."""
        return bool(self._pending) and self._pending[0][2].done()

    def take(self) -> tuple[int, list[tuple[int, SedResult]]]:
        """The oldest pending submission: (its hop, [(stream, result)]), waiting for it if needed; no
        results when the call failed or timed out."""
        frame_index, streams, future = self._pending.popleft()
        t0 = time.perf_counter()
        try:
            results = future.result(timeout=self.timeout_s)
        except FutureTimeout:
            self.timeouts += 1
            self._stalled = future
            return frame_index, []
        except Exception as exc:  # noqa: BLE001
            self.failures += 1
            self.consecutive_failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.consecutive_failures >= self.max_failures:
                raise EngineFault(f"the SED failed {self.consecutive_failures} times in a row "
                                  f"(last: {self.last_error})") from None
            return frame_index, []
        finally:
            self.wait_timer.add(time.perf_counter() - t0)
        self.consecutive_failures = 0
        return frame_index, list(zip(streams, results))

    def cache_stats(self) -> dict | None:
        """Windows whose features came from the cache (hits) or were computed whole (misses); None
        without a cache (a single SED graph, or the cache switched off)."""
        return None if self.cache is None else {"hits": self.cache.hits, "misses": self.cache.misses}

    def faults(self) -> dict:
        return {"sed_failures": self.failures, "sed_timeouts": self.timeouts, "sed_skipped": self.skipped,
                "sed_nonfinite_outputs": self.nonfinite_outputs, "sed_last_error": self.last_error}
