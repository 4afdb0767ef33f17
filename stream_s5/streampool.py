"""Streams that come and go, each at its own pace, batched through shared sessions (the server's engine).

    from stream_s5.streampool import StreamPool
    pool = StreamPool(capacity=16)
    sid = pool.open(classes="auto", input_rate=48000, input_channels=1)   # PoolFull when all are taken
    pool.push(sid, block)          # any length, any time (the input is conditioned here, as in Engine)
    outs = pool.step()             # {sid: EngineOutput} for the streams that had a whole hop to run
    pool.end(sid)                  # no more input: the next steps flush it; its last output has .final
    pool.close(sid)                # abandon a stream at once (a client that vanished)

`MultiStreamEngine` runs N streams in lockstep: one block per stream per call, all of the same length.
A server cannot wait for its slowest client, nor reset everyone when one client leaves. Here every
stream has its own clock: a hop of the pool runs, in one batch, the streams that have a whole hop of
input queued; a stream that sent nothing is simply not in that hop, a stream that joins starts at its
own sample 0, and a stream that leaves frees its slots for the next one. Per pool hop: ring writes and
STFT frames for the ready streams (vectorised over them), one separator call per refinement pass over
their occupied slots.

The SED runs ahead: as soon as a stream's input — run or still queued — covers its next SED window, the
window goes into one SED call with the other streams' such windows, on the SED worker, while the pool
separates. Its result is applied before the stream's first hop after the window's end, exactly where
`Engine` applies it (one hop after the window ends), so the output is the same; but the pool waits for
the SED only when a stream's result is still not in by then, not at every hop.

Each stream's output equals what a separate `Engine` with the same options gives for the same input
(to float rounding of batched kernels), however its input was chunked and whenever the other streams
came, went or paused: its ring, activity timeline, tracker, separator slots and overlap-add tails are
its own, and its SED runs at its own sample positions (a multiple of the SED hop, as in `Engine`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from stream_s5.bundle import Bundle
from stream_s5.conditioning import InputConditioner
from stream_s5.dsp import stft_frames
from stream_s5.engine import (BudgetError, EngineOptions, EngineOutput, StageTimer, _EngineCore, apply_sed_result,
                              assemble_output, close_stream, parse_classes)
from stream_s5.multistream import _StreamBank
from stream_s5.sed import stacked_timelines
from stream_s5.tracker import ClassTracker, Event

__all__ = ["StreamPool", "PoolFull", "StreamInfo"]


class PoolFull(RuntimeError):
    """Every stream slot of the pool is taken."""


@dataclass
class StreamInfo:
    """What the pool knows of one open stream (reporting)."""

    sid: int
    classes: tuple[str, ...] | None  # fixed classes, None: auto
    input_rate: int
    input_channels: int
    hops: int = 0  # hops run
    queued: int = 0  # conditioned samples waiting for a hop (bundle rate)
    ending: bool = False


@dataclass
class _Stream:
    sid: int
    generation: int  # tells a reopened slot from its previous occupant (late SED results)
    fixed: tuple[str, ...] | None
    conditioner: InputConditioner
    tracker: ClassTracker
    queue: deque = field(default_factory=deque)  # [channels, n] blocks at the bundle rate
    queued: int = 0
    pushed: int = 0  # conditioned samples pushed so far (bundle rate)
    frames: int = 0  # hops run: the stream's own clock
    total: int | None = None  # input length at the bundle rate, known once it ended
    sent: int = 0  # output samples handed out (start of the next output)
    sed_next: int = 0  # end (bundle-rate samples) of the stream's next SED window not yet submitted
    sed_inflight: deque = field(default_factory=deque)  # ends of submitted windows whose result is not taken
    sed_results: deque = field(default_factory=deque)  # (end, frame index, SedResult) taken, not yet applied
    # per step: what the hops of this step produced
    chunks: dict = field(default_factory=dict)
    backfills: list = field(default_factory=list)
    events: list = field(default_factory=list)


class StreamPool(_EngineCore):
    def __init__(self, bundle: Bundle | str | None = None, capacity: int = 16, refine: int | str | None = None,
                 device: str = "cpu", options: EngineOptions | None = None, slots_per_stream: int | None = None):
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, not {capacity!r}")
        self.capacity = int(capacity)
        self._load(bundle, None, refine, device, options)
        self.slots = int(slots_per_stream or self.bundle.separator["class_slots"])
        if self.n_fft % self.hop:
            raise ValueError("the bundle's n_fft must be a multiple of its hop")
        self.sed_window, self.sed_hop = int(self.bundle.sed["window"]), int(self.bundle.sed["hop"])
        self._sed_executor = ThreadPoolExecutor(1, thread_name_prefix="stream_s5-pool-sed") \
            if self.options.sed_worker else None
        self._lock = threading.Lock()  # push() / end() from other threads than step()
        self._start(refine)

    # ------------------------------------------------------------------ set-up
    def _build(self):
        n, history = self.capacity, self._history()
        self.history_frames = history // self.hop
        self.ring_size = history
        self.ring = np.zeros((n, history, self.channels), np.float32)  # per stream, own write position
        self.written = np.zeros(n, np.int64)
        self.bank = _StreamBank(self.sep_model, n, self.slots, self.passes, self.n_fft, self.hop, self.channels,
                                len(self.classes), self.history_frames)
        self.sed = self._sed_scheduler(self._sed_executor)
        self._activity_values, self.activity = stacked_timelines(n, len(self.classes), self.history_frames, self.hop)
        self._latest = np.full(n, -1, np.int64)
        self._frames = np.zeros(n, np.int64)  # each stream's hops run (mirror of _Stream.frames, for gathers)
        self._spec = np.zeros((n, self.channels, 2, self.n_fft // 2 + 1), np.float32)
        self._slot_activity = np.zeros(n * self.slots, np.float32)
        self._stream_of_slot = np.arange(n * self.slots) // self.slots
        self.streams: dict[int, _Stream] = {}
        self._generation = 0
        self.frames_done = 0  # pool hops
        self.timers = {"block": StageTimer(), "sed": self.sed.timer, "sed_wait": self.sed.wait_timer,
                       **{k: StageTimer() for k in ("separator", "tracker", "output")}}
        self.deadline_misses = 0
        self.opened = self.finished = self.abandoned = 0
        self.reports: dict[int, dict] = {}  # streams that finished: their repairs (pop_report)

    def calibrate(self, refine_auto: bool = False, blocks: int = 20) -> dict:
        """Time one pass over every slot of a full pool and a SED call over every stream (the worst
        hop: all streams ready, all slots occupied, every SED due); refuse a pass count that does not
        fit the budget, or lower it with refine_auto."""
        cost = self._calibrate(refine_auto, blocks, sed_runs=3, n_slots=self.capacity * self.slots,
                               sed_batch=self.capacity, seds_per_sed_hop=1, info={"capacity": self.capacity})
        if cost > self.budget_ms:
            raise BudgetError(
                f"a pool of {self.capacity} stream(s) × {self.slots} slot(s) × {self.passes} refinement pass(es) "
                f"needs {cost:.2f} ms per {1000 * self.hop / self.rate:.1f} ms hop on this machine (budget "
                f"{self.budget_ms:.2f} ms): use a smaller capacity, refine='auto', fewer passes or a larger budget")
        return self.calibration

    def close_pool(self):
        """Stop the SED worker thread."""
        if self._sed_executor is not None:
            self._sed_executor.shutdown(wait=True)
            self._sed_executor = self.sed.executor = None

    # ------------------------------------------------------------------ stream life
    def open(self, classes="auto", input_rate: int | None = None, input_channels: int | None = None) -> int:
        """A new stream on a free slot → its id. Its classes: "auto" (tracked) or a fixed list of at
        most `slots` classes. Raises PoolFull, or ValueError/InputError for a bad request."""
        fixed = parse_classes(classes, self.classes)
        if fixed is not None and len(fixed) > self.slots:
            raise ValueError(f"at most {self.slots} fixed classes per stream on this server, got {len(fixed)}")
        conditioner = InputConditioner(input_rate or self.rate, input_channels or self.channels, self.rate,
                                       self.channels, self.options.clip_level)
        with self._lock:
            free = [i for i in range(self.capacity) if i not in self.streams]
            if not free:
                raise PoolFull(f"all {self.capacity} streams are in use")
            sid = free[0]
            self._generation += 1
            self._reset_slot(sid)
            self.streams[sid] = _Stream(sid, self._generation, fixed, conditioner, self._tracker(self.slots, fixed),
                                        sed_next=self.sed_hop)
            if fixed is not None:
                for slot, label in enumerate(fixed):
                    self.bank.assign(sid * self.slots + slot, self.classes.index(label), 0, -1, np.zeros(0))
            self.opened += 1
        return sid

    def push(self, sid: int, samples) -> int:
        """Queue input for a stream (any length; conditioned now). → samples pushed so far at the bundle
        rate (a hop count × hop at or beyond it means the input up to here has been run)."""
        stream = self._stream(sid)
        if stream.total is not None:
            raise RuntimeError(f"stream {sid} has ended: no more input")
        x = stream.conditioner(samples)
        with self._lock:
            if x.shape[1]:
                stream.queue.append(x)
                stream.queued += x.shape[1]
                stream.pushed += x.shape[1]
            return stream.pushed

    def end(self, sid: int) -> None:
        """No more input: the following steps push the stream's last samples through, as Engine.flush,
        and its last output comes with `final=True`; then its slot is free."""
        stream = self._stream(sid)
        if stream.total is not None:
            return
        tail = stream.conditioner.flush()
        with self._lock:
            if tail.shape[1]:
                stream.queue.append(tail)
                stream.queued += tail.shape[1]
            stream.total = stream.conditioner.expected_output_length()
            have = int(self.written[sid]) + stream.queued
            pad = self._flush_padding(stream.total, have)
            stream.queue.append(np.zeros((self.channels, pad), np.float32))
            stream.queued += pad

    def close(self, sid: int) -> None:
        """Abandon a stream now (no final output); its slot is free for the next one."""
        with self._lock:
            if self.streams.pop(sid, None) is not None:
                self._release_slots(sid)
                self.abandoned += 1

    def info(self, sid: int) -> StreamInfo:
        s = self._stream(sid)
        return StreamInfo(sid, s.fixed, s.conditioner.in_rate, s.conditioner.in_channels, s.frames, s.queued,
                          s.total is not None)

    def pop_report(self, sid: int) -> dict | None:
        """A finished stream's input repairs, hops and slot overflows (once)."""
        return self.reports.pop(sid, None)

    def repairs(self, sid: int) -> dict:
        return self._stream(sid).conditioner.counters.to_dict()

    def slot_overflows(self, sid: int) -> int:
        return self._stream(sid).tracker.slot_overflows

    def slot_labels(self, sid: int) -> list[str | None]:
        row = self.bank.slot_class[sid * self.slots : (sid + 1) * self.slots]
        return [self.classes[c] if c >= 0 else None for c in row]

    def open_events(self, sid: int) -> list[Event]:
        return self._stream(sid).tracker.open_events()

    def latest_activity(self, sid: int) -> np.ndarray:
        """The stream's newest SED frame probability per class (zeros before its first SED result)."""
        self._stream(sid)
        latest = int(self._latest[sid])
        if latest < 0:
            return np.zeros(len(self.classes), np.float32)
        return self._activity_values[sid, latest % self.history_frames].copy()

    def is_open(self, sid: int) -> bool:
        return sid in self.streams

    # ready() and active are read from other threads (the server's event loop) while step/open/close
    # change the stream dict: under the lock.
    @property
    def active(self) -> list[int]:
        with self._lock:
            return sorted(self.streams)

    def ready(self, hops: int = 1) -> bool:
        """Whether some stream has `hops` whole hops queued."""
        need = hops * self.hop
        with self._lock:
            return any(s.queued >= need for s in self.streams.values())

    def _stream(self, sid: int) -> _Stream:
        stream = self.streams.get(sid)
        if stream is None:
            raise KeyError(f"no open stream {sid}")
        return stream

    def _reset_slot(self, sid: int):
        """A fresh stream on slot `sid`: silence before its sample 0, nothing held."""
        self.ring[sid] = 0.0
        self.written[sid] = 0
        self.bank.spectra[:, sid] = 0.0
        self.activity[sid].reset()
        self._latest[sid] = -1
        self._frames[sid] = 0
        self._release_slots(sid)

    def _release_slots(self, sid: int):
        for slot in range(sid * self.slots, (sid + 1) * self.slots):
            self.bank.release(slot)

    # ------------------------------------------------------------------ processing
    def step(self, max_hops: int | None = None) -> dict[int, EngineOutput]:
        """Run pool hops while some stream has a whole hop queued (at most `max_hops`) → the output of
        every stream that ran (and the last, `final`, output of streams that finished)."""
        ran: set[int] = set()
        finished: list[int] = []
        hops = 0
        while max_hops is None or hops < max_hops:
            with self._lock:
                ahead = self._sed_windows_ahead()  # before the hop moves queued input into the ring
                ready = [s for s in self.streams.values() if s.queued >= self.hop]
                blocks = [self._take_hop(s) for s in ready]
            self._submit_sed(*ahead)
            if not ready:
                break
            self._hop(ready, blocks)
            hops += 1
            ran.update(s.sid for s in ready)
            finished += [s.sid for s in ready if s.total is not None and s.queued == 0]
        if finished:  # a stream's last SED results, before it closes (as Engine.flush)
            self._collect_sed([self.streams[sid] for sid in finished if sid in self.streams])
        t0 = time.perf_counter()
        outs = {}
        with self._lock:
            # streams that ran, and streams whose SED result (events, backfills) came in meanwhile
            ran.update(sid for sid, s in self.streams.items() if s.events or s.backfills)
            for sid in sorted(ran):
                stream = self.streams.get(sid)
                if stream is None:  # closed meanwhile
                    continue
                emitted = max(0, stream.frames * self.hop - (self.n_fft - self.hop))
                out = assemble_output(stream.sent, emitted, stream.chunks, stream.backfills, stream.events,
                                      stream.total)
                stream.sent = out.start + out.length
                stream.chunks, stream.backfills, stream.events = {}, [], []
                if sid in finished:
                    close_stream(stream.tracker, stream.total, out)
                    out.final = True
                    self.reports[sid] = {"repairs": stream.conditioner.counters.to_dict(), "hops": stream.frames,
                                         "slot_overflows": stream.tracker.slot_overflows}
                    del self.streams[sid]
                    self._release_slots(sid)
                    self.finished += 1
                outs[sid] = out
        self.timers["output"].add(time.perf_counter() - t0)
        return outs

    def _take_hop(self, stream: _Stream) -> np.ndarray:
        """The next `hop` queued samples of a stream → [channels, hop] (under the lock)."""
        need, parts = self.hop, []
        while need:
            head = stream.queue[0]
            if head.shape[1] <= need:
                parts.append(stream.queue.popleft())
                need -= head.shape[1]
            else:
                parts.append(head[:, :need])
                stream.queue[0] = head[:, need:]
                need = 0
        stream.queued -= self.hop
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def _hop(self, ready: list[_Stream], blocks: list[np.ndarray]):
        t0 = time.perf_counter()
        self._collect_sed(ready)  # as Engine: a window's SED result is applied before the hop after its end
        hop, n_fft, size = self.hop, self.n_fft, self.ring_size
        sids = np.array([s.sid for s in ready])
        # ring: each ready stream writes one hop at its own position and reads its newest n_fft samples
        block = np.stack(blocks)  # [A, C, hop]
        pos = self.written[sids, None] + np.arange(hop)
        self.ring[sids[:, None], pos % size] = block.transpose(0, 2, 1)
        self.written[sids] += hop
        end = self.written[sids]
        frame_pos = (end[:, None] - n_fft + np.arange(n_fft)) % size  # before sample 0: the zeroed ring
        frames = self.ring[sids[:, None], frame_pos].transpose(0, 2, 1)  # [A, C, n_fft]
        spec = stft_frames(frames, self.bank.window)
        local = self._frames[sids]
        self.bank.spectra[local % self.history_frames, sids] = spec
        self._spec[sids] = spec
        # separator: the occupied slots of the ready streams, guided by their SED activity at their frame
        t1 = time.perf_counter()
        bank = self.bank
        ready_mask = np.zeros(self.capacity, bool)
        ready_mask[sids] = True
        slots = np.flatnonzero((bank.slot_class >= 0) & ready_mask[self._stream_of_slot])
        if slots.size:
            streams = self._stream_of_slot[slots]
            latest = self._latest[streams]
            held = np.minimum(self._frames[streams], latest) % self.history_frames
            values = self._activity_values[streams, held, bank.slot_class[slots]]
            self._slot_activity[slots] = np.where(latest >= 0, values, 0.0)
            stepped, audio = bank.step(self._spec, self._slot_activity, slots)
            by_sid = {s.sid: s for s in ready}
            for g, samples in zip(stepped, audio):
                stream = by_sid[int(g) // self.slots]
                block_start = (stream.frames + 1) * hop - n_fft  # what this frame's overlap-add finishes
                label = self.classes[bank.slot_class[g]]
                stream.chunks.setdefault(label, []).append((block_start, samples))
        for s in ready:
            s.frames += 1
        self._frames[sids] += 1
        self.frames_done += 1
        self.timers["separator"].add(time.perf_counter() - t1)
        self._end_hop(t0)

    # ------------------------------------------------------------------ SED ahead of the hops
    def _sed_windows_ahead(self) -> tuple[list, np.ndarray | None]:
        """(Under the lock.) The next SED window of every stream whose input, run or queued, reaches that
        window's end (its own sample positions, a multiple of the SED hop, as in Engine) → (streams, windows)."""
        streams = [s for s in self.streams.values() if s.sed_next <= int(self.written[s.sid]) + s.queued]
        return streams, (np.stack([self._sed_window(s, s.sed_next) for s in streams]) if streams else None)

    def _submit_sed(self, streams: list, windows: np.ndarray | None):
        """One SED call over those windows; windows of one stream go in order, so the feature cache sees
        them contiguous."""
        if not streams:
            return
        tags = [(s.sid, s.generation, s.sed_next, s.sed_next // self.hop - 1) for s in streams]
        submitted = self.sed.submit(windows, 0, 0, tags, cache_keys=[(sid, gen, end) for sid, gen, end, _ in tags])
        for s in streams:
            if submitted:  # else the SED worker is stalled: a missed update (docs/reliability.md)
                s.sed_inflight.append(s.sed_next)
            s.sed_next += self.sed_hop

    def _sed_window(self, stream: _Stream, end: int) -> np.ndarray:
        """The stream's reference channel over [end − window, end): from its ring up to what it has run,
        the rest from its queue (before sample 0: the zeroed ring)."""
        window, written = self.sed_window, int(self.written[stream.sid])
        out = np.empty(window, np.float32)
        from_ring = min(end, written) - (end - window)
        if from_ring > 0:
            out[:from_ring] = self.ring[stream.sid, np.arange(end - window, end - window + from_ring) % self.ring_size, 0]
        filled, skip = max(from_ring, 0), max(end - window - written, 0)  # queued samples before the window
        for block in stream.queue:
            if filled == window:
                break
            part = block[0, skip : skip + window - filled]
            skip = max(skip - block.shape[1], 0)
            out[filled : filled + part.size] = part
            filled += part.size
        return out

    def _take_sed(self):
        """Take the oldest SED submission; its results wait in their streams until due."""
        tags = self.sed.oldest_streams()
        _, results = self.sed.take()
        by_tag = dict(results)
        for tag in tags:
            sid, generation, end, frame_index = tag
            stream = self.streams.get(sid)
            if stream is None or stream.generation != generation:  # the stream left meanwhile
                continue
            stream.sed_inflight.popleft()
            if tag in by_tag:  # no result: the call failed or timed out (a missed update)
                stream.sed_results.append((end, frame_index, by_tag[tag]))

    def _collect_sed(self, needing: list[_Stream]):
        """Take the SED results that are in, and wait for those of `needing` whose window ended at a
        hop they have run; apply, for every stream, the results whose window ended at a hop it has run."""
        while self.sed.oldest_done():
            self._take_sed()
        for stream in needing:
            while stream.sed_inflight and stream.sed_inflight[0] <= self.written[stream.sid]:
                self._take_sed()
        t0 = time.perf_counter()
        with self._lock:  # open() and close() may run on other threads
            streams = list(self.streams.items())
        for sid, stream in streams:
            while stream.sed_results and stream.sed_results[0][0] <= self.written[sid]:
                end, frame_index, result = stream.sed_results.popleft()
                result = replace(result, end=end, window_start=end - self.sed_window)
                apply_sed_result(result, frame_index, self.activity[sid], stream.tracker, self.bank, sid * self.slots,
                                 stream.backfills, stream.events)
                self._latest[sid] = self.activity[sid].latest
        self.timers["tracker"].add(time.perf_counter() - t0)

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict:
        """Per-hop timings are pool hops (one hop of every stream that was ready)."""
        return self._stats(capacity=self.capacity, open_streams=len(self.streams), opened=self.opened,
                           finished=self.finished, abandoned=self.abandoned, slots=self.slots, passes=self.passes,
                           sed_calls=self.sed.calls, sed_windows=self.sed.windows, separator_calls=self.bank.calls,
                           device=self.device_note, threads=self.options.threads, budget_ms=self.budget_ms,
                           calibration=self.calibration)
