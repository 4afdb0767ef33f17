"""Train the SED and the separator together on synthesised scenes.

    python -m export.train --preset full --out runs/full            # hours on 2 CPU cores
    python -m export.train --preset full --out runs/full --resume   # continue after a stop
    python -m export.train --preset test --out /tmp/run             # seconds (tests)

Each step does one SED update (window + frame BCE + class-token constraint) and one separator update
(random number of refinement passes 1..max_passes, stop-gradient through earlier passes, loss on
the last pass). Checkpoints are plain dicts of tensors and numbers (`torch.load(weights_only=True)`),
written atomically every `--checkpoint-every` steps and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from export.data import ScenePool, SedBatchFeed, sed_batch, separator_batch
from export.models import ModelConfig, SedConfig, SedNet, SeparatorConfig, SeparatorNet, causal_istft, mixture_stft, sed_loss
from stream_s5.synth.scenes import SceneConfig

PRESETS: dict[str, dict] = {
    # Seconds: tiny networks, a handful of steps, scenes synthesised inline. For tests and CI.
    "test": dict(steps=3, sed=dict(dim=32, depth=1, heads=2, dropout=0.0), separator=dict(hidden=32, layers=1),
                 sed_batch=4, sep_batch=2, sep_seconds=0.64, scene_seconds=3.0, pool=4, workers=0,
                 lr=1e-3, warmup=1, checkpoint_every=2, soundbank_clips=0, fresh_scenes=4, absent_weight=1.0, absent_floor_db=-12.0,
                 p_real=0.5, p_channel=0.5, spec_augment=(1, 4, 1, 4)),
    # Minutes: the default architecture trained briefly; gives the runtime a real model early.
    "quick": dict(steps=800, sed=dict(), separator=dict(), sed_batch=24, sep_batch=12, sep_seconds=2.048,
                  scene_seconds=4.0, pool=256, workers=1, lr=1e-3, warmup=100, checkpoint_every=100,
                  soundbank_clips=0, fresh_scenes=4, absent_weight=1.0, absent_floor_db=-12.0),
    # Hours: the recipe of the default bundle.
    # The SED is the harder, cheaper half: it gets two updates per step. Up to 12 fresh scenes per
    # step (about what one worker core makes in a step) keep the SED from memorising the pool: with
    # 1–4 per step, as in steps 0–9928 of the shipped run, the SED loss rose by half on every resume
    # (a fresh pool), i.e. it had partly learnt the pool's scenes.
    "full": dict(steps=16000, sed=dict(), separator=dict(), sed_batch=32, sep_batch=16, sep_seconds=2.048,
                 scene_seconds=4.0, pool=1024, workers=1, lr=1e-3, warmup=500, checkpoint_every=250,
                 soundbank_clips=0, sed_updates=2, fresh_scenes=12, absent_weight=1.0, absent_floor_db=-30.0),
    # Transfer to real recordings (fine-tuning, `--init` a trained checkpoint, `--soundbank` a real bank's
    # train split): real and procedural clips mixed, real backgrounds, recording-chain randomisation of
    # whole windows, SpecAugment, mono room reverberation, more no-target scenes and louder backgrounds.
    "real": dict(steps=6000, sed=dict(), separator=dict(), sed_batch=32, sep_batch=16, sep_seconds=2.048,
                 scene_seconds=4.0, pool=1024, workers=1, lr=4e-4, warmup=200, checkpoint_every=250,
                 soundbank_clips=0, sed_updates=2, fresh_scenes=12, absent_weight=1.0, absent_floor_db=-30.0,
                 p_real=0.6, p_channel=0.7, spec_augment=(2, 8, 2, 10),
                 scene=dict(p_no_target=0.25, noise_level_db=(-50.0, -20.0), p_room=0.25, max_interferers=3)),
    # A larger detector SED from scratch on real and procedural material together (the `real` recipe's data):
    # no parent to keep, so no rehearsal of its own; `--rehearse` with a smaller SED teaches it that SED's
    # procedural world (checkpoints/scratch_kd.pt). Export it as a bundle's detector (`export.bundle --sed-from`)
    # next to a guide body and separator of the default architecture.
    "real_scratch": dict(steps=20000, sed=dict(dim=192, depth=4, heads=4), separator=dict(), sed_batch=128,
                         sep_batch=16, sep_seconds=2.048, scene_seconds=4.0, pool=1024, workers=1, lr=1e-3, warmup=500,
                         checkpoint_every=500, soundbank_clips=0, sed_updates=1, fresh_scenes=12, absent_weight=1.0,
                         absent_floor_db=-30.0, p_real=0.6, p_channel=0.7, spec_augment=(2, 8, 2, 10),
                         scene=dict(p_no_target=0.25, noise_level_db=(-50.0, -20.0), p_room=0.25, max_interferers=3)),
    # The 4-channel 32 kHz spatial bundle (`--channels 4 --sample-rate 32000 --transfer checkpoints/full.pt`):
    # room-simulated scenes (every scene in a simulated room, tetrahedral array), the default's SED and
    # separator core carried over, a gentler rate than from scratch.
    "spatial": dict(steps=3000, sed=dict(), separator=dict(), sed_batch=32, sep_batch=16, sep_seconds=2.048,
                    scene_seconds=4.0, pool=512, workers=1, lr=6e-4, warmup=100, checkpoint_every=100,
                    soundbank_clips=0, sed_updates=1, fresh_scenes=12, absent_weight=1.0, absent_floor_db=-12.0),
}


# What a --rehearse teacher's SED must share with the student's for its probabilities to be targets.
TEACHER_FIELDS = ("sample_rate", "window", "mel_hop", "patch_frames", "n_classes")


def has_target(target, mix_ref, present):
    """Items whose crop holds the class's audio: marked present and not negligible against the mixture
    (an event can end just before a crop starts)."""
    return (present > 0) & ((target**2).sum(-1) > 1e-6 * (mix_ref**2).sum(-1))


def separation_loss(est_wave, target, mix_ref, present, absent_weight: float = 1.0, absent_floor_db: float = -30.0,
                    tau: float = 1e-3):
    """Thresholded negative SNR (capped at 30 dB) for present targets; for absent classes the
    estimate's energy relative to the mixture, floored at `absent_floor_db` and weighted by
    `absent_weight`.

    Why the floor and the weight: silence scores 0 dB on every present target and the floor on every
    absent one, so with a deep floor at full weight an all-silent separator (about −3 dB at a 10 %
    absent share) is an optimum that a young separator — above all one whose conditioning cannot tell
    absent from present classes — falls into and does not leave (sigmoid masks saturate). A shallow
    floor stops rewarding suppression once the output is that far below the mixture."""
    err = ((target - est_wave) ** 2).sum(-1)
    ref_energy = (target**2).sum(-1)
    mix_energy = (mix_ref**2).sum(-1)
    snr_term = 10 * torch.log10(err + tau * ref_energy + 1e-9) - 10 * torch.log10(ref_energy + 1e-9)
    floor = 10 ** (absent_floor_db / 10)
    silence_term = 10 * torch.log10((est_wave**2).sum(-1) + floor * mix_energy + 1e-9) - 10 * torch.log10(mix_energy + 1e-9)
    return torch.where(has_target(target, mix_ref, present), snr_term, absent_weight * silence_term).mean()


@torch.no_grad()
def separator_health(est_waves: list, target, present, mix_ref) -> dict[str, float]:
    """Per refinement pass, on the present items of a batch: mean SNR (dB) and the estimate's level
    relative to the target (dB). A separator collapsing to silence shows SNR → 0 and level → −∞, which
    the running loss hides (it mixes in the absent items)."""
    keep = has_target(target, mix_ref, present)
    out: dict[str, float] = {}
    if not bool(keep.any()):
        return out
    ref = target[keep]
    for k, est in enumerate(est_waves, start=1):
        est = est[keep]
        snr = 10 * torch.log10(((ref - est) ** 2).sum(-1) + 1e-9) - 10 * torch.log10((ref**2).sum(-1) + 1e-9)
        level = 10 * torch.log10((est**2).sum(-1) + 1e-12) - 10 * torch.log10((ref**2).sum(-1) + 1e-9)
        out[f"snr_k{k}"] = round(float(-snr.mean()), 2)
        out[f"level_k{k}"] = round(float(level.median()), 1)
    return out


def optimiser_step(opt, loss: torch.Tensor, module: torch.nn.Module, scaler) -> None:
    """One update of `module` from `loss`: through the AMP scaler (a no-op without fp16), gradients
    clipped to norm 5 after unscaling."""
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
    scaler.step(opt)
    scaler.update()


def lr_at(step: int, total: int, warmup: int, base: float, time_progress: float = 0.0) -> float:
    """Linear warm-up, then a cosine to 5 % of `base` over the steps — or over the wall-clock budget
    (`time_progress`, the share of `--minutes` spent) when that is further along."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_progress)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def build_config(preset: dict, args) -> ModelConfig:
    """The default architecture at `--sample-rate`: every length given in samples at 16 kHz is scaled, so that
    windows and hops keep their durations; above 16 kHz the SED's mel bank stops at 8 kHz, so that its
    features (and weights, `--transfer`) are those of a 16 kHz SED while the separator sees the full band."""
    k = args.sample_rate // 16000 if args.sample_rate % 16000 == 0 else 1
    sed_scaled = dict(window=20480 * k, n_fft=512 * k, win_length=400 * k, mel_hop=160 * k, fmax=8000.0) if k > 1 else {}
    sep_scaled = dict(n_fft=256 * k, hop=128 * k) if k > 1 else {}
    sed = SedConfig(sample_rate=args.sample_rate, **{**sed_scaled, **preset["sed"]})
    sep = SeparatorConfig(sample_rate=args.sample_rate, channels=args.channels, guidance=args.guidance,
                          spatial_stats=args.spatial_stats, **{**sep_scaled, **preset["separator"]})
    return ModelConfig(sed=sed, separator=sep)


def transfer_weights(module: torch.nn.Module, source: dict) -> list[str]:
    """Copy every tensor of `source` whose name and shape match into `module`; returns the names left fresh
    (e.g. a spatial separator's input layer, which sees four channels and twice the frequency bins)."""
    own = module.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(matched, strict=False)
    return sorted(set(own) - set(matched))


def on_cpu(value):
    """The state with every tensor on the CPU: a checkpoint written on a GPU machine must load (export, resume)
    on one without CUDA."""
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(v) for v in value)
    return value


def save_checkpoint(path: Path, state: dict):
    tmp = path.with_suffix(".tmp")
    torch.save(on_cpu(state), tmp)
    os.replace(tmp, path)


def ensure_soundbank(args, preset) -> str | None:
    """Render the procedural soundbank once into a folder, so that procedural and real material
    train through the same `Soundbank.from_folder` path. `--soundbank DIR` uses a user's folder."""
    if args.soundbank:
        return args.soundbank
    if preset["soundbank_clips"] == 0:
        # Procedural clips drawn on the fly: every scene brings new material (no finite bank to memorise).
        return None
    from stream_s5.synth.soundbank import write_soundbank

    folder = Path(args.cache) / f"soundbank_sr{args.sample_rate}_seed{args.seed}_n{preset['soundbank_clips']}"
    if not (folder / "soundbank.json").exists():
        print(f"rendering procedural soundbank into {folder} …", flush=True)
        write_soundbank(folder, sr=args.sample_rate, n_per_class=preset["soundbank_clips"],
                        n_interference=preset["soundbank_clips"] * 2, n_noise=preset["soundbank_clips"], seed=args.seed)
    return str(folder)


def train(args) -> Path:
    preset = dict(PRESETS[args.preset])
    if args.steps:
        preset["steps"] = args.steps
    if args.lr:
        preset["lr"] = args.lr
    if args.sed_batch:
        preset["sed_batch"] = args.sed_batch
    if args.sed_feeders:
        preset["sed_feeders"], preset["windows_per_scene"] = args.sed_feeders, args.windows_per_scene
    if args.minutes:
        preset["minutes"] = args.minutes
    for key in ("absent_weight", "absent_floor_db"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = build_config(preset, args)
    if args.init:
        init_state = torch.load(args.init, weights_only=True, map_location="cpu")
        cfg = ModelConfig.from_dict(json.loads(init_state["config_json"]))
    sed, sep = SedNet(cfg.sed), SeparatorNet(cfg.separator)
    if args.init:
        sed.load_state_dict(init_state["sed"])
        sep.load_state_dict(init_state["separator"])
        print(f"initialised from {args.init} (step {init_state['step']})", flush=True)
    elif args.transfer and not (args.resume and ckpt_path.exists()):
        source = torch.load(args.transfer, weights_only=True, map_location="cpu")
        fresh = transfer_weights(sed, source["sed"]) + transfer_weights(sep, source["separator"])
        print(f"weights from {args.transfer} (step {source['step']}) where shapes match; fresh: {', '.join(fresh) or 'none'}",
              flush=True)
    opt_sed = torch.optim.AdamW(sed.parameters(), lr=preset["lr"], weight_decay=0.01)
    opt_sep = torch.optim.AdamW(sep.parameters(), lr=preset["lr"], weight_decay=0.01)
    step, elapsed = 0, 0.0
    warm_s = None  # training time at which warm-up ended (the time budget's cosine starts there)
    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True, map_location="cpu")  # optimiser state follows below
        cfg = ModelConfig.from_dict(json.loads(state["config_json"]))
        sed, sep = SedNet(cfg.sed), SeparatorNet(cfg.separator)
        sed.load_state_dict(state["sed"])
        sep.load_state_dict(state["separator"])
        opt_sed = torch.optim.AdamW(sed.parameters(), lr=preset["lr"], weight_decay=0.01)
        opt_sep = torch.optim.AdamW(sep.parameters(), lr=preset["lr"], weight_decay=0.01)
        opt_sed.load_state_dict(state["opt_sed"])
        opt_sep.load_state_dict(state["opt_sep"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        warm = float(state.get("warm_s", 0.0))  # older checkpoints: count the budget from the start
        warm_s = None if warm < 0 else warm
        print(f"resumed {ckpt_path} at step {step}", flush=True)

    if args.p_real is not None:
        preset["p_real"] = args.p_real
    scene_cfg = SceneConfig(sr=args.sample_rate, duration=preset["scene_seconds"], channels=args.channels,
                            room=args.channels > 1, **preset.get("scene", {}))
    dcase = None
    if args.dcase:
        from export.dcase import DevSet

        devset = DevSet.open(args.dcase, args.dcase_split)  # a wrong folder fails here, with its reason
        dcase = {"root": str(devset.root), "split": args.dcase_split, "p_no_target": args.dcase_p_no_target,
                 "material": devset.describe()}
        soundbank_dir = None
    else:
        soundbank_dir = ensure_soundbank(args, preset)
    p_real = preset.get("p_real") if soundbank_dir else None
    teacher, rehearsal = None, None
    if args.rehearse:  # checked before any worker process starts
        # Learning without forgetting: fine-tuning on real recordings must keep the procedural world, where
        # the parent's outputs are the reference. The teacher is frozen; its scenes are the parent's own recipe.
        # The teacher may be another size (a small parent teaching a larger SED its procedural world): only the
        # outputs it is compared on must mean the same: the same windows, frames and classes.
        teacher_state = torch.load(args.rehearse, weights_only=True, map_location="cpu")
        teacher_cfg = ModelConfig.from_dict(json.loads(teacher_state["config_json"]))
        differ = [name for name in TEACHER_FIELDS if getattr(teacher_cfg.sed, name) != getattr(cfg.sed, name)]
        if differ:
            raise SystemExit(f"export.train: --rehearse {args.rehearse}: its SED's outputs are not this run's "
                             f"({', '.join(differ)} differ)")
        teacher = SedNet(teacher_cfg.sed)
        teacher.load_state_dict(teacher_state["sed"])
        teacher.eval().requires_grad_(False)
    if args.sed_feeders and dcase:
        raise SystemExit("export.train: --sed-feeders does not take --dcase scenes yet")
    p_channel = float(preset.get("p_channel", 0.0))
    pool = feed = rehearsal_feed = None

    def close_sources():
        for source in (pool, feed, rehearsal, rehearsal_feed):
            if source is not None:
                source.close()

    try:  # worker processes start here: any failure before the training loop must stop them
        # On resume the workers start a new scene stream keyed by the step: no scene is seen twice.
        if args.sed_feeders and args.train != "separator":
            feed = SedBatchFeed(scene_cfg, soundbank_dir, args.seed, args.sed_feeders, preset["sed_batch"], cfg.sed.window,
                                cfg.sed.n_patches, cfg.sed.frame_hop, stream=step, p_real=p_real,
                                p_channel=p_channel, windows_per_scene=args.windows_per_scene,
                                local_pool=min(128, max(32, preset["pool"] // args.sed_feeders)))
        if args.train != "sed" or feed is None:  # with a feed, a SED-only run needs no scene pool of its own
            pool = ScenePool(scene_cfg, soundbank_dir, args.seed, preset["pool"], workers=preset["workers"],
                             stream=step, p_real=p_real, dcase=dcase)
        if teacher is not None:
            rehearsal_cfg = SceneConfig(sr=args.sample_rate, duration=preset["scene_seconds"], channels=args.channels,
                                        room=args.channels > 1)
            if feed is not None and args.train == "sed":
                # The teacher's windows come from feeders too (a third of them again), through shared memory: the
                # rehearsal pool's 4 fresh scenes a step (~3 MB) would otherwise reach the trainer through a pipe.
                helpers = max(1, args.sed_feeders // 3)
                rehearsal_feed = SedBatchFeed(rehearsal_cfg, None, args.seed + 7919, helpers, preset["sed_batch"] // 2,
                                              cfg.sed.window, cfg.sed.n_patches, cfg.sed.frame_hop, stream=step,
                                              windows_per_scene=args.windows_per_scene,
                                              local_pool=min(128, max(32, 256 // helpers)))
            else:  # the separator's rehearsal batches need whole scenes
                rehearsal = ScenePool(rehearsal_cfg, None, args.seed + 7919, min(preset["pool"], 256),
                                      workers=min(preset["workers"], 1), stream=step)
        device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
        sed.to(device), sep.to(device)
        if teacher is not None:
            teacher.to(device)
        for opt in (opt_sed, opt_sep):  # optimiser state follows its parameters (resume on another device)
            for value in opt.state.values():
                for key, tensor in value.items():
                    if torch.is_tensor(tensor) and key != "step":
                        value[key] = tensor.to(device)
        amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.amp else None
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        sed.spec_augment = tuple(preset["spec_augment"]) if preset.get("spec_augment") else None
        rng = np.random.default_rng([args.seed, 3, step])
        sep_len = int(preset["sep_seconds"] * args.sample_rate) // cfg.separator.hop * cfg.separator.hop
        recipe = {"preset": args.preset, **{k: v for k, v in preset.items() if k not in ("sed", "separator")},
                  "seed": args.seed, "train": args.train, "scene": asdict(scene_cfg), "soundbank": soundbank_dir, "dcase": dcase, "threads": args.threads,
                  "init": args.init, "rehearse": args.rehearse and {"teacher": args.rehearse, "weight": args.rehearse_weight,
                                                                     "separator_share": args.rehearse_separator},
                  "device": device.type, "amp": str(amp_dtype) if amp_dtype else None}

        def snapshot():
            return {"config_json": json.dumps(cfg.to_dict()), "recipe_json": json.dumps(recipe),
                    "sed": sed.state_dict(), "separator": sep.state_dict(),
                    "opt_sed": opt_sed.state_dict(), "opt_sep": opt_sep.state_dict(),
                    "step": step, "elapsed_s": elapsed, "warm_s": -1.0 if warm_s is None else warm_s}

        stop = {"now": False}
        previous_handler = signal.signal(signal.SIGTERM, lambda *a: stop.update(now=True))
        log = open(out / "log.jsonl", "a")
        sed.train(), sep.train()
        train_sed, train_separator = args.train != "separator", args.train != "sed"
        t_last = time.time()
        running: dict[str, float] = {}
    except BaseException:
        close_sources()
        raise
    with Progress(TextColumn("[bold]train[/] {task.fields[info]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), disable=args.quiet) as progress:
        task = progress.add_task("train", total=preset["steps"], completed=step, info="")
        try:
            budget_s = 60.0 * preset["minutes"] if preset.get("minutes") else None
            while step < preset["steps"] and not stop["now"] and (budget_s is None or elapsed < budget_s):
                if warm_s is None and step >= preset["warmup"]:
                    warm_s = elapsed  # the cosine's share of the budget starts where warm-up ended
                if pool is not None:
                    pool.refresh(max_new=preset["fresh_scenes"])
                if rehearsal is not None:
                    rehearsal.refresh(max_new=max(1, preset["fresh_scenes"] // 3))
                time_progress = (elapsed - warm_s) / max(budget_s - warm_s, 1e-9) if budget_s and warm_s is not None else 0.0
                lr = lr_at(step, preset["steps"], preset["warmup"], preset["lr"], time_progress)
                for group in opt_sed.param_groups + opt_sep.param_groups:
                    group["lr"] = lr

                parts = {}
                for _ in range(preset.get("sed_updates", 1) if train_sed else 0):
                    batch = feed.get() if feed is not None else sed_batch(
                        pool.sample(preset["sed_batch"]), cfg.sed.window, cfg.sed.n_patches, cfg.sed.frame_hop,
                        args.sample_rate, rng, p_channel=p_channel)
                    audio, clip_y, frame_y = (t.to(device, non_blocking=True) for t in batch)
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        out_sed = sed(audio)
                    loss_sed, parts = sed_loss({k: v.float() for k, v in out_sed.items()}, clip_y, frame_y)
                    parts = {"sed": loss_sed.item(), **parts}
                    if teacher is not None:
                        teacher_audio = rehearsal_feed.get()[0] if rehearsal_feed is not None else sed_batch(
                            rehearsal.sample(preset["sed_batch"] // 2), cfg.sed.window, cfg.sed.n_patches,
                            cfg.sed.frame_hop, args.sample_rate, rng)[0]
                        distill = rehearsal_loss(sed, teacher, teacher_audio.to(device, non_blocking=True), device, amp_dtype)
                        loss_sed = loss_sed + args.rehearse_weight * distill
                        parts["distill"] = distill.item()
                    optimiser_step(opt_sed, loss_sed, sed, scaler)

                if train_separator:
                    sep_pool = rehearsal if rehearsal is not None and rng.random() < args.rehearse_separator else pool
                    mix, target, onehot, activity, present = (t.to(device) for t in separator_batch(
                        sep_pool.sample(preset["sep_batch"]), sep_len, cfg.separator.hop, cfg.sed.frame_hop, args.sample_rate, rng,
                        p_channel=p_channel))
                    passes = int(rng.integers(1, cfg.separator.max_passes + 1))
                    spec = mixture_stft(mix, cfg.separator.n_fft, cfg.separator.hop)
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        est = sep.refine(spec, onehot, activity, passes)[-1]
                    est_wave = causal_istft(est.float(), cfg.separator.n_fft, cfg.separator.hop)
                    loss_sep = separation_loss(est_wave, target, mix[:, 0], present, preset["absent_weight"],
                                               preset["absent_floor_db"])
                    optimiser_step(opt_sep, loss_sep, sep, scaler)

                step += 1
                now = time.time()
                elapsed += now - t_last
                t_last = now
                losses = {"sep": loss_sep.item(), **parts} if train_separator else parts
                for key, value in losses.items():
                    running[key] = value if key not in running else 0.98 * running[key] + 0.02 * value
                shown = [f"sed {running['sed']:.3f}"] if "sed" in running else []  # a term not trained is not shown
                if "sep" in running:
                    shown.append(f"sep {running['sep']:+.2f} dB")
                progress.update(task, completed=step, info=" ".join(shown + [f"lr {lr:.1e}"]))
                last = step == preset["steps"] or stop["now"] or (budget_s is not None and elapsed >= budget_s)
                if step % 25 == 0 or last:
                    health = {"passes": passes} if train_separator else {}
                    if train_separator and (step % preset["checkpoint_every"] == 0 or last):
                        with torch.no_grad():
                            waves = [causal_istft(e.float(), cfg.separator.n_fft, cfg.separator.hop)
                                     for e in sep.refine(spec, onehot, activity, cfg.separator.max_passes)]
                        health["present"] = separator_health(waves, target, present, mix[:, 0])
                    log.write(json.dumps({"step": step, "elapsed_s": round(elapsed, 1), "lr": lr,
                                          **{k: round(v, 4) for k, v in running.items()}, **health}) + "\n")
                    log.flush()
                if step % preset["checkpoint_every"] == 0:
                    save_checkpoint(ckpt_path, snapshot())
        except KeyboardInterrupt:
            print("interrupted: saving checkpoint", flush=True)
        finally:
            save_checkpoint(ckpt_path, snapshot())
            close_sources()
            log.close()
            signal.signal(signal.SIGTERM, previous_handler)
    print(f"step {step}/{preset['steps']} in {elapsed / 60:.1f} min → {ckpt_path}", flush=True)
    return ckpt_path


def rehearsal_loss(sed, teacher, audio: torch.Tensor, device, amp_dtype) -> torch.Tensor:
    """BCE of the student's window and frame probabilities against the frozen teacher's, on windows of the
    parent's procedural scenes (`audio`, on `device`). Both see the same unaugmented windows (SpecAugment
    off), so the term asks for the parent's function, not for robustness to masking."""
    with torch.no_grad():
        reference = teacher(audio)
    masking, sed.spec_augment = sed.spec_augment, None
    try:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = sed(audio)
    finally:
        sed.spec_augment = masking
    clip = F.binary_cross_entropy_with_logits(out["clip_logits"].float(), torch.sigmoid(reference["clip_logits"].float()))
    frame = F.binary_cross_entropy_with_logits(out["frame_logits"].float(), torch.sigmoid(reference["frame_logits"].float()))
    return clip + frame


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, log.jsonl)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, default=0, help="override the preset's step count")
    p.add_argument("--lr", type=float, default=0.0, help="override the preset's peak learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--channels", type=int, default=1, help="4 = room-simulated tetrahedral array (spatial bundle)")
    p.add_argument("--guidance", choices=["frame", "clip"], default="frame",
                   help="separator conditioning: time-varying SED activity, or clip-level presence (ablation)")
    p.add_argument("--spatial-stats", action="store_true",
                   help="spatial separators: each refinement pass also sees a beam towards the class and per-bin direction "
                        "coherence, from running statistics of the previous pass's estimate (state)")
    p.add_argument("--train", choices=["both", "separator", "sed"], default="both",
                   help="separator: train only the separator (export it with --sed-from a trained SED), "
                        "e.g. for the guidance ablation at the separator's budget; sed: train only the SED "
                        "(the separator keeps its --init weights; about twice the SED updates per CPU hour, "
                        "for when detection is the bottleneck)")
    p.add_argument("--absent-weight", type=float, default=None,
                   help="weight of the absent-class (silence) term of the separation loss (preset's if not given)")
    p.add_argument("--absent-floor-db", type=float, default=None,
                   help="level below the mixture at which an absent class's output counts as silent (preset's if not given)")
    p.add_argument("--soundbank", default=None, help="a soundbank folder of real material (<Class>/*.wav, …)")
    p.add_argument("--dcase", default=None, metavar="DEV_SET",
                   help="train on scenes generated on the fly from a DCASE 2025 Task 4 development set (its dev_set folder: "
                        "sound_event/, interference/, noise/, room_ir/) by the official recipe; --channels 4 "
                        "--sample-rate 32000 for the spatial model, --channels 1 for the reference-channel variant")
    p.add_argument("--dcase-split", choices=["train", "valid"], default="train")
    p.add_argument("--dcase-p-no-target", type=float, default=0.0,
                   help="share of generated scenes without a target (the official recipe has none)")
    p.add_argument("--cache", default="cache", help="where the procedural soundbank is rendered")
    p.add_argument("--transfer", default=None,
                   help="start from this checkpoint's weights wherever name and shape match this run's model (e.g. the "
                        "mono 16 kHz model into a 4-channel 32 kHz one); the rest starts fresh")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tuning; optimiser and step start fresh)")
    p.add_argument("--rehearse", default=None, metavar="CKPT",
                   help="fine-tuning without forgetting: keep the SED's outputs on procedural scenes (the parent's recipe) "
                        "close to this frozen checkpoint's (usually the --init one; its SED may be another size if its "
                        "windows, frames and classes are this run's)")
    p.add_argument("--rehearse-weight", type=float, default=1.0, help="weight of the --rehearse distillation term")
    p.add_argument("--rehearse-separator", type=float, default=0.5,
                   help="with --rehearse: share of separator batches drawn from the procedural scenes")
    p.add_argument("--p-real", type=float, default=None,
                   help="with --soundbank: share of targets drawn from its recordings, the rest procedural (preset's if not given)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="training device (auto: CUDA when present)")
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 + loss scaling on CUDA, bfloat16 on CPU)")
    p.add_argument("--sed-batch", type=int, default=0, help="override the preset's SED batch size")
    p.add_argument("--sed-feeders", type=int, default=0,
                   help="worker processes that cut and augment SED batches (a GPU outruns the one trainer process "
                        "doing it; they replace the scene pool's workers for a --train sed run, which with "
                        "--rehearse starts a third as many again for the teacher's windows)")
    p.add_argument("--windows-per-scene", type=float, default=16.0,
                   help="with --sed-feeders: SED windows cut per fresh scene a worker makes")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="stop after this much training time (checkpoint kept; give it again with --resume); after the "
                        "warm-up (in steps) the learning rate's cosine follows whichever of steps and the time left is "
                        "further along, so a time-boxed run still anneals")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the scene worker takes another core)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    from export.dcase import DevSetError

    try:
        train(parse_args(argv))
    except DevSetError as exc:
        raise SystemExit(f"export.train: {exc}") from None


if __name__ == "__main__":
    main()
