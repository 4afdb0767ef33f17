"""DCASE 2025 Task 4 (S5) evaluation metrics, numpy only.

Separation
    * :func:`snr` - plain SNR, ``10·log10(‖ref‖² / ‖ref − est‖²)``, computed like torchmetrics
      ``signal_noise_ratio(zero_mean=False)`` (an ``eps`` is added to numerator and denominator).
    * :func:`si_sdr` - scale-invariant SDR like torchmetrics
      ``scale_invariant_signal_distortion_ratio``.
    * :func:`ca_sdri` - class-aware SDR improvement of one mixture (see
      ``shared/reference/s5-metrics.md``): for every class ``k`` in ``C ∩ Ĉ`` the term
      ``SNR(est_k, ref_k) − SNR(mixture, ref_k)``; false positives and false negatives add 0; the
      sum is divided by ``|C ∪ Ĉ|``; ``None`` when ``C = Ĉ = ∅``.
    * :func:`label_accuracy` - fraction of mixtures whose predicted class set equals the true set.

Class-set rules (used by :func:`ca_sdri` and :class:`MetricAccumulator`):
    * the true set ``C`` is the set of keys of ``references`` (the caller passes one reference per
      class present in the scene);
    * the predicted set ``Ĉ`` is the set of keys of ``estimates`` whose signal is **not all zero**
      (an all-zero output slot means "class not predicted");
    * a key named ``"silence"`` (any case) is ignored on both sides, like the DCASE "silence" slots.

Sound event detection (DESED / sed_eval conventions, results identical to sed_eval 0.2.x)
    Event lists are ``list[tuple[label, onset_s, offset_s]]`` per file; estimated events may carry
    a 4th field ``decided_at`` (seconds: when the streaming engine emitted the onset), which only
    :func:`onset_delays` uses. Several files are given either as a sequence of event lists (one per
    file) or as a mapping ``file id -> event list``.

    * :func:`segment_based_f1` - like ``sed_eval.sound_event.SegmentBasedMetrics``: a class is active
      in segment ``i`` (``[i·res, (i+1)·res)``) when an event of it overlaps the segment (event rows
      ``floor(onset/res) .. ceil(offset/res) − 1``); each file has ``ceil(duration/res)`` segments.
      Counts are pooled over all files and classes (micro average).
    * :func:`event_based_f1` - like ``sed_eval.sound_event.EventBasedMetrics`` with its default
      ``event_matching_type='optimal'``: a reference and an estimate of the same class may match
      when ``|Δonset| <= t_collar`` and ``|Δoffset| <= max(t_collar, percentage_of_length ·
      reference length)`` (each condition optional); true positives are the size of a maximum
      bipartite matching, per file and class. (F-measures depend only on the matching size, which is
      the same for every maximum matching.)
    * ``zero_score=True`` (the DESED choice, sed_eval's ``empty_system_output_handling='zero_score'``)
      sets precision to 0 when there is no system output; otherwise it is NaN as in sed_eval's
      default. Recall is NaN when there is no reference; F1 is 0 when precision = recall = 0 and NaN
      when either is NaN. ``macro_f1`` is the NaN-ignoring mean of the class-wise F1 (sed_eval's
      class-wise average).
    * :func:`onset_delays` - streaming detection latency per reference event.
    * :func:`false_alarms_per_hour` - estimated events per hour of audio without target events.

Labels of events must be among ``classes``; an unknown label is an error (sed_eval's segment metric
fails on those too, its event metric would count them in the overall totals only). Events are
expected inside ``[0, duration]``; negative onsets are clipped to 0 for the segment rolls.

:class:`MetricAccumulator` collects all of the above scene by scene and returns one summary dict.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .labels import CLASSES

__all__ = [
    "Event",
    "EventList",
    "ClassScore",
    "SedResult",
    "OnsetDelayStats",
    "SceneRecord",
    "MetricAccumulator",
    "snr",
    "si_sdr",
    "predicted_classes",
    "true_classes",
    "ca_sdri",
    "label_accuracy",
    "segment_based_f1",
    "event_based_f1",
    "onset_delays",
    "onset_delay_stats",
    "false_alarms_per_hour",
]

Event = tuple  # (label, onset_s, offset_s) or (label, onset_s, offset_s, decided_at_s | None)
EventList = Sequence[Event]
FileEvents = Union[Sequence[EventList], Mapping[Any, EventList]]

_SILENCE = "silence"


# --------------------------------------------------------------------------------------------
# separation
# --------------------------------------------------------------------------------------------


def _signal_pair(estimate: Any, reference: Any) -> tuple[np.ndarray, np.ndarray, float]:
    est = np.asarray(estimate)
    ref = np.asarray(reference)
    if est.ndim != 1 or ref.ndim != 1:
        raise ValueError(f"expected 1-D signals, got shapes {est.shape} and {ref.shape}")
    if est.shape != ref.shape:
        raise ValueError(f"estimate and reference differ in length: {est.shape} vs {ref.shape}")
    dtype = np.result_type(est, ref)
    # torchmetrics takes eps from the dtype of its inputs; integer input counts as float64
    eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(np.float64).eps)
    est64 = est.astype(np.float64, copy=False)
    ref64 = ref.astype(np.float64, copy=False)
    if not (np.all(np.isfinite(est64)) and np.all(np.isfinite(ref64))):
        raise ValueError("signals contain NaN or Inf")
    return est64, ref64, eps


def snr(estimate: Any, reference: Any) -> float:
    """Plain SNR in dB: ``10·log10((‖ref‖² + eps) / (‖ref − est‖² + eps))``.

    Same as torchmetrics ``signal_noise_ratio(estimate, reference, zero_mean=False)``; ``eps`` is
    the machine epsilon of the inputs' dtype (float32: 1.19e-7, float64: 2.2e-16), so a perfect
    estimate gives a large finite value and an all-zero estimate gives exactly 0 dB.
    Computed in float64.
    """
    est, ref, eps = _signal_pair(estimate, reference)
    noise = ref - est
    return float(10.0 * np.log10((np.dot(ref, ref) + eps) / (np.dot(noise, noise) + eps)))


def si_sdr(estimate: Any, reference: Any, zero_mean: bool = True) -> float:
    """Scale-invariant SDR in dB, like torchmetrics ``scale_invariant_signal_distortion_ratio``.

    ``alpha = (<est, ref> + eps) / (‖ref‖² + eps)``; ``10·log10((‖alpha·ref‖² + eps) /
    (‖alpha·ref − est‖² + eps))``; both signals are mean-removed first when ``zero_mean``.
    """
    est, ref, eps = _signal_pair(estimate, reference)
    if zero_mean:
        est = est - est.mean()
        ref = ref - ref.mean()
    alpha = (np.dot(est, ref) + eps) / (np.dot(ref, ref) + eps)
    target = alpha * ref
    noise = target - est
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def _is_silence(key: Any) -> bool:
    return isinstance(key, str) and key.strip().lower() == _SILENCE


def true_classes(references: Mapping[str, Any]) -> frozenset[str]:
    """The true class set ``C``: the keys of ``references`` (a ``"silence"`` key is ignored)."""
    return frozenset(k for k in references if not _is_silence(k))


def predicted_classes(estimates: Mapping[str, Any]) -> frozenset[str]:
    """The predicted class set ``Ĉ``: keys of ``estimates`` whose signal is not all zero.

    An all-zero estimate (an empty output slot) means the class was not predicted; a
    ``"silence"`` key is ignored.
    """
    return frozenset(
        k for k, sig in estimates.items() if not _is_silence(k) and np.any(np.asarray(sig) != 0)
    )


def _check_mixture(mixture: Any) -> np.ndarray:
    mix = np.asarray(mixture)
    if mix.ndim != 1:
        raise ValueError(f"mixture must be the 1-D reference channel, got shape {mix.shape}")
    return mix


def _class_terms(
    references: Mapping[str, Any], estimates: Mapping[str, Any], mixture: np.ndarray
) -> tuple[frozenset[str], frozenset[str], dict[str, float]]:
    """(C, Ĉ, {k: SNR(est_k, ref_k) − SNR(mixture, ref_k) for k in C ∩ Ĉ})."""
    true = true_classes(references)
    pred = predicted_classes(estimates)
    terms = {
        k: snr(estimates[k], references[k]) - snr(mixture, references[k]) for k in sorted(true & pred)
    }
    return true, pred, terms


def ca_sdri(
    references: Mapping[str, Any], estimates: Mapping[str, Any], mixture: Any
) -> float | None:
    """Class-aware SDR improvement (dB) of one mixture; ``None`` when ``C = Ĉ = ∅``.

    ``references``: class -> dry reference (1-D); ``estimates``: class -> estimate (1-D, all-zero
    means not predicted); ``mixture``: the reference-channel mixture (1-D), all the same length.
    """
    mix = _check_mixture(mixture)
    true, pred, terms = _class_terms(references, estimates, mix)
    union = true | pred
    if not union:
        return None
    return float(sum(terms.values()) / len(union))


def label_accuracy(true_sets: Iterable[Iterable[str]], predicted_sets: Iterable[Iterable[str]]) -> float:
    """Fraction of mixtures whose predicted class set equals the true class set exactly."""
    t = [frozenset(s) for s in true_sets]
    p = [frozenset(s) for s in predicted_sets]
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true sets but {len(p)} predicted sets")
    if not t:
        raise ValueError("label_accuracy of zero mixtures")
    return sum(a == b for a, b in zip(t, p)) / len(t)


# --------------------------------------------------------------------------------------------
# sound event detection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassScore:
    """F1 / precision / recall with the counts they come from."""

    f1: float
    precision: float
    recall: float
    tp: int
    n_ref: int
    n_sys: int

    @property
    def fp(self) -> int:
        return self.n_sys - self.tp

    @property
    def fn(self) -> int:
        return self.n_ref - self.tp


@dataclass(frozen=True)
class SedResult:
    """Micro-averaged (pooled) scores plus class-wise scores and their macro average."""

    f1: float
    precision: float
    recall: float
    tp: int
    fp: int  # n_sys − tp (sed_eval's event metric further splits these into substitutions)
    fn: int  # n_ref − tp
    n_ref: int
    n_sys: int
    n_files: int
    class_wise: dict[str, ClassScore]
    macro_f1: float


def _prf(tp: int, n_sys: int, n_ref: int, zero_score: bool) -> tuple[float, float, float]:
    if n_sys == 0:
        precision = 0.0 if zero_score else math.nan
    else:
        precision = tp / n_sys
    recall = math.nan if n_ref == 0 else tp / n_ref
    if precision == 0 and recall == 0:
        return 0.0, precision, recall
    return 2.0 * precision * recall / (precision + recall), precision, recall


def _score(tp: int, n_sys: int, n_ref: int, zero_score: bool) -> ClassScore:
    f1, p, r = _prf(tp, n_sys, n_ref, zero_score)
    return ClassScore(f1=f1, precision=p, recall=r, tp=int(tp), n_ref=int(n_ref), n_sys=int(n_sys))


def _result(
    per_class: dict[str, list[int]], n_files: int, zero_score: bool
) -> SedResult:
    """per_class: label -> [tp, n_sys, n_ref] pooled over files."""
    class_wise = {c: _score(*v, zero_score) for c, v in per_class.items()}
    tp = sum(v[0] for v in per_class.values())
    n_sys = sum(v[1] for v in per_class.values())
    n_ref = sum(v[2] for v in per_class.values())
    f1, p, r = _prf(tp, n_sys, n_ref, zero_score)
    f1s = [s.f1 for s in class_wise.values() if not math.isnan(s.f1)]
    macro = float(np.mean(f1s)) if f1s else math.nan
    return SedResult(
        f1=f1, precision=p, recall=r, tp=tp, fp=n_sys - tp, fn=n_ref - tp, n_ref=n_ref,
        n_sys=n_sys, n_files=n_files, class_wise=class_wise, macro_f1=macro,
    )


def _parse_events(events: EventList | None, classes: Sequence[str]) -> list[tuple[str, float, float, float]]:
    """-> [(label, onset, offset, decided_at)] with decided_at defaulting to onset."""
    out = []
    known = set(classes)
    for ev in events or ():
        if len(ev) not in (3, 4):
            raise ValueError(f"event must be (label, onset, offset[, decided_at]), got {ev!r}")
        label, onset, offset = ev[0], float(ev[1]), float(ev[2])
        decided = float(ev[3]) if len(ev) == 4 and ev[3] is not None else onset
        if label not in known:
            raise ValueError(f"event label {label!r} is not among the evaluated classes")
        if not (math.isfinite(onset) and math.isfinite(offset) and math.isfinite(decided)):
            raise ValueError(f"non-finite time in event {ev!r}")
        out.append((label, onset, offset, decided))
    return out


def _per_file(
    references: FileEvents, estimates: FileEvents, durations: Any = None
) -> list[tuple[Any, EventList, EventList, float | None]]:
    """Pair per-file reference / estimated event lists (and durations)."""
    if isinstance(references, Mapping) or isinstance(estimates, Mapping):
        if not (isinstance(references, Mapping) and isinstance(estimates, Mapping)):
            raise TypeError("references and estimates must both be mappings or both sequences")
        keys = list(references) + [k for k in estimates if k not in references]
        refs = [references.get(k, ()) for k in keys]
        ests = [estimates.get(k, ()) for k in keys]
        if durations is None or isinstance(durations, numbers.Real):
            durs = [durations] * len(keys)
        elif isinstance(durations, Mapping):
            missing = [k for k in keys if k not in durations]
            if missing:
                raise ValueError(f"no duration for files {missing[:5]}")
            durs = [durations[k] for k in keys]
        else:
            raise TypeError("with mapping inputs, durations must be a mapping, a number or None")
    else:
        refs, ests = list(references), list(estimates)
        if len(refs) != len(ests):
            raise ValueError(f"{len(refs)} reference files but {len(ests)} estimated files")
        keys = list(range(len(refs)))
        if durations is None or isinstance(durations, numbers.Real):
            durs = [durations] * len(refs)
        else:
            durs = list(durations)
            if len(durs) != len(refs):
                raise ValueError(f"{len(durs)} durations for {len(refs)} files")
    return [
        (k, r, e, None if d is None else float(d)) for k, r, e, d in zip(keys, refs, ests, durs)
    ]


def _activity(events: list[tuple[str, float, float, float]], n_seg: int, col: dict[str, int], res: float) -> np.ndarray:
    roll = np.zeros((n_seg, len(col)), dtype=bool)
    for label, onset, offset, _ in events:
        start = max(0, int(math.floor(onset / res)))
        stop = min(n_seg, int(math.ceil(offset / res)))
        if stop > start:
            roll[start:stop, col[label]] = True
    return roll


def segment_based_f1(
    references: FileEvents,
    estimates: FileEvents,
    durations: Any,
    classes: Sequence[str] = CLASSES,
    resolution: float = 1.0,
    *,
    zero_score: bool = True,
) -> SedResult:
    """Segment-based F1 (micro over all files, segments and classes), like sed_eval.

    ``durations``: per file (sequence or mapping like the event lists) or one number for all;
    a ``None`` duration means "up to the last offset of either list" (sed_eval's default).
    """
    res = float(resolution)
    if not res > 0:
        raise ValueError("resolution must be > 0")
    classes = list(classes)
    col = {c: i for i, c in enumerate(classes)}
    tp = np.zeros(len(classes), dtype=np.int64)
    n_sys = np.zeros(len(classes), dtype=np.int64)
    n_ref = np.zeros(len(classes), dtype=np.int64)
    files = _per_file(references, estimates, durations)
    for _, ref_list, est_list, duration in files:
        ref_ev = _parse_events(ref_list, classes)
        est_ev = _parse_events(est_list, classes)
        if duration is None:
            duration = max([0.0] + [e[2] for e in ref_ev] + [e[2] for e in est_ev])
        n_seg = int(math.ceil(duration / res))
        r = _activity(ref_ev, n_seg, col, res)
        e = _activity(est_ev, n_seg, col, res)
        tp += np.sum(r & e, axis=0)
        n_sys += np.sum(e, axis=0)
        n_ref += np.sum(r, axis=0)
    per_class = {c: [int(tp[i]), int(n_sys[i]), int(n_ref[i])] for c, i in col.items()}
    return _result(per_class, len(files), zero_score)


def _max_matching(adjacency: list[list[int]], n_right: int) -> int:
    """Size of a maximum bipartite matching (augmenting paths)."""
    owner = [-1] * n_right

    def augment(u: int, seen: list[bool]) -> bool:
        for v in adjacency[u]:
            if not seen[v]:
                seen[v] = True
                if owner[v] < 0 or augment(owner[v], seen):
                    owner[v] = u
                    return True
        return False

    return sum(1 for u in range(len(adjacency)) if adjacency[u] and augment(u, [False] * n_right))


def event_based_f1(
    references: FileEvents,
    estimates: FileEvents,
    classes: Sequence[str] = CLASSES,
    t_collar: float = 0.2,
    percentage_of_length: float = 0.2,
    evaluate_onset: bool = True,
    evaluate_offset: bool = True,
    *,
    zero_score: bool = True,
) -> SedResult:
    """Event-based F1 (micro over all files and classes), like sed_eval's optimal matching.

    ``evaluate_offset=False`` gives the onset-only variant.
    """
    if not evaluate_onset and not evaluate_offset:
        raise ValueError("evaluate_onset and evaluate_offset cannot both be False")
    t_collar = float(t_collar)
    percentage_of_length = float(percentage_of_length)
    if not t_collar > 0:
        raise ValueError("t_collar must be > 0")
    if not 0.0 <= percentage_of_length <= 1.0:
        raise ValueError("percentage_of_length must be in [0, 1]")
    classes = list(classes)
    per_class = {c: [0, 0, 0] for c in classes}
    files = _per_file(references, estimates)
    for _, ref_list, est_list, _ in files:
        ref_ev = _parse_events(ref_list, classes)
        est_ev = _parse_events(est_list, classes)
        for c in classes:
            refs = [e for e in ref_ev if e[0] == c]
            ests = [e for e in est_ev if e[0] == c]
            counts = per_class[c]
            counts[1] += len(ests)
            counts[2] += len(refs)
            if not refs or not ests:
                continue
            adjacency = []
            for _, e_on, e_off, _ in ests:
                hits = []
                for j, (_, r_on, r_off, _) in enumerate(refs):
                    if evaluate_onset and not math.fabs(r_on - e_on) <= t_collar:
                        continue
                    if evaluate_offset and not math.fabs(r_off - e_off) <= max(
                        t_collar, percentage_of_length * (r_off - r_on)
                    ):
                        continue
                    hits.append(j)
                adjacency.append(hits)
            counts[0] += _max_matching(adjacency, len(refs))
    return _result(per_class, len(files), zero_score)


# --------------------------------------------------------------------------------------------
# streaming latency and false alarms
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnsetDelayStats:
    """Onset delays (s) of the detected reference events; missed events are only counted."""

    delays: tuple[float, ...]
    n_reference: int
    missed: int
    median_s: float | None


def _onset_delays(
    references: FileEvents, estimates: FileEvents, max_delay: float, collar: float
) -> tuple[list[float], int]:
    delays: list[float] = []
    missed = 0
    for _, ref_list, est_list, _ in _per_file(references, estimates):
        ests = [(ev[0], float(ev[3]) if len(ev) == 4 and ev[3] is not None else float(ev[1])) for ev in est_list or ()]
        for ev in ref_list or ():
            label, onset = ev[0], float(ev[1])
            lo, hi = onset - collar, onset + max_delay
            times = [t for lab, t in ests if lab == label and lo <= t <= hi]
            if times:
                delays.append(min(times) - onset)
            else:
                missed += 1
    return delays, missed


def onset_delays(
    references: FileEvents, estimates: FileEvents, max_delay: float = 1.0, collar: float = 0.2
) -> list[float]:
    """Per reference event (files in order, events in order): the onset delay in seconds.

    The delay is ``decided_at − true onset`` of the earliest estimated event of the same class whose
    decision time (4th field ``decided_at``, else its onset) lies in ``[onset − collar, onset +
    max_delay]``; it may be slightly negative. Each reference is matched independently (one
    estimate may serve two close references of its class). Reference events without such an
    estimate are missed and left out; :func:`onset_delay_stats` counts them.
    """
    return _onset_delays(references, estimates, float(max_delay), float(collar))[0]


def onset_delay_stats(
    references: FileEvents, estimates: FileEvents, max_delay: float = 1.0, collar: float = 0.2
) -> OnsetDelayStats:
    """:func:`onset_delays` plus the count of missed reference events and the median delay."""
    delays, missed = _onset_delays(references, estimates, float(max_delay), float(collar))
    return OnsetDelayStats(
        delays=tuple(delays),
        n_reference=len(delays) + missed,
        missed=missed,
        median_s=float(np.median(delays)) if delays else None,
    )


def false_alarms_per_hour(estimate_lists_for_no_target_scenes: Any, durations: Any) -> float:
    """Estimated events per hour of audio, over scenes that contain no target event.

    ``estimate_lists_for_no_target_scenes``: event lists (sequence or mapping); ``durations``:
    seconds per scene (same shape) or the total in seconds as one number.
    """
    lists = estimate_lists_for_no_target_scenes
    if isinstance(lists, Mapping):
        n_events = sum(len(v or ()) for v in lists.values())
        if isinstance(durations, Mapping):
            total = sum(float(durations[k]) for k in lists)
        else:
            total = float(durations)
    else:
        lists = list(lists)
        n_events = sum(len(v or ()) for v in lists)
        if isinstance(durations, numbers.Real):
            total = float(durations)
        else:
            durs = [float(d) for d in durations]
            if len(durs) != len(lists):
                raise ValueError(f"{len(durs)} durations for {len(lists)} scenes")
            total = sum(durs)
    if not total > 0:
        raise ValueError("false_alarms_per_hour needs a positive total duration")
    return n_events * 3600.0 / total


# --------------------------------------------------------------------------------------------
# accumulator
# --------------------------------------------------------------------------------------------


@dataclass
class SceneRecord:
    """What :class:`MetricAccumulator` keeps of one scene."""

    scene_id: Any
    true_classes: frozenset[str]
    predicted_classes: frozenset[str]
    ca_sdri: float | None
    sdri: dict[str, float]  # k in C ∩ Ĉ: SNR(est, ref) − SNR(mix, ref)
    si_sdri: dict[str, float]  # k in C ∩ Ĉ: SI-SDR(est, ref) − SI-SDR(mix, ref)
    oracle_ca_sdri: float | None
    ref_events: list[tuple[str, float, float, float]] = field(repr=False)
    est_events: list[tuple[str, float, float, float]] = field(repr=False)
    duration: float = 0.0

    @property
    def no_target(self) -> bool:
        return not self.true_classes and not self.ref_events


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _finite_or_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


class MetricAccumulator:
    """Accumulates separation, labelling and SED metrics scene by scene.

    A scene with no true class and no reference event is a *no-target* scene: it has no CA-SDRi
    term and feeds ``false_alarms_per_hour`` (every estimated event in it is a false alarm).
    ``label_accuracy`` is over all scenes (``label_accuracy_target_scenes`` over the others).
    """

    def __init__(
        self,
        classes: Sequence[str] = CLASSES,
        *,
        segment_resolution: float = 1.0,
        t_collar: float = 0.2,
        percentage_of_length: float = 0.2,
        max_onset_delay: float = 1.0,
        onset_collar: float = 0.2,
    ) -> None:
        self.classes = list(classes)
        self.segment_resolution = float(segment_resolution)
        self.t_collar = float(t_collar)
        self.percentage_of_length = float(percentage_of_length)
        self.max_onset_delay = float(max_onset_delay)
        self.onset_collar = float(onset_collar)
        self.records: list[SceneRecord] = []
        self._ids: set[Any] = set()

    def __len__(self) -> int:
        return len(self.records)

    def add(
        self,
        scene_id: Any,
        references: Mapping[str, Any],
        estimates: Mapping[str, Any],
        mixture: Any,
        ref_events: EventList,
        est_events: EventList,
        duration: float,
        *,
        oracle_estimates: Mapping[str, Any] | None = None,
    ) -> SceneRecord:
        """Add one scene; returns its record.

        ``references``: true class -> dry reference; ``estimates``: class -> estimate (all-zero =
        not predicted); ``mixture``: reference channel; all 1-D and of one length.
        ``ref_events`` / ``est_events``: event lists of the scene; ``duration``: seconds.
        ``oracle_estimates``: optional estimates made with the true labels (feeds
        ``sdri_oracle_classes``).
        """
        if scene_id in self._ids:
            raise ValueError(f"scene {scene_id!r} added twice")
        duration = float(duration)
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"bad duration {duration!r}")
        mix = _check_mixture(mixture)
        true, pred, sdri = _class_terms(references, estimates, mix)
        union = true | pred
        ca = float(sum(sdri.values()) / len(union)) if union else None
        si = {k: si_sdr(estimates[k], references[k]) - si_sdr(mix, references[k]) for k in sdri}
        oracle = ca_sdri(references, oracle_estimates, mix) if oracle_estimates is not None else None
        record = SceneRecord(
            scene_id=scene_id,
            true_classes=true,
            predicted_classes=pred,
            ca_sdri=ca,
            sdri=sdri,
            si_sdri=si,
            oracle_ca_sdri=oracle,
            ref_events=_parse_events(ref_events, self.classes),
            est_events=_parse_events(est_events, self.classes),
            duration=duration,
        )
        self._ids.add(scene_id)
        self.records.append(record)
        return record

    def summary(self) -> dict[str, Any]:
        """All metrics as a JSON-friendly dict (undefined values are ``None``)."""
        recs = self.records
        target = [r for r in recs if not r.no_target]
        no_target = [r for r in recs if r.no_target]
        ca_terms = [r.ca_sdri for r in recs if r.ca_sdri is not None]
        si_terms = [v for r in recs for v in r.si_sdri.values()]
        sdr_terms = [v for r in recs for v in r.sdri.values()]
        oracle_terms = [r.oracle_ca_sdri for r in recs if r.oracle_ca_sdri is not None]

        refs = [[e[:3] for e in r.ref_events] for r in recs]
        ests = [[e[:3] for e in r.est_events] for r in recs]
        durs = [r.duration for r in recs]
        seg = segment_based_f1(refs, ests, durs, self.classes, self.segment_resolution)
        evt = event_based_f1(refs, ests, self.classes, self.t_collar, self.percentage_of_length)
        evt_on = event_based_f1(
            refs, ests, self.classes, self.t_collar, self.percentage_of_length, evaluate_offset=False
        )
        delays = onset_delay_stats(
            [r.ref_events for r in recs],
            [r.est_events for r in recs],
            self.max_onset_delay,
            self.onset_collar,
        )
        nt_duration = sum(r.duration for r in no_target)
        nt_events = sum(len(r.est_events) for r in no_target)
        fa = (
            false_alarms_per_hour([r.est_events for r in no_target], [r.duration for r in no_target])
            if nt_duration > 0
            else None
        )
        return {
            "scenes": len(recs),
            "target_scenes": len(target),
            "no_target_scenes": len(no_target),
            "ca_sdri_db": _mean(ca_terms),
            "ca_sdri_scenes": len(ca_terms),
            "label_accuracy": label_accuracy(
                [r.true_classes for r in recs], [r.predicted_classes for r in recs]
            ) if recs else None,
            "label_accuracy_target_scenes": label_accuracy(
                [r.true_classes for r in target], [r.predicted_classes for r in target]
            ) if target else None,
            "si_sdri_db": _mean(si_terms),
            "sdri_detected_db": _mean(sdr_terms),
            "sdri_oracle_classes": _mean(oracle_terms),
            "segment_f1": _finite_or_none(seg.f1),
            "segment_precision": _finite_or_none(seg.precision),
            "segment_recall": _finite_or_none(seg.recall),
            "segment_macro_f1": _finite_or_none(seg.macro_f1),
            "event_f1": _finite_or_none(evt.f1),
            "event_macro_f1": _finite_or_none(evt.macro_f1),
            "event_onset_f1": _finite_or_none(evt_on.f1),
            "median_onset_delay_s": delays.median_s,
            "detected_onsets": len(delays.delays),
            "missed_onsets": delays.missed,
            "false_alarms_per_hour": fa,
            "false_alarm_events": nt_events,
            "no_target_duration_s": nt_duration,
            "false_alarms_per_minute": None if fa is None else fa / 60.0,
            "no_target_scenes_with_false_class": sum(1 for r in no_target if r.predicted_classes),
            "detected_classes": sum(len(r.true_classes & r.predicted_classes) for r in recs),
            "missed_classes": sum(len(r.true_classes - r.predicted_classes) for r in recs),
            "false_classes": sum(len(r.predicted_classes - r.true_classes) for r in recs),
            "per_class": self.per_class(),
            "per_scene": [
                {"scene": str(r.scene_id), "true": sorted(r.true_classes), "predicted": sorted(r.predicted_classes),
                 "ca_sdri_db": r.ca_sdri, "estimated_events": len(r.est_events), "duration_s": r.duration}
                for r in recs
            ],
        }

    def per_class(self) -> dict[str, dict[str, Any]]:
        """Scene-level class detection per class: scenes where the class is present, detected
        (present and predicted), falsely predicted; recall, precision (None when undefined), and the
        mean SDRi of its detected instances. Only classes that occur on either side are listed."""
        out: dict[str, dict[str, Any]] = {}
        for cls in self.classes:
            present = sum(1 for r in self.records if cls in r.true_classes)
            detected = sum(1 for r in self.records if cls in r.true_classes and cls in r.predicted_classes)
            false = sum(1 for r in self.records if cls in r.predicted_classes and cls not in r.true_classes)
            if present == 0 and false == 0:
                continue
            sdri = [r.sdri[cls] for r in self.records if cls in r.sdri]
            out[cls] = {
                "present": present,
                "detected": detected,
                "false": false,
                "recall": detected / present if present else None,
                "precision": detected / (detected + false) if detected + false else None,
                "sdri_detected_db": _mean(sdri),
            }
        return out
