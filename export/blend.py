"""Blend two checkpoints of one architecture by linear weight interpolation (WiSE-FT).

A model fine-tuned from another (``real1`` from ``full``) usually stays in the same loss basin as its
parent, so the straight line between the two weight vectors trades the parent's world (procedural scenes)
against the fine-tuning's (real recordings) without new training; points on it are often better on both
than the ends suggest (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022).

    python -m export.blend checkpoints/full.pt checkpoints/real1.pt --alpha 0.5 --out runs/blend/real1_a50.pt

``alpha`` is the share of the second checkpoint; ``--sed-alpha`` / ``--separator-alpha`` set the two
networks apart. The result is an ordinary checkpoint (no optimiser state) for ``python -m export.bundle``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

__all__ = ["blend_state", "blend_checkpoints", "main"]


def blend_state(first: dict, second: dict, alpha: float) -> dict:
    """(1 − alpha)·first + alpha·second for floating tensors; other entries (counters) from ``first``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if first.keys() != second.keys():
        missing = sorted(set(first) ^ set(second))
        raise ValueError(f"the checkpoints hold different parameters: {', '.join(missing[:5])}")
    out = {}
    for key, a in first.items():
        b = second[key]
        if a.shape != b.shape:
            raise ValueError(f"{key}: shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})")
        out[key] = torch.lerp(a, b.to(a.dtype), alpha) if a.is_floating_point() else a.clone()
    return out


def blend_checkpoints(first_path: str | Path, second_path: str | Path, sed_alpha: float, separator_alpha: float) -> dict:
    first = torch.load(first_path, weights_only=True, map_location="cpu")
    second = torch.load(second_path, weights_only=True, map_location="cpu")
    from export.models import ModelConfig

    # compared as configs, not as text: a checkpoint saved before a setting existed has its default
    if (ModelConfig.from_dict(json.loads(first["config_json"])).to_dict()
            != ModelConfig.from_dict(json.loads(second["config_json"])).to_dict()):
        raise ValueError(f"{first_path} and {second_path} are different architectures")
    recipe = {"preset": "blend", "blend": {"first": str(first_path), "second": str(second_path),
                        "sed_alpha": sed_alpha, "separator_alpha": separator_alpha},
              "first_recipe": json.loads(first.get("recipe_json", "{}")),
              "second_recipe": json.loads(second.get("recipe_json", "{}"))}
    return {"config_json": first["config_json"], "recipe_json": json.dumps(recipe),
            "sed": blend_state(first["sed"], second["sed"], sed_alpha),
            "separator": blend_state(first["separator"], second["separator"], separator_alpha),
            "step": int(second["step"]), "elapsed_s": float(first.get("elapsed_s", 0)) + float(second.get("elapsed_s", 0))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first", help="checkpoint at alpha = 0 (the parent)")
    p.add_argument("second", help="checkpoint at alpha = 1 (the fine-tuned model)")
    p.add_argument("--alpha", type=float, default=0.5, help="share of the second checkpoint, both networks")
    p.add_argument("--sed-alpha", type=float, default=None, help="share of the second checkpoint for the SED")
    p.add_argument("--separator-alpha", type=float, default=None, help="share of the second checkpoint for the separator")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    sed_alpha = args.alpha if args.sed_alpha is None else args.sed_alpha
    separator_alpha = args.alpha if args.separator_alpha is None else args.separator_alpha
    try:
        state = blend_checkpoints(args.first, args.second, sed_alpha, separator_alpha)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    print(f"SED {sed_alpha:.2f} / separator {separator_alpha:.2f} of {args.second} → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
