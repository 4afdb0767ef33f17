"""The client's side of failures, on the plain server (no Ray needed): a lost stream is taken up again on
the same output timeline; a draining server finishes or closes its streams with a reason; a refusal
is never retried; the proxy middleware turns a vanished replica into a 1012 close with its name."""

import asyncio
import json
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from stream_s5.serve import protocol as P
from stream_s5.serve.client import RemoteEngine, ResilientEngine, ServerError
from stream_s5.serve.ray_app import ReplicaLossMiddleware
from stream_s5.serve.server import ServerThread
from tests.conftest import flatten
from tests.serve.test_server import options
from tests.test_multistream import stream_inputs
from tests.test_streampool import engine_run


def on_server_loop(server, coro_fn, timeout=10):
    return asyncio.run_coroutine_threadsafe(coro_fn(), server.server.loop).result(timeout)


def lose_stream(server, code=P.CLOSE["replica_lost"], reason="replica test lost: reconnect"):
    """What Ray's proxy (with ReplicaLossMiddleware) does when the replica dies: close with 1012."""
    srv = server.server
    conn = next(iter(srv.connections.values()))
    on_server_loop(server, lambda: srv._close(conn, code, reason))


def full(buf, n):
    """A class's audio as flatten() gives it (up to its last sample) → n samples."""
    out = np.zeros(n, np.float32)
    if buf is not None:
        out[: min(n, buf.size)] = buf[:n]
    return out


def assert_continues_after_loss(bundle, x, outs, record) -> dict:
    """One output timeline as long as the input: up to the loss what a local Engine gives, after it
    what a fresh local Engine gives on the input from the resume point. → audio per class."""
    assert contiguous(outs) == len(x) and outs[-1].final
    audio = flatten(outs)[0]
    emitted, resume, n = round(record["lost_at_s"] * 16000), round(record["resumed_at_s"] * 16000), len(x)
    before, after = engine_run(bundle, x)[0], engine_run(bundle, x[resume:])[0]
    for label in set(audio) | set(before):
        got = full(audio.get(label), n)
        np.testing.assert_allclose(got[:emitted], full(before.get(label), n)[:emitted], atol=1e-6)
        want = np.concatenate([np.zeros(resume, np.float32), full(after.get(label), n - resume)])
        np.testing.assert_allclose(got[emitted:], want[emitted:], atol=1e-6)
    return audio


def contiguous(outs):
    end = 0
    for o in outs:
        if o.length:
            assert o.start == end, (o.start, end)
            end = o.start + o.length
    return end


def test_a_lost_stream_goes_on_where_it_stopped_with_a_warmed_up_fresh_state(toy_bundle):
    x = stream_inputs(3, seconds=8.0)[2]
    lines, outs = [], []
    with ServerThread(options(toy_bundle)) as server:
        eng = ResilientEngine(server.url, input_rate=16000, warmup_s=1.0, notify=lines.append)
        first = eng.replica
        for i in range(0, len(x), 800):
            outs.append(eng.feed(x[i : i + 800]))
            time.sleep(0.003)
            if i == 16000 * 5:
                time.sleep(0.3)  # the server answers what it has, then the stream is lost
                lose_stream(server)
        outs.append(eng.flush())
        stats = eng.stats()
        eng.close()
    [record] = eng.reconnects
    assert record["code"] == 1012 and "lost" in record["reason"] and record["lost_replica"] == first
    assert stats["server"]["reconnects"] == [record] and len(stats["server"]["replicas"]) == 2
    assert lines and "reconnected" in lines[0] and "fresh state" in lines[0]
    emitted, resume = round(record["lost_at_s"] * 16000), round(record["resumed_at_s"] * 16000)
    assert record["gap_s"] == 0 and emitted - resume == 16000  # resumed warmup_s before the loss
    assert record["replayed_s"] == pytest.approx(record["at_input_s"] - record["resumed_at_s"])
    assert 3 * 16000 < emitted <= 16000 * 5 + 800
    audio = assert_continues_after_loss(toy_bundle, x, outs, record)
    events = flatten(outs)[2]
    assert audio  # something was separated
    onsets = [e for e in events if e[2] is None]
    closed = {(e[0], e[1]) for e in events if e[2] is not None}
    assert all((label, onset) in closed for label, onset, *_ in onsets)  # every onset got its end


def test_draining_lets_short_streams_finish_and_closes_the_rest_with_a_reason(toy_bundle):
    short, long = stream_inputs(2, seconds=3.0)[0], stream_inputs(2, seconds=30.0)[1]
    with ServerThread(options(toy_bundle, idle_timeout_s=20.0)) as server:
        a = RemoteEngine(server.url, input_rate=16000)
        b = RemoteEngine(server.url, input_rate=16000)
        a.feed(short[:16000])
        b.feed(long[:16000])
        on_server_loop(server, lambda: _drain(server.server, 1.5))
        with pytest.raises(ServerError) as refused:  # no new stream while draining
            RemoteEngine(server.url, input_rate=16000)
        assert refused.value.code == P.CLOSE["going_away"] and "draining" in str(refused.value)
        a.feed(short[16000:])
        assert a.flush().final and a.summary is not None  # finished within the grace period
        t0 = time.monotonic()
        with pytest.raises(ServerError) as closed:
            for i in range(16000, len(long), 1600):
                b.feed(long[i : i + 1600])
                time.sleep(0.05)
        assert time.monotonic() - t0 < 5.0
        b._done.wait(5)
        assert b.close_code == P.CLOSE["going_away"] and "draining" in (b.close_reason or "")
        assert b.lost and "draining" in str(closed.value)
        assert server.server.health()["status"] == "draining" and server.server.drained_closes == 1
        a.close(), b.close()
        deadline = time.monotonic() + 5
        while server.server.pool.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.server.pool.active  # every slot freed


async def _drain(srv, grace):
    srv.drain(grace)


def test_a_refusal_is_final_and_a_lost_stream_without_anywhere_to_go_says_so(toy_bundle):
    with ServerThread(options(toy_bundle, token="s3cret")) as server:
        with pytest.raises(ServerError) as exc:
            ResilientEngine(server.url, input_rate=16000, token="wrong")
        assert exc.value.code == P.CLOSE["policy"]
    x = stream_inputs(1)[0]
    with ServerThread(options(toy_bundle)) as server:
        eng = ResilientEngine(server.url, input_rate=16000, reconnect_window_s=1.0)
        eng.feed(x[:8000])
        on_server_loop(server, lambda: _drain(server.server, 0.0))  # closes it and refuses every new stream
        t0 = time.monotonic()
        with pytest.raises(ServerError) as exc:
            for i in range(8000, len(x), 800):
                eng.feed(x[i : i + 800])
                time.sleep(0.01)
            eng.flush()
        assert "no replica took the stream again within 1 s" in str(exc.value) and time.monotonic() - t0 < 6
        eng.close()


def test_the_proxy_middleware_closes_a_vanished_replicas_streams_with_1012_and_its_name():
    import uvicorn

    async def replica_that_dies(scope, receive, send):  # accepts, says ready, then its process is gone
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": P.dumps({"type": "ready", "replica": "StreamServer#abc"})})
        raise RuntimeError("actor died")

    async def replica_that_closes(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000, "reason": "end of stream"})

    for app, expected in ((replica_that_dies, (1012, "replica StreamServer#abc lost: reconnect")),
                          (replica_that_closes, (1000, "end of stream"))):
        uv = uvicorn.Server(uvicorn.Config(ReplicaLossMiddleware(app), host="127.0.0.1", port=0, log_level="critical",
                                           lifespan="off"))
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        while not uv.started:
            time.sleep(0.01)
        port = uv.servers[0].sockets[0].getsockname()[1]
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            got = None
            try:
                while True:
                    msg = ws.recv(timeout=5)
                    assert json.loads(msg)["replica"] == "StreamServer#abc"
            except ConnectionClosed as exc:
                got = (exc.rcvd.code, exc.rcvd.reason)
        assert got == expected
        uv.should_exit = True
        thread.join(10)
