"""Preallocated multichannel ring buffers on an absolute sample timeline.

`RingBuffer` is the engine's history of conditioned input: the SED reads its window from it and
onset backfill re-reads the pre-roll. `SpscRing` is the hand-over from an audio-device callback to
the worker: the callback only copies into preallocated memory and counts overflows."""

from __future__ import annotations

import numpy as np

__all__ = ["RingBuffer", "SpscRing"]


class RingBuffer:
    def __init__(self, channels: int, capacity: int):
        if channels < 1 or capacity < 1:
            raise ValueError("channels and capacity must be positive")
        self.data = np.zeros((channels, capacity), dtype=np.float32)
        self.capacity = capacity
        self.written = 0  # absolute index of the next sample to be written

    @property
    def oldest(self) -> int:
        """Oldest absolute index still held."""
        return max(0, self.written - self.capacity)

    def reset(self):
        self.data[:] = 0.0
        self.written = 0

    def write(self, block: np.ndarray) -> None:
        """block [channels, n]; older samples beyond capacity are overwritten."""
        n = block.shape[1]
        if n >= self.capacity:
            block = block[:, n - self.capacity :]
            self.written += n - self.capacity
            n = self.capacity
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self.data[:, start : start + first] = block[:, :first]
        if first < n:
            self.data[:, : n - first] = block[:, first:]
        self.written += n

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, stop) by absolute index; positions before 0 read as zeros (the stream is
        taken to start after silence). Reading overwritten or unwritten samples is an error."""
        if stop > self.written:
            raise IndexError(f"read up to {stop} but only {self.written} samples written")
        if max(start, 0) < self.oldest:
            raise IndexError(f"samples from {start} were overwritten (oldest held: {self.oldest})")
        n = stop - start
        if out is None:
            out = np.empty((self.data.shape[0], n), dtype=np.float32)
        lead = min(max(0, -start), n)
        out[:, :lead] = 0.0
        pos = start + lead
        while pos < stop:
            idx = pos % self.capacity
            take = min(stop - pos, self.capacity - idx)
            out[:, pos - start : pos - start + take] = self.data[:, idx : idx + take]
            pos += take
        return out


class SpscRing:
    """Single-producer single-consumer ring for device callbacks: `push` copies frames in (dropping
    and counting what does not fit), `pop` takes what is there. No allocation in `push`."""

    def __init__(self, channels: int, capacity: int):
        self.data = np.zeros((capacity, channels), dtype=np.float32)  # frames × channels, like PortAudio
        self.capacity = capacity
        self.write_pos = 0
        self.read_pos = 0
        self.overflow_frames = 0
        self.overflow_events = 0

    def push(self, frames: np.ndarray) -> None:
        n = frames.shape[0]
        free = self.capacity - (self.write_pos - self.read_pos)
        if n > free:
            self.overflow_frames += n - free
            self.overflow_events += 1
            n = free
        start = self.write_pos % self.capacity
        first = min(n, self.capacity - start)
        self.data[start : start + first] = frames[:first]
        if first < n:
            self.data[: n - first] = frames[first:n]
        self.write_pos += n  # published last: the reader never sees a half-copied block

    def available(self) -> int:
        return self.write_pos - self.read_pos

    def pop(self, max_frames: int | None = None) -> np.ndarray:
        n = self.available() if max_frames is None else min(max_frames, self.available())
        start = self.read_pos % self.capacity
        first = min(n, self.capacity - start)
        out = np.concatenate([self.data[start : start + first], self.data[: n - first]]) if first < n else self.data[start : start + n].copy()
        self.read_pos += n
        return out
