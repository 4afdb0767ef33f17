"""Offline reference processing with the same graphs: what the engine would give with the whole
clip known in advance. Used for the streaming-vs-offline ablation.

- class decision from the whole clip (a clip-level tagger: the max over all SED windows of the
  clip probability ≥ the on threshold, and at least `min_event_s` of frames above it);
- SED guidance for each frame from the window in which that frame is most central (full context
  on both sides), not from the newest window;
- the separator over the whole clip in one call per pass, from the first sample.
"""

from __future__ import annotations

import numpy as np

from stream_s5.bundle import Bundle
from stream_s5.dsp import OverlapAdd, offline_stft
from stream_s5.sed import run_sed
from stream_s5.sessions import SedModel, SeparatorModel
from stream_s5.tracker import TrackerOptions

__all__ = ["separate_offline", "frame_activity_offline"]


def frame_activity_offline(sed: SedModel, bundle: Bundle, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """audio [C, N] → (activity [T, classes] at separator-frame rate, clip max [classes], guidance
    [T, classes]): guidance is the guide body's activity where the SED has one (what conditions the
    separator), else the activity itself."""
    window, hop, frame_hop = int(bundle.sed["window"]), int(bundle.sed["hop"]), int(bundle.sed["frame_hop"])
    sep_hop = bundle.hop
    n = audio.shape[1]
    ref = np.concatenate([np.zeros(window, np.float32), audio[0], np.zeros(window, np.float32)])
    frames = n // sep_hop
    activity = np.zeros((frames, len(bundle.classes)), np.float32)
    guidance = activity if not getattr(sed, "guided", False) else np.zeros_like(activity)
    best = np.full(frames, np.inf)
    clip_max = np.zeros(len(bundle.classes), np.float32)
    for end in range(hop, n + window, hop):
        start = end - window
        chunk = ref[start + window : end + window][None]
        clip, frame_probs, guide_probs = run_sed(sed, chunk)
        clip_max = np.maximum(clip_max, clip[0])
        t = np.arange(max(0, start // sep_hop), min(frames, end // sep_hop))
        if t.size == 0:
            continue
        centre = start + window / 2
        distance = np.abs(t * sep_hop - centre)
        better = distance < best[t]
        idx = np.clip((t * sep_hop - start) // frame_hop, 0, frame_probs.shape[1] - 1)
        activity[t[better]] = frame_probs[0, idx[better]]
        if guide_probs is not None:
            guidance[t[better]] = guide_probs[0, idx[better]]
        best[t[better]] = distance[better]
    return activity, clip_max, guidance


def separate_offline(bundle: Bundle, sed: SedModel, separator: SeparatorModel, audio: np.ndarray, passes: int,
                     classes: list[str] | None = None, options: TrackerOptions | None = None):
    """audio [C, N] at the bundle rate → ({label: [N]}, events [(label, onset, offset)])."""
    opt = options or TrackerOptions.from_bundle(bundle.manifest)
    n = audio.shape[1]
    rate, hop, n_fft = bundle.sample_rate, bundle.hop, int(bundle.separator["n_fft"])
    activity, clip_max, guidance = frame_activity_offline(sed, bundle, audio)
    events = []
    on_thresholds = np.array([opt.thresholds(c)[0] for c in bundle.classes], np.float32)
    for ci, label in enumerate(bundle.classes):
        on = activity[:, ci] >= on_thresholds[ci]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            if (b - a) * hop / rate >= opt.min_event_s:
                events.append((label, a * hop / rate, b * hop / rate))
    if classes is None:
        min_frames = int(opt.min_event_s * rate / hop)
        classes = [c for i, c in enumerate(bundle.classes)
                   if clip_max[i] >= on_thresholds[i] and (activity[:, i] >= on_thresholds[i]).sum() >= max(1, min_frames)]
    padded = np.concatenate([audio, np.zeros((audio.shape[0], n_fft), np.float32)], axis=1)
    spec = offline_stft(padded, n_fft, hop)  # [T, C, 2, F]
    outputs = {}
    if classes:
        idx = [bundle.classes.index(c) for c in classes]
        batch = len(idx)
        mix = np.repeat(spec[None], batch, axis=0)
        onehot = np.eye(len(bundle.classes), dtype=np.float32)[idx]
        act = np.concatenate([guidance, np.repeat(guidance[-1:], spec.shape[0] - guidance.shape[0], axis=0)])[:, idx].T
        prev = np.zeros((batch, spec.shape[0], 2, spec.shape[-1]), np.float32)
        for k in range(passes):
            state = np.zeros((batch, *separator.state_shape), np.float32)
            prev, _ = separator(mix, prev, onehot, np.ascontiguousarray(act, dtype=np.float32),
                                np.full(batch, k, np.int64), state)
        ola = OverlapAdd(n_fft, hop, batch)
        wave = ola(prev)
        delay = n_fft - hop
        for b, label in enumerate(classes):
            outputs[label] = wave[b, delay : delay + n]
    return outputs, events
