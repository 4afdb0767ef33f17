"""stream_s5: real-time spatial semantic segmentation of sound scenes on ONNX Runtime.

Never imports torch: the torch side (training, export) lives in the `export/` folder of a checkout."""

from stream_s5.bundle import Bundle, BundleError, default_bundle_path, load_bundle
from stream_s5.engine import Backfill, BudgetError, Engine, EngineOptions, EngineOutput
from stream_s5.labels import CLASSES
from stream_s5.tracker import Event, TrackerOptions

__all__ = [
    "Backfill", "Bundle", "BundleError", "BudgetError", "CLASSES", "Engine", "EngineOptions", "EngineOutput",
    "Event", "TrackerOptions", "default_bundle_path", "load_bundle",
]
__version__ = "0.1.0"
