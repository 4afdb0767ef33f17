"""Time the model's training updates alone (no data pipeline): the SED update and the separator update
(two refinement passes) of a checkpoint's architecture, on fixed random inputs, on a device.

    python -m export.train_speed --init checkpoints/real7.pt --device cpu --threads 1 --out speed_cpu.json
    python -m export.train_speed --init checkpoints/real7.pt --device cuda --amp --out speed_gpu.json

    python -m export.train_speed --handover --sed-batches 128 --out handover.json

One JSON row per (part, batch): median and quartiles of the seconds per update over `--repeats` timed
updates after `--warmup` untimed ones (CUDA synchronised around each), and windows per second. The
speed-up of a GPU over this CPU is the ratio of two such files (docs/model.md, GPU training).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from export.models import ModelConfig, SedNet, SeparatorNet, causal_istft, mixture_stft, sed_loss
from export.train import optimiser_step, separation_loss


def _timed(update, device, warmup: int, repeats: int) -> list[float]:
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def measure(cfg: ModelConfig, device: torch.device, amp: bool, sed_batches, sep_batches, warmup: int, repeats: int,
            sep_seconds: float = 2.048) -> list[dict]:
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    g = torch.Generator().manual_seed(0)
    rows = []
    sed = SedNet(cfg.sed).to(device).train()
    opt = torch.optim.AdamW(sed.parameters(), lr=1e-4)
    for batch in sed_batches:
        audio = (0.1 * torch.randn(batch, cfg.sed.window, generator=g)).to(device)
        frames = (torch.rand(batch, cfg.sed.n_patches, cfg.sed.n_classes, generator=g) < 0.1).float().to(device)
        clips = frames.amax(dim=1)

        def sed_update():
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = sed(audio)
            loss, _ = sed_loss({k: v.float() for k, v in out.items()}, clips, frames)
            optimiser_step(opt, loss, sed, scaler)

        rows.append(_row("sed", batch, _timed(sed_update, device, warmup, repeats)))
    sep = SeparatorNet(cfg.separator).to(device).train()
    opt_sep = torch.optim.AdamW(sep.parameters(), lr=1e-4)
    length = int(sep_seconds * cfg.separator.sample_rate) // cfg.separator.hop * cfg.separator.hop
    for batch in sep_batches:
        mix = (0.1 * torch.randn(batch, cfg.separator.channels, length, generator=g)).to(device)
        target = 0.5 * mix[:, 0]
        onehot = torch.nn.functional.one_hot(torch.arange(batch) % 18, 18).float().to(device)
        activity = torch.ones(batch, length // cfg.separator.hop, device=device)
        present = torch.ones(batch, device=device)

        def sep_update():
            spec = mixture_stft(mix, cfg.separator.n_fft, cfg.separator.hop)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                est = sep.refine(spec, onehot, activity, 2)[-1]
            wave = causal_istft(est.float(), cfg.separator.n_fft, cfg.separator.hop)
            optimiser_step(opt_sep, separation_loss(wave, target, mix[:, 0], present), sep, scaler)

        rows.append(_row("separator_2pass", batch, _timed(sep_update, device, warmup, repeats)))
    return rows


def _pipe_producer(out_queue, batch: int, window: int, n: int):
    arrays = (np.random.default_rng(0).standard_normal((batch, window)).astype(np.float32),
              np.zeros((batch, 18), np.float32), np.zeros((batch, 32, 18), np.float32))
    for _ in range(n):
        out_queue.put(arrays)


def measure_handover(batch: int, repeats: int, settle_s: float = 2.0) -> list[dict]:
    """How long the trainer waits for a batch that a feeder process has already made: through a
    multiprocessing queue (pickled through a pipe, as SedBatchFeed did in the GPU leases) and through
    SedBatchFeed's shared-memory slots. Each get is timed after `settle_s` of waiting, so the batch is ready."""
    import multiprocessing as mp

    from export.data import SedBatchFeed
    from stream_s5.synth.scenes import SceneConfig

    def timed_gets(get) -> list[float]:
        get()  # the first batch also waits for the producer to start
        times = []
        for _ in range(repeats):
            time.sleep(settle_s)
            t0 = time.perf_counter()
            get()
            times.append(time.perf_counter() - t0)
        return times

    ctx = mp.get_context("fork")
    pipe = ctx.Queue(maxsize=2)
    producer = ctx.Process(target=_pipe_producer, args=(pipe, batch, 20480, repeats + 1), daemon=True)
    producer.start()
    rows = [_row("handover_pipe", batch, timed_gets(pipe.get))]
    producer.join(timeout=10)
    feed = SedBatchFeed(SceneConfig(duration=4.0), None, 0, workers=1, batch=batch, window=20480, n_frames=32,
                        frame_hop=640, local_pool=4, windows_per_scene=1e9)
    try:
        rows.append(_row("handover_shared_memory", batch, timed_gets(lambda: feed.get(timeout=300))))
    finally:
        feed.close()
    return rows


def _row(part: str, batch: int, times: list[float]) -> dict:
    q1, median, q3 = (float(np.percentile(times, q)) for q in (25, 50, 75))
    return {"part": part, "batch": batch, "median_s": median, "q1_s": q1, "q3_s": q3, "repeats": len(times),
            "items_per_s": batch / median}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", default=None, help="a checkpoint: its architecture is timed (weights are not needed)")
    p.add_argument("--handover", action="store_true",
                   help="time instead how a ready SED batch reaches the trainer from a feeder process (pipe against "
                        "shared memory), at each of --sed-batches")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sed-batches", type=int, nargs="+", default=[32])
    p.add_argument("--sep-batches", type=int, nargs="+", default=[16])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=None, help="write the rows and the machine as JSON here")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("export.train_speed: --device cuda but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.handover:
        rows = [row for batch in args.sed_batches for row in measure_handover(batch, args.repeats)]
    else:
        if not args.init:
            raise SystemExit("export.train_speed: --init CHECKPOINT is needed (the architecture to time)")
        state = torch.load(args.init, weights_only=True, map_location="cpu")
        cfg = ModelConfig.from_dict(json.loads(state["config_json"]))
        rows = measure(cfg, device, args.amp, args.sed_batches, args.sep_batches, args.warmup, args.repeats)
    machine = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": args.threads, "amp": args.amp,
               "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    for row in rows:
        print(json.dumps({**row, "device": args.device, "amp": args.amp}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
