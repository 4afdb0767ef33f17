import pytest

from stream_s5.timing import StageTimer


def test_totals_and_summary_cover_the_durations_still_held():
    timer = StageTimer(capacity=4)
    assert timer.summary() == {"count": 0} and timer.total_s() == 0.0
    for seconds in (0.001, 0.002, 0.003):
        timer.add(seconds)
    assert timer.total_s() == pytest.approx(0.006)
    for seconds in (0.010, 0.020, 0.030):  # wraps: the buffer holds the newest four
        timer.add(seconds)
    assert timer.total_s() == pytest.approx(0.003 + 0.010 + 0.020 + 0.030)
    summary = timer.summary()
    assert summary["count"] == 6 and summary["max_ms"] == pytest.approx(30.0)
    assert summary["mean_ms"] == pytest.approx(1000 * 0.063 / 4)
