"""The `stream-s5` command end to end, on files it never saw, bad input, Ctrl-C and a real
PortAudio device (PulseAudio null sink)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stream_s5.cli import main
from stream_s5.metrics import snr
from stream_s5.synth.scenes import SceneConfig, generate_scene
from stream_s5.synth.soundbank import Soundbank

CLI = [sys.executable, "-m", "stream_s5.cli"]


@pytest.fixture(scope="module")
def scene():
    cfg = SceneConfig(sr=16000, duration=8.0, p_no_target=0.0, min_targets=2, max_targets=2, max_interferers=1)
    return generate_scene(cfg, 424242, Soundbank.procedural(16000, 777))


def run_cli(args, tmp_path):
    code = main(args)
    summary = json.loads((tmp_path / "summary.json").read_text()) if (tmp_path / "summary.json").exists() else None
    return code, summary


def test_list_classes(capsys):
    assert main(["--list-classes"]) == 0
    assert len(capsys.readouterr().out.split()) == 18


def test_file_end_to_end_detects_and_separates(scene, tmp_path):
    wav = tmp_path / "scene.wav"
    sf.write(wav, scene.mixture.T, 16000, subtype="FLOAT")
    out = tmp_path / "out"
    code, summary = run_cli(["--input", str(wav), "--classes", "auto", "--output", str(out), "--no-view"], out)
    assert code == 0
    truth = set(scene.labels)
    detected = set(summary["detected_classes"])
    assert detected & truth, f"none of {truth} detected (got {detected})"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert {e["label"] for e in events if e["type"] == "event"} == detected
    for label in summary["outputs"]:
        est, rate = sf.read(out / f"{label}.wav", dtype="float32")
        assert rate == 16000 and est.shape == (scene.mixture.shape[1],)  # exactly the input length
    for label in detected & truth:
        est = sf.read(out / f"{label}.wav", dtype="float32")[0]
        ref = scene.sources[label]
        assert snr(est, ref) > snr(scene.mixture[0], ref), f"{label}: no SNR improvement"


def test_other_rates_and_channels_keep_length(scene, tmp_path):
    import soxr

    stereo = soxr.resample(np.stack([scene.mixture[0], scene.mixture[0] * 0.5], axis=1), 16000, 44100)
    wav = tmp_path / "scene44k.wav"
    sf.write(wav, stereo, 44100, subtype="PCM_16")
    out = tmp_path / "out"
    code, summary = run_cli(["--input", str(wav), "--classes", "Speech,Doorbell", "--output", str(out), "--no-view"], out)
    assert code == 0 and summary["repairs"]["resampled"] and summary["repairs"]["downmixed"]
    for label in ("Speech", "Doorbell"):
        est, rate = sf.read(out / f"{label}.wav")
        assert rate == 44100 and est.shape == (stereo.shape[0],)


@pytest.mark.parametrize("kind", ["nan", "silence", "dc", "loud", "quiet", "odd_rate"])
def test_bad_but_readable_input_is_repaired_not_fatal(kind, tmp_path):
    rate = 7999 if kind == "odd_rate" else 16000
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(rate * 3) * 0.05).astype(np.float32)
    if kind == "nan":
        x[1000:1100] = np.nan
        x[5000] = np.inf
    elif kind == "silence":
        x[:] = 0
    elif kind == "dc":
        x[:] = 0.7
    elif kind == "loud":
        x *= 1000
    elif kind == "quiet":
        x /= 1000
    wav = tmp_path / "in.wav"
    sf.write(wav, x, rate, subtype="FLOAT")
    out = tmp_path / "out"
    code, summary = run_cli(["--input", str(wav), "--classes", "auto", "--output", str(out), "--no-view"], out)
    assert code == 0
    if kind == "nan":
        assert summary["repairs"]["nonfinite_samples"] == 101
    if kind == "loud":
        assert summary["repairs"]["clipped_samples"] > 0
    if kind == "silence":
        assert summary["detected_classes"] == []
    for label in summary["outputs"]:
        est, r = sf.read(out / f"{label}.wav")
        assert r == rate and est.shape == (x.size,) and np.isfinite(est).all()


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "missing"])
def test_unreadable_input_is_a_clear_error(kind, tmp_path, capsys):
    path = tmp_path / "bad.wav"
    if kind == "text":
        path.write_text("this is not audio\n" * 100)
    elif kind == "truncated":
        sf.write(path, np.zeros(16000, np.float32), 16000)
        path.write_bytes(path.read_bytes()[:30])
    elif kind == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    code = main(["--input", str(path), "--output", str(tmp_path / "o"), "--no-view"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error" in err and str(path.name) in err


def test_wrong_channel_count_via_api_is_clear():
    from stream_s5 import Engine, EngineOptions
    from stream_s5.conditioning import InputError

    engine = Engine(classes="auto", input_channels=2, options=EngineOptions(calibrate=False))
    with pytest.raises(InputError, match="channel"):
        engine.feed(np.zeros((100, 3), np.float32))


def test_sigint_leaves_valid_flushed_files(scene, tmp_path):
    wav = tmp_path / "long.wav"
    sf.write(wav, np.tile(scene.mixture[0], 3), 16000)
    out = tmp_path / "out"
    proc = subprocess.Popen(CLI + ["--input", str(wav), "--classes", "Speech", "--output", str(out), "--realtime",
                                   "--no-view"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and 0.5 < summary["input_seconds"] < 20
    est, rate = sf.read(out / "Speech.wav")
    assert est.shape == (round(summary["input_seconds"] * 16000),)


@pytest.fixture
def null_sink():
    if not shutil.which("pulseaudio") or not shutil.which("paplay"):
        pytest.skip("PulseAudio is not installed (CI installs it): no audio device for the microphone path")
    subprocess.run(["pulseaudio", "--kill"], capture_output=True)
    started = subprocess.run(["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--load=module-native-protocol-unix",
                              "--load=module-null-sink sink_name=s5"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"PulseAudio would not start: {started.stderr.strip()[:200]}")
    time.sleep(1.0)
    yield "s5"
    subprocess.run(["pulseaudio", "--kill"], capture_output=True)


def capture_from_mic(null_sink: str, wav, out, rate: int, seconds: float) -> dict:
    """Run the CLI on the null sink's monitor as a microphone while paplay plays `wav` into the sink;
    returns summary.json."""
    env = {**os.environ, "PULSE_SOURCE": f"{null_sink}.monitor"}
    rec = subprocess.Popen(CLI + ["--input", "mic", "--input-device", "pulse", "--rate", str(rate), "--channels", "1",
                                  "--duration", str(seconds), "--classes", "auto", "--output", str(out), "--no-view"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    subprocess.run(["paplay", f"--device={null_sink}", str(wav)], check=True, timeout=30)
    _, stderr = rec.communicate(timeout=60)
    assert rec.returncode == 0, stderr
    return json.loads((out / "summary.json").read_text())


def test_microphone_path_on_a_real_device(null_sink, scene, tmp_path):
    wav = tmp_path / "play.wav"
    sf.write(wav, scene.mixture[0], 16000, subtype="PCM_16")
    out = tmp_path / "out"
    summary = capture_from_mic(null_sink, wav, out, rate=16000, seconds=9)
    assert summary["input_seconds"] == pytest.approx(9.0, abs=0.05)
    assert summary["input_rms_dbfs"] > -40, "the device delivered silence"
    assert set(summary["detected_classes"]) & set(scene.labels), (summary["detected_classes"], scene.labels)
    for label in summary["outputs"]:
        est, rate = sf.read(out / f"{label}.wav")
        assert rate == 16000 and est.shape == (9 * 16000,)


REAL = Path(__file__).parent / "data" / "real_footsteps_speech.flac"


@pytest.mark.xfail(reason="TEMPORARY: the shipped bundle predates the real-recordings retrain", strict=False)
def test_microphone_path_detects_the_classes_of_a_real_recording(null_sink, tmp_path):
    """A recorded scene (validation-split recordings of allowed packages, tests/data/README.md) played into
    the null sink and captured as a microphone: both true classes detected, at most one false class."""
    truth = json.loads(REAL.with_suffix(".json").read_text())["labels"]
    wav = tmp_path / "real.wav"
    audio, rate = sf.read(REAL)
    sf.write(wav, audio, rate, subtype="PCM_16")
    summary = capture_from_mic(null_sink, wav, tmp_path / "out", rate=48000, seconds=9.5)
    assert summary["input_rms_dbfs"] > -45, "the device delivered silence"
    detected = set(summary["detected_classes"])
    assert set(truth) <= detected, (sorted(detected), truth)
    assert len(detected - set(truth)) <= 1, (sorted(detected), truth)


def test_playback_of_a_class_on_a_real_device(null_sink, tmp_path):
    # demo input paced in real time, the Speech stream played into the null sink while it runs
    out = tmp_path / "out"
    env = {**os.environ, "PULSE_SINK": null_sink}
    result = subprocess.run(CLI + ["--input", "demo", "--duration", "3", "--realtime", "--classes", "Speech",
                                   "--play", "Speech", "--output-device", "pulse", "--output", str(out), "--no-view"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_seconds"] == pytest.approx(3.0, abs=0.01)
    assert summary["playback_underflow_frames"] >= 0
