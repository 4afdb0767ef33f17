"""What the SED answers on each class's own recordings, alone: a confusion table for a bank split.

    python -m export.sed_confusion --model stream_s5/models/default --soundbank runs/realbank4/valid --scenes 40

Scenes are drawn from the bank as `stream-s5 eval` draws them (seeded, 10 s), but each target's
reference stem is fed to the SED *without* the background, the interferers or the other targets, over
the windows the engine would see. Per class: the median over its stems of each class's highest clip
probability. A low own-class score means the model does not know the recording; a high other-class
score names the class it is taken for (footsteps read as Clapping, applause as HairDryer) — which
more training data or hard negatives must separate, and which no tracker threshold can fix.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from stream_s5.bundle import load_bundle
from stream_s5.sessions import SedModel
from stream_s5.synth.scenes import SceneConfig, generate_scene
from stream_s5.synth.soundbank import Soundbank

from .tune_tracker import sed_results

__all__ = ["confusion", "main"]


def confusion(model, soundbank: str, scenes: int = 40, seed: int = 2000, top: int = 4) -> dict:
    """{class: {"stems": n, "own": median own-class score, "top": [(class, median score), …]}}."""
    bundle = load_bundle(model)
    sed = SedModel(bundle, ["CPUExecutionProvider"])
    classes = list(bundle.classes)
    cfg = replace(SceneConfig(sr=bundle.sample_rate, duration=10.0), p_no_target=0.0)
    bank = Soundbank.from_folder(soundbank, bundle.sample_rate)
    peaks: dict[str, list[np.ndarray]] = {}
    for i in range(scenes):
        scene = generate_scene(cfg, int(np.random.SeedSequence([seed, 10, i]).generate_state(1)[0]), bank)
        for label, stem in scene.sources.items():
            results = sed_results(bundle, sed, stem[None].astype(np.float32))
            peaks.setdefault(label, []).append(np.max(np.stack([r.clip_probs for r in results]), axis=0))
    table = {}
    for label, rows in sorted(peaks.items()):
        median = np.median(np.stack(rows), axis=0)
        order = np.argsort(-median)[:top]
        table[label] = {"stems": len(rows), "own": round(float(median[classes.index(label)]), 3),
                        "top": [(classes[k], round(float(median[k]), 3)) for k in order]}
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="bundle folder (default: the bundled model)")
    p.add_argument("--soundbank", required=True, help="a folder bank split, e.g. runs/realbank4/valid")
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument("--json", default=None, help="also write the table here")
    args = p.parse_args(argv)
    table = confusion(args.model, args.soundbank, args.scenes, args.seed)
    for label, row in table.items():
        print(f"{label:18s} stems {row['stems']:3d}  own {row['own']:.2f}   " +
              "  ".join(f"{c}:{v:.2f}" for c, v in row["top"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "soundbank": args.soundbank, "scenes": args.scenes, "seed": args.seed,
                       "classes": table}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
