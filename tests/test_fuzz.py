"""Property-based tests (hypothesis): whatever `Engine.feed` is given, and however a bundle manifest is
mangled, the only outcomes are the documented errors (InputError, BundleError) or finite output of the
right length — never a crash, never NaN."""

import collections
import copy
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_s5 import Engine, EngineOptions
from stream_s5.bundle import BundleError, default_bundle_path, load_bundle
from stream_s5.conditioning import InputError

FAST = EngineOptions(calibrate=False, sed_worker=False)
# S5_FUZZ_EXAMPLES=300 S5_FUZZ_JSON=FILE: a longer run that writes how the mangled manifests ended
# (the counts in docs/reliability.md).
SETTINGS = settings(max_examples=int(os.environ.get("S5_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])


@pytest.fixture(scope="module")
def engines():
    return {(rate, channels): Engine(classes="auto", device="cpu", input_rate=rate, input_channels=channels, options=FAST)
            for rate in (16000, 44100) for channels in (1, 2)}


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, 1.0, -1.0, 1e300, -1e300, 1e-300, np.nan, np.inf, -np.inf, 3.5]),
)
dtypes = st.sampled_from(["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                          "bool", "complex64", "object"])


@st.composite
def feeds(draw):
    """A stream as a list of chunks: shapes, dtypes and values a careless caller might pass."""
    rate, channels = draw(st.sampled_from([(16000, 1), (16000, 2), (44100, 1), (44100, 2)]))
    chunks = []
    for _ in range(draw(st.integers(1, 5))):
        n = draw(st.sampled_from([0, 1, 7, 127, 128, 129, 1000, 4410]))
        layout = draw(st.sampled_from(["ok", "ok", "ok", "1d", "3d", "0d", "wrong_channels", "transposed"]))
        shape = {"ok": (n, channels), "1d": (n,), "3d": (n, channels, 1), "0d": (), "wrong_channels": (n, channels + 1),
                 "transposed": (channels, n)}[layout]
        dtype = draw(dtypes)
        fill = draw(values)
        x = np.full(shape, fill) if dtype in ("float16", "float32", "float64", "object", "complex64") else None
        if x is None:
            info = np.iinfo(dtype) if dtype != "bool" else None
            x = np.full(shape, draw(st.integers(info.min, info.max)) if info else True)
        with np.errstate(over="ignore", invalid="ignore"):  # the overflow to inf is the point
            chunks.append(x.astype(dtype))
    return rate, channels, chunks


@SETTINGS
@given(feeds())
def test_feed_gives_documented_errors_or_finite_output_of_the_right_length(engines, stream):
    rate, channels, chunks = stream
    engine = engines[(rate, channels)]
    engine.reset()
    outputs, fed = [], 0
    for chunk in chunks:
        try:
            out = engine.feed(chunk)
        except InputError:
            continue  # documented: the chunk is refused, the stream goes on
        fed += np.asarray(chunk).reshape(-1, channels).shape[0] if np.asarray(chunk).ndim == 2 else np.asarray(chunk).size
        outputs.append(out)
    outputs.append(engine.flush())
    total = sum(o.length for o in outputs)
    assert engine.conditioner.counters.input_samples == fed  # only accepted chunks count, each by its frames
    assert total == round(fed * 16000 / rate)
    for out in outputs:
        for audio in out.audio.values():
            assert audio.dtype == np.float32 and np.isfinite(audio).all()
        for bf in out.backfill:
            assert np.isfinite(bf.audio).all()
        for event in out.events:
            assert np.isfinite(event.onset) and np.isfinite(event.peak)


# ---------------------------------------------------------------- mangled manifests


@pytest.fixture(scope="module")
def bundle_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "bundle"
    shutil.copytree(default_bundle_path(), folder)
    return folder


MANIFEST = json.loads((default_bundle_path() / "bundle.json").read_text())
OUTCOMES: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def outcome_counts():
    yield OUTCOMES
    if os.environ.get("S5_FUZZ_JSON") and OUTCOMES:
        with open(os.environ["S5_FUZZ_JSON"], "w") as f:
            json.dump({"examples_setting": SETTINGS.max_examples, "outcomes": dict(OUTCOMES),
                       "note": "hypothesis runs each example once, plus replays of failures (none when the test passes)"},
                      f, indent=1)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "provenance":
                yield from _paths(item, prefix + (key,))
    elif isinstance(value, list) and len(value) < 40:
        for i, item in enumerate(value):
            yield from _paths(item, prefix + (i,))


PATHS = [p for p in _paths(MANIFEST) if p]
junk = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=12), st.just("../../etc/passwd"), st.lists(st.integers(-3, 3), max_size=3),
                 st.builds(dict), st.builds(list))


@st.composite
def mangled(draw):
    manifest = copy.deepcopy(MANIFEST)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = manifest
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(junk)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced the parent
    return manifest


@SETTINGS
@given(mangled())
def test_mangled_manifests_give_bundle_errors_or_a_working_engine(bundle_folder, manifest):
    (bundle_folder / "bundle.json").write_text(json.dumps(manifest))
    try:
        bundle = load_bundle(bundle_folder)
    except BundleError:
        OUTCOMES["refused_at_loading"] += 1
        return
    try:
        engine = Engine(bundle, classes="auto", device="cpu", options=FAST)
    except BundleError:
        OUTCOMES["refused_by_the_graph_check"] += 1
        return  # documented: a manifest that disagrees with the graphs
    OUTCOMES["valid_and_running"] += 1
    out = [engine.feed(np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1), engine.flush()]
    assert sum(o.length for o in out) == 8000
    assert all(np.isfinite(a).all() for o in out for a in o.audio.values())
