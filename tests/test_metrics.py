"""stream_s5.metrics against the maintained reference implementations.

torchmetrics / fast_bss_eval (SNR, SI-SDR) and sed_eval (segment- and event-based F1) are
test-only references; stream_s5 itself never imports them.
"""

from __future__ import annotations

import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from stream_s5 import metrics as M
from stream_s5.labels import CLASSES

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _import_sed_eval():
    """Import sed_eval; dcase_util imports pkg_resources at module level (only used inside
    functions we never call), and setuptools >= 81 no longer ships it, so stub it for the import."""
    stubbed = False
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        sys.modules["pkg_resources"] = types.ModuleType("pkg_resources")
        stubbed = True
    try:
        return pytest.importorskip("sed_eval")
    finally:
        if stubbed:
            sys.modules.pop("pkg_resources", None)


def same(a: float, b: float, tol: float = 1e-6) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def _dicts(events, filename):
    return [
        {"event_label": e[0], "onset": float(e[1]), "offset": float(e[2]), "filename": filename}
        for e in events
    ]


def _sed_eval_results(metric, classes):
    overall = metric.results_overall_metrics()["f_measure"]
    class_wise = {c: metric.results_class_wise_metrics()[c]["f_measure"] for c in classes}
    macro = metric.results_class_wise_average_metrics()["f_measure"]
    return overall, class_wise, macro


def _assert_same_as_sed_eval(ours: M.SedResult, metric, classes):
    overall, class_wise, macro = _sed_eval_results(metric, classes)
    assert same(ours.f1, overall["f_measure"]), (ours.f1, overall)
    assert same(ours.precision, overall["precision"]), (ours.precision, overall)
    assert same(ours.recall, overall["recall"]), (ours.recall, overall)
    for c in classes:
        assert same(ours.class_wise[c].f1, class_wise[c]["f_measure"]), (c, ours.class_wise[c], class_wise[c])
        assert same(ours.class_wise[c].precision, class_wise[c]["precision"]), c
        assert same(ours.class_wise[c].recall, class_wise[c]["recall"]), c
    assert same(ours.macro_f1, macro["f_measure"]), (ours.macro_f1, macro)
    assert ours.tp == metric.overall["Ntp"]
    assert ours.n_ref == metric.overall["Nref"] and ours.n_sys == metric.overall["Nsys"]


def _random_time(rng, hi):
    """Times on coarse grids hit segment/collar boundaries exactly; some are arbitrary."""
    kind = rng.integers(4)
    if kind == 0:
        return float(rng.integers(0, int(hi) + 1))
    if kind == 1:
        return round(float(rng.uniform(0, hi)), 1)
    if kind == 2:
        return round(float(rng.uniform(0, hi)) * 4) / 4
    return float(rng.uniform(0, hi))


def _random_events(rng, classes, n, duration):
    events = []
    for _ in range(n):
        on = _random_time(rng, duration)
        length = [0.0, 0.1, 0.5, 1.0, float(rng.uniform(0.05, 4.0))][rng.integers(5)]
        off = on + length
        if rng.random() < 0.1:
            off = duration + float(rng.uniform(0, 2))  # runs past the end of the file
        events.append((classes[rng.integers(len(classes))], on, max(on, off)))
    return events


def _perturbed(rng, events, classes, duration):
    """Estimates near the references (so collars / overlaps matter) plus extras."""
    out = []
    for label, on, off in events:
        if rng.random() < 0.2:
            continue
        if rng.random() < 0.15:
            label = classes[rng.integers(len(classes))]
        grid = [0.0, 0.1, 0.2, 0.25, 0.3, -0.1, -0.2, -0.3]
        d_on = grid[rng.integers(len(grid))] if rng.random() < 0.6 else float(rng.normal(0, 0.2))
        d_off = grid[rng.integers(len(grid))] if rng.random() < 0.6 else float(rng.normal(0, 0.4))
        new_on = max(0.0, on + d_on)
        out.append((label, new_on, max(new_on, off + d_off)))
        if rng.random() < 0.2:  # duplicate detection of the same event
            out.append((label, new_on + 0.05, off + 0.1))
    out.extend(_random_events(rng, classes, int(rng.integers(0, 3)), duration))
    rng.shuffle(out)
    return out


def _random_case(seed, n_classes=None):
    rng = np.random.default_rng(seed)
    n_classes = n_classes or int(rng.integers(2, 6))
    classes = [str(c) for c in rng.choice(CLASSES, size=n_classes, replace=False)]
    files = []
    for f in range(int(rng.integers(2, 7))):
        duration = [10.0, 9.5, 7.3, 10.0][rng.integers(4)]
        n_ref = int(rng.integers(0, 7))
        refs = _random_events(rng, classes, n_ref, duration)
        # crowd same-class events so that matching is ambiguous
        if refs and rng.random() < 0.4:
            label, on, off = refs[0]
            refs.append((label, on + float(rng.choice([0.1, 0.2, 0.3])), off + 0.2))
        ests = _perturbed(rng, refs, classes, duration) if rng.random() < 0.9 else []
        files.append((f"file_{seed}_{f}.wav", refs, ests, duration))
    return classes, files


# --------------------------------------------------------------------------------------------
# SNR / SI-SDR
# --------------------------------------------------------------------------------------------


def _signal_cases(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(16, 4000))
    ref = rng.normal(size=n) * rng.uniform(0.01, 3)
    cases = [
        (ref + rng.normal(size=n) * rng.uniform(0.001, 2), ref),
        (ref * rng.uniform(-2, 2) + rng.normal(size=n) * 0.1, ref),
        (rng.normal(size=n) + 0.7, ref + 0.3),  # non-zero means
        (np.zeros(n), ref),
        (ref.copy(), ref),
    ]
    return cases


@pytest.mark.parametrize("seed", range(6))
def test_snr_matches_torchmetrics(seed):
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.audio")
    for est, ref in _signal_cases(seed):
        expected = tm.signal_noise_ratio(torch.from_numpy(est), torch.from_numpy(ref), zero_mean=False).item()
        assert M.snr(est, ref) == pytest.approx(expected, abs=1e-9, rel=1e-12)
        e32, r32 = est.astype(np.float32), ref.astype(np.float32)
        expected32 = tm.signal_noise_ratio(torch.from_numpy(e32), torch.from_numpy(r32)).item()
        # same eps (float32), float64 accumulation here vs float32 in torch
        assert M.snr(e32, r32) == pytest.approx(expected32, abs=2e-3)


@pytest.mark.parametrize("seed", range(6))
def test_si_sdr_matches_torchmetrics_and_fast_bss_eval(seed):
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.audio")
    fbe = pytest.importorskip("fast_bss_eval")
    for est, ref in _signal_cases(seed):
        for zero_mean in (True, False):
            expected = tm.scale_invariant_signal_distortion_ratio(
                torch.from_numpy(est), torch.from_numpy(ref), zero_mean=zero_mean
            ).item()
            ours = M.si_sdr(est, ref, zero_mean=zero_mean)
            assert ours == pytest.approx(expected, abs=1e-9, rel=1e-12)
            if np.any(est != 0) and not np.array_equal(est, ref):
                # fast_bss_eval regularises differently; agree away from the degenerate cases
                other = float(np.squeeze(fbe.si_sdr(ref[None], est[None], zero_mean=zero_mean)))
                assert ours == pytest.approx(other, abs=1e-6)


def test_snr_hand_values_and_errors():
    assert M.snr(np.array([0.5, 0.0]), np.array([1.0, 0.0])) == pytest.approx(10 * math.log10(4), abs=1e-12)
    assert M.snr(np.zeros(8), np.ones(8)) == pytest.approx(0.0, abs=1e-12)
    # a perfect float32 estimate is finite (eps) and huge
    perfect = M.snr(np.ones(8, np.float32), np.ones(8, np.float32))
    assert math.isfinite(perfect) and perfect > 70
    # scale invariance of SI-SDR, not of SNR
    rng = np.random.default_rng(0)
    ref = rng.normal(size=500)
    est = ref + 0.1 * rng.normal(size=500)
    assert M.si_sdr(3 * est, ref) == pytest.approx(M.si_sdr(est, ref), abs=1e-9)
    assert M.snr(3 * est, ref) < M.snr(est, ref) - 5
    with pytest.raises(ValueError):
        M.snr(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError):
        M.snr(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        M.si_sdr(np.array([np.nan, 1.0]), np.ones(2))


# --------------------------------------------------------------------------------------------
# CA-SDRi and label accuracy
# --------------------------------------------------------------------------------------------


def test_ca_sdri_hand_example_with_fp_and_fn():
    ref_a = np.array([2.0, 0.0, 0.0, 0.0])
    ref_b = np.array([0.0, 2.0, 0.0, 0.0])
    mixture = np.array([2.0, 2.0, 2.0, 0.0])  # A + B + interferer
    references = {"Speech": ref_a, "Doorbell": ref_b}
    estimates = {
        "Speech": np.array([2.0, 0.0, 0.0, 0.2]),  # SNR = 10·log10(4 / 0.04) = 20 dB
        "Doorbell": np.zeros(4),  # all zero -> not predicted -> false negative
        "Cough": np.array([0.0, 0.0, 1.0, 0.0]),  # false positive
        "silence": np.ones(4),  # ignored
    }
    # SNR(mixture, A) = 10·log10(4 / 8) = -3.0103 dB -> improvement 23.0103 dB; |C ∪ Ĉ| = 3
    expected = (20.0 - 10 * math.log10(0.5)) / 3
    assert M.ca_sdri(references, estimates, mixture) == pytest.approx(expected, abs=1e-9)
    assert M.predicted_classes(estimates) == {"Speech", "Cough"}
    assert M.true_classes(references) == {"Speech", "Doorbell"}

    # both correct: mean of the two improvements
    est_b = np.array([0.0, 2.0, 0.0, 0.0]) + np.array([0.0, 0.0, 0.0, 0.2])
    both = M.ca_sdri(references, {"Speech": estimates["Speech"], "Doorbell": est_b}, mixture)
    assert both == pytest.approx(20.0 - 10 * math.log10(0.5), abs=1e-9)
    # only a false positive / only false negatives: 0
    assert M.ca_sdri({}, {"Cough": np.ones(4)}, mixture) == 0.0
    assert M.ca_sdri(references, {}, mixture) == 0.0
    # nothing true, nothing predicted: no term
    assert M.ca_sdri({}, {"Cough": np.zeros(4)}, mixture) is None
    with pytest.raises(ValueError):
        M.ca_sdri(references, estimates, np.stack([mixture, mixture]))


def test_ca_sdri_matches_torchmetrics_terms():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.audio")
    rng = np.random.default_rng(3)
    n = 3000
    refs = {c: rng.normal(size=n) for c in ("Speech", "Typing", "Pour")}
    mixture = sum(refs.values()) + 0.3 * rng.normal(size=n)
    ests = {"Speech": refs["Speech"] + 0.2 * rng.normal(size=n), "Typing": refs["Typing"] * 0.8,
            "Blender": rng.normal(size=n)}

    def t_snr(e, r):
        return tm.signal_noise_ratio(torch.from_numpy(e), torch.from_numpy(r)).item()

    terms = [t_snr(ests[k], refs[k]) - t_snr(mixture, refs[k]) for k in ("Speech", "Typing")]
    assert M.ca_sdri(refs, ests, mixture) == pytest.approx(sum(terms) / 4, abs=1e-9)


def test_label_accuracy():
    assert M.label_accuracy([{"a"}, {"a", "b"}, set()], [{"a"}, {"b"}, []]) == pytest.approx(2 / 3)
    assert M.label_accuracy([["a", "b"]], [("b", "a")]) == 1.0
    with pytest.raises(ValueError):
        M.label_accuracy([{"a"}], [])
    with pytest.raises(ValueError):
        M.label_accuracy([], [])


# --------------------------------------------------------------------------------------------
# segment-based F1 vs sed_eval
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(25))
def test_segment_based_matches_sed_eval(seed):
    sed_eval = _import_sed_eval()
    classes, files = _random_case(seed)
    resolution = [1.0, 1.0, 0.5, 0.25][seed % 4]
    for zero_score in (True, False):
        metric = sed_eval.sound_event.SegmentBasedMetrics(classes, time_resolution=resolution)
        if zero_score:
            metric.empty_system_output_handling = "zero_score"
        for name, refs, ests, duration in files:
            metric.evaluate(_dicts(refs, name), _dicts(ests, name), evaluated_length_seconds=duration)
        ours = M.segment_based_f1(
            [f[1] for f in files], [f[2] for f in files], [f[3] for f in files], classes, resolution,
            zero_score=zero_score,
        )
        _assert_same_as_sed_eval(ours, metric, classes)
        assert ours.n_files == len(files)


def test_segment_based_mapping_input_and_default_duration():
    sed_eval = _import_sed_eval()
    dcase_util = pytest.importorskip("dcase_util")
    classes, files = _random_case(101)
    metric = sed_eval.sound_event.SegmentBasedMetrics(classes, time_resolution=1.0)
    for name, refs, ests, _ in files:  # no evaluated length: up to the last offset
        metric.evaluate(
            dcase_util.containers.MetaDataContainer(_dicts(refs, name)),
            dcase_util.containers.MetaDataContainer(_dicts(ests, name)),
        )
    ours = M.segment_based_f1(
        {f[0]: f[1] for f in files}, {f[0]: f[2] for f in files}, None, classes
    )
    _assert_same_as_sed_eval(ours, metric, classes)


def test_segment_based_hand_example():
    # 3 s file, 1 s segments. ref Speech [0.5, 1.2) -> segments 0,1; est Speech [1.9, 2.1) -> 1,2
    res = M.segment_based_f1([[("Speech", 0.5, 1.2)]], [[("Speech", 1.9, 2.1)]], [3.0], ["Speech"])
    assert (res.tp, res.n_ref, res.n_sys) == (1, 2, 2)
    assert res.f1 == pytest.approx(0.5)
    # an estimate past the evaluated length is cut off
    res = M.segment_based_f1([[]], [[("Speech", 5.0, 6.0)]], [3.0], ["Speech"])
    assert res.n_sys == 0


# --------------------------------------------------------------------------------------------
# event-based F1 vs sed_eval
# --------------------------------------------------------------------------------------------


EVENT_CONFIGS = [
    dict(t_collar=0.2, percentage_of_length=0.2, evaluate_onset=True, evaluate_offset=True),
    dict(t_collar=0.2, percentage_of_length=0.2, evaluate_onset=True, evaluate_offset=False),
    dict(t_collar=0.25, percentage_of_length=0.5, evaluate_onset=True, evaluate_offset=True),
    dict(t_collar=0.2, percentage_of_length=0.2, evaluate_onset=False, evaluate_offset=True),
]


@pytest.mark.parametrize("seed", range(25))
def test_event_based_matches_sed_eval(seed):
    sed_eval = _import_sed_eval()
    classes, files = _random_case(1000 + seed)
    for cfg in EVENT_CONFIGS:
        zero_score = bool(seed % 2)
        metric = sed_eval.sound_event.EventBasedMetrics(
            classes, empty_system_output_handling="zero_score" if zero_score else None, **cfg
        )
        assert metric.event_matching_type == "optimal"
        for name, refs, ests, _ in files:
            metric.evaluate(_dicts(refs, name), _dicts(ests, name))
        ours = M.event_based_f1(
            [f[1] for f in files], [f[2] for f in files], classes, zero_score=zero_score, **cfg
        )
        _assert_same_as_sed_eval(ours, metric, classes)


def test_event_based_optimal_matching_beats_greedy():
    sed_eval = _import_sed_eval()
    # greedy (reference order) pairs ref 1.0 with est 1.15 and leaves ref 1.3 unmatched;
    # the optimal matching pairs (1.0, 0.9) and (1.3, 1.15)
    refs = [("Speech", 1.0, 2.0), ("Speech", 1.3, 2.0)]
    ests = [("Speech", 1.15, 2.0), ("Speech", 0.9, 2.0)]
    ours = M.event_based_f1([refs], [ests], ["Speech"], evaluate_offset=False)
    assert ours.tp == 2 and ours.f1 == 1.0
    for matching, tp in (("optimal", 2), ("greedy", 1)):
        metric = sed_eval.sound_event.EventBasedMetrics(
            ["Speech"], evaluate_offset=False, event_matching_type=matching
        )
        metric.evaluate(_dicts(refs, "a.wav"), _dicts(ests, "a.wav"))
        assert metric.overall["Ntp"] == tp


def test_event_based_hand_example():
    refs = [[("Speech", 1.0, 3.0), ("Cough", 5.0, 5.3)], [("Cough", 2.0, 2.2)]]
    ests = [[("Speech", 1.15, 3.5), ("Cough", 5.3, 5.5)], [("Speech", 2.0, 2.2)]]
    # Speech: onset ok, offset |0.5| <= max(0.2, 0.2·2.0=0.4)? no -> onset-only hit only
    onoff = M.event_based_f1(refs, ests, ["Speech", "Cough"])
    onset = M.event_based_f1(refs, ests, ["Speech", "Cough"], evaluate_offset=False)
    assert (onoff.tp, onoff.n_ref, onoff.n_sys) == (0, 3, 3)
    assert (onset.tp, onset.fp, onset.fn) == (1, 2, 2)
    assert onset.f1 == pytest.approx(1 / 3)
    assert onset.class_wise["Speech"].precision == 0.5 and onset.class_wise["Cough"].recall == 0.0
    with pytest.raises(ValueError):
        M.event_based_f1(refs, ests, ["Speech", "Cough"], evaluate_onset=False, evaluate_offset=False)


def test_sed_edge_cases():
    classes = ["Speech", "Cough"]
    refs = [[("Speech", 1.0, 2.0)]]
    for fn in (
        lambda r, e, **k: M.segment_based_f1(r, e, [10.0], classes, **k),
        lambda r, e, **k: M.event_based_f1(r, e, classes, **k),
    ):
        empty_est = fn(refs, [[]])
        assert empty_est.f1 == 0.0 and empty_est.precision == 0.0 and empty_est.recall == 0.0
        assert math.isnan(fn(refs, [[]], zero_score=False).f1)
        empty_ref = fn([[]], refs)
        assert empty_ref.precision == 0.0 and math.isnan(empty_ref.recall) and math.isnan(empty_ref.f1)
        both = fn([[]], [[]])
        assert both.n_ref == both.n_sys == 0 and math.isnan(both.f1)
        assert math.isnan(both.macro_f1)
        with pytest.raises(ValueError):
            fn(refs, [[("Dog", 0.0, 1.0)]])
    with pytest.raises(ValueError):
        M.segment_based_f1([[], []], [[]], [10.0, 10.0], classes)
    with pytest.raises(TypeError):
        M.event_based_f1({"a": []}, [[]], classes)


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_sed_edge_cases_agree_with_sed_eval():
    sed_eval = _import_sed_eval()
    classes = ["Speech", "Cough"]
    cases = [([("Speech", 1.0, 2.0)], []), ([], [("Cough", 1.0, 2.0)]), ([], [])]
    for refs, ests in cases:
        for zero_score in ("zero_score", None):
            seg = sed_eval.sound_event.SegmentBasedMetrics(classes, time_resolution=1.0)
            seg.empty_system_output_handling = zero_score
            seg.evaluate(_dicts(refs, "x.wav"), _dicts(ests, "x.wav"), evaluated_length_seconds=10.0)
            ours = M.segment_based_f1([refs], [ests], [10.0], classes, zero_score=zero_score is not None)
            _assert_same_as_sed_eval(ours, seg, classes)
            evt = sed_eval.sound_event.EventBasedMetrics(
                classes, percentage_of_length=0.2, empty_system_output_handling=zero_score
            )
            evt.evaluate(_dicts(refs, "x.wav"), _dicts(ests, "x.wav"))
            ours = M.event_based_f1([refs], [ests], classes, zero_score=zero_score is not None)
            _assert_same_as_sed_eval(ours, evt, classes)


# --------------------------------------------------------------------------------------------
# onset delays and false alarms
# --------------------------------------------------------------------------------------------


def test_onset_delays():
    refs = [
        [("Speech", 1.0, 3.0), ("Cough", 4.0, 4.2), ("Doorbell", 6.0, 7.0), ("Pour", 8.0, 9.0)],
        [("Speech", 2.0, 3.0)],
    ]
    ests = [
        [
            ("Speech", 0.9, 3.0, 1.35),  # decided at 1.35 -> 0.35 s
            ("Speech", 1.0, 3.0, 1.2),  # earlier decision -> used: 0.2 s
            ("Cough", 3.85, 4.2),  # no decision time: onset, 0.15 s early -> -0.15 s
            ("Doorbell", 6.0, 7.0, 7.2),  # decided too late (> 1 s) -> missed
            ("Pour", 7.7, 9.0, 7.7),  # too early (< onset - 0.2 s) -> missed
            ("Cough", 8.0, 9.0),  # wrong class for Pour
        ],
        [("Speech", 2.0, 3.0, 3.0)],  # exactly max_delay -> 1.0 s
    ]
    delays = M.onset_delays(refs, ests)
    assert delays == pytest.approx([0.2, -0.15, 1.0])
    stats = M.onset_delay_stats(refs, ests)
    assert stats.missed == 2 and stats.n_reference == 5
    assert stats.median_s == pytest.approx(0.2)
    assert M.onset_delays(refs, ests, max_delay=1.5) == pytest.approx([0.2, -0.15, 1.2, 1.0])
    assert M.onset_delay_stats([[]], [[]]).median_s is None


def test_false_alarms_per_hour():
    lists = [[("Speech", 1.0, 2.0), ("Cough", 3.0, 3.1)], [], [("Pour", 0.0, 1.0)]]
    assert M.false_alarms_per_hour(lists, [10.0, 10.0, 10.0]) == pytest.approx(3 * 3600 / 30)
    assert M.false_alarms_per_hour({"a": lists[0]}, {"a": 7.2}) == pytest.approx(1000.0)
    assert M.false_alarms_per_hour([[]], 3600.0) == 0.0
    with pytest.raises(ValueError):
        M.false_alarms_per_hour([], [])


# --------------------------------------------------------------------------------------------
# accumulator
# --------------------------------------------------------------------------------------------


def test_metric_accumulator_summary():
    rng = np.random.default_rng(7)
    n = 800
    acc = M.MetricAccumulator()

    # scene 1: Speech detected, Doorbell missed (all-zero slot), Cough false positive
    sp, db = rng.normal(size=n), rng.normal(size=n)
    mix1 = sp + db + 0.5 * rng.normal(size=n)
    est1 = {"Speech": sp + 0.1 * rng.normal(size=n), "Doorbell": np.zeros(n), "Cough": 0.1 * rng.normal(size=n)}
    oracle1 = {"Speech": est1["Speech"], "Doorbell": db + 0.1 * rng.normal(size=n)}
    r1 = acc.add(
        "s1", {"Speech": sp, "Doorbell": db}, est1, mix1,
        [("Speech", 1.0, 4.0), ("Doorbell", 5.0, 6.0)],
        [("Speech", 1.1, 4.0, 1.3), ("Cough", 7.0, 7.5, 7.2)],
        10.0,
        oracle_estimates=oracle1,
    )
    assert r1.true_classes == {"Speech", "Doorbell"} and r1.predicted_classes == {"Speech", "Cough"}

    # scene 2: exact labels
    ty = rng.normal(size=n)
    mix2 = ty + rng.normal(size=n)
    est2 = {"Typing": ty + 0.3 * rng.normal(size=n)}
    acc.add("s2", {"Typing": ty}, est2, mix2,
            [("Typing", 0.0, 10.0)], [("Typing", 0.1, 9.9, 0.5)], 10.0)

    # scene 3: no target, one false alarm event, but no separated output
    mix3 = rng.normal(size=n)
    acc.add("s3", {}, {"Speech": np.zeros(n)}, mix3, [], [("Speech", 2.0, 2.5)], 20.0)

    with pytest.raises(ValueError):
        acc.add("s3", {}, {}, mix3, [], [], 20.0)

    s = acc.summary()
    ca1 = M.ca_sdri({"Speech": sp, "Doorbell": db}, est1, mix1)
    ca2 = M.ca_sdri({"Typing": ty}, est2, mix2)
    assert ca2 == pytest.approx(M.snr(est2["Typing"], ty) - M.snr(mix2, ty))
    assert M.ca_sdri({"Typing": ty}, {"Typing": np.zeros(n)}, mix2) == 0.0  # FN only
    sdri_sp = M.snr(est1["Speech"], sp) - M.snr(mix1, sp)
    assert ca1 == pytest.approx(sdri_sp / 3)
    assert s["ca_sdri_db"] == pytest.approx((ca1 + ca2) / 2)
    assert s["ca_sdri_scenes"] == 2
    assert s["scenes"] == 3 and s["no_target_scenes"] == 1 and s["target_scenes"] == 2
    assert s["label_accuracy"] == pytest.approx(2 / 3)  # s2 and s3 (empty == empty) are right
    assert s["label_accuracy_target_scenes"] == pytest.approx(1 / 2)
    si_terms = [
        M.si_sdr(est1["Speech"], sp) - M.si_sdr(mix1, sp),
        M.si_sdr(est2["Typing"], ty) - M.si_sdr(mix2, ty),
    ]
    assert s["si_sdri_db"] == pytest.approx(np.mean(si_terms))
    assert s["detected_classes"] == 2 and s["missed_classes"] == 1 and s["false_classes"] == 1
    oracle_db = oracle1["Doorbell"]
    expected_oracle = (sdri_sp + M.snr(oracle_db, db) - M.snr(mix1, db)) / 2
    assert s["sdri_oracle_classes"] == pytest.approx(expected_oracle)  # only s1 had oracle estimates
    assert expected_oracle > ca1
    assert s["false_alarm_events"] == 1 and s["no_target_duration_s"] == 20.0
    assert s["false_alarms_per_hour"] == pytest.approx(180.0)
    # onset delays: Speech 0.3 s, Typing 0.5 s; Doorbell missed
    assert s["median_onset_delay_s"] == pytest.approx(0.4)
    assert s["missed_onsets"] == 1 and s["detected_onsets"] == 2
    # SED over all scenes, recomputed directly
    refs = [[e[:3] for e in r.ref_events] for r in acc.records]
    ests = [[e[:3] for e in r.est_events] for r in acc.records]
    seg = M.segment_based_f1(refs, ests, [10.0, 10.0, 20.0], list(CLASSES))
    assert s["segment_f1"] == pytest.approx(seg.f1)
    # by hand: tp = 3 (Speech s1) + 10 (Typing s2); ref = 3 + 1 + 10; sys = 3 + 1 + 10 + 1 (s3)
    assert (seg.tp, seg.n_ref, seg.n_sys) == (13, 14, 15)
    assert s["segment_f1"] == pytest.approx(26 / 29)
    evt = M.event_based_f1(refs, ests, list(CLASSES))
    assert s["event_f1"] == pytest.approx(evt.f1)
    # Speech (onset 1.0 vs 1.1, offset equal) and Typing (0.0/0.1, 10.0/9.9) match; 2 TP of 3 ref, 4 sys
    assert evt.tp == 2 and s["event_f1"] == pytest.approx(2 * 2 / (3 + 4))
    assert s["event_onset_f1"] == pytest.approx(s["event_f1"])


def test_metric_accumulator_empty_and_errors():
    acc = M.MetricAccumulator()
    s = acc.summary()
    assert s["scenes"] == 0 and s["ca_sdri_db"] is None and s["label_accuracy"] is None
    assert s["false_alarms_per_hour"] is None and s["median_onset_delay_s"] is None
    with pytest.raises(ValueError):  # estimates longer than the reference
        acc.add("x", {"Speech": np.ones(4)}, {"Speech": np.ones(5)}, np.ones(4), [], [], 1.0)
    with pytest.raises(ValueError):
        acc.add("y", {}, {}, np.ones(4), [("NotAClass", 0.0, 1.0)], [], 1.0)
    with pytest.raises(ValueError):
        acc.add("z", {}, {}, np.ones(4), [], [], 0.0)


def test_metrics_module_imports_no_test_only_libraries():
    code = (
        "import sys, stream_s5.metrics; "
        "bad = [m for m in ('torch', 'torchmetrics', 'sed_eval', 'dcase_util', 'fast_bss_eval') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
