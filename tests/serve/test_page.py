"""The page in a real headless Chromium (Debian's `chromium`, driven by Playwright) with a fake
microphone playing a real recording: the true class's row turns active, listening delivers audio
frames, the latency counters fill."""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from stream_s5.serve.server import ServerOptions, ServerThread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RECORDING = Path(__file__).parent.parent / "data" / "real_footsteps_speech.flac"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium package (.ci/run installs it)")


def fake_capture_wav(tmp_path) -> Path:
    """The recording at 48 kHz 16-bit (what Chromium's fake capture device reads), 1 s of silence first."""
    x, rate = sf.read(RECORDING, dtype="float32")
    x = soxr.resample(np.concatenate([np.zeros(rate, np.float32), x]), rate, 48000)
    path = tmp_path / "capture.wav"
    sf.write(path, x, 48000, subtype="PCM_16")
    return path


def test_page_detects_and_plays_a_class_from_the_microphone(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    wav = fake_capture_wav(tmp_path)
    with ServerThread(ServerOptions(port=0, max_streams=2, calibrate=False)) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.http)
        expect(page.locator('.row[data-class="Speech"]')).to_have_count(1)  # rows before streaming
        page.click("#mic")
        expect(page.locator("#status")).to_have_attribute("data-state", "streaming", timeout=15_000)
        page.click('.row[data-class="Speech"] button[data-action="listen"]')
        expect(page.locator('.row[data-class="Speech"]')).to_have_attribute("data-active", "true", timeout=20_000)
        expect(page.locator('.row[data-class="Speech"]')).not_to_have_attribute("data-frames", "0", timeout=10_000)
        expect(page.locator("#hop")).to_have_text(re.compile(r"\d+\.\d / \d+\.\d ms"), timeout=10_000)
        expect(page.locator("#lag")).to_have_text(re.compile(r"\d+\.\d / \d+\.\d ms"), timeout=10_000)
        state = page.evaluate("({frames: s5.audioFrames, events: s5.events.map(e => e.label), lags: s5.lags.length,"
                              " listen: [...s5.listen]})")
        assert state["frames"] > 0 and state["listen"] == ["Speech"] and state["lags"] > 0
        assert "Speech" in state["events"]
        # only the subscribed class's audio came: other rows got no frames
        others = page.locator('.row[data-frames]:not([data-class="Speech"])')
        assert all(others.nth(i).get_attribute("data-frames") == "0" for i in range(others.count()))
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        if os.environ.get("S5_SCREENSHOT"):  # docs/images/serve_page.png is made this way
            shutil.copy(tmp_path / "page.png", os.environ["S5_SCREENSHOT"])
        page.click("#stop")
        expect(page.locator("#status")).to_have_text("finished", timeout=15_000)
        browser.close()
        assert errors == []


def test_page_reconnects_when_its_replica_is_lost_and_says_so(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tests.serve.test_client import lose_stream

    wav = fake_capture_wav(tmp_path)
    with ServerThread(ServerOptions(port=0, max_streams=2, calibrate=False)) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.http)
        page.click("#mic")
        expect(page.locator("#status")).to_have_attribute("data-state", "streaming", timeout=15_000)
        lose_stream(server)  # what Ray's proxy does when the replica dies: 1012 with the replica's name
        expect(page.locator("#status")).to_have_text(
            re.compile(r"reconnected to replica \S+ with a fresh state \(replica \S+ lost\)"), timeout=15_000)
        expect(page.locator("#reconnects")).to_have_text("1")
        record = page.evaluate("s5.reconnects[0]")
        assert record["code"] == 1012 and "lost" in record["reason"] and record["replica"]
        pool = server.server.pool.stats()
        assert pool["opened"] == 2 and pool["abandoned"] == 1  # the lost stream freed, a new one opened
        # the new stream works: the recording's speech is detected again
        expect(page.locator('.row[data-class="Speech"]')).to_have_attribute("data-active", "true", timeout=25_000)
        page.click("#stop")
        expect(page.locator("#status")).to_have_text("finished", timeout=15_000)
        browser.close()
        assert errors == []
