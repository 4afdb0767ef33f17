"""Speech for the Speech class: espeak-ng when installed, a formant babble synthesiser otherwise.

espeak-ng gives real (if robotic) speech with many voices, variants and languages; the text is
random words drawn with the caller's generator, so a clip is deterministic for a given seed and
espeak-ng installation. Without espeak-ng the fallback is a glottal pulse train through moving
vowel formants with a syllable rhythm: speech-like, not intelligible.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess

import numpy as np
import soundfile as sf
import soxr

from .dsp import fit_length, glottal_pulses, n_samples, random_curve, resonance_gain, sos_filter, spectral_shape

__all__ = [
    "ESPEAK_AVAILABLE",
    "espeak_voices",
    "random_text",
    "synth_speech_raw",
    "espeak_speech",
    "babble_speech",
]

ESPEAK_BINARY = shutil.which("espeak-ng")
ESPEAK_AVAILABLE: bool = ESPEAK_BINARY is not None

# Small everyday vocabularies; any text is fine, it only has to sound like running speech.
_WORDS = {
    "en": (
        "the a and to of in is you that it he she was for on are with as they be at one have this from "
        "or had by word but what some we can out other were all there when up use your how said an each "
        "which do their time if will way about many then them write would like so these her long make "
        "thing see him two has look more day could go come did number sound no most people my over know "
        "water than call first who may down side been now find kitchen morning coffee door window tomorrow "
        "really maybe please thanks listen music table garden weather station minute yesterday"
    ).split(),
    "de": (
        "der die das und ist nicht ein eine ich du wir sie es mit auf für von zu den dem sich auch noch "
        "heute morgen wasser küche fenster bitte danke vielleicht wirklich immer schon wieder zeit haus "
        "garten wetter musik tisch tür minute gestern abend gut sehr viel kommen gehen sehen machen"
    ).split(),
    "fr": (
        "le la les un une et est pas je tu nous vous il elle avec pour dans sur que qui mais aussi "
        "aujourd'hui demain matin eau cuisine fenêtre porte merci peut-être vraiment toujours encore "
        "temps maison jardin musique table minute hier soir bien très beaucoup venir aller voir faire"
    ).split(),
    "es": (
        "el la los las un una y es no yo tú nosotros ellos con para en sobre que pero también hoy mañana "
        "agua cocina ventana puerta gracias quizás realmente siempre otra vez tiempo casa jardín música "
        "mesa minuto ayer noche bien muy mucho venir ir ver hacer"
    ).split(),
    "it": (
        "il la gli un una e è non io tu noi loro con per in su che ma anche oggi domani mattina acqua "
        "cucina finestra porta grazie forse davvero sempre ancora tempo casa giardino musica tavolo "
        "minuto ieri sera bene molto venire andare vedere fare"
    ).split(),
}

# Languages tried in this order of preference; their weights favour English like most datasets.
_LANGUAGES = (
    ("en-us", "en", 0.3),
    ("en-gb", "en", 0.2),
    ("en-gb-scotland", "en", 0.05),
    ("en-029", "en", 0.05),
    ("de", "de", 0.1),
    ("fr-fr", "fr", 0.1),
    ("es", "es", 0.1),
    ("it", "it", 0.05),
    ("nl", "en", 0.025),
    ("pt", "es", 0.025),
)

# The classic numbered variants are the most natural ones; the rest add timbre diversity.
_PREFERRED_VARIANTS = tuple(f"m{i}" for i in range(1, 9)) + tuple(f"f{i}" for i in range(1, 6)) + tuple(
    ["klatt", "klatt2", "klatt3", "klatt4", "klatt6"]
)
_ODD_VARIANTS = {"whisper", "whisperf", "croak", "Demonic", "UniRobot", "announcer", "anikaRobot", "fast", "klatt5"}


@functools.lru_cache(maxsize=1)
def espeak_voices() -> tuple[tuple[tuple[str, str, float], ...], tuple[str, ...], tuple[str, ...]]:
    """(languages (voice, word-list, weight), preferred variants, other variants) installed here."""
    if not ESPEAK_AVAILABLE:
        return (), (), ()

    def listing(arg: str) -> list[list[str]]:
        result = subprocess.run([ESPEAK_BINARY, arg], capture_output=True, text=True, timeout=30)
        return [line.split() for line in result.stdout.splitlines()[1:] if line.strip()]

    installed_languages = {cols[1] for cols in listing("--voices") if len(cols) > 1}
    languages = tuple(entry for entry in _LANGUAGES if entry[0] in installed_languages)
    variants = set()
    for cols in listing("--voices=variant"):
        if len(cols) > 4 and cols[4].startswith("!v/") and len(cols) == 5:
            variants.add(cols[4][3:])
    preferred = tuple(v for v in _PREFERRED_VARIANTS if v in variants)
    others = tuple(sorted(v for v in variants if v not in preferred and v not in _ODD_VARIANTS))
    return languages, preferred, others


def random_text(rng: np.random.Generator, word_list: str, n_words: int) -> str:
    """Random words with sentence punctuation, so espeak-ng produces phrase-level intonation."""
    words = _WORDS[word_list]
    parts = []
    for index in range(n_words):
        word = words[int(rng.integers(len(words)))]
        if index == 0 or parts[-1][-1] in ".?!":
            word = word.capitalize()
        roll = rng.random()
        if roll < 0.08:
            word += ","
        elif roll < 0.16:
            word += "."
        elif roll < 0.19:
            word += "?"
        parts.append(word)
    return " ".join(parts) + "."


def espeak_speech(rng: np.random.Generator, sr: int, n: int) -> np.ndarray | None:
    """espeak-ng speech of ~n samples at sr, or None when espeak-ng is missing or fails."""
    languages, preferred, others = espeak_voices()
    if not languages:
        return None
    weights = np.array([w for _, _, w in languages])
    voice, word_list, _ = languages[int(rng.choice(len(languages), p=weights / weights.sum()))]
    pool = preferred if (rng.random() < 0.7 or not others) else others
    variant = pool[int(rng.integers(len(pool)))] if pool else None
    rate = int(rng.integers(120, 221))
    pitch = int(rng.integers(20, 81))
    word_gap = int(rng.integers(0, 6))  # extra pause between words, in 10 ms units
    n_words = int(n / sr * rate / 60.0 * 1.3) + 2
    text = random_text(rng, word_list, n_words)
    command = [ESPEAK_BINARY, "-v", f"{voice}+{variant}" if variant else voice, "-s", str(rate), "-p", str(pitch)]
    command += ["-g", str(word_gap), "--stdout", text]
    try:
        result = subprocess.run(command, capture_output=True, timeout=60, check=True)
        audio, native_sr = sf.read(io.BytesIO(result.stdout), dtype="float64", always_2d=True)
    except (subprocess.SubprocessError, OSError, RuntimeError, sf.LibsndfileError):
        return None
    audio = audio.mean(axis=1)
    if native_sr != sr:
        audio = soxr.resample(audio, native_sr, sr, quality="HQ")
    if len(audio) > n:
        fade = min(n, n_samples(sr, 0.03))
        audio = audio[:n].copy()
        audio[n - fade :] *= np.linspace(1.0, 0.0, fade)
    return fit_length(audio, n)


# Vowel formant targets (F1, F2, F3 in Hz) of an adult male voice; scaled for other voices.
_VOWELS = np.array(
    [
        [730, 1090, 2440],  # a
        [530, 1840, 2480],  # e
        [270, 2290, 3010],  # i
        [570, 840, 2410],  # o
        [300, 870, 2240],  # u
        [660, 1720, 2410],  # ae
        [490, 1350, 1690],  # er
        [520, 1190, 2390],  # schwa
    ],
    dtype=np.float64,
)


def babble_speech(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Formant babble: glottal pulses through moving vowel formants, syllable and phrase rhythm."""
    duration = n / sr
    female = rng.random() < 0.5
    f0_base = rng.uniform(160.0, 260.0) if female else rng.uniform(85.0, 150.0)
    formant_scale = rng.uniform(1.1, 1.25) if female else rng.uniform(0.92, 1.05)

    # Syllable plan: (start, length, vowel index, has fricative onset) grouped into phrases.
    syllables = []
    t = rng.uniform(0.0, 0.3)
    syllable_rate = rng.uniform(3.0, 6.0)
    while t < duration:
        for _ in range(int(rng.integers(3, 13))):
            length = rng.uniform(0.6, 1.4) / syllable_rate
            syllables.append((t, length, int(rng.integers(len(_VOWELS))), rng.random() < 0.4))
            t += length
        t += rng.uniform(0.2, 0.8)

    frame_times = np.arange(0.0, duration + 0.05, 0.005)
    formant_track = np.tile(_VOWELS[7], (len(frame_times), 1))
    voicing = np.zeros(n)
    frication = np.zeros(n)
    for start, length, vowel, fricative in syllables:
        a, b = int(start * sr), min(n, int((start + length) * sr))
        if b <= a:
            continue
        onset = int(0.3 * (b - a)) if fricative else 0
        body = np.sin(np.pi * np.linspace(0.0, 1.0, b - a - onset)) ** 0.6
        voicing[a + onset : b] = np.maximum(voicing[a + onset : b], body)
        if fricative:
            frication[a : a + onset] = np.sin(np.pi * np.linspace(0.0, 1.0, onset))
        mask = (frame_times >= start) & (frame_times < start + length)
        formant_track[mask] = _VOWELS[vowel] * rng.uniform(0.93, 1.07, 3)
    # Smooth the formant jumps between syllables into glides (~40 ms co-articulation).
    kernel = np.hanning(17)
    kernel /= kernel.sum()
    padded = np.pad(formant_track, ((8, 8), (0, 0)), mode="edge")
    formant_track = np.stack([np.convolve(padded[:, i], kernel, mode="valid") for i in range(3)], axis=1)
    formant_track *= formant_scale

    declination = np.linspace(1.1, 0.85, n) if rng.random() < 0.7 else np.ones(n)
    f0 = f0_base * declination * random_curve(rng, n, int(duration * 3) + 2, 0.85, 1.2)
    f0 *= 1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))  # slight jitter
    source = glottal_pulses(f0, sr) * voicing
    source /= np.std(source) + 1e-9
    bandwidths = np.array([80.0, 110.0, 160.0]) * formant_scale
    frame_step = frame_times[1] - frame_times[0]

    def formant_gains(freqs, times):
        index = np.clip(np.round(times[0] / frame_step).astype(int), 0, len(frame_times) - 1)
        total = np.zeros((freqs.shape[0], times.shape[1]))
        for i, weight in enumerate((1.0, 0.6, 0.3)):
            total += weight * resonance_gain(freqs, formant_track[index, i][None, :], bandwidths[i])
        return total

    voiced = spectral_shape(source, sr, formant_gains)
    hiss = sos_filter(rng.standard_normal(n), sr, "bandpass", (rng.uniform(2500, 4000), 0.45 * sr), 2) * frication
    voiced /= np.std(voiced) + 1e-9
    hiss /= np.std(hiss) + 1e-9
    return voiced + rng.uniform(0.1, 0.4) * hiss


def synth_speech_raw(rng: np.random.Generator, sr: int, n: int, engine: str = "auto") -> np.ndarray:
    """Speech clip of n samples; ``engine`` is 'auto', 'espeak' or 'babble'."""
    if engine not in ("auto", "espeak", "babble"):
        raise ValueError(f"unknown speech engine {engine!r}")
    if engine != "babble":
        audio = espeak_speech(rng, sr, n)
        if audio is not None:
            return audio
        if engine == "espeak":
            raise RuntimeError("espeak-ng is not installed or failed")
    return babble_speech(rng, sr, n)
