"""Separator passes: a fixed number of class slots, each with its own GRU state per refinement pass.

Per hop, the mixture frame is computed once; then pass k runs as one batched call over the occupied
slots, fed pass k−1's estimate (zeros for k = 1) and that slot's SED activity; the last pass's
estimate goes through overlap-add synthesis per slot.

A slot that gets a new class is reset and caught up from the class's onset on the stored mixture
frames (one call per pass over the whole pre-roll): that is the onset backfill."""

from __future__ import annotations

import numpy as np

from stream_s5.dsp import OverlapAdd, sqrt_hann, stft_frames
from stream_s5.sessions import SeparatorModel

__all__ = ["SeparatorBank"]


class SeparatorBank:
    def __init__(self, model: SeparatorModel, n_slots: int, passes: int, n_fft: int, hop: int, channels: int,
                 n_classes: int, history_frames: int, step_model=None):
        self.model = model  # any shape: backfill catch-up runs many frames in one call
        self.step_model = step_model or model  # per-hop calls; may be a fixed-shape IO-bound session
        self.n_slots, self.passes, self.n_fft, self.hop = n_slots, passes, n_fft, hop
        self.channels, self.n_classes = channels, n_classes
        self.n_freq = n_fft // 2 + 1
        self.window = sqrt_hann(n_fft)
        self.history = history_frames
        self.spectra = np.zeros((history_frames, channels, 2, self.n_freq), dtype=np.float32)
        self.state_shape = model.state_shape
        self.states = np.zeros((passes, n_slots, *self.state_shape), dtype=np.float32)
        self.ola = OverlapAdd(n_fft, hop, n_slots)
        self.slot_class = np.full(n_slots, -1, dtype=np.int64)
        self.onehot = np.zeros((n_slots, n_classes), dtype=np.float32)
        self._pass_index = [np.full(n_slots, k, dtype=np.int64) for k in range(passes)]
        self.calls = 0
        self.nonfinite_repairs = 0

    def reset(self):
        self.spectra[:] = 0.0
        self.states[:] = 0.0
        self.ola.reset()
        self.slot_class[:] = -1
        self.onehot[:] = 0.0

    @property
    def occupied(self) -> np.ndarray:
        return np.flatnonzero(self.slot_class >= 0)

    def analyse(self, frame_index: int, framed: np.ndarray) -> np.ndarray:
        """framed [channels, n_fft] (the newest n_fft samples) → store and return [channels, 2, F]."""
        spec = stft_frames(framed, self.window)
        self.spectra[frame_index % self.history] = spec
        return spec

    def _run_passes(self, slots: np.ndarray, mix: np.ndarray, activity: np.ndarray, model) -> np.ndarray:
        """mix [B, T, C, 2, F], activity [B, T] for `slots` → last estimate [B, T, 2, F]."""
        prev = np.zeros((len(slots), mix.shape[1], 2, self.n_freq), dtype=np.float32)
        onehot = self.onehot[slots]
        for k in range(self.passes):
            state_in = self.states[k, slots]
            est, state_out = model(mix, prev, onehot, activity, self._pass_index[k][: len(slots)], state_in)
            self.calls += 1
            est, state_out = self._repair(prev, est, state_in, state_out)
            prev, self.states[k, slots] = est, state_out
        return prev

    def _repair(self, prev, est, state_in, state_out):
        """A slot whose pass came out non-finite keeps the pass's input (its previous estimate and its
        state): one hop of that slot is less refined instead of NaN audio and a poisoned GRU state.
        Counted in `nonfinite_repairs` (slot-passes)."""
        bad = ~(np.isfinite(est).reshape(len(est), -1).all(1) & np.isfinite(state_out).reshape(len(est), -1).all(1))
        if bad.any():
            self.nonfinite_repairs += int(bad.sum())
            est, state_out = est.copy(), state_out.copy()
            est[bad], state_out[bad] = prev[bad], state_in[bad]
        return est, state_out

    def step(self, spec: np.ndarray, activity: np.ndarray, slots: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One hop for every occupied slot (or for `slots`, occupied ones of streams that have a hop).
        spec [C, 2, F]; activity [n_slots] → (slots, audio [B, hop])."""
        slots = self.occupied if slots is None else slots
        if slots.size == 0:
            return slots, np.zeros((0, self.hop), np.float32)
        mix = self._hop_mixture(spec, slots)
        est = self._run_passes(slots, mix, activity[slots, None].astype(np.float32), self.step_model)
        return slots, self.ola(est, slots)

    def assign(self, slot: int, class_index: int, first_frame: int, last_frame: int, activity: np.ndarray) -> np.ndarray:
        """Give `slot` to a class, reset its state, and separate frames first_frame..last_frame from the
        stored mixture spectra (backfill). activity [T] → audio [T * hop] whose first sample is
        (first_frame + 1) * hop - n_fft on the timeline."""
        self.release(slot)
        self.slot_class[slot] = class_index
        self.onehot[slot, class_index] = 1.0
        frames = np.arange(first_frame, last_frame + 1)
        if frames.size == 0:
            return np.zeros(0, np.float32)
        mix = self._stored_mixture(frames, slot)[None]
        est = self._run_passes(np.array([slot]), mix, activity[None].astype(np.float32), self.model)
        return self.ola(est, np.array([slot]))[0]

    def _hop_mixture(self, spec: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """This hop's mixture spectrum for each of `slots` → [B, 1, C, 2, F]."""
        return np.repeat(spec[None, None], slots.size, axis=0)

    def _stored_mixture(self, frames: np.ndarray, slot: int) -> np.ndarray:
        """The stored mixture spectra of `frames` that `slot` separates → [T, C, 2, F]."""
        return self.spectra[frames % self.history]

    def release(self, slot: int):
        self.slot_class[slot] = -1
        self.onehot[slot] = 0.0
        self.states[:, slot] = 0.0
        self.ola.reset(slot)
