"""The streaming engine: `feed()` any number of samples, get back what is ready.

    from stream_s5 import Engine
    engine = Engine(classes="auto", input_rate=44100, input_channels=2)
    for chunk in chunks:
        out = engine.feed(chunk)        # EngineOutput: per-class audio, backfills, events
    out = engine.flush()                # the rest, up to exactly the input length

Data path per hop (bundle `hop` samples at the bundle rate):
input conditioning → ring → STFT frame → separator passes over the occupied slots → overlap-add;
every SED hop: SED on the ring's newest window → activity timeline → tracker → slot changes
(new slots are caught up from their onset: backfill).

Output timeline: `EngineOutput.audio[label]` holds samples [start, start + n) of the *input
timeline at the bundle rate*; the algorithmic latency (n_fft samples) is already taken out, so
writers can place samples directly. Everything depends only on the input samples, never on how
they were chunked: feeding sample by sample or all at once gives bit-identical output.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from stream_s5.bundle import Bundle, load_bundle
from stream_s5.conditioning import InputConditioner
from stream_s5.labels import parse_class_list
from stream_s5.ring import RingBuffer
from stream_s5.sed import ActivityTimeline, MelFrameCache, SedResult, SedScheduler, run_sed
from stream_s5.separator import SeparatorBank
from stream_s5.sessions import BoundSeparatorModel, EngineFault, SedModel, SeparatorModel, choose_providers
from stream_s5.timing import StageTimer
from stream_s5.tracker import ClassTracker, Event, Silence, TrackerOptions

__all__ = ["Engine", "EngineOptions", "EngineOutput", "Backfill", "BudgetError", "EngineFault", "StageTimer"]


class BudgetError(RuntimeError):
    """The requested refinement passes cannot run within the latency budget on this machine."""


@dataclass
class EngineOptions:
    threads: int = 1
    budget_ms: float | None = None  # per-hop compute budget; default: the bundle's
    calibrate: bool = True
    history_s: float = 2.5  # ring length: SED window + backfill pre-roll
    clip_level: float = 1.0
    sed_worker: bool = True  # SED inference on a worker thread between hops (same output either way)
    io_binding: bool | None = None  # fixed-shape IO-bound per-hop calls; None: on with CUDA (+ CUDA graphs)
    tracker: TrackerOptions | None = None  # None: the bundle's tuned tracker settings
    sed_timeout_s: float | None = 2.0  # a SED call not done this long after it is needed is a missed update
    max_sed_failures: int = 5  # SED calls failing in a row before the stream stops (EngineFault)
    sed_feature_cache: bool = True  # split SED bundles: compute each stream's new log-mel frames only (same output)

    def __post_init__(self):
        def bad(name, value, rule):
            raise ValueError(f"EngineOptions.{name} must be {rule}, not {value!r}")

        if not isinstance(self.threads, int) or not 1 <= self.threads <= 256:
            bad("threads", self.threads, "an integer in 1..256")
        if self.budget_ms is not None and not (isinstance(self.budget_ms, (int, float)) and math.isfinite(self.budget_ms)
                                               and self.budget_ms > 0):
            bad("budget_ms", self.budget_ms, "a finite number of milliseconds > 0, or None")
        if not (math.isfinite(self.history_s) and 0 < self.history_s <= 600):
            bad("history_s", self.history_s, "in (0, 600] seconds")
        if not (math.isfinite(self.clip_level) and self.clip_level > 0):
            bad("clip_level", self.clip_level, "a finite level > 0")
        if self.sed_timeout_s is not None and not (math.isfinite(self.sed_timeout_s) and self.sed_timeout_s > 0):
            bad("sed_timeout_s", self.sed_timeout_s, "a finite number of seconds > 0, or None (wait forever)")
        if not isinstance(self.max_sed_failures, int) or self.max_sed_failures < 1:
            bad("max_sed_failures", self.max_sed_failures, "an integer ≥ 1")


@dataclass
class Backfill:
    label: str
    start: int  # first sample on the timeline (bundle rate)
    audio: np.ndarray


@dataclass
class EngineOutput:
    start: int
    length: int
    audio: dict[str, np.ndarray]  # label → [length] for classes with a slot; others are silent
    backfill: list[Backfill]
    events: list[Event]  # opened (offset None) or closed now
    final: bool = False  # the stream's last output (StreamPool: the stream has ended and was flushed)


def parse_classes(classes, known) -> tuple[str, ...] | None:
    """A class selection ("auto" or None, "A,B", or a list of names) → the fixed classes; None: auto."""
    if classes in (None, "auto"):
        return None
    return tuple(parse_class_list(classes if isinstance(classes, str) else ",".join(classes), known))


def apply_sed_result(result: SedResult, frame_index: int, activity: ActivityTimeline, tracker: ClassTracker,
                     bank: SeparatorBank, first_slot: int, backfills: list[Backfill], events: list[Event]) -> None:
    """One stream's SED result → its activity timeline → its tracker → changes of its slots (tracker
    slot s is `bank` slot first_slot + s); a slot given to a class is caught up from the onset through
    `frame_index`, the hop at which the SED window ended (backfill)."""
    activity.write(result)
    new_events, changes = tracker.update(result)
    events.extend(new_events)
    for change in changes:
        slot = first_slot + change.slot
        if change.label is None:
            bank.release(slot)
            if change.silence is not None:
                backfills.extend(silence_backfills([change.silence]))
            continue
        first = max(change.start_sample // bank.hop, frame_index - bank.history + 1, 0)
        frames = np.arange(first, frame_index + 1)
        class_index = tracker.classes.index(change.label)
        audio = bank.assign(slot, class_index, first, frame_index, activity.get(frames, class_index))
        # The slot separates from its start sample: the first synthesis frame reaches up to n_fft - hop
        # samples before it and is cut, so that a retraction's silence (which starts there) covers all
        # the slot produced.
        start = (first + 1) * bank.hop - bank.n_fft
        cut = min(max(0, change.start_sample - start), audio.size)
        backfills.append(Backfill(change.label, start + cut, audio[cut:]))


def close_stream(tracker: ClassTracker, total: int, out: EngineOutput) -> None:
    """End of a stream of `total` samples: the tracker's open events are closed (or retracted) into
    `out`, and the audio of retracted ones is silenced by zero backfills."""
    closed, silences = tracker.close(total)
    out.events.extend(closed)
    out.backfill.extend(clip_backfills(silence_backfills(silences), total))


def silence_backfills(silences: list[Silence]) -> list[Backfill]:
    """A retracted event's audio → zero backfills over it (the sinks overwrite what they placed)."""
    return [Backfill(s.label, s.start, np.zeros(max(0, s.end - s.start), np.float32)) for s in silences]


def assemble_output(start: int, end: int, chunks: dict[str, list[tuple[int, np.ndarray]]],
                    backfills: list[Backfill], events: list[Event], limit: int | None = None) -> EngineOutput:
    """One call's output: timeline samples [start, end), cut at `limit` (the end of the stream).
    chunks: label → [(block start, samples)] as the separator finished them; backfills are clipped
    to the timeline [0, limit)."""
    if limit is not None:
        end = min(end, limit)
    length = max(0, end - start)
    audio = {}
    for label, parts in chunks.items():
        buf = np.zeros(length, np.float32)  # a class that got its slot mid-call starts later
        for block_start, samples in parts:
            lo = block_start - start
            if lo < 0:  # the first hop of the stream covers samples before its start
                samples, lo = samples[-lo:], 0
            hi = min(lo + samples.size, length)
            if hi > lo:
                buf[lo:hi] = samples[: hi - lo]
        audio[label] = buf
    return EngineOutput(start, length, audio, clip_backfills(backfills, limit), events)


def clip_backfills(backfills: list[Backfill], limit: int | None) -> list[Backfill]:
    """Backfills cut to the timeline [0, limit)."""
    clipped = []
    for bf in backfills:
        samples, first = bf.audio, bf.start
        if first < 0:
            samples, first = samples[-first:], 0
        if limit is not None:
            samples = samples[: max(0, limit - first)]
        clipped.append(Backfill(bf.label, first, samples))
    return clipped


class _EngineCore:
    """What `Engine` and `MultiStreamEngine` share: bundle and sessions, pass count, per-hop step
    session, output timeline, hop timing and budget calibration."""

    def _load(self, bundle, classes, refine, device, options):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.options = options or EngineOptions()
        b = self.bundle
        self.rate, self.channels, self.hop = b.sample_rate, b.channels, b.hop
        self.n_fft = int(b.separator["n_fft"])
        self.latency = b.algorithmic_latency
        self.classes = b.classes
        self.fixed = parse_classes(classes, self.classes)
        self.providers, self.device_note = choose_providers(device)
        self.sed_model = SedModel(b, self.providers, self.options.threads)
        self.sep_model = SeparatorModel(b, self.providers, self.options.threads)
        self.budget_ms = self.options.budget_ms or b.budget_ms
        self.passes = self._passes_requested(refine)

    def _start(self, refine):
        self._build()
        self.calibration: dict = {}
        if self.options.calibrate:
            self.calibrate(refine_auto=refine == "auto")

    def _passes_requested(self, refine) -> int:
        max_passes = int(self.bundle.separator["max_passes"])
        if refine in (None, "auto"):
            return int(self.bundle.separator["passes"])
        k = int(refine)
        if not 1 <= k <= max_passes:
            raise ValueError(f"refinement passes must be 1..{max_passes} for this bundle, not {k}")
        return k

    def _history(self) -> int:
        """Ring length in samples: SED window + backfill pre-roll."""
        return max(int(self.options.history_s * self.rate), int(self.bundle.sed["window"]) + 4 * self.n_fft)

    def _sed_scheduler(self, executor: ThreadPoolExecutor | None) -> SedScheduler:
        sed = self.bundle.sed
        return SedScheduler(self.sed_model, int(sed["window"]), int(sed["hop"]), int(sed["frame_hop"]), executor,
                            self.options.sed_timeout_s, self.options.max_sed_failures, self.options.sed_feature_cache)

    def _tracker(self, n_slots: int, fixed: tuple[str, ...] | None) -> ClassTracker:
        hop_frames = max(1, int(self.bundle.sed["hop"]) // int(self.bundle.sed["frame_hop"]))
        options = self.options.tracker or TrackerOptions.from_bundle(self.bundle.manifest)
        return ClassTracker(self.classes, n_slots, self.rate, options, fixed, hop_frames=hop_frames)

    def _step_model(self, n_slots: int):
        """With CUDA (or options.io_binding): a fixed-shape IO-bound session for the per-hop passes
        over `n_slots` slots (free ones are fed as zero rows), kept across rebuilds of that size."""
        cuda = self.providers[0] == "CUDAExecutionProvider"
        use = self.options.io_binding if self.options.io_binding is not None else cuda
        if not use:
            return None
        key = (n_slots, cuda)
        if getattr(self, "_bound", (None, None))[0] != key:
            self._bound = (key, BoundSeparatorModel(self.bundle, self.providers, n_slots, self.options.threads,
                                                    cuda_graph=cuda))
        return self._bound[1]

    @property
    def emitted(self) -> int:
        """Samples of the output timeline finished so far."""
        return max(0, self.frames_done * self.hop - (self.n_fft - self.hop))

    def _flush_padding(self, total: int, have: int) -> int:
        """Zeros after `have` samples that finish the last hop and push the last of `total` samples
        through the overlap-add."""
        return max(0, -(-max(total, have) // self.hop) * self.hop + (self.n_fft - self.hop) - have)

    def _end_hop(self, t0: float):
        elapsed = time.perf_counter() - t0
        self.timers["block"].add(elapsed)
        if elapsed * 1000.0 > self.budget_ms:
            self.deadline_misses += 1

    def _stats(self, **more) -> dict:
        return {"timings": {k: t.summary() for k, t in self.timers.items()}, "deadline_misses": self.deadline_misses,
                "hops": self.frames_done, "faults": {**self.sed.faults(), "separator_nonfinite_repairs":
                                                     self.bank.nonfinite_repairs},
                "sed_feature_cache": self.sed.cache_stats(), **more}

    def _measure(self, n_slots: int, blocks: int, sed_batch: int, sed_runs: int) -> tuple[float, float]:
        """Median ms of one separator pass over `n_slots` occupied slots, and of one SED call on
        `sed_batch` windows."""
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
            if i >= 3:  # the first calls pay for allocations
                per_pass.append(time.perf_counter() - t)
        window = np.zeros((sed_batch, int(self.bundle.sed["window"])), np.float32)
        sed_hop = int(self.bundle.sed["hop"])
        # timed as the stream runs it: with the scheduler's feature cache (a fresh one), one SED hop apart
        cache = MelFrameCache(self.sed_model) if self.sed.cache is not None else None
        sed_times = []
        for i in range(sed_runs + 1):
            t = time.perf_counter()
            run_sed(self.sed_model, window, cache, [(b, 0, i * sed_hop) for b in range(sed_batch)])
            if i >= 1:
                sed_times.append(time.perf_counter() - t)
        return float(np.median(per_pass)) * 1000, float(np.median(sed_times)) * 1000

    def _calibrate(self, refine_auto: bool, blocks: int, sed_runs: int, n_slots: int, sed_batch: int,
                   seds_per_sed_hop: int, info: dict | None = None) -> float:
        """Per-hop cost of k passes = k × one pass over `n_slots` slots + the `seds_per_sed_hop` SED
        calls of one SED hop, amortised over its hops. With refine_auto the pass count is lowered until it fits the budget.
        Sets `calibration` (with `info`) and returns the cost of the chosen pass count."""
        pass_ms, sed_ms = self._measure(n_slots, blocks, sed_batch, sed_runs)
        sed_per_hop = sed_ms * seds_per_sed_hop / (int(self.bundle.sed["hop"]) // self.hop)
        cost = lambda k: k * pass_ms + sed_per_hop  # noqa: E731
        requested = self.passes
        if refine_auto:
            while self.passes > 1 and cost(self.passes) > self.budget_ms:
                self.passes -= 1
            if self.passes != requested:
                self._build()
        self.calibration = {"pass_ms": round(pass_ms, 4), "sed_ms": round(sed_ms, 4), **(info or {}), "slots": n_slots,
                            "passes": self.passes, "hop_cost_ms": round(cost(self.passes), 4),
                            "budget_ms": self.budget_ms}
        return cost(self.passes)


class Engine(_EngineCore):
    def __init__(self, bundle: Bundle | str | None = None, classes="auto", refine: int | str | None = None,
                 device: str = "auto", input_rate: int | None = None, input_channels: int | None = None,
                 options: EngineOptions | None = None):
        self._load(bundle, classes, refine, device, options)
        # None means "the bundle's"; 0 or a negative number is a mistake, not a request for the default
        self.input_rate = self.rate if input_rate is None else input_rate
        self.input_channels = self.channels if input_channels is None else input_channels
        # one worker thread for the SED for the engine's lifetime (resets keep it)
        self._sed_executor = ThreadPoolExecutor(1, thread_name_prefix="stream-s5-sed") if self.options.sed_worker else None
        self._start(refine)

    # ------------------------------------------------------------------ set-up
    def _build(self):
        history = self._history()
        self.ring = RingBuffer(self.channels, history)
        self.history_frames = history // self.hop
        n_slots = len(self.fixed) if self.fixed is not None else int(self.bundle.separator["class_slots"])
        self.bank = SeparatorBank(self.sep_model, n_slots, self.passes, self.n_fft, self.hop, self.channels,
                                  len(self.classes), self.history_frames, step_model=self._step_model(n_slots))
        self.sed = self._sed_scheduler(self._sed_executor)
        self.activity = ActivityTimeline(len(self.classes), self.history_frames, self.hop)
        self.tracker = self._tracker(n_slots, self.fixed)
        if self.fixed is not None:
            for slot, label in enumerate(self.fixed):
                self.bank.assign(slot, self.classes.index(label), 0, -1, np.zeros(0))
        self.conditioner = InputConditioner(self.input_rate, self.input_channels, self.rate, self.channels,
                                            self.options.clip_level)
        self._pending = np.zeros((self.channels, 0), np.float32)  # conditioned samples not yet a full hop
        self._frame = np.zeros((self.channels, self.n_fft), np.float32)
        self._slot_activity = np.zeros(n_slots, np.float32)
        self.frames_done = 0  # hops processed
        self.flushed = False
        self.timers = {"block": StageTimer(), "separator": StageTimer(), "sed_wait": self.sed.wait_timer,
                       "tracker": StageTimer(), "conditioning": StageTimer(), "sed": self.sed.timer}
        self.deadline_misses = 0

    def reset(self, classes=None, input_rate: int | None = None, input_channels: int | None = None):
        """Forget the stream (states, ring, tracker, counters); keep sessions and calibration.
        Optionally switch the class selection or the input format for the next stream."""
        if classes is not None:
            self.fixed = parse_classes(classes, self.classes)
        self.input_rate = self.input_rate if input_rate is None else input_rate
        self.input_channels = self.input_channels if input_channels is None else input_channels
        self._build()

    # ------------------------------------------------------------------ streaming
    def feed(self, samples) -> EngineOutput:
        """samples: [n] or [n, channels] at `input_rate` (any n, including 0)."""
        if self.flushed:
            raise RuntimeError("engine was flushed: call reset() to start a new stream")
        t0 = time.perf_counter()
        x = self.conditioner(samples)
        self.timers["conditioning"].add(time.perf_counter() - t0)
        return self._process(x)

    def flush(self) -> EngineOutput:
        """End of stream: push out everything, trimmed to exactly the input length (bundle rate)."""
        if self.flushed:
            raise RuntimeError("engine already flushed")
        total = self.conditioner.expected_output_length()
        tail = self.conditioner.flush()
        have = self.ring.written + self._pending.shape[1] + tail.shape[1]
        pad = np.zeros((self.channels, self._flush_padding(total, have)), np.float32)
        out = self._process(np.concatenate([tail, pad], axis=1), limit=total)
        close_stream(self.tracker, total, out)
        self.flushed = True
        return out

    def _process(self, x: np.ndarray, limit: int | None = None) -> EngineOutput:
        start = self.emitted
        if self._pending.shape[1]:
            x = np.concatenate([self._pending, x], axis=1)
        n_hops = x.shape[1] // self.hop
        self._pending = x[:, n_hops * self.hop :].copy()
        chunks: dict[str, list[tuple[int, np.ndarray]]] = {}
        backfills: list[Backfill] = []
        events: list[Event] = []
        for h in range(n_hops):
            self._hop(x[:, h * self.hop : (h + 1) * self.hop], chunks, backfills, events)
        if limit is not None and self.sed.pending:  # end of stream: the last SED result
            self._apply_sed(backfills, events)
        return assemble_output(start, self.emitted, chunks, backfills, events, limit)

    def _hop(self, block: np.ndarray, chunks, backfills, events):
        t0 = time.perf_counter()
        frame_index = self.frames_done
        # The SED submitted at the previous hop is applied now, before this frame is separated: the
        # output is the same as applying it right away, and its inference ran between the hops.
        if self.sed.pending:
            self._apply_sed(backfills, events)
        self.ring.write(block)
        block_start = (frame_index + 1) * self.hop - self.n_fft  # what this frame's overlap-add finishes
        end = self.ring.written
        self.ring.read(end - self.n_fft, end, out=self._frame)
        spec = self.bank.analyse(frame_index, self._frame)
        # separator for the classes holding slots, guided by their SED activity at this frame
        t1 = time.perf_counter()
        for slot in self.bank.occupied:
            self._slot_activity[slot] = self.activity.at(frame_index, self.bank.slot_class[slot])
        slots, audio = self.bank.step(spec, self._slot_activity)
        for slot, samples in zip(slots, audio):
            chunks.setdefault(self.classes[self.bank.slot_class[slot]], []).append((block_start, samples))
        self.frames_done += 1
        self.timers["separator"].add(time.perf_counter() - t1)
        if self.sed.due(end):
            # spatial bundles: the SED listens to the reference (first) channel
            self.sed.submit(self.ring.read(end - self.sed.window, end)[:1], end, frame_index, cache_keys=[(0, 0, end)])
        self._end_hop(t0)

    def _apply_sed(self, backfills, events):
        frame_index, results = self.sed.take()
        t0 = time.perf_counter()
        for _, result in results:
            apply_sed_result(result, frame_index, self.activity, self.tracker, self.bank, 0, backfills, events)
        self.timers["tracker"].add(time.perf_counter() - t0)

    # ------------------------------------------------------------------ budget
    def calibrate(self, refine_auto: bool = False, blocks: int = 30) -> dict:
        """Time full-load hops (every slot occupied) and a SED call; refuse a pass count whose mean
        per-hop cost (SED amortised over its hop) exceeds the budget, or lower it with refine_auto."""
        n_slots = self.bank.n_slots
        cost = self._calibrate(refine_auto, blocks, sed_runs=4, n_slots=n_slots, sed_batch=1, seds_per_sed_hop=1)
        if cost > self.budget_ms:
            raise BudgetError(
                f"{self.passes} refinement pass(es) × {n_slots} slot(s) need {cost:.2f} ms per "
                f"{1000 * self.hop / self.rate:.1f} ms hop on this machine (budget {self.budget_ms:.2f} ms): "
                "use --refine auto, fewer passes, fewer classes, or a larger --budget-ms")
        return self.calibration

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict:
        return self._stats(
            sed_calls=self.sed.calls,
            separator_calls=self.bank.calls,
            slot_overflows=self.tracker.slot_overflows,
            repairs=self.conditioner.counters.to_dict(),
            device=self.device_note,
            passes=self.passes,
            budget_ms=self.budget_ms,
            calibration=self.calibration,
        )

    def slot_labels(self) -> list[str | None]:
        return [self.classes[c] if c >= 0 else None for c in self.bank.slot_class]
