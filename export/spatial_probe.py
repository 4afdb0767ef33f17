"""Would a training-free use of space beat the spatial separator? Mask-based MVDR on written estimates.

    stream-s5 eval --dcase runs/dcase_heldout/dev_set/test --model spatial --write-estimates runs/est_spatial20 --limit 20
    python -m export.spatial_probe runs/dcase_heldout/dev_set/test runs/est_spatial20 --memory-s 2

For every estimate `<scene>_<Class>.wav` with an oracle target, the separator's estimate gives a mask on
the reference channel (|estimate|² / |mixture ch 0|², clipped to [0, 1]); causal, exponentially
forgetting target and rest covariances of the 4 channels follow from it, per frequency, and the
Souden MVDR filter w = Φn⁻¹Φs u₀ / tr(Φn⁻¹Φs) gives a beamformed estimate (the classic mask-based
beamformer of multichannel speech enhancement), alone and with the square-root mask applied after it.
Reported: mean SNR improvement over mixture channel 0 (the official per-class term) of the separator's
estimate, the MVDR output and MVDR × √mask, over the correctly reported classes. An offline probe: the
runtime does not beamform (docs/dcase.md says why, measured)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import stft, istft

from stream_s5.metrics import snr


def mvdr(mixture: np.ndarray, estimate: np.ndarray, rate: int, n_fft: int, hop: int, memory_s: float):
    """mixture [C, N], estimate [N] → (MVDR output, MVDR × √mask), both [N]."""
    lam = 1.0 - hop / rate / memory_s
    _, _, x = stft(mixture, rate, "hann", n_fft, n_fft - hop)  # [C, F, T]
    _, _, e = stft(estimate, rate, "hann", n_fft, n_fft - hop)  # [F, T]
    channels, n_freq, frames = x.shape
    mask = np.clip(np.abs(e) ** 2 / (np.abs(x[0]) ** 2 + 1e-10), 0.0, 1.0)
    target = np.zeros((n_freq, channels, channels), complex)
    rest = np.tile(np.eye(channels) * 1e-6, (n_freq, 1, 1)).astype(complex)
    out = np.zeros((n_freq, frames), complex)
    eye = np.eye(channels)
    for t in range(frames):
        xt = x[:, :, t].T  # [F, C]
        outer = xt[:, :, None] * xt[:, None, :].conj()
        target = lam * target + mask[:, t, None, None] * outer
        rest = lam * rest + (1.0 - mask[:, t, None, None]) * outer
        loading = 1e-3 * np.trace(rest, axis1=1, axis2=2).real[:, None, None] / channels + 1e-10
        ratio = np.linalg.solve(rest + loading * eye, target)  # Φn⁻¹ Φs
        w = ratio[:, :, 0] / (np.trace(ratio, axis1=1, axis2=2)[:, None] + 1e-10)
        out[:, t] = (w.conj() * xt).sum(1)
    n = mixture.shape[1]
    beam = istft(out, rate, "hann", n_fft, n_fft - hop)[1][:n]
    masked = istft(out * np.sqrt(mask), rate, "hann", n_fft, n_fft - hop)[1][:n]
    return np.pad(beam, (0, n - beam.size)), np.pad(masked, (0, n - masked.size))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("test_folder", help="DCASE test layout: soundscape/ and oracle_target/")
    p.add_argument("estimates", help="folder of <scene>_<Class>.wav written by stream-s5 eval --write-estimates")
    p.add_argument("--memory-s", type=float, default=2.0, help="covariance memory (exponential forgetting)")
    p.add_argument("--n-fft", type=int, default=512)
    p.add_argument("--hop", type=int, default=256)
    p.add_argument("--json", help="write the per-estimate rows and means here")
    args = p.parse_args(argv)
    root = Path(args.test_folder)
    rows = []
    for path in sorted(Path(args.estimates).glob("*.wav")):
        scene, label = path.stem.rsplit("_", 1)
        reference_path = root / "oracle_target" / path.name
        if not reference_path.exists():  # a false detection: no SNR term
            continue
        mixture, rate = sf.read(root / "soundscape" / f"{scene}.wav", dtype="float64", always_2d=True)
        estimate = sf.read(path, dtype="float64")[0]
        reference = sf.read(reference_path, dtype="float64")[0]
        beam, masked = mvdr(mixture.T, estimate, rate, args.n_fft, args.hop, args.memory_s)
        base = snr(mixture[:, 0], reference)
        row = {"estimate": path.stem, "separator_db": snr(estimate, reference) - base,
               "mvdr_db": snr(beam, reference) - base, "mvdr_sqrt_mask_db": snr(masked, reference) - base}
        rows.append(row)
        print(f"{path.stem:40s} separator {row['separator_db']:6.2f}  mvdr {row['mvdr_db']:6.2f}  "
              f"mvdr×√mask {row['mvdr_sqrt_mask_db']:6.2f} dB", flush=True)
    if not rows:
        raise SystemExit("export.spatial_probe: no estimate with an oracle target")
    means = {k: round(float(np.mean([r[k] for r in rows])), 2) for k in ("separator_db", "mvdr_db", "mvdr_sqrt_mask_db")}
    print(f"mean SNR improvement over {len(rows)} estimates: {means}")
    if args.json:
        Path(args.json).write_text(json.dumps({"memory_s": args.memory_s, "n": len(rows), "mean": means, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
