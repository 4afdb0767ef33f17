"""Tune the event tracker (thresholds, hysteresis, minimum durations) of a bundle on validation
scenes, and write the chosen settings into its bundle.json (`tracker` section).

    python -m export.tune_tracker --model stream_s5/models/default --scenes 100 --seed 2000

The SED output does not depend on the tracker, so the SED runs once per scene over exactly the
windows the engine would see (ending at every SED hop, the stream starting with silence); each grid
setting then replays the tracker on those results; parameters are searched one at a time
(coordinate descent over GRID, ROUNDS passes). The score is the mean of label accuracy (exact
class set per scene, classes with at least one event) and SED segment F1, minus a penalty for a
median onset delay (decision time − true onset) above the target:
``delay_weight × max(0, median delay − delay_target)`` (defaults 0.2 per second above 0.15 s: 0.1 s
of delay weighs like 2 points of accuracy-plus-F1 mean). ``--delay-weight 0`` tunes for accuracy only.
Validation scenes use a seed different from the evaluation's (1000) and from training's (0).

``--recall-floor R`` keeps any class from being tuned into silence: a class present in at least
FLOOR_MIN_SCENES validation scenes and found in fewer than R of them costs a whole point of score.

``--balance worst`` (with ``--soundbank``) scores the procedural and the real scenes each alone and keeps
the lower score, instead of the pooled score over both, in which a gain on one set can pay for a loss on
the other (docs/evaluation.md, "Retracted onsets left a 12 ms blip"). Because the procedural scenes score
higher than the real ones, "worst" in practice scores the real set alone; ``--balance guard`` says so and adds
the missing constraint: the real set's score counts as long as the procedural set's stays within
``--guard-margin`` of what the bundle's current settings score there; a setting below that line costs a whole
point plus its shortfall (the synthetic figure a new default may not lose, docs/evaluation.md).

``--objective ca`` replaces the mean of label accuracy and segment F1 by CA-SDRi's detection factor: the mean
over scenes of |C ∩ Ĉ| / |C ∪ Ĉ| (scenes with C = Ĉ = ∅ left out, as CA-SDRi leaves them out). With equal SDRi
per found class this is CA-SDRi divided by that SDRi, so a missed class costs what it costs in CA-SDRi —
label accuracy charges a scene with one miss as much as a scene with nothing found.

``--per-class`` then gives classes their own (on, off) pair (`class_thresholds`), one class at a time
over CLASS_LEVELS from the tuned global pair, kept only where the score rises by more than
CLASS_MIN_GAIN (a class's pair must earn its place, not follow noise in a few scenes).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from stream_s5.bundle import load_bundle, update_manifest
from stream_s5.metrics import label_accuracy, onset_delay_stats, segment_based_f1
from stream_s5.sed import SedResult
from stream_s5.sessions import SedModel
from stream_s5.synth.scenes import SceneConfig, generate_scene
from stream_s5.synth.soundbank import Soundbank
from stream_s5.tracker import ClassTracker, TrackerOptions

# Searched one parameter at a time (coordinate descent, ROUNDS passes), from the current settings.
GRID = {
    "on_threshold": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    "off_threshold": [0.1, 0.2, 0.3, 0.4, 0.5],
    "min_on_hops": [1, 2, 3, 4],
    "min_off_hops": [1, 2, 3, 5, 8],
    "min_event_s": [0.1, 0.2, 0.3, 0.5, 0.8],
    "clip_gate": [0.0, 0.3, 0.5, 0.7],
    "fast_on_threshold": [None, 0.98, 0.95, 0.9, 0.85, 0.8],
}
ROUNDS = 2
# (on, off) pairs a class may take instead of the global pair (--per-class)
CLASS_LEVELS = [(0.3, 0.2), (0.4, 0.25), (0.5, 0.3), (0.6, 0.4), (0.7, 0.5), (0.8, 0.5), (0.9, 0.6), (0.95, 0.7)]
CLASS_ROUNDS = 2
CLASS_MIN_GAIN = 0.002
# --recall-floor: a class present in at least this many validation scenes must be found in at least
# `floor` of them; each class below costs a whole point of score, more than any accuracy gain buys
FLOOR_MIN_SCENES = 3


def objective(accuracy: float, segment_f1: float, median_delay_s: float | None,
              delay_weight: float, delay_target: float) -> float:
    """Mean of label accuracy and segment F1, minus the penalty for onset delay above the target."""
    delay = 1.0 if median_delay_s is None else median_delay_s  # nothing detected: as late as matching allows
    return (accuracy + segment_f1) / 2 - delay_weight * max(0.0, delay - delay_target)


def class_set_overlap(true_sets, predicted_sets) -> float:
    """Mean over scenes of |C ∩ Ĉ| / |C ∪ Ĉ|, leaving out scenes with C = Ĉ = ∅ (CA-SDRi's detection
    factor); 1.0 when every scene is left out (nothing to find, nothing found)."""
    ratios = [len(set(t) & set(p)) / len(set(t) | set(p)) for t, p in zip(true_sets, predicted_sets) if set(t) | set(p)]
    return float(np.mean(ratios)) if ratios else 1.0


def classes_below_recall_floor(truths: list[set[str]], estimates: list[set[str]], floor: float,
                               min_scenes: int = FLOOR_MIN_SCENES) -> list[str]:
    """Classes present in ≥ min_scenes scenes whose scene recall (found / present) is below `floor`."""
    present: dict[str, int] = {}
    found: dict[str, int] = {}
    for truth, estimate in zip(truths, estimates):
        for label in truth:
            present[label] = present.get(label, 0) + 1
            found[label] = found.get(label, 0) + (label in estimate)
    return sorted(c for c, n in present.items() if n >= min_scenes and found[c] / n < floor)


def sed_results(bundle, sed: SedModel, mixture: np.ndarray) -> list[SedResult]:
    window, hop, frame_hop = int(bundle.sed["window"]), int(bundle.sed["hop"]), int(bundle.sed["frame_hop"])
    ref = np.concatenate([np.zeros(window, np.float32), mixture[0]])
    out = []
    for end in range(hop, mixture.shape[1] + 1, hop):
        clip, frames = sed(ref[end : end + window][None])
        out.append(SedResult(end, end - window, clip[0], frames[0], frame_hop))
    return out


def replay(bundle, results: list[SedResult], options: TrackerOptions, n: int):
    hop_frames = max(1, int(bundle.sed["hop"]) // int(bundle.sed["frame_hop"]))
    tracker = ClassTracker(bundle.classes, int(bundle.separator["class_slots"]), bundle.sample_rate, options,
                           hop_frames=hop_frames)
    for r in results:
        tracker.update(r)
    tracker.close(n)
    return [(e.label, e.onset, e.offset, e.decided_at) for e in tracker.events]  # kept events only


def tune(model, scenes: int, seed: int, delay_weight: float = 0.2, delay_target: float = 0.15,
         soundbank: str | None = None, real_scenes: int = 0, per_class: bool = False,
         recall_floor: float = 0.0, balance: str = "pooled", score_by: str = "accuracy",
         guard_margin: float = 0.01) -> tuple[TrackerOptions, dict]:
    """Tune on `scenes` procedural scenes plus, with `soundbank` (a folder bank, e.g. the real bank's
    valid/ split), `real_scenes` scenes built from it (20 % without a target, for false alarms).
    `recall_floor` > 0: every class below it (`classes_below_recall_floor`) costs a point of score.
    `balance`: "pooled" scores all scenes together; "worst" scores each set of scenes alone and takes the
    lower of the two (with a real set), so that no setting is chosen for trading one world against the other;
    "guard" scores the real set as long as the procedural set scores at least the bundle's current settings'
    score there minus `guard_margin`."""
    if balance not in ("pooled", "worst", "guard"):
        raise ValueError(f"balance must be pooled, worst or guard, not {balance!r}")
    if balance != "pooled" and not (soundbank and real_scenes > 0):
        raise ValueError(f"balance {balance!r} needs a soundbank and real scenes")
    bundle = load_bundle(model)
    sed = SedModel(bundle, ["CPUExecutionProvider"])
    cfg = SceneConfig(sr=bundle.sample_rate, duration=10.0, channels=bundle.channels, room=bundle.channels > 1)
    sets = [(Soundbank.procedural(bundle.sample_rate, seed), cfg, scenes, 9)]
    if soundbank and real_scenes > 0:
        sets.append((Soundbank.from_folder(soundbank, bundle.sample_rate), replace(cfg, p_no_target=0.2), real_scenes, 10))
    data, groups = [], []
    for bank, scene_cfg, count, stream in sets:
        groups.append(range(len(data), len(data) + count))
        for i in range(count):
            scene = generate_scene(scene_cfg, int(np.random.SeedSequence([seed, stream, i]).generate_state(1)[0]), bank)
            data.append((sed_results(bundle, sed, scene.mixture), [(e.label, e.onset, e.offset) for e in scene.events],
                         scene.mixture.shape[1], set(scene.sources)))
    truths = [t for *_, t in data]
    references = [ref for _, ref, _, _ in data]
    durations = [n / bundle.sample_rate for _, _, n, _ in data]

    def measures(idx, est, found) -> tuple[float, float, float | None]:
        """(label accuracy, segment F1, median onset delay) over the scenes `idx`."""
        refs = [references[i] for i in idx]
        ests = [est[i] for i in idx]
        return (label_accuracy([truths[i] for i in idx], [found[i] for i in idx]),
                segment_based_f1(refs, ests, [durations[i] for i in idx], list(bundle.classes)).f1,
                onset_delay_stats(refs, ests).median_s)

    def set_score(idx, est, found) -> float:
        acc, seg, delay = measures(idx, est, found)
        if score_by == "ca":
            # the detection factor stands in for both halves of the accuracy objective's mean
            overlap = class_set_overlap([truths[i] for i in idx], [found[i] for i in idx])
            acc = seg = overlap
        return objective(acc, seg, delay, delay_weight, delay_target)

    def outcomes(opts: TrackerOptions) -> tuple[list, list[set[str]]]:
        """The tracker's kept events per scene, and the class set each scene's events give."""
        est = [replay(bundle, r, opts, n) for r, _, n, _ in data]
        return est, [{e[0] for e in ev} for ev in est]

    start = TrackerOptions.from_bundle(bundle.manifest)
    # --balance guard: the line the procedural scenes must keep, set by the bundle's own settings
    guard_floor = set_score(groups[0], *outcomes(start)) - guard_margin if balance == "guard" else None

    def score(opts: TrackerOptions) -> tuple[float, float, float, float, list[str], TrackerOptions]:
        est, found = outcomes(opts)
        acc, seg, delay = measures(range(len(data)), est, found)
        below = classes_below_recall_floor(truths, found, recall_floor, FLOOR_MIN_SCENES) if recall_floor > 0 else []
        if balance == "worst":
            # each set scored alone, the worse one counts: a gain on the procedural scenes cannot pay for a loss on the real ones
            value = min(set_score(g, est, found) for g in groups)
        elif balance == "guard":
            procedural, real = (set_score(g, est, found) for g in groups)
            shortfall = guard_floor - procedural
            value = real if shortfall <= 0 else real - 1.0 - shortfall
        else:
            value = set_score(range(len(data)), est, found)
        return value - len(below), acc, seg, delay, below, opts

    def summary(s):
        return {"score": s[0], "label_accuracy": s[1], "segment_f1": s[2], "median_onset_delay_s": s[3],
                "below_recall_floor": s[4]}

    default = score(TrackerOptions())
    best = max(score(start), default, key=lambda s: s[0])
    for _ in range(ROUNDS):
        for key, values in GRID.items():
            for value in values:
                opts = replace(best[-1], **{key: value})
                if opts.off_threshold >= opts.on_threshold:
                    continue
                candidate = score(opts)
                if candidate[0] > best[0]:
                    best = candidate
    global_best = best
    if per_class:
        for _ in range(CLASS_ROUNDS):
            for label in bundle.classes:
                for level in CLASS_LEVELS:
                    pairs = {**best[-1].class_thresholds, label: level}
                    if level == (best[-1].on_threshold, best[-1].off_threshold):
                        del pairs[label]
                    if pairs == best[-1].class_thresholds:
                        continue
                    candidate = score(replace(best[-1], class_thresholds=pairs))
                    if candidate[0] > best[0] + CLASS_MIN_GAIN:
                        best = candidate
    report = {"validation": {"scenes": scenes, "seed": seed, "soundbank": soundbank, "real_scenes": real_scenes if soundbank else 0,
                             "grid": GRID, "rounds": ROUNDS,
                             "delay_weight": delay_weight, "delay_target_s": delay_target, "balance": balance,
                             "objective": score_by,
                             "guard": {"margin": guard_margin, "procedural_floor": guard_floor} if balance == "guard" else None,
                             "recall_floor": {"floor": recall_floor, "min_scenes": FLOOR_MIN_SCENES} if recall_floor > 0 else None,
                             "per_class": {"levels": CLASS_LEVELS, "rounds": CLASS_ROUNDS, "min_gain": CLASS_MIN_GAIN}
                             if per_class else None},
              "chosen": summary(best), "global_only": summary(global_best), "defaults": summary(default)}
    return best[-1], report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="bundle folder (default: the bundled model)")
    p.add_argument("--scenes", type=int, default=100)
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument("--delay-weight", type=float, default=0.2, help="score penalty per second of median onset delay above the target")
    p.add_argument("--delay-target", type=float, default=0.15, help="median onset delay (s) that is not penalised")
    p.add_argument("--soundbank", default=None, help="also tune on scenes from this folder bank (e.g. realbank/valid)")
    p.add_argument("--real-scenes", type=int, default=100, help="scenes from --soundbank")
    p.add_argument("--per-class", action="store_true", help="then tune each class's own (on, off) pair")
    p.add_argument("--recall-floor", type=float, default=0.0,
                   help="penalise settings that leave a class (present in ≥ 3 scenes) found in fewer than this share of its scenes")
    p.add_argument("--balance", choices=["pooled", "worst", "guard"], default="pooled",
                   help="with --soundbank: score all scenes together (pooled), each set alone keeping the worse (worst), "
                        "or the real set as long as the procedural set keeps the current settings' score (guard)")
    p.add_argument("--guard-margin", type=float, default=0.01,
                   help="--balance guard: how far under the current settings' procedural score a setting may go")
    p.add_argument("--objective", choices=["accuracy", "ca"], default="accuracy",
                   help="accuracy: mean of label accuracy and segment F1; ca: CA-SDRi's detection factor |C∩Ĉ|/|C∪Ĉ|")
    args = p.parse_args(argv)
    if args.balance != "pooled" and not (args.soundbank and args.real_scenes > 0):
        p.error(f"--balance {args.balance} needs --soundbank and --real-scenes > 0")
    options, report = tune(args.model, args.scenes, args.seed, args.delay_weight, args.delay_target,
                           args.soundbank, args.real_scenes, args.per_class, args.recall_floor, args.balance, args.objective,
                           args.guard_margin)

    settings = options.to_manifest()

    def record(manifest: dict) -> None:
        manifest["tracker"] = settings
        manifest.setdefault("provenance", {})["tracker_tuning"] = report

    update_manifest(args.model, record)
    print(json.dumps({"tracker": settings, **report["chosen"], "global_only": report["global_only"],
                      "defaults": report["defaults"]}, indent=2))


if __name__ == "__main__":
    main()
