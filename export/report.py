"""Render evaluation JSON files (from `stream-s5 eval --json`) as one markdown table, so that the
numbers in docs/ are copied from measurements, not typed.

    python -m export.report docs/results/full_stream_k2.json docs/results/full_oracle_k2.json …
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def main(argv=None):
    print(render([Path(a) for a in (argv or sys.argv[1:])]))


if __name__ == "__main__":
    main()
