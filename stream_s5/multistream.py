"""Many independent real-time streams in one process, batched across streams.

    from stream_s5.multistream import MultiStreamEngine
    engine = MultiStreamEngine(n_streams=16, classes="auto")
    for blocks in lockstep_chunks:            # one block per stream, all of the same length
        outs = engine.feed(blocks)            # list of EngineOutput, one per stream
    outs = engine.flush()

Every stream has what an `Engine` has — input ring, activity timeline, class tracker, separator slots
with their per-pass states and overlap-add tails — but the ONNX sessions are shared and the work is
batched across streams: per hop, the STFT is one call over all streams, every refinement pass is ONE
separator call over all occupied slots of all streams (batch axis B = total occupied slots), and the
SED is one call over the streams whose SED hop is due. With `stagger_sed=False` (the default) every
stream's SED hop falls on the same hop, exactly as in `Engine`, and each stream's output equals what
a separate `Engine` would give for it (to float rounding of batched kernels). Only onset backfills
run per stream (one call per pass each: their pre-rolls differ in length).

Two options for serving many streams within the hop on every hop, not just on average:
- `stagger_sed=True`: the streams are split into groups whose SED hops fall on different hops of the
  SED period, so that each hop runs the SED for about N / (SED hop / hop) streams instead of all N
  every tenth hop. Each stream still gets the SED on its newest window every SED hop, at its own
  phase; its output is then no longer bit-equal to an `Engine`'s (whose phase is 0).
- `overlap_sed=True`: the SED call of a hop runs on a worker thread while the separator passes of
  that hop run on the calling thread (ONNX Runtime releases the GIL), using a second core. Nothing
  changes in the output: the separator of hop t never depends on the SED of hop t.

Input: `feed(blocks)` takes one block per stream at the bundle's rate, `[n]` or `[n, channels]`
(channels = the bundle's, or 1: copied to all channels), the same n for every stream. NaN/Inf → 0 and
clipping to ±clip_level are applied and counted per stream as in `Engine`; there is no resampling.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from stream_s5.bundle import Bundle, load_bundle
from stream_s5.conditioning import InputError, RepairCounters
from stream_s5.dsp import stft_frames
from stream_s5.engine import Backfill, BudgetError, EngineOptions, EngineOutput, StageTimer
from stream_s5.labels import parse_class_list
from stream_s5.ring import RingBuffer
from stream_s5.sed import ActivityTimeline, SedResult
from stream_s5.separator import SeparatorBank
from stream_s5.sessions import BoundSeparatorModel, SedModel, SeparatorModel, choose_providers
from stream_s5.tracker import ClassTracker, Event

__all__ = ["MultiStreamEngine"]


class _StreamBank(SeparatorBank):
    """A `SeparatorBank` whose slots are the slots of all streams: global slot g = stream * slots +
    slot. The mixture spectra are kept per stream; passes, states, one-hots, overlap-add tails and
    release are the base class's, over global slots."""

    def __init__(self, model: SeparatorModel, n_streams: int, slots_per_stream: int, passes: int, n_fft: int,
                 hop: int, channels: int, n_classes: int, history_frames: int, step_model=None):
        super().__init__(model, n_streams * slots_per_stream, passes, n_fft, hop, channels, n_classes, history_frames,
                         step_model=step_model)
        self.n_streams, self.slots_per_stream = n_streams, slots_per_stream
        self.spectra = np.zeros((history_frames, n_streams, channels, 2, self.n_freq), dtype=np.float32)

    def analyse(self, frame_index: int, framed: np.ndarray) -> np.ndarray:
        """framed [streams, channels, n_fft] → store and return [streams, channels, 2, F]."""
        spec = stft_frames(framed, self.window)
        self.spectra[frame_index % self.history] = spec
        return spec

    def step(self, spec: np.ndarray, activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One hop for every occupied slot of every stream, one call per pass. spec [streams, C, 2, F];
        activity [global slots] → (global slots, audio [B, hop])."""
        slots = self.occupied
        if slots.size == 0:
            return slots, np.zeros((0, self.hop), np.float32)
        mix = spec[slots // self.slots_per_stream][:, None]
        est = self._run_passes(slots, mix, activity[slots, None].astype(np.float32), self.step_model)
        return slots, self.ola(est, slots)

    def assign(self, slot: int, class_index: int, first_frame: int, last_frame: int,
               activity: np.ndarray) -> np.ndarray:
        """As `SeparatorBank.assign`, for global `slot`, on its own stream's stored spectra."""
        self.release(slot)
        self.slot_class[slot] = class_index
        self.onehot[slot, class_index] = 1.0
        frames = np.arange(first_frame, last_frame + 1)
        if frames.size == 0:
            return np.zeros(0, np.float32)
        mix = self.spectra[frames % self.history, slot // self.slots_per_stream][None]
        est = self._run_passes(np.array([slot]), mix, activity[None].astype(np.float32), self.model)
        return self.ola(est, np.array([slot]))[0]


@dataclass
class _Group:
    """Streams [lo, hi) sharing an SED phase and one ring (their channels stacked)."""

    lo: int
    hi: int
    phase: int  # SED due when the ring end ≡ phase (mod SED hop), in samples
    ring: RingBuffer
    window: np.ndarray  # [streams * channels, SED window] read buffer


class MultiStreamEngine:
    def __init__(self, bundle: Bundle | str | None = None, n_streams: int | None = None, classes="auto",
                 refine: int | str | None = None, device: str = "cpu", options: EngineOptions | None = None,
                 *, stagger_sed: bool = False, overlap_sed: bool = False):
        if n_streams is None or isinstance(n_streams, bool) or not isinstance(n_streams, (int, np.integer)) \
                or n_streams < 1:
            raise ValueError(f"n_streams must be a positive integer, not {n_streams!r}")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.options = options or EngineOptions()
        b = self.bundle
        self.n_streams = int(n_streams)
        self.rate, self.channels, self.hop = b.sample_rate, b.channels, b.hop
        self.n_fft = int(b.separator["n_fft"])
        self.latency = b.algorithmic_latency
        self.classes = b.classes
        self.fixed = self._parse_classes(classes)
        self.providers, self.device_note = choose_providers(device)
        self.sed_model = SedModel(b, self.providers, self.options.threads)
        self.sep_model = SeparatorModel(b, self.providers, self.options.threads)
        self.budget_ms = self.options.budget_ms or b.budget_ms
        self.passes = self._passes_requested(refine)
        self.sed_window, self.sed_hop = int(b.sed["window"]), int(b.sed["hop"])
        self.frame_hop = int(b.sed["frame_hop"])
        self.stagger_sed, self.overlap_sed = bool(stagger_sed), bool(overlap_sed)
        self._pool = None
        self._build()
        self.calibration: dict = {}
        if self.options.calibrate:
            self.calibrate(refine_auto=refine == "auto")
        if overlap_sed:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream_s5-sed")

    # ------------------------------------------------------------------ set-up
    def _parse_classes(self, classes):
        if classes in (None, "auto"):
            return None
        text = classes if isinstance(classes, str) else ",".join(classes)
        return tuple(parse_class_list(text, self.classes))

    def _passes_requested(self, refine) -> int:
        max_passes = int(self.bundle.separator["max_passes"])
        if refine in (None, "auto"):
            return int(self.bundle.separator["passes"])
        k = int(refine)
        if not 1 <= k <= max_passes:
            raise ValueError(f"refinement passes must be 1..{max_passes} for this bundle, not {k}")
        return k

    def _build(self):
        b, n = self.bundle, self.n_streams
        history = int(self.options.history_s * self.rate)
        history = max(history, self.sed_window + 4 * self.n_fft)
        self.history_frames = history // self.hop
        self.slots = len(self.fixed) if self.fixed is not None else int(b.separator["class_slots"])
        self.bank = _StreamBank(self.sep_model, n, self.slots, self.passes, self.n_fft, self.hop, self.channels,
                                len(self.classes), self.history_frames, step_model=self._step_model(n * self.slots))
        # SED phases: all 0 (as Engine), or the streams split into contiguous groups over the hops
        # of one SED period.
        hops_per_sed = self.sed_hop // self.hop
        n_groups = min(n, hops_per_sed) if self.stagger_sed else 1
        self.groups: list[_Group] = []
        for g in range(n_groups):
            lo, hi = g * n // n_groups, (g + 1) * n // n_groups
            phase = (g * hops_per_sed // n_groups) * self.hop
            self.groups.append(_Group(lo, hi, phase, RingBuffer((hi - lo) * self.channels, history),
                                      np.zeros(((hi - lo) * self.channels, self.sed_window), np.float32)))
        # Per-stream activity timelines; their values live in one array so that the activity of all
        # occupied slots is one gather per hop.
        self._activity_values = np.zeros((n, self.history_frames, len(self.classes)), np.float32)
        self.activity: list[ActivityTimeline] = []
        for i in range(n):
            timeline = ActivityTimeline(len(self.classes), self.history_frames, self.hop)
            timeline.values = self._activity_values[i]
            self.activity.append(timeline)
        self._latest = np.full(n, -1, np.int64)
        hop_frames = max(1, self.sed_hop // self.frame_hop)
        self.trackers = [ClassTracker(self.classes, self.slots, self.rate, self.options.tracker, self.fixed,
                                      hop_frames=hop_frames) for _ in range(n)]
        if self.fixed is not None:
            for i in range(n):
                for slot, label in enumerate(self.fixed):
                    self.bank.assign(i * self.slots + slot, self.classes.index(label), 0, -1, np.zeros(0))
        self.counters = [RepairCounters(upmixed=False) for _ in range(n)]
        self._input_samples = 0
        self._pending = np.zeros((n, self.channels, 0), np.float32)
        self._frame = np.zeros((n, self.channels, self.n_fft), np.float32)
        self._slot_activity = np.zeros(n * self.slots, np.float32)
        self._stream_of_slot = np.arange(n * self.slots) // self.slots
        self.frames_done = 0
        self.flushed = False
        self.sed_calls = 0  # ORT calls
        self.sed_windows = 0  # windows (streams) analysed
        self.timers = {k: StageTimer() for k in ("block", "sed", "separator", "tracker", "conditioning", "output")}
        self.deadline_misses = 0

    def _step_model(self, n_slots: int):
        """As Engine: with CUDA (or options.io_binding), the per-hop passes go through a fixed-shape
        IO-bound session sized for every slot of every stream (free slots are fed as zero rows)."""
        cuda = self.providers[0] == "CUDAExecutionProvider"
        use = getattr(self.options, "io_binding", None)
        use = use if use is not None else cuda
        if not use:
            return None
        key = (n_slots, cuda)
        if getattr(self, "_bound", (None, None))[0] != key:
            self._bound = (key, BoundSeparatorModel(self.bundle, self.providers, n_slots, self.options.threads,
                                                    cuda_graph=cuda))
        return self._bound[1]

    def reset(self, classes=None):
        """Forget all streams (states, rings, trackers, counters); keep sessions and calibration.
        Optionally switch the class selection for the next streams."""
        if classes is not None:
            self.fixed = self._parse_classes(classes)
        self._build()

    def close(self):
        """Stop the SED worker thread (overlap_sed); the engine is not usable for overlap afterwards."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            self.overlap_sed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ input
    def _condition(self, blocks) -> np.ndarray:
        """blocks: N × ([n] or [n, channels]) → [N, channels, n] float32, repaired and counted."""
        n_streams, channels = self.n_streams, self.channels
        if isinstance(blocks, np.ndarray) and blocks.dtype.kind in "fiu" and blocks.ndim in (2, 3):
            if blocks.shape[0] != n_streams:
                raise InputError(f"expected one block per stream ({n_streams}), got an array of shape {blocks.shape}")
            x = blocks if blocks.ndim == 3 else blocks[:, :, None]
        else:
            try:
                items = list(blocks)
            except TypeError:
                raise InputError("feed() takes a list with one block per stream") from None
            if len(items) != n_streams:
                raise InputError(f"expected one block per stream ({n_streams}), got {len(items)}")
            arrays = []
            for i, item in enumerate(items):
                a = np.asarray(item)
                if a.dtype.kind not in "fiu":
                    raise InputError(f"stream {i}: audio must be numeric, got dtype {a.dtype}")
                if a.ndim == 1:
                    a = a[:, None]
                if a.ndim != 2:
                    raise InputError(f"stream {i}: audio must be 1-D or frames × channels, got shape {a.shape}")
                arrays.append(a)
            lengths = {a.shape[0] for a in arrays}
            if len(lengths) > 1:
                raise InputError(f"every stream must get the same number of samples per feed, got "
                                 f"{[a.shape[0] for a in arrays]}")
            widths = {a.shape[1] for a in arrays}
            if len(widths) > 1:
                raise InputError(f"every stream must have the same channel count, got {[a.shape[1] for a in arrays]}")
            kinds = {a.dtype for a in arrays}
            x = np.stack(arrays) if len(kinds) == 1 else np.stack([a.astype(np.float64) for a in arrays])
        if x.shape[2] not in (1, channels):
            raise InputError(f"expected {channels} channel(s) (or mono) per stream at {self.rate} Hz, "
                             f"got blocks of shape {x.shape[1:]}")
        if x.dtype.kind in "iu":  # as InputConditioner: integers scaled to [-1, 1)
            info = np.iinfo(x.dtype)
            x = (x.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
        x = np.array(x, dtype=np.float32, copy=True)
        frames = x.shape[1]
        self._input_samples += frames
        for c in self.counters:
            c.input_samples += frames
        bad = ~np.isfinite(x)
        if bad.any():
            for i, count in enumerate(bad.sum(axis=(1, 2))):
                self.counters[i].nonfinite_samples += int(count)
            x[bad] = 0.0
        level = self.options.clip_level
        over = np.abs(x) > level
        if over.any():
            for i, count in enumerate(over.sum(axis=(1, 2))):
                self.counters[i].clipped_samples += int(count)
            np.clip(x, -level, level, out=x)
        if x.shape[2] != channels:
            for c in self.counters:
                c.upmixed = True
            x = np.repeat(x, channels, axis=2)
        return np.ascontiguousarray(x.transpose(0, 2, 1))

    # ------------------------------------------------------------------ streaming
    @property
    def emitted(self) -> int:
        """Samples of every stream's output timeline finished so far."""
        return max(0, self.frames_done * self.hop - (self.n_fft - self.hop))

    def feed(self, blocks) -> list[EngineOutput]:
        """One block per stream, all of the same length (any, including 0) → one EngineOutput per
        stream, with the semantics of `Engine.feed`."""
        if self.flushed:
            raise RuntimeError("engine was flushed: call reset() to start new streams")
        t0 = time.perf_counter()
        x = self._condition(blocks)
        self.timers["conditioning"].add(time.perf_counter() - t0)
        return self._process(x)

    def flush(self) -> list[EngineOutput]:
        """End of all streams: push out everything, trimmed to exactly the input length."""
        if self.flushed:
            raise RuntimeError("engine already flushed")
        total = self._input_samples
        have = self.group_written + self._pending.shape[2]
        need = -(-max(total, have) // self.hop) * self.hop + (self.n_fft - self.hop) - have
        pad = np.zeros((self.n_streams, self.channels, max(need, 0)), np.float32)
        outs = self._process(pad, limit=total)
        for out, tracker in zip(outs, self.trackers):
            out.events.extend(tracker.close(total))
        self.flushed = True
        return outs

    @property
    def group_written(self) -> int:
        return self.groups[0].ring.written

    def _process(self, x: np.ndarray, limit: int | None = None) -> list[EngineOutput]:
        n = self.n_streams
        start = self.emitted
        if self._pending.shape[2]:
            x = np.concatenate([self._pending, x], axis=2)
        n_hops = x.shape[2] // self.hop
        self._pending = x[:, :, n_hops * self.hop :].copy()
        # per hop: the slot classes at step time, and the separated audio of every global slot
        classes_at = np.full((n_hops, n * self.slots), -1, np.int64)
        audio_at = np.zeros((n * self.slots, n_hops * self.hop), np.float32) if n_hops else None
        first_frame = self.frames_done
        backfills: list[list[Backfill]] = [[] for _ in range(n)]
        events: list[list[Event]] = [[] for _ in range(n)]
        for h in range(n_hops):
            self._hop(x[:, :, h * self.hop : (h + 1) * self.hop], h, classes_at, audio_at, backfills, events)
        t0 = time.perf_counter()
        end = self.emitted if limit is None else min(self.emitted, limit)
        length = max(0, end - start)
        outs = self._assemble(start, length, first_frame, classes_at, audio_at, backfills, events, limit)
        self.timers["output"].add(time.perf_counter() - t0)
        return outs

    def _hop(self, block: np.ndarray, h: int, classes_at, audio_at, backfills, events):
        t0 = time.perf_counter()
        channels, hop = self.channels, self.hop
        for g in self.groups:
            g.ring.write(block[g.lo : g.hi].reshape((g.hi - g.lo) * channels, hop))
        frame_index = self.frames_done
        end = self.group_written
        for g in self.groups:
            g.ring.read(end - self.n_fft, end, out=self._frame[g.lo : g.hi].reshape(-1, self.n_fft))
        spec = self.bank.analyse(frame_index, self._frame)
        # the streams whose SED hop ends here: read their windows now, run after (or beside) the passes
        due = [g for g in self.groups if end > 0 and end % self.sed_hop == g.phase]
        future = None
        if due:
            audio = self._sed_windows(due, end)
            if self._pool is not None:
                future = self._pool.submit(self._run_sed, audio)
        t1 = time.perf_counter()
        bank = self.bank
        occupied = bank.slot_class >= 0
        if occupied.any():
            # SED guidance of every occupied slot at this frame (ActivityTimeline.get, for all at once)
            streams = self._stream_of_slot
            latest = self._latest[streams]
            held = np.minimum(frame_index, latest) % self.history_frames
            values = self._activity_values[streams, held, np.maximum(bank.slot_class, 0)]
            self._slot_activity[:] = np.where(latest >= 0, values, 0.0)
            slots, audio_slots = bank.step(spec, self._slot_activity)
            classes_at[h, slots] = bank.slot_class[slots]
            audio_at[slots, h * hop : (h + 1) * hop] = audio_slots
        self.frames_done += 1
        t2 = time.perf_counter()
        self.timers["separator"].add(t2 - t1)
        if due:
            clip, frame = future.result() if future is not None else self._run_sed(audio)
            t3 = time.perf_counter()
            self.timers["sed"].add(t3 - t2)
            row = 0
            for g in due:
                for i in range(g.lo, g.hi):
                    self._apply_sed(i, SedResult(end, end - self.sed_window, clip[row], frame[row], self.frame_hop),
                                    frame_index, backfills[i], events[i])
                    row += 1
            self.timers["tracker"].add(time.perf_counter() - t3)
        elapsed = time.perf_counter() - t0
        self.timers["block"].add(elapsed)
        if elapsed * 1000.0 > self.budget_ms:
            self.deadline_misses += 1

    def _sed_windows(self, due: list[_Group], end: int) -> np.ndarray:
        parts = []
        for g in due:
            g.ring.read(end - self.sed_window, end, out=g.window)
            # spatial bundles: the SED listens to each stream's reference (first) channel
            parts.append(g.window[:: self.channels])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_sed(self, audio: np.ndarray):
        clip, frame = self.sed_model(audio)
        self.sed_calls += 1
        self.sed_windows += audio.shape[0]
        return clip, frame

    def _apply_sed(self, i: int, result: SedResult, frame_index: int, backfills: list, events: list):
        """Stream i's SED result: activity, tracker, slot changes (with backfill), as Engine._hop."""
        timeline = self.activity[i]
        timeline.write(result)
        self._latest[i] = timeline.latest
        new_events, changes = self.trackers[i].update(result)
        events.extend(new_events)
        for change in changes:
            slot = i * self.slots + change.slot
            if change.label is None:
                self.bank.release(slot)
                continue
            first = max(change.start_sample // self.hop, frame_index - self.history_frames + 1, 0)
            frames = np.arange(first, frame_index + 1)
            class_index = self.classes.index(change.label)
            audio = self.bank.assign(slot, class_index, first, frame_index, timeline.get(frames, class_index))
            backfills.append(Backfill(change.label, (first + 1) * self.hop - self.n_fft, audio))

    def _assemble(self, start, length, first_frame, classes_at, audio_at, backfills, events, limit):
        """Per stream: label → [length] audio placed as Engine._process places its hop chunks, and
        the backfills clipped to the timeline [0, limit)."""
        n, hop = self.n_streams, self.hop
        audio: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
        n_hops = classes_at.shape[0]
        if n_hops:
            # runs of hops during which a global slot held one class: [slot, class, first hop, end hop]
            constant = (classes_at == classes_at[:1]).all(axis=0)
            runs = [(g, int(classes_at[0, g]), 0, n_hops) for g in np.flatnonzero(constant & (classes_at[0] >= 0))]
            for g in np.flatnonzero(~constant):
                col = classes_at[:, g]
                cuts = np.concatenate([[0], np.flatnonzero(np.diff(col)) + 1, [n_hops]])
                runs += [(g, int(col[a]), int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if col[a] >= 0]
            # hop h of this call finishes timeline samples [block_start(h), block_start(h) + hop)
            block_start0 = (first_frame + 1) * hop - self.n_fft
            for g, c, a, b in sorted(runs, key=lambda r: r[2]):
                samples = audio_at[g, a * hop : b * hop]
                lo = block_start0 + a * hop - start
                if lo < 0:  # the first hop of the stream covers samples before its start
                    samples, lo = samples[-lo:], 0
                hi = min(lo + samples.size, length)
                stream = g // self.slots
                buf = audio[stream].get(self.classes[c])
                if buf is None:
                    buf = audio[stream][self.classes[c]] = np.zeros(length, np.float32)
                if hi > lo:
                    buf[lo:hi] = samples[: hi - lo]
        outs = []
        for i in range(n):
            clipped = []
            for bf in backfills[i]:
                samples, first = bf.audio, bf.start
                if first < 0:
                    samples, first = samples[-first:], 0
                if limit is not None:
                    samples = samples[: max(0, limit - first)]
                clipped.append(Backfill(bf.label, first, samples))
            outs.append(EngineOutput(start, length, audio[i], clipped, events[i]))
        return outs

    # ------------------------------------------------------------------ budget
    def calibrate(self, refine_auto: bool = False, blocks: int = 20) -> dict:
        """Time one pass over every slot of every stream and the largest SED batch; refuse a pass
        count whose mean per-hop cost (SED amortised over its hop) exceeds the budget, or lower it
        with refine_auto (as Engine.calibrate, for all streams together)."""
        n_slots = self.n_streams * self.slots
        n_freq = self.n_fft // 2 + 1
        mix = np.zeros((n_slots, 1, self.channels, 2, n_freq), np.float32)
        onehot = np.eye(len(self.classes), dtype=np.float32)[np.arange(n_slots) % len(self.classes)]
        state = np.zeros((n_slots, *self.sep_model.state_shape), np.float32)
        activity = np.ones((n_slots, 1), np.float32)
        prev = np.zeros((n_slots, 1, 2, n_freq), np.float32)
        per_pass = []
        for i in range(blocks + 3):
            t = time.perf_counter()
            self.sep_model(mix, prev, onehot, activity, np.zeros(n_slots, np.int64), state)
            if i >= 3:
                per_pass.append(time.perf_counter() - t)
        batch = max(g.hi - g.lo for g in self.groups)
        window = np.zeros((batch, self.sed_window), np.float32)
        sed_times = []
        for i in range(4):
            t = time.perf_counter()
            self.sed_model(window)
            if i >= 1:
                sed_times.append(time.perf_counter() - t)
        pass_ms = float(np.median(per_pass)) * 1000
        sed_ms = float(np.median(sed_times)) * 1000
        hops_per_sed = self.sed_hop // self.hop
        sed_per_hop = sed_ms * len(self.groups) / hops_per_sed
        cost = lambda k: k * pass_ms + sed_per_hop  # noqa: E731
        requested = self.passes
        if refine_auto:
            while self.passes > 1 and cost(self.passes) > self.budget_ms:
                self.passes -= 1
            if self.passes != requested:
                self._build()
        self.calibration = {"pass_ms": round(pass_ms, 4), "sed_ms": round(sed_ms, 4), "sed_batch": batch,
                            "streams": self.n_streams, "slots": n_slots, "passes": self.passes,
                            "hop_cost_ms": round(cost(self.passes), 4), "budget_ms": self.budget_ms}
        if cost(self.passes) > self.budget_ms:
            raise BudgetError(
                f"{self.n_streams} stream(s) × {self.slots} slot(s) × {self.passes} refinement pass(es) need "
                f"{cost(self.passes):.2f} ms per {1000 * self.hop / self.rate:.1f} ms hop on this machine (budget "
                f"{self.budget_ms:.2f} ms): use fewer streams, refine='auto', fewer passes or classes, more threads, "
                "or a larger budget_ms")
        return self.calibration

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict:
        """Per-hop timings cover all streams together (one hop = `hop` samples of every stream)."""
        return {
            "timings": {k: t.summary() for k, t in self.timers.items()},
            "deadline_misses": self.deadline_misses,
            "hops": self.frames_done,
            "streams": self.n_streams,
            "slots": self.slots,
            "passes": self.passes,
            "sed_calls": self.sed_calls,
            "sed_windows": self.sed_windows,
            "separator_calls": self.bank.calls,
            "sed_groups": len(self.groups),
            "overlap_sed": self.overlap_sed,
            "slot_overflows": [t.slot_overflows for t in self.trackers],
            "repairs": [c.to_dict() for c in self.counters],
            "device": self.device_note,
            "threads": self.options.threads,
            "budget_ms": self.budget_ms,
            "calibration": self.calibration,
        }

    def slot_labels(self, stream: int) -> list[str | None]:
        row = self.bank.slot_class[stream * self.slots : (stream + 1) * self.slots]
        return [self.classes[c] if c >= 0 else None for c in row]
