"""The 16 kHz quality ceiling of export/rate_cost.py."""

import numpy as np
import pytest

pytest.importorskip("torch")  # export.rate_cost exports graphs with torch

from export.rate_cost import band_limit, band_limit_ceiling  # noqa: E402


def test_band_limit_keeps_a_low_tone_and_halves_white_noise():
    t = np.arange(32000) / 32000
    sdr, above = band_limit(np.sin(2 * np.pi * 1000 * t))
    assert sdr > 40 and above < 1e-6
    sdr, above = band_limit(np.random.default_rng(0).standard_normal(32000))
    assert above == pytest.approx(0.5, abs=0.02)
    assert sdr == pytest.approx(3.0, abs=0.5)  # half the energy gone → 3 dB


def test_ceiling_report_covers_every_reference():
    report = band_limit_ceiling(n_scenes=2, seed=1000)
    assert report["references"] == sum(row["n"] for row in report["per_class"].values())
    assert all(row["min_ceiling_sdr_db"] <= row["median_ceiling_sdr_db"] for row in report["per_class"].values())
