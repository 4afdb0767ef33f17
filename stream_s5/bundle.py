"""Model bundles: a folder with `bundle.json` and the ONNX graphs it names (see docs/design.md).

Loading checks the format, that every file exists, and each file's sha256, so that a truncated or
mismatched download fails with a clear message rather than odd output."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Bundle", "BundleError", "load_bundle", "default_bundle_path", "update_manifest", "BUNDLE_FORMAT"]

BUNDLE_FORMAT = "stream_s5.bundle/1"


class BundleError(ValueError):
    pass


def default_bundle_path() -> Path:
    return Path(__file__).parent / "models" / "default"


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict

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
        return self.path / self.manifest[key]["file"]


_REQUIRED = {
    "separator": ("file", "n_fft", "hop", "class_slots", "passes", "max_passes", "algorithmic_latency"),
    "sed": ("file", "window", "hop", "frames", "frame_hop"),
}


def load_bundle(path: str | Path | None = None, verify: bool = True) -> Bundle:
    folder = Path(path) if path is not None else default_bundle_path()
    manifest_path = folder / "bundle.json"
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: not a model bundle (no bundle.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: invalid JSON ({exc})") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: format {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    for section, keys in _REQUIRED.items():
        missing = [k for k in keys if k not in manifest.get(section, {})]
        if missing:
            raise BundleError(f"{manifest_path}: '{section}' lacks {missing}")
    if int(manifest["separator"]["n_fft"]) % int(manifest["separator"]["hop"]):
        raise BundleError(f"{manifest_path}: n_fft must be a multiple of hop")
    if int(manifest["sed"]["hop"]) % int(manifest["separator"]["hop"]):
        raise BundleError(f"{manifest_path}: the SED hop must be a multiple of the separator hop")
    if verify:
        for name, digest in manifest.get("files", {}).items():
            file = folder / name
            if not file.is_file():
                raise BundleError(f"{folder}: missing {name}")
            actual = hashlib.sha256(file.read_bytes()).hexdigest()
            if actual != digest:
                raise BundleError(f"{file}: sha256 {actual[:12]}… does not match bundle.json ({digest[:12]}…)")
    return Bundle(folder, manifest)


def update_manifest(path: str | Path | None, edit: Callable[[dict], None]) -> dict:
    """Let `edit` change a bundle's bundle.json in place (tracker settings, measured metrics) and write
    it back atomically; `None` is the default bundle. bundle.json is not among the hashed files, so
    the bundle stays valid."""
    bundle = load_bundle(path)
    manifest, manifest_path = bundle.manifest, bundle.path / "bundle.json"
    edit(manifest)
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, manifest_path)
    return manifest
