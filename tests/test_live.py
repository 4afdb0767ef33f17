from rich.console import Console

from stream_s5 import Engine, EngineOptions
from stream_s5.live import LiveView
from tests.conftest import tone_bursts


class _Source:
    rate, channels, overflows = 16000, 1, 3


def test_live_view_shows_active_class_timings_and_counters(toy_bundle):
    engine = Engine(str(toy_bundle), classes="auto", device="cpu", options=EngineOptions(calibrate=False))
    view = LiveView(engine, _Source())
    x = tone_bursts(bursts=((0.5, 3.0),), seconds=2.0)
    for i in range(0, x.size, 1600):
        view.update(engine.feed(x[i : i + 1600]), i + 1600)
    console = Console(record=True, width=120)
    console.print(view._render())
    text = console.export_text()
    assert "AlarmClock" in text and "█" in text  # the active class with its activity bar
    assert f"deadline misses {engine.deadline_misses}" in text and "xruns 3" in text and "p99" in text
    assert "0.48 → open" in text  # the open event, with its backfilled onset
