"""Terminal views (rich): the live view for the microphone, a progress bar for files."""

from __future__ import annotations

import time

import numpy as np
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["LiveView", "ProgressView"]


class ProgressView:
    def __init__(self, source, enabled: bool = True):
        self.total = getattr(source, "frames", None)
        self.rate = source.rate
        self.progress = Progress(TextColumn("[bold]stream-s5[/]"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), disable=not enabled, transient=True)
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("run", total=self.total, info="")
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, out, fed: int):
        self.progress.update(self.task, completed=fed, info=f"{fed / self.rate:.1f} s")


class LiveView:
    """Per-class activity and output level, recent events, block timings, xruns and deadline misses.
    Redrawn at most 10 times a second, from the worker (never from the audio callback)."""

    def __init__(self, engine, source, refresh_hz: float = 10.0):
        self.engine, self.source = engine, source
        self.levels: dict[str, float] = {}
        self.recent: list = []
        self.live = Live(auto_refresh=False, transient=False)
        self.period = 1.0 / refresh_hz
        self.last = 0.0

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.update(self._render(), refresh=True)
        return self.live.__exit__(*exc)

    def update(self, out, fed: int):
        for label, samples in out.audio.items():
            if samples.size:
                rms = float(np.sqrt(np.mean(samples**2)) + 1e-12)
                self.levels[label] = 20 * np.log10(rms)
        for event in out.events:
            self.recent.append(event)
        self.recent = self.recent[-6:]
        now = time.perf_counter()
        if now - self.last >= self.period:
            self.last = now
            self.live.update(self._render(), refresh=True)

    def _render(self):
        eng = self.engine
        table = Table(title="stream-s5 — live", expand=False)
        table.add_column("class")
        table.add_column("SED", justify="right")
        table.add_column("activity")
        table.add_column("slot", justify="right")
        table.add_column("level dBFS", justify="right")
        slots = eng.slot_labels()
        latest = eng.activity.latest
        for ci, label in enumerate(eng.classes):
            p = float(eng.activity.values[latest % eng.activity.history, ci]) if latest >= 0 else 0.0
            state = eng.tracker.state[label]
            if p < 0.1 and label not in slots and not state.active:
                continue
            bar = "█" * int(round(p * 20))
            slot = str(slots.index(label)) if label in slots else ""
            level = f"{self.levels.get(label, -120):.0f}" if label in slots else ""
            style = "bold green" if state.active else ""
            table.add_row(label, f"{p:.2f}", f"[{style}]{bar}[/]" if style else bar, slot, level)
        t = eng.stats()
        block = t["timings"]["block"]
        info = Table.grid(padding=(0, 2))
        info.add_row(
            f"block p50 {block.get('p50_ms', 0):.2f} ms  p99 {block.get('p99_ms', 0):.2f} ms  (hop {1000 * eng.hop / eng.rate:.1f} ms)",
            f"deadline misses {t['deadline_misses']}",
            f"xruns {getattr(self.source, 'overflows', 0)}",
            f"K={eng.passes}  {t['device']}",
        )
        events = Table.grid()
        for e in self.recent:
            when = "retracted" if e.retracted else "open" if e.offset is None else f"{e.offset:.2f}"
            events.add_row(f"{e.label:18s} {e.onset:7.2f} → {when}  peak {e.peak:.2f}")
        return Group(table, info, events)
