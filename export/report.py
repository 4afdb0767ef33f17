"""Render evaluation JSON files (from `stream-s5 eval --json`) as one markdown table, so that the
numbers in docs/ are copied from measurements, not typed.

    python -m export.report docs/results/full_stream_k2.json docs/results/full_oracle_k2.json …
    python -m export.report --bundle stream_s5/models/default docs/results/full_*.json

With `--bundle`, the same figures are also written into that bundle's `bundle.json`
(`provenance.metrics`, one entry per file), so that a bundle carries its own measured quality.
bundle.json itself is not hashed (its graphs are), so this does not invalidate the bundle.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stream_s5.bundle import update_manifest

ROWS = [
    ("CA-SDRi (dB)", "ca_sdri_db", "{:.2f}"),
    ("label accuracy", "label_accuracy", "{:.3f}"),
    ("SI-SDRi, correctly detected classes (dB)", "si_sdri_db", "{:.2f}"),
    ("SNRi, correctly detected classes (dB)", "sdri_detected_db", "{:.2f}"),
    ("SED segment F1 (1 s)", "segment_f1", "{:.3f}"),
    ("SED event F1 (200 ms onset collar)", "event_f1", "{:.3f}"),
    ("SED event F1, onset only", "event_onset_f1", "{:.3f}"),
    ("median onset delay (s)", "median_onset_delay_s", "{:.3f}"),
    ("false alarms per hour (no-target scenes)", "false_alarms_per_hour", "{:.1f}"),
    ("scenes (no-target)", None, None),
    ("RTF of the evaluation run", "rtf", "{:.3f}"),
]


def column_name(path: Path, summary: dict) -> str:
    s = summary["settings"]
    return f"{path.stem}<br>({s['mode']}, K={s['passes']})"


def render(paths: list[Path]) -> str:
    runs = [(p, json.loads(p.read_text())) for p in paths]
    lines = ["| metric | " + " | ".join(column_name(p, s) for p, s in runs) + " |",
             "|---|" + "---|" * len(runs)]
    for name, key, fmt in ROWS:
        cells = []
        for _, s in runs:
            if key is None:
                cells.append(f"{s['scenes']} ({s['no_target_scenes']})")
            else:
                value = s.get(key)
                cells.append("—" if value is None else fmt.format(value))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bundle_metrics(paths: list[Path]) -> dict:
    """{file stem: the table's figures + the evaluation settings} for bundle provenance."""
    out = {}
    for path in paths:
        summary = json.loads(path.read_text())
        entry = {key: summary.get(key) for _, key, _ in ROWS if key is not None}
        entry["scenes"], entry["no_target_scenes"] = summary["scenes"], summary["no_target_scenes"]
        entry["settings"] = {k: v for k, v in summary["settings"].items() if k != "bundle"}
        entry["source"] = str(path)
        out[path.stem] = entry
    return out


def write_into_bundle(bundle_dir: Path, paths: list[Path]) -> None:
    metrics = bundle_metrics(paths)
    update_manifest(bundle_dir, lambda manifest: manifest.setdefault("provenance", {}).setdefault("metrics", {}).update(metrics))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="JSON files from stream-s5 eval --json")
    p.add_argument("--bundle", type=Path, default=None, help="also record the figures in this bundle's provenance")
    args = p.parse_args(argv)
    print(render(args.results))
    if args.bundle is not None:
        write_into_bundle(args.bundle, args.results)


if __name__ == "__main__":
    main()
