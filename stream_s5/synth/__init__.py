"""Synthetic training/evaluation data: procedural soundbank, DCASE-2025-Task-4-style scenes, rooms.

numpy/scipy only (pyroomacoustics for spatial scenes), deterministic from seeds.
"""

from .scenes import Event, Scene, SceneConfig, generate_scene, generate_scenes, load_scene, save_scene, scene_seed
from .soundbank import (
    CLASS_GENERATORS,
    ESPEAK_AVAILABLE,
    Soundbank,
    synth_event,
    synth_interferer,
    synth_noise,
    write_soundbank,
)

__all__ = [
    "CLASS_GENERATORS",
    "ESPEAK_AVAILABLE",
    "Event",
    "Scene",
    "SceneConfig",
    "Soundbank",
    "generate_scene",
    "generate_scenes",
    "load_scene",
    "save_scene",
    "scene_seed",
    "synth_event",
    "synth_interferer",
    "synth_noise",
    "write_soundbank",
]
