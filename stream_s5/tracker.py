"""Per-class state: onset/offset hysteresis over the SED's newest frames, minimum durations,
events, and the assignment of classes to a fixed number of separator slots.

Each SED update gives, per class, the score of the newest SED hop (max of its frame
probabilities). A class turns on after `min_on_hops` consecutive scores ≥ `on_threshold`, and off
after `min_off_hops` consecutive scores < `off_threshold`; a score ≥ `fast_on_threshold` turns it on at
once (a confident detection need not wait the hysteresis out: lower onset delay). Its onset is found by walking back through
the window's frame probabilities while they stay ≥ `off_threshold` (so a class detected late still
gets its true onset), its offset is the end of its last frame ≥ `off_threshold`. `class_thresholds`
gives a class its own (on, off) pair instead of the global one — the SED is not equally calibrated for
every class (a class trained on little real material scores lower on real audio; one learnt only from
generators fires on real backgrounds); the fast path never undercuts a class's own on threshold. Events shorter than
`min_event_s` are retracted. A slot stays with its class for `hold_s` after the offset (tails).

Events are published as soon as they are known: an onset (offset None) when a class turns on, the
finished event at its offset. An onset whose event ends shorter than `min_event_s` is **retracted
explicitly**: the finished event comes with `retracted=True`, its slot is released at once (no tail),
and — in auto mode — the audio its slot produced is silenced (`Silence`, which the engine turns into a
zero backfill), so that events, class audio, summary and terminal agree. With a fixed class list the
slots separate their classes all the time, so only the event is retracted.

With a fixed class list the slots belong to those classes for the whole stream; the tracker still
follows every class for events."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from stream_s5.sed import SedResult

__all__ = ["TrackerOptions", "Event", "SlotChange", "Silence", "ClassTracker"]


@dataclass
class TrackerOptions:
    on_threshold: float = 0.5
    off_threshold: float = 0.3
    min_on_hops: int = 1
    min_off_hops: int = 3
    min_event_s: float = 0.1
    hold_s: float = 0.5
    backfill_s: float = 0.1  # separator pre-roll before the onset when a slot starts
    clip_gate: float = 0.0  # an onset also needs the window-level probability of the class ≥ this
    fast_on_threshold: float | None = None  # a score ≥ this turns the class on without min_on_hops
    class_thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)  # class → (on, off)

    def thresholds(self, label: str) -> tuple[float, float]:
        """(on, off) for `label`: its own pair, or the global one."""
        pair = self.class_thresholds.get(label)
        return (self.on_threshold, self.off_threshold) if pair is None else (float(pair[0]), float(pair[1]))

    @classmethod
    def from_bundle(cls, manifest: dict) -> "TrackerOptions":
        """The bundle's tuned `tracker` section (export/tune_tracker.py); defaults for what it lacks."""
        known = {f for f in cls.__dataclass_fields__}
        settings = {k: v for k, v in manifest.get("tracker", {}).items() if k in known}
        settings["class_thresholds"] = {c: tuple(pair) for c, pair in settings.get("class_thresholds", {}).items()}
        return cls(**settings)

    def to_manifest(self) -> dict:
        """These settings as a bundle's `tracker` section (from_bundle's inverse: pairs as JSON arrays)."""
        settings = asdict(self)
        settings["class_thresholds"] = {c: list(pair) for c, pair in self.class_thresholds.items()}
        return settings


@dataclass
class Event:
    label: str
    onset: float  # seconds on the input timeline
    offset: float | None  # None while the event is open
    peak: float
    decided_at: float  # when the engine knew of the onset (seconds on the input timeline)
    retracted: bool = False  # a published onset whose event turned out shorter than min_event_s

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Silence:
    """Audio of a retracted event, to be replaced by zeros: samples [start, end) of `label`."""
    label: str
    start: int
    end: int


@dataclass
class SlotChange:
    slot: int
    label: str | None  # None: slot released
    start_sample: int  # the onset (or pre-roll) from which the slot separates: backfill start
    silence: Silence | None = None  # a release after a retraction: what the slot produced goes


@dataclass
class _ClassState:
    active: bool = False
    above: int = 0
    below: int = 0
    onset: int = 0
    last_high_end: int = 0
    peak: float = 0.0
    decided_at: int = 0
    release_at: int | None = None  # after an offset: when the slot may go
    last_offset: int = 0
    last_kept_offset: int = 0
    retract_from: int | None = None  # a retracted event's audio starts here (silenced when its slot goes)
    event: Event | None = None


@dataclass
class ClassTracker:
    classes: tuple[str, ...]
    n_slots: int
    sample_rate: int
    options: TrackerOptions = field(default_factory=TrackerOptions)
    fixed: tuple[str, ...] | None = None
    hop_frames: int = 2  # SED frames per SED hop: the newest ones give the current score

    def __post_init__(self):
        if self.fixed is not None:
            unknown = [c for c in self.fixed if c not in self.classes]
            if unknown:
                raise ValueError(f"unknown classes {unknown}")
        unknown = [c for c in self.options.class_thresholds if c not in self.classes]
        if unknown:
            raise ValueError(f"class_thresholds names unknown classes {unknown}")
        self._thresholds = [self.options.thresholds(c) for c in self.classes]
        self.reset()

    def reset(self):
        self.state = {c: _ClassState() for c in self.classes}
        n = len(self.fixed) if self.fixed is not None else self.n_slots
        self.slots: list[str | None] = list(self.fixed) if self.fixed is not None else [None] * n
        self.events: list[Event] = []
        self.slot_overflows = 0
        self.retracted = 0

    def _seconds(self, samples: int) -> float:
        return samples / self.sample_rate

    def update(self, result: SedResult) -> tuple[list[Event], list[SlotChange]]:
        """→ (events that opened or closed now, slot changes to apply)."""
        opt = self.options
        frames = result.frame_probs
        scores = frames[-self.hop_frames :].max(axis=0)
        changed: list[Event] = []
        for ci, label in enumerate(self.classes):
            st = self.state[label]
            score = float(scores[ci])
            on_threshold, off_threshold = self._thresholds[ci]
            high = frames[:, ci] >= off_threshold
            if high.any():
                st.last_high_end = max(st.last_high_end, result.frame_start(int(np.flatnonzero(high)[-1]) + 1))
            if not st.active:
                clip_ok = result.clip_probs[ci] >= opt.clip_gate
                st.above = st.above + 1 if clip_ok and score >= on_threshold else 0
                fast = (opt.fast_on_threshold is not None and clip_ok
                        and score >= max(opt.fast_on_threshold, on_threshold))
                if st.above >= opt.min_on_hops or fast:
                    j = len(frames) - 1
                    while j > 0 and frames[j - 1, ci] >= off_threshold:
                        j -= 1
                    # never before the previous event of this class ended
                    st.onset = max(result.frame_start(j), st.last_offset)
                    st.active, st.below, st.peak, st.decided_at, st.release_at = True, 0, score, result.end, None
                    st.retract_from = None  # an earlier retraction whose class never held a slot
                    st.event = Event(label, self._seconds(st.onset), None, round(score, 4), self._seconds(result.end))
                    changed.append(replace(st.event))  # a snapshot: the open event is completed later
            else:
                st.peak = max(st.peak, score)
                st.below = st.below + 1 if score < off_threshold else 0
                if st.below >= opt.min_off_hops:
                    st.active = False
                    offset = max(min(st.last_high_end, result.end), st.onset)
                    st.last_offset = offset
                    st.release_at = offset + int(opt.hold_s * self.sample_rate)
                    event = st.event
                    event.offset, event.peak = self._seconds(offset), round(st.peak, 4)
                    if event.offset - event.onset < opt.min_event_s:
                        self._retract(st, event, result.end)
                    else:
                        self.events.append(event)
                        st.last_kept_offset = offset
                    changed.append(event)
                    st.event = None
        return changed, self._assign(result.end)

    def _retract(self, st: _ClassState, event: Event, now: int):
        self.retracted += 1
        event.retracted = True
        st.release_at = now  # no tail for an event that did not happen
        preroll = int(self.options.backfill_s * self.sample_rate)
        st.retract_from = max(st.onset - preroll, st.last_kept_offset, 0)

    def close(self, end: int) -> tuple[list[Event], list[Silence]]:
        """End of stream: close open events at `end` → (closed or retracted events, audio to silence)."""
        closed, silences = [], []
        for label, st in self.state.items():
            if st.active and st.event is not None:
                st.event.offset = self._seconds(max(min(st.last_high_end, end), st.onset))
                st.event.peak = round(st.peak, 4)
                st.active = False
                if st.event.offset - st.event.onset >= self.options.min_event_s:
                    self.events.append(st.event)
                else:
                    self._retract(st, st.event, end)
                    if self.fixed is None and label in self.slots:
                        silences.append(self._release(self.slots.index(label), end).silence)
                closed.append(st.event)
                st.event = None
        return closed, silences

    def _release(self, slot: int, now: int) -> SlotChange:
        """Free `slot`; after a retraction, with the audio its class produced to silence."""
        label, self.slots[slot] = self.slots[slot], None
        st = self.state[label]
        silence = Silence(label, st.retract_from, now) if st.retract_from is not None else None
        st.retract_from = None
        return SlotChange(slot, None, now, silence)

    def _assign(self, now: int) -> list[SlotChange]:
        if self.fixed is not None:
            return []
        changes: list[SlotChange] = []
        preroll = int(self.options.backfill_s * self.sample_rate)
        for i, label in enumerate(self.slots):
            if label is None:
                continue
            st = self.state[label]
            if not st.active and st.release_at is not None and now >= st.release_at:
                changes.append(self._release(i, now))
        waiting = [c for c in self.classes if self.state[c].active and c not in self.slots]
        waiting.sort(key=lambda c: -self.state[c].peak)
        for label in waiting:
            free = [i for i, s in enumerate(self.slots) if s is None]
            if not free:
                # Take a slot from a class that is only holding its tail.
                holding = [i for i, s in enumerate(self.slots) if not self.state[s].active]
                if not holding:
                    self.slot_overflows += 1
                    continue
                free = holding[:1]
                changes.append(self._release(free[0], now))
            self.slots[free[0]] = label
            changes.append(SlotChange(free[0], label, max(0, self.state[label].onset - preroll)))
        return changes

    def open_events(self) -> list[Event]:
        return [st.event for st in self.state.values() if st.event is not None]
