"""stream_s5: real-time spatial semantic segmentation of sound scenes on ONNX Runtime.

Never imports torch: the torch side (training, export) lives in the `export/` folder of a checkout.
The names below are imported on first use, so that `import stream_s5` (and the `stream-s5` command's
start, which must answer Ctrl-C quietly from the first moment) stays light."""

import importlib

_WHERE = {
    "Bundle": "bundle", "BundleError": "bundle", "default_bundle_path": "bundle", "load_bundle": "bundle",
    "Backfill": "engine", "BudgetError": "engine", "Engine": "engine", "EngineFault": "engine",
    "EngineOptions": "engine", "EngineOutput": "engine", "CLASSES": "labels", "Event": "tracker",
    "TrackerOptions": "tracker",
}
__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'stream_s5' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stream_s5.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
