"""The server end to end on loopback: concurrent clients equal local engines; misbehaving clients are
closed with a reason and never disturb the others; capacity, token and origin; CLI parity."""

import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from stream_s5.cli import main
from stream_s5.serve import protocol as P
from stream_s5.serve.client import RemoteEngine, ServerError
from stream_s5.serve.server import ServerOptions, ServerThread
from tests.conftest import flatten
from tests.test_multistream import stream_inputs
from tests.test_streampool import assert_same_stream, engine_run


def options(bundle, **over):
    base = dict(port=0, max_streams=6, model=str(bundle), calibrate=False, max_speed=20.0, start_timeout_s=2.0,
                idle_timeout_s=2.0)
    base.update(over)
    return ServerOptions(**base)


def stream_through(url, x, chunk=800, pace_s=0.0, rate=16000, **kw):
    outs = []
    with RemoteEngine(url, input_rate=rate, input_channels=1 if x.ndim == 1 else x.shape[1], **kw) as eng:
        for i in range(0, len(x), chunk):
            outs.append(eng.feed(x[i : i + chunk]))
            if pace_s:
                time.sleep(pace_s)
        outs.append(eng.flush())
        stats = eng.stats()
    return outs, stats


def run_clients(url, xs, **kw):
    results, errors = {}, []

    def go(i):
        try:
            results[i] = stream_through(url, xs[i], **kw)
        except Exception as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


@pytest.mark.parametrize("framing", ["step", "messages"])
def test_concurrent_clients_get_what_local_engines_give(toy_bundle, framing):
    xs = stream_inputs(4)
    with ServerThread(options(toy_bundle)) as server:
        results = run_clients(server.url, xs, pace_s=0.002, framing=framing)
        assert server.server.pool.stats()["finished"] == 4
    for i, x in enumerate(xs):
        outs, stats = results[i]
        ref = engine_run(toy_bundle, x)
        assert ref[2]  # events happened
        assert_same_stream(ref, flatten(outs))
        assert outs[-1].final and stats["server"]["replica"] and stats["server"]["lag_ms_p99"] is not None
        assert stats["repairs"]["input_samples"] == x.size


def test_the_clock_batches_streams_that_arrive_at_their_own_moments_and_output_stays_exact(toy_bundle):
    """Real-time clients whose frames arrive at different moments share the pool's hops when the server
    steps on a clock (tick 60 ms: ~3.5 of the 4 streams per hop), with outputs still equal to local runs;
    a client sending far faster than real time is not paced by the tick."""
    xs = stream_inputs(4, seconds=3.0)
    with ServerThread(options(toy_bundle, tick_ms=60.0)) as server:
        results = run_clients(server.url, xs, chunk=320, pace_s=0.02)
        pool = server.server.pool
        stream_hops = sum(-(-x.size // pool.hop) for x in xs)
        assert stream_hops / pool.frames_done > 2.5, (stream_hops, pool.frames_done)
        t0 = time.monotonic()
        stream_through(server.url, stream_inputs(1, seconds=6.0)[0], chunk=4000)
        assert time.monotonic() - t0 < 6.0 / 2  # 6 s of audio well under its duration, ticks notwithstanding
    for i, x in enumerate(xs):
        assert_same_stream(engine_run(toy_bundle, x), flatten(results[i][0]))


def test_server_options_refuse_a_bad_tick():
    for bad in (-1.0, 1001.0, float("nan")):
        with pytest.raises(ValueError, match="tick_ms"):
            ServerOptions(tick_ms=bad).check()


def raw_client(url, first=None, **kw):
    ws = connect(url, **kw).__enter__()
    if first is not None:
        ws.send(first)
    return ws


def closed_with(ws, timeout=5.0):
    """Read until the server closes → (code, reason, last JSON message)."""
    last = None
    try:
        while True:
            msg = ws.recv(timeout=timeout)
            if isinstance(msg, str):
                last = json.loads(msg)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "", last


START = P.dumps({"type": "start", "rate": 16000, "channels": 1, "format": "f32le"})


def test_misbehaving_clients_are_closed_with_a_reason_and_others_are_untouched(toy_bundle):
    xs = stream_inputs(2)
    with ServerThread(options(toy_bundle, max_frame_bytes=8192, max_messages_per_s=200)) as server:
        good = {}
        good_thread = threading.Thread(target=lambda: good.update(r=stream_through(server.url, xs[0], pace_s=0.004)))
        good_thread.start()
        url = server.url
        # garbage binary frame after a valid start
        ws = raw_client(url, START)
        ws.send(bytes([9, 0, 0, 0, 0, 0, 0, 0]) + b"junk")
        code, reason, last = closed_with(ws)
        assert code == P.CLOSE["unsupported"] and "kind 9" in reason and last["type"] == "error"
        # not JSON as the start message
        code, reason, _ = closed_with(raw_client(url, "hello"))
        assert code == P.CLOSE["bad_data"] and "JSON" in reason
        # audio before the start message
        code, reason, _ = closed_with(raw_client(url, P.pack_frame(P.AUDIO_IN, 0, b"\x00" * 8)))
        assert code == P.CLOSE["unsupported"] and "start" in reason
        # a frame over the size limit
        ws = raw_client(url, START)
        ws.send(P.pack_frame(P.AUDIO_IN, 0, np.zeros(4096, "<f4")))
        code, reason, _ = closed_with(ws)
        assert code == P.CLOSE["too_big"]
        # sequence numbers going backwards; a payload that is not whole frames
        ws = raw_client(url, START)
        ws.send(P.pack_frame(P.AUDIO_IN, 5, np.zeros(160, "<f4")))
        ws.send(P.pack_frame(P.AUDIO_IN, 3, np.zeros(160, "<f4")))
        assert closed_with(ws)[:2] == (P.CLOSE["bad_data"], "sequence number 3 after 5: frames must go forward")
        ws = raw_client(url, START)
        ws.send(P.pack_frame(P.AUDIO_IN, 0, b"\x00" * 7))
        assert closed_with(ws)[0] == P.CLOSE["bad_data"]
        # flooding messages
        ws = raw_client(url, START)
        try:
            for seq in range(5000):
                ws.send(P.pack_frame(P.AUDIO_IN, seq, np.zeros(1, "<f4")))
        except ConnectionClosed:
            pass  # closed while still sending
        code, reason, _ = closed_with(ws)
        assert code == P.CLOSE["policy"] and "messages per second" in reason
        # never sending the start message; sending nothing after it; vanishing mid-stream
        silent, idle = raw_client(url), raw_client(url, START)
        gone = raw_client(url, START)
        gone.send(P.pack_frame(P.AUDIO_IN, 0, xs[1][:8000].astype("<f4")))
        gone.socket.close()  # abrupt: no close frame
        assert closed_with(silent, 10)[:2] == (P.CLOSE["policy"], "no start message within 2 s")
        assert closed_with(idle, 10)[:2] == (P.CLOSE["policy"], "nothing received for 2 s")
        good_thread.join(120)
        deadline = time.monotonic() + 10
        while server.server.pool.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.server.pool.active == []  # every misbehaving stream's slot was freed
    outs, _ = good["r"]
    assert_same_stream(engine_run(toy_bundle, xs[0]), flatten(outs))


def test_capacity_refuses_clearly_and_slots_are_reused(toy_bundle):
    x = stream_inputs(1)[0][:32000]
    with ServerThread(options(toy_bundle, max_streams=1)) as server:
        first = RemoteEngine(server.url)
        with pytest.raises(ServerError, match="server full"):
            RemoteEngine(server.url)
        first.feed(x)
        first.flush()
        first.close()
        outs, _ = stream_through(server.url, x)  # the freed slot serves the next stream
        assert server.server.refused == 1
    assert_same_stream(engine_run(toy_bundle, x), flatten(outs))


def test_token_and_origin(toy_bundle):
    with pytest.raises(ValueError, match="needs --token"):
        ServerOptions(host="0.0.0.0", model=str(toy_bundle)).check()
    x = stream_inputs(1)[0][:16000]
    with ServerThread(options(toy_bundle, token="s3cret")) as server:
        with pytest.raises(ServerError, match="token"):
            RemoteEngine(server.url)
        with pytest.raises(ServerError, match="token"):
            RemoteEngine(server.url, token="wrong")
        outs, _ = stream_through(server.url, x, token="s3cret")
        assert outs[-1].final
        ws = raw_client(server.url + "?token=s3cret", origin="http://evil.example")
        assert closed_with(ws)[:2] == (P.CLOSE["policy"], "origin not allowed")
        ws = raw_client(server.url + "?token=s3cret", origin=f"http://127.0.0.1:{server.port}")
        ws.send(START)
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        ws.close()


def test_cli_through_a_server_writes_what_a_local_run_writes(toy_bundle, tmp_path):
    rng = np.random.default_rng(3)
    x = np.stack([stream_inputs(1)[0][:48000], rng.normal(0, 0.01, 48000)], axis=1).astype(np.float32)
    wav = tmp_path / "in.wav"
    sf.write(wav, x, 16000, subtype="FLOAT")
    with ServerThread(options(toy_bundle)) as server:
        assert main(["--input", str(wav), "--server", server.url, "--output", str(tmp_path / "remote"),
                     "--no-view"]) == 0
    assert main(["--input", str(wav), "--model", str(toy_bundle), "--output", str(tmp_path / "local"),
                 "--no-view"]) == 0
    local = sorted(p.name for p in (tmp_path / "local").glob("*.wav"))
    assert local and local == sorted(p.name for p in (tmp_path / "remote").glob("*.wav"))
    for name in local:
        a, _ = sf.read(tmp_path / "local" / name)
        b, _ = sf.read(tmp_path / "remote" / name)
        np.testing.assert_allclose(b, a, atol=1e-6)
    lines = lambda d: [json.loads(line) for line in (tmp_path / d / "events.jsonl").read_text().splitlines()]  # noqa: E731
    assert lines("remote") == lines("local")
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert summary["server"]["url"] == server.url and summary["server"]["replica"]
    assert summary["server"]["lag_ms_p50"] is not None and summary["repairs"]["downmixed"]
    assert main(["--input", str(wav), "--server", "ws://127.0.0.1:9/ws", "--no-view"]) == 2  # nobody there
