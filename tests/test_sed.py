"""The SED stage: the per-stream log-mel cache of a split SED equals computing every window whole,
the shipped split bundle equals its single SED graph, and a guide body (a second SED body on the same
features) conditions the separator while the first body still decides the classes."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf

from stream_s5.bundle import default_bundle_path, load_bundle
from stream_s5.engine import Engine, EngineOptions
from stream_s5.offline import frame_activity_offline
from stream_s5.sed import ActivityTimeline, MelFrameCache, SedScheduler
from stream_s5.sessions import SedModel, SeparatorModel

from .conftest import flatten, guide_reference, make_guided_bundle, make_unguided_bundle

N_FFT, WIN, MEL_HOP, WINDOW = 64, 48, 16, 512  # small numbers, the shipped bundle's geometry (context > 2 hops)


class NumpySplitSed:
    """A split SED in numpy: the front end frames the audio like the exported graph (frame j is the
    n_fft − mel_hop samples before its hop and the hop itself, a window of WIN samples centred in
    N_FFT); the 'body' returns the features it was given, so that tests see them."""

    split = True
    window, mel_hop, context = WINDOW, MEL_HOP, N_FFT - MEL_HOP

    def __init__(self):
        self.front_calls, self.front_frames = 0, 0
        self.hann = np.hanning(WIN + 1)[:-1].astype(np.float64)

    def log_mel(self, audio):
        n = (audio.shape[1] - self.context) // self.mel_hop
        offset = (N_FFT - WIN) // 2
        frames = np.stack([audio[:, j * MEL_HOP + offset : j * MEL_HOP + offset + WIN] for j in range(n)], axis=1)
        power = np.abs(np.fft.rfft(frames * self.hann, n=N_FFT)) ** 2  # [B, n, F]
        self.front_calls += 1
        self.front_frames += audio.shape[0] * n
        return np.log(power + 1e-6).transpose(0, 2, 1).astype(np.float32)

    def window_log_mel(self, audio):
        padded = np.concatenate([np.zeros((audio.shape[0], self.context), np.float32), audio], axis=1)
        return self.log_mel(padded)


def test_cached_windows_equal_whole_windows_across_hops_gaps_and_new_streams():
    model = NumpySplitSed()
    cache = MelFrameCache(model)
    assert cache.edge == 3  # ceil(48 / 16): the frames that see the window's zero pad
    rng = np.random.default_rng(0)
    streams = [rng.standard_normal(4000).astype(np.float32) for _ in range(2)]
    hop = 64  # 4 mel frames per SED hop
    # stream 0 every hop except one skipped; stream 1 joins late, then its slot gets a new stream
    schedule = [(end, [(0, 0)] + ([(1, 0)] if end >= 1024 else [])) for end in range(hop, 1600, hop) if end != 704]
    schedule += [(end, [(1, 1)]) for end in (1664, 1728)]  # identity 1: a new stream in slot 1
    schedule += [(1800, [(0, 0)])]  # not a whole number of mel hops after the last: computed whole
    for end, keys in schedule:
        audio = np.stack([np.concatenate([np.zeros(WINDOW, np.float32), streams[k]])[end : end + WINDOW] for k, _ in keys])
        got = cache.log_mel(audio, [(k, ident, end) for k, ident in keys])
        np.testing.assert_allclose(got, model.window_log_mel(audio), atol=1e-5)
    # misses: stream 0's first window, the window after the skipped hop (k = 8 is still served: hit),
    # stream 1's first window, the new stream's first window, the off-grid window
    assert cache.misses == 4
    assert cache.hits == len([k for _, keys in schedule for k in keys]) - 4


def test_cached_hop_computes_only_the_new_and_edge_frames():
    model = NumpySplitSed()
    cache = MelFrameCache(model)
    audio = np.random.default_rng(1).standard_normal((1, WINDOW + 64)).astype(np.float32)
    cache.log_mel(audio[:, :WINDOW], [(0, 0, 1000)])
    before = model.front_frames
    cache.log_mel(audio[:, 64:], [(0, 0, 1064)])
    assert model.front_frames - before == 2 * 4  # 4 new frames + the 4-frame zero-padded head, not 32
    cache.forget(0)
    cache.log_mel(audio[:, 64:], [(0, 0, 1128)])
    assert cache.misses == 2


def test_scheduler_without_keys_or_with_the_cache_off_computes_whole_windows():
    class Body(NumpySplitSed):
        def from_log_mel(self, feats):
            return feats.mean(axis=(1, 2))[:, None], feats.mean(axis=1)[:, :, None]

        def __call__(self, audio):
            return self.from_log_mel(self.window_log_mel(audio))

    model = Body()
    audio = np.random.default_rng(2).standard_normal((1, WINDOW)).astype(np.float32)
    whole_clip, whole_frame = model(audio)
    for cache_on, keys, stats in ((True, None, {"hits": 0, "misses": 0}), (False, [(0, 0, 512)], None)):
        scheduler = SedScheduler(model, WINDOW, 64, MEL_HOP, feature_cache=cache_on)
        scheduler.submit(audio, 512, 0, cache_keys=keys)
        _, results = scheduler.take()
        assert scheduler.failures == 0 and len(results) == 1
        np.testing.assert_allclose(results[0][1].clip_probs, whole_clip[0], atol=1e-6)
        np.testing.assert_allclose(results[0][1].frame_probs, whole_frame[0], atol=1e-6)
        assert scheduler.cache_stats() == stats


def test_shipped_split_bundle_equals_its_single_sed_graph():
    bundle = load_bundle()
    assert bundle.sed_front_end is not None
    model = SedModel(bundle, ["CPUExecutionProvider"])
    single = ort.InferenceSession(bundle.graph("sed"), providers=["CPUExecutionProvider"])
    audio = (0.1 * np.random.default_rng(3).standard_normal((3, model.window))).astype(np.float32)
    clip, frame = model(audio)
    ref_clip, ref_frame, _ = single.run(None, {"audio": audio})
    np.testing.assert_allclose(clip, ref_clip, atol=1e-4)
    np.testing.assert_allclose(frame, ref_frame, atol=1e-4)


@pytest.mark.parametrize("sed_worker", [False, True])
def test_engine_with_the_feature_cache_equals_the_engine_without(sed_worker):
    audio, rate = sf.read(Path(__file__).parent / "data" / "real_footsteps_speech.flac", dtype="float32")
    audio = audio[: 4 * rate]
    runs = {}
    for cache_on in (True, False):
        engine = Engine(options=EngineOptions(calibrate=False, sed_worker=sed_worker, sed_feature_cache=cache_on),
                        input_rate=rate, device="cpu")
        outs = [engine.feed(audio[i : i + 1000]) for i in range(0, len(audio), 1000)] + [engine.flush()]
        runs[cache_on] = (flatten(outs), engine.stats())
    ((audio_c, backfill_c, events_c, _), stats), ((audio_w, backfill_w, events_w, _), whole_stats) = runs[True], runs[False]
    assert stats["sed_feature_cache"]["misses"] == 1 and stats["sed_feature_cache"]["hits"] == stats["sed_calls"] - 1
    assert whole_stats["sed_feature_cache"] is None
    assert events_c, "the test recording must produce events for this comparison to mean anything"
    assert [e[:3] for e in events_c] == [e[:3] for e in events_w]
    np.testing.assert_allclose([e[3] for e in events_c], [e[3] for e in events_w], atol=1e-4)  # peaks
    assert audio_c.keys() == audio_w.keys() and len(backfill_c) == len(backfill_w)
    for label in audio_c:
        np.testing.assert_allclose(audio_c[label], audio_w[label], atol=1e-4)


@pytest.fixture(scope="module")
def guided_bundle(tmp_path_factory):
    return make_guided_bundle(default_bundle_path(), tmp_path_factory.mktemp("guided") / "bundle")


@pytest.fixture(scope="module")
def unguided_bundle(tmp_path_factory):
    """The default bundle's detector alone (it decides and guides): what a guide body is compared with."""
    return make_unguided_bundle(default_bundle_path(), tmp_path_factory.mktemp("unguided") / "bundle")


def test_a_guide_body_reads_the_cached_features_and_fills_the_activity_timeline(guided_bundle, unguided_bundle):
    bundle = load_bundle(guided_bundle)
    model, plain = SedModel(bundle, ["CPUExecutionProvider"]), SedModel(load_bundle(unguided_bundle), ["CPUExecutionProvider"])
    assert model.guided and not plain.guided
    sed = bundle.sed
    window, hop, frame_hop, frames = int(sed["window"]), int(sed["hop"]), int(sed["frame_hop"]), int(sed["frames"])
    scheduler = SedScheduler(model, window, hop, frame_hop)
    timeline = ActivityTimeline(len(bundle.classes), 4 * window // bundle.hop, bundle.hop)
    stream = (0.1 * np.random.default_rng(4).standard_normal(window + 4 * hop)).astype(np.float32)
    stream[window:] *= 5  # louder from here on: the guide's values move
    values = []
    for i, end in enumerate(range(window, len(stream) + 1, hop)):
        audio = stream[None, end - window : end]
        scheduler.submit(audio, end, i, cache_keys=[(0, 0, end)])
        _, [(_, result)] = scheduler.take()
        guide = guide_reference(model.window_log_mel(audio), frames)[0]
        np.testing.assert_allclose(result.guide_probs, guide, atol=1e-5)
        clip, frame = plain(audio)  # the detector's probabilities are the first body's, untouched
        np.testing.assert_allclose(result.clip_probs, clip[0], atol=1e-4)
        np.testing.assert_allclose(result.frame_probs, frame[0], atol=1e-4)
        timeline.write(result)
        newest = np.arange(end // bundle.hop - hop // bundle.hop, end // bundle.hop)
        expected = guide[(newest * bundle.hop - (end - window)) // frame_hop]
        np.testing.assert_allclose(timeline.get(newest, 3), expected[:, 3])
        values.append(float(guide.mean()))
    assert scheduler.cache_stats()["hits"] == len(values) - 1  # cached features went through the guide too
    assert len(set(np.round(values, 4))) > 1


def test_the_classes_in_guide_detects_are_decided_by_the_guide_body(guided_bundle, unguided_bundle, tmp_path):
    import json
    import shutil

    folder = tmp_path / "routed"
    shutil.copytree(guided_bundle, folder)
    manifest = json.loads((folder / "bundle.json").read_text())
    routed = ["Speech", "HairDryer"]
    manifest["sed"]["front_end"]["guide_detects"] = routed
    (folder / "bundle.json").write_text(json.dumps(manifest, indent=2))
    bundle = load_bundle(folder)
    model, plain = SedModel(bundle, ["CPUExecutionProvider"]), SedModel(load_bundle(unguided_bundle), ["CPUExecutionProvider"])
    columns = [bundle.classes.index(c) for c in routed]
    others = [k for k in range(len(bundle.classes)) if k not in columns]
    sed = bundle.sed
    window, hop, frame_hop, frames = int(sed["window"]), int(sed["hop"]), int(sed["frame_hop"]), int(sed["frames"])
    scheduler = SedScheduler(model, window, hop, frame_hop)
    stream = (0.1 * np.random.default_rng(5).standard_normal(window + 3 * hop)).astype(np.float32)
    for i, end in enumerate(range(window, len(stream) + 1, hop)):
        audio = stream[None, end - window : end]
        scheduler.submit(audio, end, i, cache_keys=[(0, 0, end)])
        _, [(_, result)] = scheduler.take()
        guide = guide_reference(model.window_log_mel(audio), frames)[0]
        clip, frame = plain(audio)
        np.testing.assert_allclose(result.frame_probs[:, columns], guide[:, columns], atol=1e-5)
        np.testing.assert_allclose(result.clip_probs[columns], guide.max(axis=0)[columns], atol=1e-5)
        np.testing.assert_allclose(result.frame_probs[:, others], frame[0][:, others], atol=1e-4)
        np.testing.assert_allclose(result.clip_probs[others], clip[0][others], atol=1e-4)
        np.testing.assert_allclose(result.guide_probs, guide, atol=1e-5)  # the guide still guides every class
        whole_clip, whole_frame = model(audio)  # the whole-window call (tracker tuning) reads the same
        np.testing.assert_allclose(whole_clip[0], result.clip_probs, atol=1e-5)
        np.testing.assert_allclose(whole_frame[0], result.frame_probs, atol=1e-5)
    assert scheduler.cache_stats()["hits"] > 0


def test_a_non_finite_guide_is_repaired_and_counted():
    class Guided(NumpySplitSed):
        guided = True

        def from_log_mel(self, feats):
            return np.full((len(feats), 2), 0.5, np.float32), np.full((len(feats), 8, 2), 0.5, np.float32)

        def with_guide(self, clip, frame, feats):
            out = np.full((len(feats), 8, 2), 0.25, np.float32)
            out[:, 0, 1] = np.nan
            return clip, frame, out

    scheduler = SedScheduler(Guided(), WINDOW, 64, WINDOW // 8)
    scheduler.submit(np.zeros((1, WINDOW), np.float32), WINDOW, 0, cache_keys=[(0, 0, WINDOW)])
    _, [(_, result)] = scheduler.take()
    assert scheduler.nonfinite_outputs == 1
    assert result.guide_probs[0, 1] == 0.0 and result.guide_probs[1, 1] == 0.25
    assert np.isfinite(result.activity).all() and result.activity is result.guide_probs


def test_the_engine_with_a_guide_body_keeps_the_detectors_events_and_guides_with_the_guide(guided_bundle, unguided_bundle,
                                                                                         monkeypatch):
    audio, rate = sf.read(Path(__file__).parent / "data" / "real_footsteps_speech.flac", dtype="float32")
    fed = []
    original = SeparatorModel.__call__

    def recording(self, mix, prev, class_onehot, activity, pass_index, state_in):
        fed.append(np.array(activity[:, 0]))
        return original(self, mix, prev, class_onehot, activity, pass_index, state_in)

    monkeypatch.setattr(SeparatorModel, "__call__", recording)
    runs = {}
    for name, path in (("plain", unguided_bundle), ("guided", guided_bundle)):
        fed.clear()
        # two fixed classes hold two slots every hop; the tracker still reports what the SED detects
        engine = Engine(path, classes="Speech,FootSteps", options=EngineOptions(calibrate=False), input_rate=rate,
                        device="cpu")
        outs = [engine.feed(audio[i : i + 4000]) for i in range(0, len(audio), 4000)] + [engine.flush()]
        runs[name] = (flatten(outs), [a for a in fed if len(a) > 1])
    (plain_out, plain_fed), (guided_out, guided_fed) = runs["plain"], runs["guided"]
    events = [e[:3] for e in plain_out[2]]
    assert events, "the recording must produce events for this comparison to mean anything"
    assert [e[:3] for e in guided_out[2]] == events  # the first body decides
    assert plain_fed and guided_fed
    # the guide gives every class the same value per frame; the detector's frames do not
    assert all(np.ptp(a) < 1e-6 for a in guided_fed)
    assert any(np.ptp(a) > 1e-3 for a in plain_fed)


def test_offline_processing_takes_the_classes_from_the_detector_and_the_guidance_from_the_guide(guided_bundle,
                                                                                                unguided_bundle):
    audio, rate = sf.read(Path(__file__).parent / "data" / "real_footsteps_speech.flac", dtype="float32")
    assert rate == 16000
    audio = audio[None, : 3 * rate]
    bundle, plain_bundle = load_bundle(guided_bundle), load_bundle(unguided_bundle)
    activity, clip_max, guidance = frame_activity_offline(SedModel(bundle, ["CPUExecutionProvider"]), bundle, audio)
    plain_activity, plain_clip, plain_guidance = frame_activity_offline(
        SedModel(plain_bundle, ["CPUExecutionProvider"]), plain_bundle, audio)
    np.testing.assert_allclose(activity, plain_activity, atol=1e-4)
    np.testing.assert_allclose(clip_max, plain_clip, atol=1e-4)
    assert plain_guidance is plain_activity
    assert np.ptp(guidance, axis=1).max() < 1e-6 and np.ptp(guidance[:, 0]) > 1e-3
