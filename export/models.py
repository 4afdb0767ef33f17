"""The two networks: an SGN-style class-token SED transformer and a causal, SED-guided,
iteratively refined mask separator.

Both are written so that the ONNX graphs carry every piece of state explicitly:
- the SED is stateless (it sees a whole sliding window each call);
- the separator's state is its GRU hidden state (and, for a spatial separator with `spatial_stats`,
  the running mask-weighted cross-spectra of the target), one tensor per refinement pass and slot,
  passed in and out of every call (`state_in` / `state_out`), batch-first so that the runtime can
  index slots along axis 0.

The separator works on STFT frames that the runtime computes with numpy (`stream_s5.dsp`); the
torch twin of that STFT lives here (`causal_stft` / `causal_istft`) and is tested to match it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_CLASSES = 18


# ----------------------------------------------------------------------------------------------
# Configuration (stored verbatim in checkpoints and in bundle.json provenance)
# ----------------------------------------------------------------------------------------------


@dataclass
class SedConfig:
    sample_rate: int = 16000
    window: int = 20480  # samples per SED call (1.28 s at 16 kHz)
    n_fft: int = 512
    win_length: int = 400
    mel_hop: int = 160  # 10 ms mel frames
    n_mels: int = 64
    patch_frames: int = 4  # 4 mel frames = 40 ms per patch = frame-level output resolution
    dim: int = 128
    depth: int = 3
    heads: int = 4
    ff_mult: int = 2
    n_classes: int = N_CLASSES
    dropout: float = 0.1
    fmax: float | None = None  # top of the mel bank (None: Nyquist); 8000 keeps a 32 kHz SED's features those of a 16 kHz one

    @property
    def n_frames(self) -> int:
        return self.window // self.mel_hop

    @property
    def n_patches(self) -> int:
        return self.n_frames // self.patch_frames

    @property
    def frame_hop(self) -> int:
        return self.mel_hop * self.patch_frames


@dataclass
class SeparatorConfig:
    sample_rate: int = 16000
    n_fft: int = 256
    hop: int = 128
    hidden: int = 192
    layers: int = 2
    class_dim: int = 32
    n_classes: int = N_CLASSES
    max_passes: int = 3
    channels: int = 1  # >1: spatial input; the estimate is for the reference (first) channel
    guidance: str = "frame"  # "frame": time-varying SED activity; "clip": constant presence only
    # Spatial separators only: running target statistics from the previous pass's estimate (a beam towards
    # the class and how well each bin matches its direction), kept in the state; seconds of memory.
    spatial_stats: bool = False
    stats_seconds: float = 2.0

    def __post_init__(self):
        if self.spatial_stats and self.channels < 2:
            raise ValueError("spatial_stats needs a spatial separator (channels > 1)")

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def stats_rows(self) -> int:
        """Target power at the reference channel and the cross-spectra (re, im) of the others with it."""
        return 2 * self.channels - 1 if self.spatial_stats else 0

    @property
    def state_shape(self) -> tuple[int, ...]:
        if self.spatial_stats:  # flat: GRU state, then the statistics
            return (self.layers * self.hidden + self.stats_rows * self.n_freq,)
        return (self.layers, self.hidden)


@dataclass
class ModelConfig:
    sed: SedConfig = field(default_factory=SedConfig)
    separator: SeparatorConfig = field(default_factory=SeparatorConfig)

    def to_dict(self) -> dict:
        return {"sed": asdict(self.sed), "separator": asdict(self.separator)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(sed=SedConfig(**d["sed"]), separator=SeparatorConfig(**d["separator"]))


# ----------------------------------------------------------------------------------------------
# DSP shared with the runtime
# ----------------------------------------------------------------------------------------------


def sqrt_hann(n: int) -> torch.Tensor:
    # Periodic Hann sums to 1 at 50 % overlap, so sqrt-Hann analysis x synthesis reconstructs exactly.
    return torch.sqrt(torch.hann_window(n, periodic=True))


def causal_stft(audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """[..., N] → [..., T, 2, F] with T = N // hop; frame t ends at sample (t + 1) * hop.

    The n_fft - hop samples before the signal are zeros, exactly as the runtime's ring starts."""
    frames = audio.shape[-1] // hop
    padded = F.pad(audio[..., : frames * hop], (n_fft - hop, 0))
    framed = padded.unfold(-1, n_fft, hop) * sqrt_hann(n_fft).to(audio)
    spec = torch.fft.rfft(framed, dim=-1)
    return torch.stack([spec.real, spec.imag], dim=-2)


def mixture_stft(mixture: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """[B, C, N] → [B, T, C, 2, F], the separator's `mix` input layout."""
    return causal_stft(mixture, n_fft, hop).transpose(1, 2)


def causal_istft(spec: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """[B, T, 2, F] → [B, T * hop], aligned with the input timeline (the algorithmic delay removed).

    Output sample n needs frames up to (n // hop) + (n_fft // hop) - 1; the streaming runtime emits it
    that many hops later, this offline twin simply realigns."""
    batch, frames = spec.shape[:2]
    complex_spec = torch.complex(spec[:, :, 0], spec[:, :, 1])
    framed = torch.fft.irfft(complex_spec, n=n_fft, dim=-1) * sqrt_hann(n_fft).to(spec.real)
    total = (frames - 1) * hop + n_fft
    out = F.fold(
        framed.transpose(1, 2),
        output_size=(1, total),
        kernel_size=(1, n_fft),
        stride=(1, hop),
    ).reshape(batch, total)
    # Frame t covered [(t+1)*hop - n_fft, (t+1)*hop): drop the leading pad to realign.
    return out[:, n_fft - hop : n_fft - hop + frames * hop]


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 40.0, fmax: float | None = None) -> np.ndarray:
    """HTK-style triangular mel filters, [n_mels, n_fft // 2 + 1]."""
    fmax = fmax or sample_rate / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = inv(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    bank = np.zeros((n_mels, freqs.size), dtype=np.float32)
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        bank[i] = np.maximum(0.0, np.minimum(up, down))
    return bank


# ----------------------------------------------------------------------------------------------
# SED: class tokens attend with audio patches; category-aware grouping → one embedding per class
# ----------------------------------------------------------------------------------------------


class SedNet(nn.Module):
    def __init__(self, cfg: SedConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("stft_window", torch.hann_window(cfg.win_length, periodic=True), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, fmax=cfg.fmax)), persistent=False)
        self.input_norm = nn.BatchNorm1d(cfg.n_mels)
        self.patch_embed = nn.Linear(cfg.n_mels * cfg.patch_frames, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(1, cfg.n_patches, cfg.dim))
        self.class_tokens = nn.Parameter(torch.randn(1, cfg.n_classes, cfg.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, cfg.dim * cfg.ff_mult, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        # Category-aware grouping: patches softly assigned to classes by token similarity.
        self.group_query = nn.Linear(cfg.dim, cfg.dim)
        self.group_key = nn.Linear(cfg.dim, cfg.dim)
        self.clip_weight = nn.Parameter(torch.randn(cfg.n_classes, cfg.dim) * 0.02)
        self.clip_bias = nn.Parameter(torch.full((cfg.n_classes,), -2.0))
        self.frame_proj = nn.Linear(cfg.dim, cfg.dim)
        self.frame_class_proj = nn.Linear(cfg.dim, cfg.dim)
        self.frame_bias = nn.Parameter(torch.full((cfg.n_classes,), -2.0))
        # Class-token constraint (SGN): each output class token must classify as its own class.
        self.token_classifier = nn.Linear(cfg.dim, cfg.n_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)
        # SpecAugment during training only (never exported): (freq masks, max mel bins, time masks,
        # max frames); set by the trainer, None = off.
        self.spec_augment: tuple[int, int, int, int] | None = None

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        # Always float32: under float16 autocast the mel sum of a loud window (peak 2.6 after a +6 dB training
        # gain) passes 65504 and turns the whole batch's loss into NaN (the first GPU run, docs/model.md).
        with torch.autocast(audio.device.type, enabled=False):
            # Left pad so that there are exactly window / mel_hop frames and frame i ends at (i+1)*mel_hop.
            padded = F.pad(audio.float(), (cfg.n_fft - cfg.mel_hop, 0))
            spec = torch.stft(
                padded, cfg.n_fft, cfg.mel_hop, cfg.win_length, self.stft_window, center=False, return_complex=False
            )
            power = spec[..., 0] ** 2 + spec[..., 1] ** 2  # [B, F, frames]
            mel = torch.matmul(self.mel, power)
            return torch.log(mel + 1e-6)[:, :, : cfg.n_frames]

    def forward(self, audio: torch.Tensor):
        """audio [B, window] → clip_probs [B, C], frame_probs [B, P, C], class_embeddings [B, C, D],
        plus logits and token logits for training (the exported graph drops those)."""
        return self.from_log_mel(self.log_mel(audio))

    def from_log_mel(self, log_mel: torch.Tensor):
        """The network after its front end: log-mel [B, M, frames] → forward's outputs."""
        cfg = self.cfg
        feats = self.input_norm(log_mel)  # [B, M, frames]
        if self.training and self.spec_augment is not None:
            feats = spec_augment(feats, *self.spec_augment)
        batch = feats.shape[0]
        patches = feats.reshape(batch, cfg.n_mels, cfg.n_patches, cfg.patch_frames)
        patches = patches.permute(0, 2, 1, 3).reshape(batch, cfg.n_patches, cfg.n_mels * cfg.patch_frames)
        tokens = torch.cat([self.patch_embed(patches) + self.pos, self.class_tokens.expand(batch, -1, -1)], dim=1)
        tokens = self.norm(self.encoder(tokens))
        patch_feats, class_feats = tokens[:, : cfg.n_patches], tokens[:, cfg.n_patches :]

        similarity = torch.matmul(self.group_query(patch_feats), self.group_key(class_feats).transpose(1, 2))
        assign = torch.softmax(similarity / math.sqrt(cfg.dim), dim=-1)  # [B, P, C]: each patch → classes
        grouped = torch.matmul(assign.transpose(1, 2), patch_feats) / (assign.sum(1).unsqueeze(-1) + 1e-4)
        class_embeddings = grouped + class_feats
        clip_logits = (class_embeddings * self.clip_weight).sum(-1) + self.clip_bias

        frame_q = F.normalize(self.frame_proj(patch_feats), dim=-1)
        frame_k = F.normalize(self.frame_class_proj(class_feats), dim=-1)
        frame_logits = 10.0 * torch.matmul(frame_q, frame_k.transpose(1, 2)) + self.frame_bias
        token_logits = self.token_classifier(class_feats)  # [B, C, C]
        return {
            "clip_probs": torch.sigmoid(clip_logits),
            "frame_probs": torch.sigmoid(frame_logits),
            "class_embeddings": class_embeddings,
            "clip_logits": clip_logits,
            "frame_logits": frame_logits,
            "token_logits": token_logits,
        }


def ensemble_weights(weights: list[float] | None, members: int) -> list[float]:
    """The normalised weights of an ensemble of `members` SEDs (None: equal), or a ValueError."""
    weights = [1.0] * members if weights is None else [float(w) for w in weights]
    if members < 2 or len(weights) != members or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"one finite weight >= 0 per SED, at least two SEDs, not all zero; got {weights} for {members}")
    return [w / sum(weights) for w in weights]


def ensemble_class_weights(class_weights: dict[str, list[float]] | None, members: int,
                           classes: list[str]) -> dict[str, list[float]]:
    """Per-class overrides of an ensemble's weights, each normalised like ensemble_weights, or a ValueError
    naming the class (unknown, or a wrong count of weights)."""
    normalised = {}
    for name, weights in (class_weights or {}).items():
        if name not in classes:
            raise ValueError(f"{name} is not among the classes ({', '.join(classes)})")
        try:
            normalised[name] = ensemble_weights(weights, members)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return normalised


class SedEnsemble(nn.Module):
    """Several trained SEDs as one detector: the (weighted) mean of their clip and frame probabilities over
    the same log-mel features (members must share the front end: export.bundle checks). The first member gives
    the front end, the config and the class embeddings (the runtime does not read those). Export only.

    class_weights overrides the weights for some classes (`classes` names the probability columns): a member
    that never learned a class from real material can be left out of that class's vote and kept in the others'."""

    def __init__(self, members: list[SedNet], weights: list[float] | None = None,
                 class_weights: dict[str, list[float]] | None = None, classes: list[str] | None = None):
        super().__init__()
        self.weights = ensemble_weights(weights, len(members))
        self.class_weights = ensemble_class_weights(class_weights, len(members), classes or [])
        mix = torch.tensor(self.weights).view(-1, 1).repeat(1, members[0].cfg.n_classes)
        for name, row in self.class_weights.items():
            mix[:, classes.index(name)] = torch.tensor(row)
        self.register_buffer("mix", mix)  # [members, classes]: column c is class c's weights
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg
        self.eval()

    @property
    def stft_window(self) -> torch.Tensor:
        return self.members[0].stft_window

    @property
    def mel(self) -> torch.Tensor:
        return self.members[0].mel

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        return self.members[0].log_mel(audio)

    def forward(self, audio: torch.Tensor):
        return self.from_log_mel(self.log_mel(audio))

    def from_log_mel(self, log_mel: torch.Tensor):
        outs = [m.from_log_mel(log_mel) for m in self.members]
        return {"clip_probs": sum(w * o["clip_probs"] for w, o in zip(self.mix, outs)),
                "frame_probs": sum(w * o["frame_probs"] for w, o in zip(self.mix, outs)),
                "class_embeddings": outs[0]["class_embeddings"]}


def spec_augment(feats: torch.Tensor, freq_masks: int, freq_width: int, time_masks: int, time_width: int) -> torch.Tensor:
    """Zero random mel bands and frame spans per item (SpecAugment) of normalised log-mel [B, M, T]."""
    batch, n_mels, frames = feats.shape
    keep = torch.ones_like(feats)
    mel_axis = torch.arange(n_mels, device=feats.device).view(1, -1, 1)
    time_axis = torch.arange(frames, device=feats.device).view(1, 1, -1)
    for count, width, axis, size in ((freq_masks, freq_width, mel_axis, n_mels), (time_masks, time_width, time_axis, frames)):
        for _ in range(count):
            w = torch.randint(0, width + 1, (batch, 1, 1), device=feats.device)
            start = (torch.rand(batch, 1, 1, device=feats.device) * (size - w + 1)).long()
            keep = keep * ~((axis >= start) & (axis < start + w))
    return feats * keep


class SedFrontEnd(nn.Module):
    """SedNet.log_mel for streaming: audio [B, context + n·mel_hop] → log-mel [B, M, n], frame j
    made of the context + (j+1)·mel_hop samples before its end, so that a stream's new frames are
    computed once from the newest samples (the runtime caches the rest of the window). The DFT of
    the windowed frame is a strided convolution with a cos/sin basis (what ONNX Runtime runs fastest
    here, and its output length follows the input's), numerically the same features as torch.stft."""

    def __init__(self, net: SedNet):
        super().__init__()
        cfg = net.cfg
        self.context = cfg.n_fft - cfg.mel_hop  # the left pad of log_mel: samples before a frame's own hop
        self.offset = (cfg.n_fft - cfg.win_length) // 2  # torch.stft centres a shorter window in n_fft
        self.hop, self.n_freq = cfg.mel_hop, cfg.n_fft // 2 + 1
        n = torch.arange(self.offset, self.offset + cfg.win_length, dtype=torch.float64)
        k = torch.arange(self.n_freq, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(k, n) / cfg.n_fft
        window = net.stft_window.to(torch.float64)
        # [2·F, 1, win_length]: real parts then imaginary parts (the sign of sin drops out of the power)
        basis = torch.cat([torch.cos(angle) * window, torch.sin(angle) * window]).unsqueeze(1)
        self.register_buffer("basis", basis.float())
        self.register_buffer("mel", net.mel.clone())
        self.eval()

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = F.conv1d(audio[:, self.offset :].unsqueeze(1), self.basis, stride=self.hop)  # [B, 2F, n]
        power = spec[:, : self.n_freq] ** 2 + spec[:, self.n_freq :] ** 2
        return torch.log(torch.matmul(self.mel, power) + 1e-6)


class SedExport(nn.Module):
    """The graph the runtime sees: three outputs, no training heads."""

    def __init__(self, net: SedNet):
        super().__init__()
        self.net = net
        # torch.onnx.export restores the wrapper's mode recursively afterwards: keep it eval.
        self.eval()

    def forward(self, audio):
        out = self.net(audio)
        return out["clip_probs"], out["frame_probs"], out["class_embeddings"]


class SedBodyExport(SedExport):
    """The SED graph after its front end: log-mel [B, M, frames] → the same three outputs."""

    def forward(self, log_mel):
        out = self.net.from_log_mel(log_mel)
        return out["clip_probs"], out["frame_probs"], out["class_embeddings"]


def sed_loss(out: dict, clip_labels: torch.Tensor, frame_labels: torch.Tensor, token_weight: float = 0.1):
    """BCE on window and frame labels + SGN's class-token constraint."""
    clip = F.binary_cross_entropy_with_logits(out["clip_logits"], clip_labels)
    frame = F.binary_cross_entropy_with_logits(out["frame_logits"], frame_labels)
    n_classes = out["token_logits"].shape[-1]
    target = torch.arange(n_classes, device=clip_labels.device).expand(out["token_logits"].shape[0], -1)
    token = F.cross_entropy(out["token_logits"].reshape(-1, n_classes), target.reshape(-1))
    return clip + frame + token_weight * token, {"clip": clip.item(), "frame": frame.item(), "token": token.item()}


# ----------------------------------------------------------------------------------------------
# Separator: one refinement pass, causal, FiLM-conditioned on class and per-frame SED activity
# ----------------------------------------------------------------------------------------------


class FiLM(nn.Module):
    def __init__(self, cond_dim: int, features: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * features)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, cond):
        gamma, beta = self.proj(cond).chunk(2, dim=-1)
        return x * (1.0 + gamma) + beta


class SeparatorNet(nn.Module):
    """One pass: (mixture STFT, previous estimate STFT, class, activity, pass index, GRU state) →
    (estimate STFT, GRU state). Frame t depends on frames ≤ t only (GRU + per-frame layers)."""

    def __init__(self, cfg: SeparatorConfig):
        super().__init__()
        self.cfg = cfg
        n_freq, hidden = cfg.n_freq, cfg.hidden
        self.class_embed = nn.Linear(cfg.n_classes, cfg.class_dim, bias=False)
        self.pass_embed = nn.Embedding(cfg.max_passes, cfg.class_dim)
        cond_dim = 2 * cfg.class_dim
        self.cond_mlp = nn.Sequential(nn.Linear(cond_dim + 1, cond_dim), nn.GELU(), nn.Linear(cond_dim, cond_dim))
        # Per channel log power, inter-channel phase differences (cos, sin) against the reference
        # channel, and the previous pass's log power.
        in_features = n_freq * (cfg.channels + 2 * (cfg.channels - 1) + 1)
        self.in_norm = nn.LayerNorm(in_features)
        self.in_proj = nn.Linear(in_features, hidden)
        if cfg.spatial_stats:
            # coherence with the target's direction, the beam's log power, the statistics' log weight
            self.spatial_norm = nn.LayerNorm(3 * n_freq)
            self.spatial_proj = nn.Linear(3 * n_freq, hidden)
            # Zero: a separator given these features starts as the same function as without them (transfer).
            nn.init.zeros_(self.spatial_proj.weight)
            nn.init.zeros_(self.spatial_proj.bias)
            self.stats_decay = math.exp(-cfg.hop / (cfg.stats_seconds * cfg.sample_rate))
        self.film_in = FiLM(cond_dim, hidden)
        self.gru = nn.GRU(hidden, hidden, cfg.layers, batch_first=True)
        self.film_out = FiLM(cond_dim, hidden)
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, n_freq))

    @staticmethod
    def _log_power(spec):
        return torch.log(spec[..., 0, :] ** 2 + spec[..., 1, :] ** 2 + 1e-8)

    @staticmethod
    def _cross_spectra(mix):
        """Every other channel times the conjugate of the reference → (re, im) [B, T, channels - 1, F]: their
        phase is the inter-channel phase difference."""
        ref, others = mix[:, :, :1], mix[:, :, 1:]
        cross_re = others[:, :, :, 0] * ref[:, :, :, 0] + others[:, :, :, 1] * ref[:, :, :, 1]
        cross_im = others[:, :, :, 1] * ref[:, :, :, 0] - others[:, :, :, 0] * ref[:, :, :, 1]
        return cross_re, cross_im

    def _features(self, mix, prev, cross):
        batch, frames = mix.shape[:2]
        parts = [self._log_power(mix).reshape(batch, frames, -1)]
        if self.cfg.channels > 1:
            cross_re, cross_im = cross
            magnitude = torch.sqrt(cross_re**2 + cross_im**2 + 1e-12)
            parts += [(cross_re / magnitude).reshape(batch, frames, -1), (cross_im / magnitude).reshape(batch, frames, -1)]
        parts.append(self._log_power(prev))
        return torch.cat(parts, dim=-1)

    def _spatial(self, mix, prev, stats_in, cross):
        """Mask-based spatial features (how a multichannel enhancer uses a first mask estimate).

        The previous pass's estimate gives each bin a target weight w = |prev|² / |mix_ref|² in [0, 1]; the
        weighted cross-spectra of every channel with the reference, averaged over time with an exponential
        memory (state), give the target's relative transfer function h per frequency (its direction, room
        included). Per bin: the coherence of the observed channel vector with h (1: the bin comes from the
        target's direction), the log power of the distortionless beam h^H x / |h|², and the statistics'
        log weight (how much the average has seen). With no previous estimate (pass 1) w = 0 and the
        features say "no direction yet". Returns (features [B, T, 3F], stats_out [B, rows, F])."""
        eps = 1e-6
        ref = mix[:, :, 0]
        ref_pow = ref[..., 0, :] ** 2 + ref[..., 1, :] ** 2
        weight = ((prev[..., 0, :] ** 2 + prev[..., 1, :] ** 2) / (ref_pow + 1e-8)).clamp(0.0, 1.0)
        others = mix[:, :, 1:]
        cross_re, cross_im = cross
        observed = torch.cat([ref_pow.unsqueeze(2), cross_re, cross_im], dim=2) * weight.unsqueeze(2)  # [B, T, rows, F]
        # s_t = a s_{t-1} + (1 - a) z_t over a whole chunk at once: s_t = a^t (s_0 + (1 - a) sum_{u<=t} a^-u z_u).
        # a^-T stays small for the chunks this sees (e^(T·hop/memory): e^5 for a 10 s backfill at 2 s memory).
        a = self.stats_decay
        steps = torch.arange(1, mix.shape[1] + 1, dtype=mix.dtype, device=mix.device)
        growth = torch.exp(steps * -math.log(a)).view(1, -1, 1, 1)
        stats = (stats_in.unsqueeze(1) + (1 - a) * torch.cumsum(observed * growth, dim=1)) / growth
        channels = self.cfg.channels
        power = stats[:, :, 0].clamp_min(0.0) + eps
        h_re, h_im = stats[:, :, 1:channels] / power.unsqueeze(2), stats[:, :, channels:] / power.unsqueeze(2)
        x_re, x_im = others[:, :, :, 0], others[:, :, :, 1]
        beam_re = ref[..., 0, :] + (h_re * x_re + h_im * x_im).sum(2)
        beam_im = ref[..., 1, :] + (h_re * x_im - h_im * x_re).sum(2)
        beam_pow = beam_re**2 + beam_im**2
        steer_norm = 1.0 + (h_re**2 + h_im**2).sum(2)
        mix_pow = ref_pow + (x_re**2 + x_im**2).sum(2)
        coherence = beam_pow / (steer_norm * mix_pow + 1e-8)
        features = torch.cat([coherence, torch.log(beam_pow / steer_norm**2 + 1e-8), torch.log(power)], dim=-1)
        return features, stats[:, -1]

    def forward(self, mix, prev, class_onehot, activity, pass_index, state_in):
        """mix [B, T, channels, 2, F]; prev [B, T, 2, F]; class_onehot [B, C]; activity [B, T];
        pass_index [B] int64; state_in [B, *state_shape]."""
        if self.cfg.guidance == "clip":
            activity = torch.ones_like(activity)
        batch, frames = mix.shape[:2]
        layers, hidden = self.cfg.layers, self.cfg.hidden
        gru_state = state_in[:, : layers * hidden].reshape(batch, layers, hidden)
        cond = torch.cat([self.class_embed(class_onehot), self.pass_embed(pass_index)], dim=-1)
        cond = cond.unsqueeze(1).expand(-1, frames, -1)
        cond = self.cond_mlp(torch.cat([cond, activity.unsqueeze(-1)], dim=-1))
        cross = self._cross_spectra(mix) if self.cfg.channels > 1 else None
        x = self.in_proj(self.in_norm(self._features(mix, prev, cross)))
        if self.cfg.spatial_stats:
            stats_in = state_in[:, layers * hidden :].reshape(batch, self.cfg.stats_rows, self.cfg.n_freq)
            spatial, stats_out = self._spatial(mix, prev, stats_in, cross)
            x = x + self.spatial_proj(self.spatial_norm(spatial))
        x = self.film_in(x, cond)
        x, gru_out = self.gru(x, gru_state.transpose(0, 1).contiguous())
        x = self.film_out(x, cond)
        mask = torch.sigmoid(self.out(x)).unsqueeze(2)  # [B, T, 1, F]: magnitude mask, reference channel
        gru_out = gru_out.transpose(0, 1)
        if self.cfg.spatial_stats:
            return mix[:, :, 0] * mask, torch.cat([gru_out.reshape(batch, -1), stats_out.reshape(batch, -1)], dim=1)
        return mix[:, :, 0] * mask, gru_out

    def zero_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, *self.cfg.state_shape)

    def refine(self, mix, class_onehot, activity, passes: int, detach_between: bool = True):
        """Run `passes` refinement passes offline over whole sequences; returns the list of estimates.
        Earlier passes are detached (stop-gradient) during training, as in the seed system."""
        batch = mix.shape[0]
        prev = torch.zeros_like(mix[:, :, 0])
        estimates = []
        for k in range(passes):
            pass_index = torch.full((batch,), k, dtype=torch.long, device=mix.device)
            est, _ = self(mix, prev.detach() if detach_between else prev, class_onehot, activity, pass_index,
                          self.zero_state(batch).to(mix))
            estimates.append(est)
            prev = est
        return estimates


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
