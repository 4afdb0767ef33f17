"""Training data: scenes from the soundbank (procedural or a user's real material), turned into
SED windows with window/frame labels and separator crops with corrupted-oracle SED guidance.

Scenes are synthesised by worker processes (numpy only) into a queue; the trainer keeps a pool of
recent scenes and samples crops from it, so that scene synthesis and the torch step overlap.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from dataclasses import dataclass

import numpy as np
import torch
from scipy import signal

from stream_s5.labels import CLASS_INDEX, CLASSES
from stream_s5.synth.dsp import frame_energy_db, loguniform, peaking_eq, random_curve, shelf_eq, soft_clip, sos_filter
from stream_s5.synth.scenes import EVENT_FRAME_S, SceneConfig, generate_scene
from stream_s5.synth.soundbank import MixedSoundbank, Soundbank


@dataclass
class SceneRecord:
    """What training needs from a scene, small enough to pass through a queue."""

    mixture: np.ndarray  # [C, N] float32
    sources: dict  # class → [N] float32 reference at the reference mic
    events: list  # (label, onset_s, offset_s)


# Training labels mark where a target is audible, not the span from its first to its last sound: a
# composed real clip (a door opened, 0.4–2.5 s of nothing, then shut) is one scene event, and labelling
# its pauses as active taught the SED that a silent window is a cupboard (half of the 1-s spans inside
# the CupboardOpenClose events of realbank8 are > 90 % silent; docs/evaluation.md, Seventh real bank).
AUDIBLE_BELOW_PEAK_DB = 30.0  # a 10 ms frame is audible within this many dB of the source's loudest frame
AUDIBLE_GAP_S = 1.0  # shorter pauses stay inside the event (footfalls, keystrokes, words): about the SED
# window (1.28 s), so only windows that hear (almost) nothing of the class lose its label


def audible_events(label: str, reference: np.ndarray, sample_rate: int, onset: float, offset: float,
                   below_peak_db: float = AUDIBLE_BELOW_PEAK_DB, min_gap_s: float = AUDIBLE_GAP_S) -> list:
    """The scene event (label, onset, offset) split at the pauses of its reference longer than
    `min_gap_s`: [(label, onset_s, offset_s)], within [onset, offset]."""
    frame = max(1, int(round(EVENT_FRAME_S * sample_rate)))
    start, stop = int(onset * sample_rate), int(np.ceil(offset * sample_rate))
    x = reference[start:stop]
    if not np.any(x):
        return [(label, onset, offset)]
    energy = frame_energy_db(x, frame)
    audible = np.flatnonzero(energy > energy.max() - below_peak_db)
    splits = np.flatnonzero(np.diff(audible) > round(min_gap_s / EVENT_FRAME_S))
    firsts = np.concatenate([[audible[0]], audible[splits + 1]])
    lasts = np.concatenate([audible[splits], [audible[-1]]])
    return [(label, float(onset + a * frame / sample_rate), float(min(offset, onset + (b + 1) * frame / sample_rate)))
            for a, b in zip(firsts, lasts)]


def _record(scene) -> SceneRecord:
    sources = {k: v.astype(np.float32) for k, v in scene.sources.items()}
    events = []
    for e in scene.events:
        if e.label in sources:
            events += audible_events(e.label, sources[e.label], scene.sr, float(e.onset), float(e.offset))
        else:
            events.append((e.label, float(e.onset), float(e.offset)))
    return SceneRecord(mixture=scene.mixture.astype(np.float32), sources=sources, events=events)


def open_soundbank(soundbank_dir: str | None, sample_rate: int, seed: int, p_real: float | None = None):
    """The procedural bank; a folder bank; or, with `p_real`, the folder's real recordings mixed with
    procedural material (`MixedSoundbank`: each target of a class with recordings is real with
    probability p_real)."""
    if not soundbank_dir:
        return Soundbank.procedural(sample_rate, seed)
    folder = Soundbank.from_folder(soundbank_dir, sample_rate)
    if p_real is None:
        return folder
    return MixedSoundbank(folder, Soundbank.procedural(sample_rate, seed), p_real=p_real)


def _scene_seed(seed: int, worker: int, stream: int, index: int) -> int:
    key = [seed, 1, worker, index] if stream == 0 else [seed, 1, worker, index, stream]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def scene_maker(scene_cfg: SceneConfig, soundbank_dir, seed: int, p_real: float | None = None, dcase: dict | None = None):
    """seed → Scene: the project's generator over a soundbank, or, with `dcase` ({"root", "split"}), the
    official DCASE 2025 Task 4 recipe over a development set (`export.dcase`) at the scene config's rate,
    channel count (1: the reference channel) and duration."""
    if dcase:
        from export.dcase import DcaseRecipe, DcaseSceneGenerator, DevSet

        recipe = DcaseRecipe(duration=scene_cfg.duration, p_no_target=float(dcase.get("p_no_target", 0.0)))
        generator = DcaseSceneGenerator(DevSet.open(dcase["root"], dcase.get("split", "train")), sr=scene_cfg.sr,
                                        channels=scene_cfg.channels, recipe=recipe)
        return generator.scene
    soundbank = open_soundbank(soundbank_dir, scene_cfg.sr, seed, p_real)
    return lambda scene_seed: generate_scene(scene_cfg, scene_seed, soundbank)


def _scene_worker(out_queue, scene_cfg: SceneConfig, soundbank_dir, seed: int, worker: int, stream: int,
                  p_real: float | None = None, dcase: dict | None = None):
    make = scene_maker(scene_cfg, soundbank_dir, seed, p_real, dcase)
    index = 0
    while True:
        out_queue.put(_record(make(_scene_seed(seed, worker, stream, index))))
        index += 1


def stop_workers(procs: list) -> None:
    """Terminate worker processes and wait (briefly) until they are gone."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


class ScenePool:
    """A pool of recent scenes refreshed by background workers. `workers=0` synthesises inline
    (deterministic, used by tests and the seconds-long preset). Each `stream` (the training step at
    which a run starts or resumes) is a separate sequence of scene seeds."""

    def __init__(self, scene_cfg: SceneConfig, soundbank_dir: str | None, seed: int, size: int,
                 workers: int = 1, stream: int = 0, p_real: float | None = None, dcase: dict | None = None):
        self.scene_cfg, self.seed, self.size, self.stream = scene_cfg, seed, size, stream
        self.rng = np.random.default_rng([seed, 2, stream])
        self.pool: list[SceneRecord] = []
        self.received = 0
        self._inline_index = 0
        self._procs: list[mp.Process] = []
        if workers > 0:
            ctx = mp.get_context("fork")
            self.queue = ctx.Queue(maxsize=min(4 * size, 256))  # bounded: scenes are ~1 MB each
            for w in range(workers):
                proc = ctx.Process(target=_scene_worker, args=(self.queue, scene_cfg, soundbank_dir, seed, w, stream, p_real, dcase),
                                   daemon=True)
                proc.start()
                self._procs.append(proc)
        else:
            self.queue = None
            self.make = scene_maker(scene_cfg, soundbank_dir, seed, p_real, dcase)
        while len(self.pool) < size:
            self.pool.append(self._next())

    def _next(self) -> SceneRecord | None:
        if self.queue is None:
            scene_seed = _scene_seed(self.seed, 0, self.stream, self._inline_index)
            self._inline_index += 1
            return _record(self.make(scene_seed))
        try:
            record = self.queue.get(timeout=600)  # a worker that makes nothing for 10 min has died
        except queue.Empty:
            return None
        self.received += 1
        return record

    def ready(self) -> int:
        """Scenes the workers have made and the pool has not taken yet.

        A non-blocking get() is not a count: a worker's queue feeder thread writes one ~1 MB
        scene at a time into a 64 KB pipe, so get(block=False) reports 'empty' whenever the next
        scene is not in the pipe yet, even with hundreds made (this capped the fresh scenes at
        1–4 per step instead of `fresh_scenes`). The queue's counter includes those."""
        if self.queue is None:
            return 1 << 30  # inline synthesis: always ready
        try:
            return self.queue.qsize()
        except NotImplementedError:  # macOS: no sem_getvalue; fall back to what the pipe holds
            return 1 if not self.queue.empty() else 0

    def refresh(self, max_new: int) -> int:
        """Swap up to max_new fresh scenes into random pool positions; never waits for synthesis."""
        swapped = 0
        for _ in range(min(max_new, self.ready())):
            record = self._next()  # made already: only waits for the pipe
            if record is None:
                break
            self.pool[self.rng.integers(len(self.pool))] = record
            swapped += 1
        return swapped

    def sample(self, n: int) -> list[SceneRecord]:
        return [self.pool[i] for i in self.rng.integers(len(self.pool), size=n)]

    def close(self):
        stop_workers(self._procs)


class SedBatchFeed:
    """Ready SED batches from worker processes, for a trainer that is faster than one core can cut windows
    (a GPU: the window augmentation is ~1 ms of numpy per window, 30 ms per batch of 32, and the model
    step is less than that on a GPU). Each worker keeps its own pool of recent scenes, swaps in a fresh
    scene for every `windows_per_scene` windows it cuts, and writes whole `sed_batch` results into one of
    its `slots` batch buffers in shared memory; the queues carry only slot numbers. (Through a pipe, a
    ready batch of 128 windows — 10.5 MB — took 17 ms to arrive on this CPU, twice per step: docs/model.md.)
    Scene seeds are apart from `ScenePool`'s (worker ids from 1000)."""

    def __init__(self, scene_cfg: SceneConfig, soundbank_dir: str | None, seed: int, workers: int, batch: int,
                 window: int, n_frames: int, frame_hop: int, stream: int = 0, p_real: float | None = None,
                 p_channel: float = 0.0, local_pool: int = 64, windows_per_scene: float = 16.0, slots: int = 2):
        if workers < 1 or batch < 1 or local_pool < 1 or windows_per_scene <= 0 or slots < 1:
            raise ValueError("SedBatchFeed needs at least one worker, a batch, a pool, a slot and windows_per_scene > 0")
        ctx = mp.get_context("fork")  # the shared buffers are inherited by the forked workers
        shapes = ((batch, window), (batch, len(CLASSES)), (batch, n_frames, len(CLASSES)))
        self._buffers = [[tuple(np.frombuffer(ctx.RawArray("f", int(np.prod(shape))), dtype=np.float32).reshape(shape)
                                for shape in shapes) for _ in range(slots)] for _ in range(workers)]
        self._ready = ctx.Queue()
        self._free = [ctx.Queue() for _ in range(workers)]
        for free in self._free:
            for slot in range(slots):
                free.put(slot)
        self.batches = 0
        self._procs = []
        for w in range(workers):
            proc = ctx.Process(target=_sed_feed_worker, daemon=True,
                               args=(self._ready, self._free[w], self._buffers[w], w, scene_cfg, soundbank_dir, seed,
                                     1000 + w, stream, p_real, p_channel, batch, (window, n_frames, frame_hop, scene_cfg.sr),
                                     local_pool, windows_per_scene))
            proc.start()
            self._procs.append(proc)

    def get(self, timeout: float = 600.0):
        """(audio [B, window], clip labels [B, 18], frame labels [B, n_frames, 18]) as tensors (copies: the
        slot goes straight back to its worker). Raises as soon as a worker has died (a bad bank, out of
        memory): a silent one would slow or stall a paid GPU lease."""
        waited = 0.0
        while True:
            try:
                worker, slot = self._ready.get(timeout=min(2.0, max(timeout - waited, 0.01)))
                break
            except queue.Empty:
                waited += 2.0
                dead = [p.exitcode for p in self._procs if p.exitcode is not None]
                if dead:
                    raise RuntimeError(f"{len(dead)} SED feed worker(s) died (exit codes {dead})") from None
                if waited >= timeout:
                    raise RuntimeError(f"no SED batch from the feed workers in {timeout:.0f} s") from None
        batch = tuple(torch.from_numpy(a.copy()) for a in self._buffers[worker][slot])
        self._free[worker].put(slot)
        self.batches += 1
        return batch

    def close(self):
        stop_workers(self._procs)


def _sed_feed_worker(ready, free, buffers, worker_index, scene_cfg, soundbank_dir, seed, worker, stream, p_real, p_channel,
                     batch, geometry, local_pool, windows_per_scene):
    make = scene_maker(scene_cfg, soundbank_dir, seed, p_real)
    rng = np.random.default_rng([seed, 5, worker, stream])
    made = 0

    def fresh() -> SceneRecord:
        nonlocal made
        record = _record(make(_scene_seed(seed, worker, stream, made)))
        made += 1
        return record

    pool = [fresh() for _ in range(local_pool)]
    owed = 0.0
    window, n_frames, frame_hop, sample_rate = geometry
    while True:
        owed += batch / windows_per_scene
        while owed >= 1.0:
            pool[rng.integers(len(pool))] = fresh()
            owed -= 1.0
        result = sed_batch([pool[i] for i in rng.integers(len(pool), size=batch)], window, n_frames, frame_hop,
                           sample_rate, rng, p_channel=p_channel)
        slot = free.get()  # blocks while the trainer holds every slot of this worker
        for target, made_now in zip(buffers[slot], result):
            target[...] = made_now.numpy()
        ready.put((worker_index, slot))


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------


def frame_labels(events, start: int, n_frames: int, frame_hop: int, sample_rate: int) -> np.ndarray:
    """[n_frames, 18] 0/1: frame j covers samples [start + j*hop, start + (j+1)*hop); active when an
    event of the class covers at least half of it."""
    labels = np.zeros((n_frames, len(CLASSES)), dtype=np.float32)
    frame_starts = start + np.arange(n_frames) * frame_hop
    for label, onset, offset in events:
        on, off = onset * sample_rate, offset * sample_rate
        overlap = np.clip(np.minimum(frame_starts + frame_hop, off) - np.maximum(frame_starts, on), 0, None)
        labels[overlap >= frame_hop / 2, CLASS_INDEX[label]] = 1.0
    return labels


def corrupt_guidance(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make oracle 0/1 frame activity look like what the streaming SED delivers: soft values,
    edges off by a frame or two, occasional dropouts and false blips."""
    x = labels.astype(np.float32).copy()
    shift = rng.integers(-2, 3)
    if shift:
        x = np.roll(x, shift)
        if shift > 0:
            x[:shift] = x[shift]
        else:
            x[shift:] = x[shift - 1]
    on = rng.uniform(0.55, 1.0, size=x.shape)
    off = rng.uniform(0.0, 0.35, size=x.shape)
    soft = np.where(x > 0.5, on, off)
    if rng.random() < 0.3:  # dropouts inside the event
        soft[rng.random(x.shape) < 0.1] *= rng.uniform(0.1, 0.5)
    kernel = np.ones(3) / 3
    soft = np.convolve(np.pad(soft, 1, mode="edge"), kernel, mode="valid")
    return np.clip(soft, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Recording-chain randomisation of whole windows (what a microphone, a phone or a codec does)
# ----------------------------------------------------------------------------------------------


def linear_channel(rng: np.random.Generator, sample_rate: int):
    """A random linear recording chain as a function x → y (same filter for every signal it gets,
    so a mixture and its references stay consistent): microphone EQ, band limit (8/11/22 kHz
    recordings, phones: 300 Hz–3.4 kHz), and slow gain riding (±6 dB)."""
    stages = []
    for _ in range(int(rng.integers(0, 4))):
        stages.append(peaking_eq(sample_rate, loguniform(rng, 100.0, 0.4 * sample_rate), rng.uniform(-9, 9), rng.uniform(0.5, 2.5)))
    if rng.random() < 0.5:
        stages.append(shelf_eq(sample_rate, loguniform(rng, 1500.0, 0.35 * sample_rate), rng.uniform(-10, 4), high=True))
    if rng.random() < 0.4:
        stages.append(shelf_eq(sample_rate, loguniform(rng, 100.0, 600.0), rng.uniform(-10, 6), high=False))
    band = None
    if rng.random() < 0.35:
        recording_rate = float(rng.choice([8000.0, 11025.0, 22050.0]))
        low_cut = 300.0 if recording_rate == 8000.0 and rng.random() < 0.5 else None
        band = (low_cut, 0.45 * recording_rate)
    riding = rng.random() < 0.4
    riding_db, knots = rng.uniform(2.0, 6.0), int(rng.integers(2, 6))
    curve_seed = int(rng.integers(2**31))

    def apply(x: np.ndarray) -> np.ndarray:
        y = np.asarray(x, dtype=np.float64)
        for b, a in stages:
            y = signal.lfilter(b, a, y, axis=-1)
        if band is not None:
            if band[1] < 0.49 * sample_rate:
                y = sos_filter(y, sample_rate, "lowpass", band[1], order=6)
            if band[0] is not None:
                y = sos_filter(y, sample_rate, "highpass", band[0], order=4)
        if riding:
            curve = random_curve(np.random.default_rng(curve_seed), y.shape[-1], knots, -riding_db, riding_db)
            y = y * 10 ** (curve / 20.0)
        return y.astype(np.float32)

    return apply


def nonlinear_channel(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Light clipping or compression of a window (for the SED only: a reference cannot follow it)."""
    y = np.asarray(x, dtype=np.float64)
    peak = float(np.max(np.abs(y))) + 1e-9
    if rng.random() < 0.5:
        y = soft_clip(y / peak, rng.uniform(1.5, 5.0)) * peak
    else:  # feed-forward compressor on a 10 ms RMS envelope, ratio 2–6 above a threshold near the RMS
        env = np.sqrt(signal.lfilter([0.01], [1, -0.99], y**2) + 1e-12)
        threshold = np.sqrt(np.mean(y**2)) * rng.uniform(0.5, 2.0) + 1e-9  # a silent window: no 0/0
        ratio = rng.uniform(2.0, 6.0)
        gain = np.where(env > threshold, (env / threshold) ** (1.0 / ratio - 1.0), 1.0)
        y = y * gain
    return y.astype(np.float32)


def augment_window(x: np.ndarray, rng: np.random.Generator, sample_rate: int, p_channel: float) -> np.ndarray:
    if p_channel <= 0 or rng.random() >= p_channel:
        return x
    y = linear_channel(rng, sample_rate)(x)
    if rng.random() < 0.3:
        y = nonlinear_channel(y, rng, sample_rate)
    return y


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


def _random_gain(rng) -> float:
    return float(10 ** (rng.uniform(-25.0, 6.0) / 20.0))


def sed_batch(records, window: int, n_frames: int, frame_hop: int, sample_rate: int, rng, p_stream_start: float = 0.15,
              p_channel: float = 0.0):
    """Random windows of the scenes. With probability p_stream_start a window begins before the
    scene (zeros on the left), as the runtime's first windows do when a stream starts."""
    audio = np.zeros((len(records), window), dtype=np.float32)
    frames = np.zeros((len(records), n_frames, len(CLASSES)), dtype=np.float32)
    for i, rec in enumerate(records):
        n = rec.mixture.shape[-1]
        if rng.random() < p_stream_start:
            start = -int(rng.integers(frame_hop, window))
        else:
            start = int(rng.integers(0, max(n - window, 0) + 1))
        chunk = rec.mixture[0, max(start, 0) : start + window]
        offset = max(0, -start)
        audio[i, offset : offset + chunk.size] = augment_window(chunk, rng, sample_rate, p_channel) * _random_gain(rng)
        frames[i] = frame_labels(rec.events, start, n_frames, frame_hop, sample_rate)
    clips = frames.max(axis=1)
    return torch.from_numpy(audio), torch.from_numpy(clips), torch.from_numpy(frames)


def separator_batch(records, length: int, hop: int, guidance_hop: int, sample_rate: int, rng,
                    p_absent: float = 0.1, p_channel: float = 0.0):
    """One (scene, class) item per record: the target is the class's reference, or silence for an
    absent class (so the separator learns to output nothing for a false alarm)."""
    n_channels = records[0].mixture.shape[0]
    mix = np.zeros((len(records), n_channels, length), dtype=np.float32)
    target = np.zeros((len(records), length), dtype=np.float32)
    onehot = np.zeros((len(records), len(CLASSES)), dtype=np.float32)
    n_stft = length // hop
    n_guidance = -(-length // guidance_hop)
    activity = np.zeros((len(records), n_stft), dtype=np.float32)
    present = np.zeros(len(records), dtype=np.float32)
    stft_to_guidance = (np.arange(n_stft) * hop) // guidance_hop
    for i, rec in enumerate(records):
        n = rec.mixture.shape[-1]
        classes = list(rec.sources)
        if classes and rng.random() >= p_absent:
            cls = classes[rng.integers(len(classes))]
            ref = rec.sources[cls]
            active = np.flatnonzero(np.abs(ref) > 1e-4 * (np.abs(ref).max() + 1e-12))
            # Centre crops on the event so that most items contain target audio.
            lo = max(0, min(int(active[0]) - length // 2, n - length)) if active.size else 0
            hi = max(lo, min(int(active[-1]), n - length)) if active.size else max(n - length, 0)
            start = int(rng.integers(lo, hi + 1))
            target[i] = ref[start : start + length]
            present[i] = 1.0
        else:
            absent = [c for c in CLASSES if c not in rec.sources]
            cls = absent[rng.integers(len(absent))]
            start = int(rng.integers(0, max(n - length, 0) + 1))
        gain = _random_gain(rng)
        mix[i] = rec.mixture[:, start : start + length] * gain
        target[i] *= gain
        if p_channel > 0 and rng.random() < p_channel:  # the same linear chain on mixture and reference
            chain = linear_channel(rng, sample_rate)
            mix[i], target[i] = chain(mix[i]), chain(target[i])
        onehot[i, CLASS_INDEX[cls]] = 1.0
        labels = frame_labels([e for e in rec.events if e[0] == cls], start, n_guidance, guidance_hop, sample_rate)
        guide = corrupt_guidance(labels[:, CLASS_INDEX[cls]], rng)
        activity[i] = guide[stft_to_guidance]
    return (torch.from_numpy(mix), torch.from_numpy(target), torch.from_numpy(onehot),
            torch.from_numpy(activity), torch.from_numpy(present))
