import numpy as np
import pytest

from stream_s5.sed import ActivityTimeline, SedResult
from stream_s5.tracker import ClassTracker, TrackerOptions

CLASSES = ("A", "B", "C", "D")
RATE, FRAME_HOP, FRAMES, SED_HOP = 1000, 40, 32, 80  # toy units: 1 sample = 1 ms


def results(prob_of_time, seconds):
    """SED results every SED hop for a function time(ms) → probs over CLASSES."""
    out = []
    for end in range(SED_HOP, int(seconds * RATE) + 1, SED_HOP):
        start = end - FRAMES * FRAME_HOP
        frames = np.array([prob_of_time(start + j * FRAME_HOP) for j in range(FRAMES)], np.float32)
        out.append(SedResult(end, start, frames.max(0), frames, FRAME_HOP))
    return out


def step_probs(on_ms, off_ms, cls=0, high=0.9, low=0.05):
    def f(t):
        p = np.full(len(CLASSES), low)
        if on_ms <= t < off_ms:
            p[cls] = high
        return p
    return f


def make(n_slots=2, fixed=None, **kw):
    return ClassTracker(CLASSES, n_slots, RATE, TrackerOptions(**kw), fixed, hop_frames=SED_HOP // FRAME_HOP)


def test_onset_found_by_walking_back_and_offset_after_min_off():
    tr = make(min_off_hops=3, hold_s=0.2, backfill_s=0.0)
    changes_all, events = [], []
    for r in results(step_probs(1000, 2000), 4.0):
        ev, ch = tr.update(r)
        events += ev
        changes_all += [(r.end, c) for c in ch]
    closed = [e for e in events if e.offset is not None]
    assert len(closed) == 1 and closed[0].label == "A"
    assert abs(closed[0].onset - 1.0) <= 0.04 and abs(closed[0].offset - 2.0) <= 0.04
    assert 1.0 <= closed[0].decided_at <= 1.0 + 2 * SED_HOP / RATE
    # slot taken at detection with backfill from the true onset, released after offset + hold
    taken = [(t, c) for t, c in changes_all if c.label == "A"]
    released = [(t, c) for t, c in changes_all if c.label is None]
    assert taken and abs(taken[0][1].start_sample - 1000) <= FRAME_HOP
    assert released and released[0][0] >= 2000 + 200


def test_hysteresis_ignores_dips_shorter_than_min_off():
    def f(t):
        p = np.full(len(CLASSES), 0.05)
        if 500 <= t < 3000 and not (1500 <= t < 1620):  # a 120 ms dip < 3 hops of 80 ms
            p[1] = 0.9
        return p
    tr = make(min_off_hops=3)
    events = []
    for r in results(f, 4.0):
        events += [e for e in tr.update(r)[0] if e.offset is not None]
    assert len(events) == 1 and events[0].label == "B"


def test_short_blips_are_retracted_explicitly_and_their_slot_audio_silenced():
    tr = make(min_event_s=0.2, min_off_hops=1, backfill_s=0.1, hold_s=0.5)
    published, releases = [], []
    for r in results(step_probs(1000, 1080), 3.0):
        events, changes = tr.update(r)
        published += events
        releases += [c for c in changes if c.label is None]
    onset, finished = published
    assert onset.offset is None and not onset.retracted  # published at once (low latency)
    assert finished.retracted and finished.label == onset.label and finished.offset - finished.onset < 0.2
    assert tr.events == [] and tr.retracted == 1  # never among the kept events
    (release,) = releases  # released at the retraction, not after hold_s
    assert release.silence is not None and release.silence.label == onset.label
    assert release.silence.start == round((onset.onset - 0.1) * RATE) and release.silence.end == release.start_sample


def test_a_short_event_open_at_the_end_is_retracted_by_close():
    tr = make(min_event_s=0.5)
    for r in results(step_probs(2800, 6000), 3.0):
        tr.update(r)
    closed, silences = tr.close(3 * RATE)
    assert [e.retracted for e in closed] == [True] and tr.events == []
    assert [s.label for s in silences] == [closed[0].label] and silences[0].end == 3 * RATE


def test_fixed_classes_retract_the_event_but_keep_their_audio():
    tr = make(min_event_s=0.2, min_off_hops=1, fixed=("A",))
    published, changes = [], []
    for r in results(step_probs(1000, 1080), 3.0):
        events, change = tr.update(r)
        published += events
        changes += change
    assert [e.retracted for e in published] == [False, True] and changes == []


def test_more_classes_than_slots_counts_overflow_and_fixed_mode_keeps_slots():
    def f(t):
        p = np.full(len(CLASSES), 0.05)
        if t >= 500:
            p[:3] = [0.9, 0.8, 0.7]
        return p
    tr = make(n_slots=2)
    for r in results(f, 2.0):
        tr.update(r)
    assert sorted(s for s in tr.slots if s) == ["A", "B"]
    assert tr.slot_overflows > 0
    fixed = ClassTracker(CLASSES, 2, RATE, TrackerOptions(), fixed=("D", "C"), hop_frames=2)
    for r in results(f, 2.0):
        assert fixed.update(r)[1] == []
    assert fixed.slots == ["D", "C"]


def test_activity_timeline_writes_and_holds():
    tl = ActivityTimeline(len(CLASSES), history=100, hop=8)
    frames = np.zeros((FRAMES, len(CLASSES)), np.float32)
    frames[-1, 2] = 0.7
    tl.write(SedResult(1280, 0, frames.max(0), frames, FRAME_HOP))
    assert tl.latest == 1280 // 8 - 1
    np.testing.assert_allclose(tl.get(np.array([tl.latest, tl.latest + 5]), 2), [0.7, 0.7])
    assert tl.get(np.array([0]), 2)[0] == 0.0


def test_fast_threshold_decides_a_confident_onset_without_waiting_for_min_on_hops():
    def decided(**kw):
        tr = make(min_on_hops=4, on_threshold=0.5, **kw)
        opened = [e for r in results(step_probs(1000, 3000, high=0.95), 4.0) for e in tr.update(r)[0]]
        return opened[0].decided_at

    slow = decided()
    assert slow >= 1.0 + 3 * SED_HOP / RATE  # waited for four hops above the threshold
    fast = decided(fast_on_threshold=0.9)
    assert 1.0 <= fast <= 1.0 + SED_HOP / RATE  # the first hop that saw the event
    # a score under the fast threshold still waits the hysteresis out
    assert decided(fast_on_threshold=0.99) == slow


def test_class_thresholds_override_the_global_pair_for_their_class_only():
    def f(t):  # A and B both at 0.6 during 1–2 s
        p = np.full(len(CLASSES), 0.05)
        if 1000 <= t < 2000:
            p[:2] = 0.6
        return p

    def labels(**kw):
        tr = make(**kw)
        for r in results(f, 3.0):
            tr.update(r)
        tr.close(3000)
        return sorted({e.label for e in tr.events})

    assert labels(on_threshold=0.8, off_threshold=0.5) == []
    assert labels(on_threshold=0.8, off_threshold=0.5, class_thresholds={"A": (0.5, 0.3)}) == ["A"]
    assert labels(on_threshold=0.5, off_threshold=0.3, class_thresholds={"B": (0.9, 0.6)}) == ["A"]
    # the fast path never undercuts a class's own on threshold
    assert labels(on_threshold=0.5, off_threshold=0.3, min_on_hops=50, fast_on_threshold=0.55,
                  class_thresholds={"B": (0.9, 0.6)}) == ["A"]


def test_class_thresholds_come_from_the_bundle_and_unknown_classes_are_refused():
    options = TrackerOptions.from_bundle({"tracker": {"on_threshold": 0.7, "class_thresholds": {"A": [0.4, 0.2]}}})
    assert options.thresholds("A") == (0.4, 0.2) and options.thresholds("B") == (0.7, 0.3)
    with pytest.raises(ValueError, match="unknown classes"):
        make(class_thresholds={"Z": (0.5, 0.3)})
