"""Room simulation for spatial scenes: shoebox RIRs, array geometry, diffuse noise, early references.

RIRs come from pyroomacoustics' image-source method, capped at a low reflection order so a
scene renders in well under a second. Beyond the time up to which that truncated image set is
complete, the response is continued by a statistical tail (exponentially decaying noise with the
drawn RT60, its level fitted to the image-source part, spatially coherent like a diffuse field),
so long RT60s are honoured without a high ISM order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal

__all__ = [
    "SPEED_OF_SOUND",
    "MIC_ARRAYS",
    "RoomDraw",
    "array_positions",
    "simulate_room",
    "early_part",
    "impose_diffuse_coherence",
    "spatialise_noise",
]

SPEED_OF_SOUND = 343.0

# Microphones per supported array; the reference microphone is always channel 0.
MIC_ARRAYS: dict[str, int] = {"tetrahedral": 4, "single": 1}


@dataclass
class RoomDraw:
    """RIRs for the sources of one scene, all in the same room and array."""

    rirs: list[np.ndarray]  # per source, [mics, taps] float64
    info: dict = field(default_factory=dict)  # JSON-able description (room, RT60, positions)
    mic_positions: np.ndarray | None = None  # [3, mics] metres; None for measured RIRs

    @property
    def n_mics(self) -> int:
        return self.rirs[0].shape[0] if self.rirs else (0 if self.mic_positions is None else self.mic_positions.shape[1])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3-D rotation (QR of a Gaussian matrix with sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def array_positions(kind: str, centre: np.ndarray, radius: float, rotation: np.ndarray | None = None) -> np.ndarray:
    """Microphone coordinates [3, mics] of an array centred at ``centre``."""
    if kind == "single":
        return np.asarray(centre, dtype=np.float64).reshape(3, 1)
    if kind != "tetrahedral":
        raise ValueError(f"unknown mic array {kind!r}; known: {', '.join(MIC_ARRAYS)}")
    vertices = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64).T / np.sqrt(3.0)
    if rotation is not None:
        vertices = rotation @ vertices
    return np.asarray(centre, dtype=np.float64).reshape(3, 1) + radius * vertices


def _draw_position(rng, room_dim, margin, avoid, min_distance, z_range=None, tries=200):
    """Uniform position ``margin`` from the walls and ``min_distance`` from ``avoid`` (if given)."""
    low = np.full(3, margin)
    high = np.asarray(room_dim) - margin
    if z_range is not None:
        low[2], high[2] = max(low[2], z_range[0]), min(high[2], z_range[1])
    best, best_distance = None, -1.0
    for _ in range(tries):
        position = rng.uniform(low, high)
        if avoid is None:
            return position
        distance = float(np.linalg.norm(position - avoid))
        if distance >= min_distance:
            return position
        if distance > best_distance:
            best, best_distance = position, distance
    return best  # tiny rooms: the farthest position found


def simulate_room(
    rng: np.random.Generator,
    sr: int,
    n_sources: int,
    mic_array: str = "tetrahedral",
    rt60_range: tuple[float, float] = (0.2, 0.8),
    dims_range: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] = ((3.0, 10.0), (3.0, 8.0), (2.5, 4.0)),
    radius_range: tuple[float, float] = (0.02, 0.05),
    wall_margin: float = 0.5,
    min_source_distance: float = 0.5,
    max_order: int = 10,
) -> RoomDraw:
    """Random shoebox room, array and source positions; returns the RIRs of every source."""
    import pyroomacoustics as pra  # imported lazily: only spatial scenes need it

    for _ in range(100):
        room_dim = np.array([rng.uniform(*r) for r in dims_range])
        rt60 = float(rng.uniform(*rt60_range))
        try:
            absorption, sabine_order = pra.inverse_sabine(rt60, room_dim)
            break
        except ValueError:  # RT60 too short for that room (absorption > 1): draw again
            continue
    else:
        raise ValueError(f"no room in {dims_range} reaches an RT60 in {rt60_range}")
    order = int(min(sabine_order, max_order))
    radius = float(rng.uniform(*radius_range))
    centre = _draw_position(rng, room_dim, wall_margin + radius, None, 0.0, z_range=(0.8, 2.0))
    mics = array_positions(mic_array, centre, radius, _random_rotation(rng))
    sources = [
        _draw_position(rng, room_dim, wall_margin, centre, min_source_distance + radius) for _ in range(n_sources)
    ]
    room = pra.ShoeBox(room_dim, fs=sr, materials=pra.Material(absorption), max_order=order, air_absorption=False)
    for position in sources:
        room.add_source(position)
    room.add_microphone_array(mics)
    room.compute_rir()
    complete_until = order * float(np.min(room_dim)) / SPEED_OF_SOUND
    rirs = []
    for s in range(n_sources):
        taps = max(len(room.rir[m][s]) for m in range(mics.shape[1]))
        rir = np.zeros((mics.shape[1], taps))
        for m in range(mics.shape[1]):
            rir[m, : len(room.rir[m][s])] = room.rir[m][s]
        if sabine_order > max_order:
            rir = _extend_tail(rng, rir, sr, rt60, complete_until, mics)
        rirs.append(rir)
    info = {
        "kind": "shoebox",
        "room_dim": [round(float(v), 4) for v in room_dim],
        "rt60": round(rt60, 4),
        "ism_order": order,
        "mic_array": mic_array,
        "array_radius": round(radius, 4),
        "mic_positions": np.round(mics.T, 4).tolist(),
        "source_positions": [np.round(p, 4).tolist() for p in sources],
    }
    return RoomDraw(rirs=rirs, info=info, mic_positions=mics)


def _extend_tail(rng, rir: np.ndarray, sr: int, rt60: float, complete_until: float, mics: np.ndarray) -> np.ndarray:
    """Continue a truncated image-source RIR with a diffuse exponential tail of the right RT60."""
    direct = int(np.argmax(np.abs(rir[0])))
    stop = min(rir.shape[1], int(complete_until * sr))
    start = direct + int(0.3 * (stop - direct))
    if stop - start < int(0.005 * sr):
        return rir
    decay = np.log(1e6) / rt60  # energy decay rate: −60 dB after rt60
    t = np.arange(start, stop) / sr
    level = np.sqrt(np.mean(rir[:, start:stop] ** 2 * np.exp(decay * t)))
    length = max(rir.shape[1], direct + int(rt60 * sr))
    tail = impose_diffuse_coherence(rng.standard_normal((rir.shape[0], length)), mics, sr)
    tail *= level * np.exp(-0.5 * decay * np.arange(length) / sr)
    out = np.zeros((rir.shape[0], length))
    out[:, : rir.shape[1]] = rir
    fade_len = max(1, int(0.01 * sr))
    fade_start = max(start, stop - fade_len)
    fade = np.clip((np.arange(length) - fade_start) / max(1, stop - fade_start), 0.0, 1.0)
    return out * (1.0 - fade) + tail * fade


def early_part(rir: np.ndarray, sr: int, early_ms: float = 50.0, pre_ms: float = 6.0) -> np.ndarray:
    """The DCASE 2025 Task 4 reference RIR: taps in [direct peak − pre_ms, peak + early_ms], rest zero.

    Works on the last axis; the window is placed from the reference (first) channel's direct peak,
    and the taps keep their positions so the reference stays time-aligned with the mixture.
    """
    rir = np.asarray(rir)
    reference = rir if rir.ndim == 1 else rir[0]
    peak = int(np.argmax(np.abs(reference)))
    lo = max(0, peak - int(round(pre_ms * 1e-3 * sr)))
    hi = min(rir.shape[-1], peak + int(round(early_ms * 1e-3 * sr)) + 1)
    out = np.zeros_like(rir)
    out[..., lo:hi] = rir[..., lo:hi]
    return out


def impose_diffuse_coherence(signals: np.ndarray, mic_positions: np.ndarray, sr: int, nperseg: int = 256) -> np.ndarray:
    """Mix mutually uncorrelated, equally coloured signals [mics, n] into a spherically diffuse field.

    Channel pairs get the coherence sinc(2 f d / c) of an ideal diffuse field at distance d
    (Cholesky factor per frequency). Channel 0 is returned unchanged.
    """
    signals = np.asarray(signals, dtype=np.float64)
    n_mics, n = signals.shape
    if n_mics == 1:
        return signals.copy()
    distances = np.linalg.norm(mic_positions[:, :, None] - mic_positions[:, None, :], axis=0)
    freqs, _, spec = signal.stft(signals, fs=sr, nperseg=nperseg, boundary="even", padded=True)
    coherence = np.sinc(2.0 * freqs[:, None, None] * distances[None] / SPEED_OF_SOUND)
    factor = np.linalg.cholesky(coherence + 1e-6 * np.eye(n_mics)[None])
    mixed = np.einsum("fij,jft->ift", factor, spec)
    _, out = signal.istft(mixed, fs=sr, nperseg=nperseg, boundary=True)
    out = out[:, :n] if out.shape[1] >= n else np.pad(out, ((0, 0), (0, n - out.shape[1])))
    out[0] = signals[0]
    return out


def spatialise_noise(rng: np.random.Generator, noise: np.ndarray, draw: RoomDraw, sr: int) -> np.ndarray:
    """Multichannel background [mics, n] from a mono background ``noise``.

    With a known array geometry channel 0 is ``noise`` exactly and the other channels are long
    circular shifts of it (same spectrum, mutually uncorrelated) made diffuse-coherent. Measured
    RIRs have no geometry: the noise is filtered by their late part (after 20 ms), which carries the
    real array's coherence; channel 0 then keeps the RMS of ``noise`` but not its waveform.
    """
    noise = np.asarray(noise, dtype=np.float64)
    n = len(noise)
    n_mics = draw.n_mics
    if n_mics == 1:
        return noise[None].copy()
    if draw.mic_positions is not None:
        shifts = [0] + list(rng.integers(n // 8 + 1, max(n // 8 + 2, n - n // 8), n_mics - 1))
        stacked = np.stack([np.roll(noise, int(s)) for s in shifts])
        return impose_diffuse_coherence(stacked, draw.mic_positions, sr)
    rir = draw.rirs[int(rng.integers(len(draw.rirs)))]
    late_start = int(np.argmax(np.abs(rir[0]))) + int(0.02 * sr)
    late = rir[:, late_start:]
    if late.shape[1] < 16:
        return np.tile(noise, (n_mics, 1))
    # Circular convolution keeps the background stationary over the whole scene (no fade-in).
    spectrum = np.fft.rfft(noise)
    shaped = np.fft.irfft(spectrum[None] * np.fft.rfft(late, n=n, axis=1), n=n, axis=1)
    shaped *= np.sqrt(np.mean(noise**2)) / (np.sqrt(np.mean(shaped[0] ** 2)) + 1e-12)
    return shaped
