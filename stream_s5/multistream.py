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
  changes in the output: as in `Engine`, the SED of hop t is applied at the start of hop t + 1.

Input: `feed(blocks)` takes one block per stream at the bundle's rate, `[n]` or `[n, channels]`
(channels = the bundle's, or 1: copied to all channels), the same n for every stream. NaN/Inf → 0 and
clipping to ±clip_level are applied and counted per stream as in `Engine`; there is no resampling.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from stream_s5.bundle import Bundle
from stream_s5.conditioning import InputError, RepairCounters, as_frames, repair, to_float32
from stream_s5.engine import (Backfill, BudgetError, EngineOptions, EngineOutput, StageTimer, _EngineCore,
                              apply_sed_result, assemble_output, close_stream, parse_classes)
from stream_s5.ring import RingBuffer
from stream_s5.sed import stacked_timelines
from stream_s5.separator import SeparatorBank
from stream_s5.sessions import SeparatorModel
from stream_s5.tracker import Event

__all__ = ["MultiStreamEngine"]


class _StreamBank(SeparatorBank):
    """A `SeparatorBank` whose slots are the slots of all streams: global slot g = stream * slots +
    slot. The mixture spectra are kept per stream (`analyse` takes [streams, channels, n_fft]);
    everything else is the base class's, over global slots."""

    def __init__(self, model: SeparatorModel, n_streams: int, slots_per_stream: int, passes: int, n_fft: int,
                 hop: int, channels: int, n_classes: int, history_frames: int, step_model=None):
        super().__init__(model, n_streams * slots_per_stream, passes, n_fft, hop, channels, n_classes, history_frames,
                         step_model=step_model)
        self.n_streams, self.slots_per_stream = n_streams, slots_per_stream
        self.spectra = np.zeros((history_frames, n_streams, channels, 2, self.n_freq), dtype=np.float32)

    def _hop_mixture(self, spec: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return spec[slots // self.slots_per_stream][:, None]

    def _stored_mixture(self, frames: np.ndarray, slot: int) -> np.ndarray:
        return self.spectra[frames % self.history, slot // self.slots_per_stream]


@dataclass
class _Group:
    """Streams [lo, hi) sharing an SED phase and one ring (their channels stacked)."""

    lo: int
    hi: int
    phase: int  # SED due when the ring end ≡ phase (mod SED hop), in samples
    ring: RingBuffer
    window: np.ndarray  # [streams * channels, SED window] read buffer


class MultiStreamEngine(_EngineCore):
    def __init__(self, bundle: Bundle | str | None = None, n_streams: int | None = None, classes="auto",
                 refine: int | str | None = None, device: str = "cpu", options: EngineOptions | None = None,
                 *, stagger_sed: bool = False, overlap_sed: bool = False):
        if n_streams is None or isinstance(n_streams, bool) or not isinstance(n_streams, (int, np.integer)) \
                or n_streams < 1:
            raise ValueError(f"n_streams must be a positive integer, not {n_streams!r}")
        self.n_streams = int(n_streams)
        self._load(bundle, classes, refine, device, options)
        self.sed_window, self.sed_hop = int(self.bundle.sed["window"]), int(self.bundle.sed["hop"])
        self.stagger_sed, self.overlap_sed = bool(stagger_sed), bool(overlap_sed)
        # the SED worker (overlap_sed): its thread starts with the first SED call
        self._sed_executor = ThreadPoolExecutor(1, thread_name_prefix="stream_s5-sed") if overlap_sed else None
        self._start(refine)

    # ------------------------------------------------------------------ set-up
    def _build(self):
        n = self.n_streams
        history = self._history()
        self.history_frames = history // self.hop
        self.slots = len(self.fixed) if self.fixed is not None else int(self.bundle.separator["class_slots"])
        self.bank = _StreamBank(self.sep_model, n, self.slots, self.passes, self.n_fft, self.hop, self.channels,
                                len(self.classes), self.history_frames, step_model=self._step_model(n * self.slots))
        self.sed = self._sed_scheduler(self._sed_executor)
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
        self._activity_values, self.activity = stacked_timelines(n, len(self.classes), self.history_frames, self.hop)
        self._latest = np.full(n, -1, np.int64)
        self.trackers = [self._tracker(self.slots, self.fixed) for _ in range(n)]
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
        self.timers = {"block": StageTimer(), "sed": self.sed.timer, "sed_wait": self.sed.wait_timer,
                       **{k: StageTimer() for k in ("separator", "tracker", "conditioning", "output")}}
        self.deadline_misses = 0

    def reset(self, classes=None):
        """Forget all streams (states, rings, trackers, counters); keep sessions and calibration.
        Optionally switch the class selection for the next streams."""
        if classes is not None:
            self.fixed = parse_classes(classes, self.classes)
        self._build()

    def close(self):
        """Stop the SED worker thread (overlap_sed); the engine is not usable for overlap afterwards."""
        if self._sed_executor is not None:
            self._sed_executor.shutdown(wait=True)
            self._sed_executor = self.sed.executor = None
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
            arrays = [as_frames(item, f"stream {i}: ") for i, item in enumerate(items)]
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
        x = to_float32(x)
        frames = x.shape[1]
        self._input_samples += frames
        nonfinite, clipped = repair(x, self.options.clip_level, axis=(1, 2))
        for c, bad, over in zip(self.counters, np.broadcast_to(nonfinite, n_streams),
                                np.broadcast_to(clipped, n_streams)):
            c.input_samples += frames
            c.nonfinite_samples += int(bad)
            c.clipped_samples += int(over)
        if x.shape[2] != channels:
            for c in self.counters:
                c.upmixed = True
            x = np.repeat(x, channels, axis=2)
        return np.ascontiguousarray(x.transpose(0, 2, 1))

    # ------------------------------------------------------------------ streaming
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
        pad = np.zeros((self.n_streams, self.channels, self._flush_padding(total, have)), np.float32)
        outs = self._process(pad, limit=total)
        for out, tracker in zip(outs, self.trackers):
            close_stream(tracker, total, out)
        self.flushed = True
        return outs

    @property
    def group_written(self) -> int:
        return self.groups[0].ring.written

    @property
    def sed_calls(self) -> int:  # ORT calls
        return self.sed.calls

    @property
    def sed_windows(self) -> int:  # windows (streams) analysed
        return self.sed.windows

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
        if limit is not None and self.sed.pending:  # end of the streams: the last SED results
            self._apply_sed(backfills, events)
        t0 = time.perf_counter()
        outs = [assemble_output(start, self.emitted, chunks, backfills[i], events[i], limit)
                for i, chunks in enumerate(self._chunks(first_frame, classes_at, audio_at))]
        self.timers["output"].add(time.perf_counter() - t0)
        return outs

    def _hop(self, block: np.ndarray, h: int, classes_at, audio_at, backfills, events):
        t0 = time.perf_counter()
        if self.sed.pending:  # as Engine: the previous hop's SED, applied before this frame is separated
            self._apply_sed(backfills, events)
        channels, hop = self.channels, self.hop
        for g in self.groups:
            g.ring.write(block[g.lo : g.hi].reshape((g.hi - g.lo) * channels, hop))
        frame_index = self.frames_done
        end = self.group_written
        for g in self.groups:
            g.ring.read(end - self.n_fft, end, out=self._frame[g.lo : g.hi].reshape(-1, self.n_fft))
        spec = self.bank.analyse(frame_index, self._frame)
        # the streams whose SED hop ends here: submitted before the passes, so that on the worker
        # thread (overlap_sed) the SED runs beside them
        due = [g for g in self.groups if self.sed.due(end, g.phase)]
        if due:
            streams = [i for g in due for i in range(g.lo, g.hi)]
            self.sed.submit(self._sed_windows(due, end), end, frame_index, streams,
                            cache_keys=[(i, 0, end) for i in streams])
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
        self.timers["separator"].add(time.perf_counter() - t1)
        self._end_hop(t0)

    def _sed_windows(self, due: list[_Group], end: int) -> np.ndarray:
        parts = []
        for g in due:
            g.ring.read(end - self.sed_window, end, out=g.window)
            # spatial bundles: the SED listens to each stream's reference (first) channel
            parts.append(g.window[:: self.channels])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _apply_sed(self, backfills: list[list[Backfill]], events: list[list[Event]]):
        frame_index, results = self.sed.take()
        t0 = time.perf_counter()
        for i, result in results:
            apply_sed_result(result, frame_index, self.activity[i], self.trackers[i], self.bank, i * self.slots,
                             backfills[i], events[i])
            self._latest[i] = self.activity[i].latest
        self.timers["tracker"].add(time.perf_counter() - t0)

    def _chunks(self, first_frame: int, classes_at: np.ndarray, audio_at: np.ndarray) -> list[dict]:
        """Per stream: label → [(block start, samples)] as Engine._hop collects them, one chunk per
        run of hops during which a global slot held one class."""
        hop = self.hop
        chunks: list[dict[str, list[tuple[int, np.ndarray]]]] = [{} for _ in range(self.n_streams)]
        n_hops = classes_at.shape[0]
        if n_hops == 0:
            return chunks
        # runs: [slot, class, first hop, end hop]
        constant = (classes_at == classes_at[:1]).all(axis=0)
        runs = [(g, int(classes_at[0, g]), 0, n_hops) for g in np.flatnonzero(constant & (classes_at[0] >= 0))]
        for g in np.flatnonzero(~constant):
            col = classes_at[:, g]
            cuts = np.concatenate([[0], np.flatnonzero(np.diff(col)) + 1, [n_hops]])
            runs += [(g, int(col[a]), int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if col[a] >= 0]
        # hop h of this call finishes timeline samples [block_start(h), block_start(h) + hop)
        block_start0 = (first_frame + 1) * hop - self.n_fft
        for g, c, a, b in sorted(runs, key=lambda r: r[2]):
            parts = chunks[g // self.slots].setdefault(self.classes[c], [])
            parts.append((block_start0 + a * hop, audio_at[g, a * hop : b * hop]))
        return chunks

    # ------------------------------------------------------------------ budget
    def calibrate(self, refine_auto: bool = False, blocks: int = 20) -> dict:
        """Time one pass over every slot of every stream and the largest SED batch; refuse a pass
        count whose mean per-hop cost (SED amortised over its hop) exceeds the budget, or lower it
        with refine_auto (as Engine.calibrate, for all streams together)."""
        batch = max(g.hi - g.lo for g in self.groups)
        cost = self._calibrate(refine_auto, blocks, sed_runs=3, n_slots=self.n_streams * self.slots, sed_batch=batch,
                               seds_per_sed_hop=len(self.groups), info={"sed_batch": batch, "streams": self.n_streams})
        if cost > self.budget_ms:
            raise BudgetError(
                f"{self.n_streams} stream(s) × {self.slots} slot(s) × {self.passes} refinement pass(es) need "
                f"{cost:.2f} ms per {1000 * self.hop / self.rate:.1f} ms hop on this machine (budget "
                f"{self.budget_ms:.2f} ms): use fewer streams, refine='auto', fewer passes or classes, more threads, "
                "or a larger budget_ms")
        return self.calibration

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict:
        """Per-hop timings cover all streams together (one hop = `hop` samples of every stream)."""
        return self._stats(
            streams=self.n_streams,
            slots=self.slots,
            passes=self.passes,
            sed_calls=self.sed_calls,
            sed_windows=self.sed_windows,
            separator_calls=self.bank.calls,
            sed_groups=len(self.groups),
            overlap_sed=self.overlap_sed,
            slot_overflows=[t.slot_overflows for t in self.trackers],
            repairs=[c.to_dict() for c in self.counters],
            device=self.device_note,
            threads=self.options.threads,
            budget_ms=self.budget_ms,
            calibration=self.calibration,
        )

    def slot_labels(self, stream: int) -> list[str | None]:
        row = self.bank.slot_class[stream * self.slots : (stream + 1) * self.slots]
        return [self.classes[c] if c >= 0 else None for c in row]
