"""Per-stage timing with preallocated storage (nothing grows while a stream runs)."""

from __future__ import annotations

import numpy as np

__all__ = ["StageTimer"]


class StageTimer:
    """Per-stage durations in a preallocated buffer (no growth while running)."""

    def __init__(self, capacity: int = 1 << 16):
        self.values = np.empty(capacity, dtype=np.float64)
        self.values.fill(0.0)  # commit the pages now (np.zeros would let the OS commit them mid-stream)
        self.count = 0

    def add(self, seconds: float):
        self.values[self.count % self.values.size] = seconds
        self.count += 1

    def _recorded(self) -> np.ndarray:
        """The durations still held (the newest `values.size` once the buffer has wrapped)."""
        return self.values[: min(self.count, self.values.size)]

    def total_s(self) -> float:
        return float(self._recorded().sum())

    def summary(self) -> dict:
        if self.count == 0:
            return {"count": 0}
        v = self._recorded() * 1000.0
        return {"count": self.count, "p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
                "max_ms": float(v.max()), "mean_ms": float(v.mean())}
