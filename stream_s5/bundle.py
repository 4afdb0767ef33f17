"""Model bundles: a folder with `bundle.json` and the ONNX graphs it names (schema: docs/bundle.md,
`bundle.schema.json`).

Loading refuses anything it cannot vouch for, with one line per problem:
- the manifest must match the written schema (types, ranges, required fields) and its cross-field
  rules (hop divides n_fft, off ≤ on threshold, …);
- every file must be a plain name inside the bundle folder, listed in `files` with its sha256; a
  bundle without `files` is refused. The graphs' bytes are read once, hashed, and the sessions are
  built from those very bytes, so a file swapped after the check is never run.
Shapes are checked against the graphs themselves when the sessions are built (`sessions.py`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Bundle", "BundleError", "load_bundle", "default_bundle_path", "shipped_bundles", "resolve_bundle_path", "update_manifest", "validate_manifest",
           "BUNDLE_FORMAT", "SCHEMA_PATH"]

BUNDLE_FORMAT = "stream_s5.bundle/1"
SCHEMA_PATH = Path(__file__).parent / "bundle.schema.json"
GRAPHS = ("separator", "sed")  # the sections that name an ONNX graph


def graph_names(manifest: dict) -> dict[str, str]:
    """Graph key → file name of every graph the manifest names: "separator", "sed", and where the
    SED also comes split at its features (sed.front_end), "sed_front" and "sed_body", plus
    "sed_guide" where a second body guides the separator (sed.front_end.guide_body)."""
    names = {key: manifest[key]["file"] for key in GRAPHS}
    front_end = manifest["sed"].get("front_end")
    if front_end is not None:
        names.update(sed_front=front_end["file"], sed_body=front_end["body"])
        if front_end.get("guide_body") is not None:
            names["sed_guide"] = front_end["guide_body"]
    return names


class BundleError(ValueError):
    pass


def default_bundle_path() -> Path:
    return Path(__file__).parent / "models" / "default"


def shipped_bundles() -> dict[str, Path]:
    """Bundles shipped with the package, by name: "default" (mono 16 kHz) and "spatial" (4-channel 32 kHz)."""
    root = Path(__file__).parent / "models"
    return {p.name: p for p in sorted(root.iterdir()) if (p / "bundle.json").is_file()}


def resolve_bundle_path(path: str | Path | None) -> Path:
    """A folder, or the name of a shipped bundle (a bare name that is not a folder here), or the default."""
    if path is None:
        return default_bundle_path()
    folder = Path(path)
    shipped = shipped_bundles()
    if not folder.exists() and str(path) in shipped:
        return shipped[str(path)]
    return folder


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict
    graphs: dict = field(default_factory=dict, repr=False, compare=False)  # section → verified bytes

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    @property
    def channels(self) -> int:
        return int(self.manifest["channels"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    @property
    def separator(self) -> dict:
        return self.manifest["separator"]

    @property
    def sed(self) -> dict:
        return self.manifest["sed"]

    @property
    def hop(self) -> int:
        return int(self.separator["hop"])

    @property
    def algorithmic_latency(self) -> int:
        return int(self.separator["algorithmic_latency"])

    @property
    def budget_ms(self) -> float:
        return float(self.manifest.get("budget_ms", 1000.0 * self.hop / self.sample_rate))

    def file(self, key: str) -> Path:
        return self.path / graph_names(self.manifest)[key]

    def graph(self, key: str) -> bytes:
        """The ONNX graph `key` ("sed", "separator", "sed_front", "sed_body", "sed_guide"), exactly
        the bytes that were hashed."""
        return self.graphs[key]

    @property
    def sed_front_end(self) -> dict | None:
        """The SED's split at its log-mel features (sed.front_end), or None for a single SED graph."""
        return self.sed.get("front_end")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _read_manifest(manifest_path: Path) -> dict:
    try:
        # NaN / Infinity are not JSON: Python's json would accept them and make every check lie
        manifest = json.loads(manifest_path.read_text(), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: must hold a JSON object, not {type(manifest).__name__}")
    return manifest


def _schema_problems(manifest: dict) -> list[str]:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    problems = []
    for error in sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"{where}: {error.message}")
    return problems


def _non_finite(value, where: str = "(top level)"):
    """(path, value) of every NaN/±inf float: JSON Schema's range checks are blind to NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, key if where == "(top level)" else f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _non_finite(item, f"{where}.{i}")


def validate_manifest(manifest: dict) -> list[str]:
    """Every problem of a manifest, one line each (empty: valid). The schema first; the cross-field
    rules only once the shapes they read are known to be right."""
    problems = [f"{where}: {value} is not a finite number" for where, value in _non_finite(manifest)]
    problems += _schema_problems(manifest)
    if problems:
        return problems
    sep, sed = manifest["separator"], manifest["sed"]
    if sep["n_fft"] % sep["hop"]:
        problems.append(f"separator.n_fft ({sep['n_fft']}) must be a multiple of separator.hop ({sep['hop']})")
    if sep["algorithmic_latency"] < sep["hop"]:
        problems.append("separator.algorithmic_latency must be at least one hop")
    if sep["passes"] > sep["max_passes"]:
        problems.append(f"separator.passes ({sep['passes']}) exceeds separator.max_passes ({sep['max_passes']})")
    if sed["hop"] % sep["hop"]:
        problems.append(f"sed.hop ({sed['hop']}) must be a multiple of separator.hop ({sep['hop']})")
    if sed["frames"] * sed["frame_hop"] != sed["window"]:
        problems.append(f"sed.frames × sed.frame_hop ({sed['frames']} × {sed['frame_hop']}) must equal sed.window "
                        f"({sed['window']})")
    if sed["hop"] % sed["frame_hop"]:
        problems.append(f"sed.hop ({sed['hop']}) must be a multiple of sed.frame_hop ({sed['frame_hop']})")
    if sed["window"] <= sed["hop"]:
        problems.append("sed.window must be longer than sed.hop")
    tracker = manifest.get("tracker", {})
    on, off = tracker.get("on_threshold", 0.5), tracker.get("off_threshold", 0.3)
    if off > on:
        problems.append(f"tracker.off_threshold ({off}) must not exceed tracker.on_threshold ({on})")
    fast = tracker.get("fast_on_threshold")
    if fast is not None and fast < on:
        problems.append(f"tracker.fast_on_threshold ({fast}) must not be below tracker.on_threshold ({on})")
    for label, (class_on, class_off) in tracker.get("class_thresholds", {}).items():
        if label not in manifest["classes"]:
            problems.append(f"tracker.class_thresholds names {label!r}, which is not one of the bundle's classes")
        if class_off > class_on:
            problems.append(f"tracker.class_thresholds[{label!r}]: off ({class_off}) must not exceed on ({class_on})")
    front_end = sed.get("front_end")
    if front_end is not None:
        if front_end["mel_frames"] * front_end["mel_hop"] != sed["window"]:
            problems.append(f"sed.front_end.mel_frames × mel_hop ({front_end['mel_frames']} × {front_end['mel_hop']}) "
                            f"must equal sed.window ({sed['window']})")
        if sed["hop"] % front_end["mel_hop"]:
            problems.append(f"sed.hop ({sed['hop']}) must be a multiple of sed.front_end.mel_hop ({front_end['mel_hop']})")
        if front_end.get("guide_body") in (front_end["file"], front_end["body"], sed["file"]):
            problems.append("sed.front_end.guide_body must be a graph of its own, not the SED's or its front end's file")
        detects = front_end.get("guide_detects")
        if detects is not None:
            if front_end.get("guide_body") is None:
                problems.append("sed.front_end.guide_detects needs sed.front_end.guide_body (the body it names classes for)")
            for label in detects:
                if label not in manifest["classes"]:
                    problems.append(f"sed.front_end.guide_detects names {label!r}, which is not one of the bundle's classes")
    where = {"sed_front": "sed.front_end.file", "sed_body": "sed.front_end.body", "sed_guide": "sed.front_end.guide_body"}
    for key, name in graph_names(manifest).items():
        if name not in manifest["files"]:
            problems.append(f"{where.get(key, key + '.file')} {name!r} is not listed in files "
                            "(every file the runtime opens is hashed)")
    return problems


def _inside(folder: Path, name: str) -> Path:
    """`name` resolved inside `folder` (symbolic links followed) or a BundleError."""
    root = folder.resolve()
    path = (folder / name).resolve()
    if path.parent != root:
        raise BundleError(f"{folder}: {name!r} resolves outside the bundle folder ({path})")
    return path


def load_bundle(path: str | Path | None = None) -> Bundle:
    folder = resolve_bundle_path(path)
    manifest_path = folder / "bundle.json"
    if not manifest_path.is_file():
        names = ", ".join(shipped_bundles())
        raise BundleError(f"{folder}: not a model bundle (no bundle.json); shipped bundles by name: {names}")
    manifest = _read_manifest(manifest_path)
    problems = validate_manifest(manifest)
    if problems:
        lines = "\n  ".join(problems)
        raise BundleError(f"{manifest_path}: {len(problems)} problem(s):\n  {lines}")
    graphs = {}
    for name, digest in manifest["files"].items():
        file = _inside(folder, name)
        if not file.is_file():
            raise BundleError(f"{folder}: missing {name} (listed in files)")
        data = file.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise BundleError(f"{file}: sha256 {actual[:12]}… does not match bundle.json ({digest[:12]}…): "
                              "the file was changed or damaged")
        for key, graph_name in graph_names(manifest).items():
            if graph_name == name:
                graphs[key] = data
    return Bundle(folder, manifest, graphs)


def _strict_dump(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, allow_nan=False) + "\n"


def update_manifest(path: str | Path | None, edit: Callable[[dict], None]) -> dict:
    """Let `edit` change a bundle's bundle.json in place (tracker settings, measured metrics) and write
    it back atomically; `None` is the default bundle. bundle.json is not among the hashed files, so
    the bundle stays valid — as long as the edit keeps it valid, which is checked before writing."""
    bundle = load_bundle(path)
    manifest, manifest_path = bundle.manifest, bundle.path / "bundle.json"
    edit(manifest)
    problems = validate_manifest(manifest)
    if problems:
        raise BundleError(f"edit refused, it would make {manifest_path} invalid: " + "; ".join(problems))
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(_strict_dump(manifest))
    os.replace(tmp, manifest_path)
    return manifest

