"""`stream-s5 serve`: one process, one StreamPool, many WebSocket streams, and the monitoring page.

    stream-s5 serve                                   # http://127.0.0.1:8765/ (page) and ws://…/ws
    stream-s5 serve --host 0.0.0.0 --token SECRET     # other hosts: a token and an Origin check

Stack: Starlette (ASGI routing, WebSockets, static files) on uvicorn — maintained, small, and what
Ray Serve's ingress speaks too, so the same app runs there (issue: scale-out).

Per connection, one `Connection` object (state of one stream); one batching loop per process runs
`StreamPool.step` on a worker thread whenever some stream has a whole hop queued, so the streams that
are ready at the same time share every ONNX call; joining, pausing and leaving touch only that
stream. Everything that changes the pool's slots (open, close, step) runs on that one worker thread,
in order; the event loop only receives, conditions input (`push`) and sends.

Limits per connection: frame size (`max_frame_bytes`), messages per second, input pace (at most
`max_speed` × real time; a faster client is slowed by TCP back-pressure: the server stops reading),
start and idle time-outs, a bounded send queue (audio for a client that does not read is dropped and
counted). Each breach closes only that connection, with a close code and reason (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from stream_s5.bundle import load_bundle
from stream_s5.conditioning import InputError
from stream_s5.engine import BudgetError, EngineOptions, EngineOutput
from stream_s5.serve import protocol as P
from stream_s5.streampool import PoolFull, StreamPool

__all__ = ["ServerOptions", "StreamServer", "create_app", "run_server", "ServerThread"]

STATIC = Path(__file__).parent / "static"


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    max_streams: int = 16
    model: str | None = None
    classes_per_stream: int | None = None  # separator slots per stream (default: the bundle's)
    refine: int | str | None = None
    device: str = "cpu"
    threads: int = 1
    budget_ms: float | None = None
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()  # besides the server's own
    max_frame_bytes: int = 256 * 1024
    max_messages_per_s: float = 400.0
    max_speed: float = 2.0  # input pace limit, × real time
    start_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    activity_hz: float = 20.0
    timing_interval_s: float = 1.0
    send_queue: int = 512  # messages waiting for a slow client before its audio is dropped
    max_hops_per_step: int = 4
    # The pool steps at most once per tick: streams whose audio arrives within a tick share its hops'
    # ONNX calls. Stepping whenever one stream is ready runs about one stream per hop (its clients' frames
    # arrive at their own moments) and pays the per-hop cost for each: docs/server.md, "Stepping on a clock".
    tick_ms: float = 16.0
    replica: str | None = None  # name reported to clients (default host:pid)
    calibrate: bool = True
    drain_grace_s: float = 30.0  # when draining: how long running streams may go on before they are closed

    def check(self):
        if not 1 <= self.max_streams <= 4096:
            raise ValueError(f"--max-streams must be in 1..4096, not {self.max_streams}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, not {self.port}")
        if not _is_loopback(self.host) and not self.token:
            raise ValueError(f"binding {self.host} (not loopback) needs --token: anyone who can reach it could "
                             "stream audio to it and listen to the separated classes")
        for name in ("max_frame_bytes", "max_messages_per_s", "max_speed", "start_timeout_s", "idle_timeout_s",
                     "activity_hz", "timing_interval_s", "drain_grace_s"):
            value = getattr(self, name)
            if not value > 0 or value != value or value == float("inf"):
                raise ValueError(f"{name} must be a positive finite number, not {value!r}")
        if not 0 <= self.tick_ms <= 1000:
            raise ValueError(f"tick_ms must be in 0..1000, not {self.tick_ms!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _percentiles(values) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    v = np.asarray(values, np.float64)
    return float(np.percentile(v, 50)), float(np.percentile(v, 99))


@dataclass
class Connection:
    """One stream's connection state."""

    ws: WebSocket
    request: P.StartRequest
    sid: int
    subscribed: set[str]
    opened_at: float = field(default_factory=time.monotonic)
    next_seq: int = 0
    dropped_frames: int = 0  # sequence gaps: frames the client lost before sending
    dropped_out_frames: int = 0  # audio messages not sent because the client did not read
    late_outputs: int = 0  # outputs whose lag (input received → output sent) exceeded late_ms
    input_seconds: float = 0.0
    pending: deque = field(default_factory=deque)  # (seq, cumulative samples at the bundle rate, received at)
    queued_total: int = 0  # conditioned samples pushed so far
    lags_ms: deque = field(default_factory=lambda: deque(maxlen=4096))
    last_activity: float = 0.0
    last_timing: float = 0.0
    outbox: asyncio.Queue | None = None
    ended: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class StreamServer:
    """The pool, the batching loop and the connections of one process."""

    LATE_MS = 100.0

    def __init__(self, options: ServerOptions):
        options.check()
        self.options = options
        self.bundle = load_bundle(options.model)
        self.pool = StreamPool(self.bundle, capacity=options.max_streams, refine=options.refine, device=options.device,
                               options=EngineOptions(threads=options.threads, budget_ms=options.budget_ms,
                                                     calibrate=False),
                               slots_per_stream=options.classes_per_stream)
        # The worst case (every slot of every stream busy, every SED due at once) is timed, and a pool
        # beyond it is served with a warning, not refused: auto-class streams keep most slots free.
        self.capacity_warning = None
        if options.calibrate:
            try:
                self.pool.calibrate(refine_auto=options.refine == "auto")
            except BudgetError as exc:
                self.capacity_warning = f"warning: {exc}"
        self.replica = options.replica or f"{socket.gethostname()}:{os.getpid()}"
        self.connections: dict[int, Connection] = {}
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="stream_s5-serve")
        self.wake: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_task: asyncio.Task | None = None
        self.draining = False
        self.drain_task: asyncio.Task | None = None
        self.port = options.port
        self.refused = 0
        self.drained_closes = 0  # streams closed because the grace period of a drain ran out

    # ------------------------------------------------------------------ lifecycle
    async def start(self):
        self.loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        self.loop_task = asyncio.create_task(self._batching_loop())

    def drain(self, grace_s: float | None = None) -> asyncio.Task:
        """Stop taking streams; the running ones may finish within `grace_s`, then are closed with
        1001 and a reason (their clients reconnect elsewhere). Called by a scale-down (Ray Serve replica
        leaving) or an operator; idempotent."""
        self.draining = True
        if self.drain_task is None:
            grace = self.options.drain_grace_s if grace_s is None else grace_s
            self.drain_task = asyncio.create_task(self._drain(grace))
        return self.drain_task

    async def _drain(self, grace_s: float):
        deadline = time.monotonic() + grace_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections.values()):
            self.drained_closes += 1
            self._send(conn, {"type": "error", "code": P.CLOSE["going_away"],
                              "message": f"replica {self.replica} is draining (scale-down): reconnect"})
            await self._close(conn, P.CLOSE["going_away"], f"replica {self.replica} draining: reconnect")

    async def stop(self):
        self.draining = True
        if self.drain_task is not None:
            self.drain_task.cancel()
        for conn in list(self.connections.values()):
            await self._close(conn, P.CLOSE["going_away"], "server shutting down")
        if self.loop_task:
            self.loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.loop_task
        self.worker.shutdown(wait=True)
        self.pool.close_pool()

    async def _on_worker(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    # ------------------------------------------------------------------ batching loop
    async def _batching_loop(self):
        tick = self.options.tick_ms / 1000.0
        next_step = time.monotonic()
        while True:
            delay = next_step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.pool.ready():
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 0.05)
                self._periodic()
                continue
            # The next step comes a tick after this one starts. A step that overruns its tick is followed at
            # once (then every stream with queued audio shares it), and so is one that left a stream a whole
            # step behind (a client sending faster than real time must not be paced by the tick).
            next_step = time.monotonic() + tick
            try:
                outs = await self._on_worker(self.pool.step, self.options.max_hops_per_step)
            except Exception as exc:  # an engine failure must not take the other streams down silently
                for conn in list(self.connections.values()):
                    await self._close(conn, P.CLOSE["internal"], f"engine error: {type(exc).__name__}: {exc}")
                continue
            if self.pool.ready(self.options.max_hops_per_step):
                next_step = 0.0
            now = time.monotonic()
            for sid, out in outs.items():
                conn = self.connections.get(sid)
                if conn is not None:
                    self._deliver(conn, out, now)
            self._periodic()

    def _deliver(self, conn: Connection, out: EngineOutput, now: float):
        pool, hop = self.pool, self.pool.hop
        try:
            consumed = pool.info(conn.sid).hops * hop
        except KeyError:  # finished in this step
            consumed = conn.queued_total
        seq = None
        while conn.pending and conn.pending[0][1] <= consumed:
            seq, _, received = conn.pending.popleft()
            lag = (now - received) * 1000.0
            conn.lags_ms.append(lag)
            if lag > self.LATE_MS:
                conn.late_outputs += 1
        sent_audio = [label for label in out.audio if label in conn.subscribed]
        backfills = [b for b in out.backfill if b.label in conn.subscribed]
        output = {"type": "output", "start": out.start, "length": out.length, "final": out.final,
                  "input_seq": seq, "classes": sorted(out.audio), "audio": sent_audio,
                  "backfills": [{"label": b.label, "start": b.start, "length": int(b.audio.size)} for b in backfills],
                  "events": [e.to_dict() for e in out.events]}
        activity_due = not out.final and now - conn.last_activity >= 1.0 / self.options.activity_hz
        if activity_due:
            conn.last_activity = now
        parts = [out.audio[label] for label in sent_audio] + [b.audio for b in backfills]
        if conn.request.framing == "step":
            if activity_due:
                output["activity"] = self._activity(conn, out)
            if parts and self._outbox_full(conn):
                # the client does not read: its audio goes, its state stays (as with separate frames)
                conn.dropped_out_frames += len(parts)
                output.update(audio=[], backfills=[], dropped_audio=len(parts))
                parts = []
            conn.outbox.put_nowait(P.pack_step(self._named(output), parts))
        else:
            self._send(conn, output)
            classes = self.bundle.classes
            for label in sent_audio:
                self._send(conn, P.pack_frame(P.CLASS_AUDIO, out.start, out.audio[label].astype("<f4"),
                                              classes.index(label)), audio=True)
            for b in backfills:
                self._send(conn, P.pack_frame(P.BACKFILL, b.start, b.audio.astype("<f4"), classes.index(b.label)),
                           audio=True)
            if activity_due:
                self._send(conn, self._activity(conn, out))
        if out.final:
            self._send(conn, {"type": "end", **self._stream_summary(conn, pool.pop_report(conn.sid))})
            conn.finished.set()

    def _activity(self, conn: Connection, out: EngineOutput) -> dict:
        pool, sid = self.pool, conn.sid
        probs = pool.latest_activity(sid)
        return {"type": "activity", "t": (out.start + out.length) / pool.rate,
                "probs": [round(float(p), 4) for p in probs],
                "active": sorted({e.label for e in pool.open_events(sid)}),
                "slots": pool.slot_labels(sid)}

    def _periodic(self):
        now = time.monotonic()
        for conn in list(self.connections.values()):
            if not conn.ended and now - conn.last_timing >= self.options.timing_interval_s:
                conn.last_timing = now
                self._send(conn, {"type": "timing", **self._timing(conn)})

    def _timing(self, conn: Connection) -> dict:
        block = self.pool.timers["block"].summary()
        lag50, lag99 = _percentiles(conn.lags_ms)
        queued = self.pool.info(conn.sid).queued if self.pool.is_open(conn.sid) else 0
        return {"hop_ms": 1000.0 * self.pool.hop / self.pool.rate, "budget_ms": self.pool.budget_ms,
                "hop_ms_p50": block.get("p50_ms"), "hop_ms_p99": block.get("p99_ms"),
                "deadline_misses": self.pool.deadline_misses, "lag_ms_p50": lag50, "lag_ms_p99": lag99,
                "queued_ms": 1000.0 * queued / self.pool.rate, "dropped_frames": conn.dropped_frames,
                "late_outputs": conn.late_outputs, "dropped_out_frames": conn.dropped_out_frames,
                "streams": len(self.pool.active), "capacity": self.pool.capacity,
                "algorithmic_latency_ms": 1000.0 * self.bundle.algorithmic_latency / self.pool.rate}

    def _stream_summary(self, conn: Connection, report: dict | None) -> dict:
        lag50, lag99 = _percentiles(conn.lags_ms)
        return {"stream": conn.sid, "replica": self.replica, "input_seconds": conn.input_seconds,
                **(report or {}),
                "server": {**self.identity(), "lag_ms_p50": lag50, "lag_ms_p99": lag99},
                "timing": self._timing(conn), "pool": self.pool.stats()}

    def _send(self, conn: Connection, message: dict | bytes, audio: bool = False):
        """Queue a JSON message (every one names the replica: behind a load balancer the client can
        tell which process it talks to) or a binary audio frame."""
        if audio and self._outbox_full(conn):
            conn.dropped_out_frames += 1  # the client does not read: its audio goes, its state messages stay
            return
        conn.outbox.put_nowait(message if isinstance(message, bytes) else P.dumps(self._named(message)))

    def _outbox_full(self, conn: Connection) -> bool:
        """The client has not read `send_queue` messages: audio for it is dropped from now on."""
        return conn.outbox.qsize() >= self.options.send_queue

    def _named(self, message: dict) -> dict:
        return {**message, "replica": self.replica}

    # ------------------------------------------------------------------ connections
    def _origin_allowed(self, origin: str | None) -> bool:
        if origin is None:  # not a browser: the token (if any) decides
            return True
        own = {f"http://{self.options.host}:{self.port}", f"https://{self.options.host}:{self.port}"}
        if _is_loopback(self.options.host):
            own |= {f"http://{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]")}
        return origin in own or origin in self.options.allowed_origins

    def _token_ok(self, ws: WebSocket) -> bool:
        if not self.options.token:
            return True
        given = ws.query_params.get("token") or ws.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return bool(given) and secrets.compare_digest(given, self.options.token)

    async def handle(self, ws: WebSocket):
        # accepted first, so that a refusal carries its reason (a refused handshake is a bare HTTP 403)
        await ws.accept()
        if not self._origin_allowed(ws.headers.get("origin")):
            await self._send_error_and_close(ws, P.CLOSE["policy"], "origin not allowed")
            return
        if not self._token_ok(ws):
            await self._send_error_and_close(ws, P.CLOSE["policy"], "missing or wrong token")
            return
        conn = None
        sender = None
        try:
            try:
                first = await asyncio.wait_for(ws.receive(), self.options.start_timeout_s)
            except asyncio.TimeoutError:
                raise P.ProtocolError(f"no start message within {self.options.start_timeout_s:g} s", "policy") from None
            if first["type"] == "websocket.disconnect":
                return
            if first.get("text") is None:
                raise P.ProtocolError("the first message must be the JSON start message", "unsupported")
            request = P.parse_start(first["text"], self.bundle.classes)
            if self.draining:
                raise P.ProtocolError("server is draining: connect to another replica", "going_away")
            try:
                sid = await self._on_worker(self.pool.open, request.classes, request.rate, request.channels)
            except PoolFull as exc:
                self.refused += 1
                raise P.ProtocolError(f"server full: {exc}; try again later", "full") from None
            except (ValueError, InputError) as exc:
                raise P.ProtocolError(str(exc)) from None
            conn = Connection(ws, request, sid, set(request.subscribe), outbox=asyncio.Queue())
            self.connections[sid] = conn
            sender = asyncio.create_task(self._sender(conn))
            b = self.bundle
            self._send(conn, {
                "type": "ready", "version": P.VERSION, "stream": sid, "replica": self.replica,
                "server": self.identity(),
                "classes": list(b.classes), "rate": b.sample_rate, "channels": b.channels, "hop": b.hop,
                "algorithmic_latency": b.algorithmic_latency, "bundle": b.manifest.get("name", b.path.name),
                "fixed_classes": None if request.classes == "auto" else list(request.classes),
                "framing": request.framing,
                "limits": {"max_frame_bytes": self.options.max_frame_bytes,
                           "max_messages_per_s": self.options.max_messages_per_s, "max_speed": self.options.max_speed,
                           "idle_timeout_s": self.options.idle_timeout_s},
            })
            await self._receive_loop(conn)
            # end of stream: wait for the final output (the batching loop flushes it)
            await asyncio.wait_for(conn.finished.wait(), 60.0)
            await self._close(conn, P.CLOSE["normal"], "end of stream")
        except P.ProtocolError as exc:
            if conn is None:
                await self._send_error_and_close(ws, exc.close, str(exc))
            else:
                self._send(conn, {"type": "error", "message": str(exc), "code": exc.close})
                await self._close(conn, exc.close, str(exc)[:120])
        except (WebSocketDisconnect, RuntimeError, asyncio.TimeoutError):
            pass  # the client went away: its stream is abandoned below
        finally:
            if conn is not None:
                self.connections.pop(conn.sid, None)
                if self.pool.is_open(conn.sid) and not conn.finished.is_set():
                    await self._on_worker(self.pool.close, conn.sid)
                if sender is not None:
                    conn.outbox.put_nowait(None)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(sender, 5.0)

    async def _send_error_and_close(self, ws: WebSocket, code: int, reason: str):
        with contextlib.suppress(Exception):
            await ws.send_text(P.dumps(self._named({"type": "error", "message": reason, "code": code})))
            await ws.close(code, reason[:120])

    async def _receive_loop(self, conn: Connection):
        ws, request, opts = conn.ws, conn.request, self.options
        bucket, bucket_t = opts.max_messages_per_s, time.monotonic()
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), opts.idle_timeout_s)
            except asyncio.TimeoutError:
                raise P.ProtocolError(f"nothing received for {opts.idle_timeout_s:g} s", "policy") from None
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1006))
            now = time.monotonic()
            bucket = min(opts.max_messages_per_s, bucket + (now - bucket_t) * opts.max_messages_per_s)
            bucket_t = now
            bucket -= 1
            if bucket < -opts.max_messages_per_s:  # a second's worth over the limit
                raise P.ProtocolError(f"more than {opts.max_messages_per_s:g} messages per second", "policy")
            if msg.get("text") is not None:
                control = P.parse_control(msg["text"])
                if control["type"] == "end":
                    await self._on_worker(self.pool.end, conn.sid)
                    conn.ended = True
                    self.wake.set()
                    return
                if control["type"] == "subscribe":
                    conn.subscribed = set(P.parse_subscribe(control.get("classes", []), self.bundle.classes))
                elif control["type"] == "ping":
                    self._send(conn, {"type": "pong", "t": control.get("t")})
                continue
            data = msg.get("bytes")
            if data is None:
                continue
            if len(data) > opts.max_frame_bytes + P.HEADER.size:
                raise P.ProtocolError(f"frame of {len(data)} bytes over the limit of {opts.max_frame_bytes}", "too_big")
            kind, _, seq, payload = P.unpack_frame(data)
            if kind != P.AUDIO_IN:
                raise P.ProtocolError(f"clients send audio frames (kind {P.AUDIO_IN}), not kind {kind}", "unsupported")
            if seq < conn.next_seq:
                raise P.ProtocolError(f"sequence number {seq} after {conn.next_seq - 1}: frames must go forward")
            conn.dropped_frames += seq - conn.next_seq
            conn.next_seq = seq + 1
            samples = P.decode_audio(payload, request)
            try:  # conditioning (resampling) of a large frame off the event loop
                conn.queued_total = await asyncio.get_running_loop().run_in_executor(
                    None, self.pool.push, conn.sid, samples) if samples.shape[0] > 4096 \
                    else self.pool.push(conn.sid, samples)
            except InputError as exc:
                raise P.ProtocolError(str(exc)) from None
            conn.pending.append((seq, conn.queued_total, time.monotonic()))
            conn.input_seconds += samples.shape[0] / request.rate
            self.wake.set()
            # input pace limit: stop reading (TCP back-pressure) while ahead of max_speed × real time
            ahead = conn.input_seconds - (time.monotonic() - conn.opened_at) * opts.max_speed - 1.0
            if ahead > 0:
                await asyncio.sleep(ahead / opts.max_speed)

    async def _sender(self, conn: Connection):
        try:
            while True:
                message = await conn.outbox.get()
                if message is None:
                    return
                if isinstance(message, bytes):
                    await conn.ws.send_bytes(message)
                else:
                    await conn.ws.send_text(message)
        except Exception:
            return  # the client went away; the receive side notices too

    async def _close(self, conn: Connection, code: int, reason: str):
        conn.outbox.put_nowait(None)
        await asyncio.sleep(0)
        with contextlib.suppress(Exception):
            # let the sender finish what is queued, then close
            for _ in range(200):
                if conn.outbox.empty():
                    break
                await asyncio.sleep(0.01)
            await conn.ws.close(code, reason[:120])

    # ------------------------------------------------------------------ HTTP
    def identity(self) -> dict:
        """Where this stream runs: what an operator needs to find the process (logs, a kill, a profile)."""
        return {"replica": self.replica, "host": socket.gethostname(), "pid": os.getpid()}

    def health(self) -> dict:
        return {"status": "draining" if self.draining else "ok", "replica": self.replica, "pid": os.getpid(),
                "drained_closes": self.drained_closes,
                "streams": len(self.pool.active), "capacity": self.pool.capacity, "refused": self.refused,
                "bundle": self.bundle.manifest.get("name", self.bundle.path.name), "protocol": P.VERSION,
                "classes": list(self.bundle.classes)}


def create_app(options: ServerOptions, server: StreamServer | None = None, background=()) -> Starlette:
    """The ASGI app. `background`: coroutine functions `f(server)` run as tasks for the app's life
    (Ray Serve's replica runs its scale-down watcher this way)."""
    server = server or StreamServer(options)

    async def index(request):
        return FileResponse(STATIC / "index.html")

    async def health(request):
        return JSONResponse(server.health())

    async def websocket(ws: WebSocket):
        await server.handle(ws)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await server.start()
        tasks = [asyncio.create_task(f(server)) for f in background]
        yield
        for task in tasks:
            task.cancel()
        await server.stop()

    app = Starlette(routes=[Route("/", index), Route("/healthz", health), WebSocketRoute("/ws", websocket),
                            Mount("/static", StaticFiles(directory=STATIC), name="static")], lifespan=lifespan)
    app.state.server = server
    return app


def _uvicorn_config(app, options: ServerOptions):
    import uvicorn

    return uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", lifespan="on",
                          ws_max_size=options.max_frame_bytes + P.HEADER.size + 1024, ws_per_message_deflate=False)


def open_line(options: ServerOptions, port: int) -> str:
    """The line that tells where the page and the WebSocket are (tests and scripts wait for it)."""
    host = options.host if ":" not in options.host else f"[{options.host}]"
    query = "?token=…" if options.token else ""
    return f"open http://{host}:{port}/{query}  (WebSocket ws://{host}:{port}/ws)"


def run_server(options: ServerOptions, announce=lambda line: print(line, flush=True)) -> int:
    """Serve until Ctrl-C; prints the page's URL once the socket is bound."""
    import uvicorn

    server = StreamServer(options)
    app = create_app(options, server)
    uv = uvicorn.Server(_uvicorn_config(app, options))

    async def main():
        task = asyncio.create_task(uv.serve())
        while not uv.started and not task.done():
            await asyncio.sleep(0.05)
        if uv.started:
            port = uv.servers[0].sockets[0].getsockname()[1]
            server.port = port
            announce(f"stream-s5 serve: {server.pool.capacity} streams, bundle "
                     f"{server.bundle.manifest.get('name', server.bundle.path.name)}, replica {server.replica}")
            if server.capacity_warning:
                announce(server.capacity_warning)
            announce(open_line(options, port))
        await task

    asyncio.run(main())
    return 0


class ServerThread:
    """A server on a background thread (tests, benchmarks): `with ServerThread(opts) as s: s.url`."""

    def __init__(self, options: ServerOptions):
        import uvicorn

        self.options = options
        self.server = StreamServer(options)
        self.app = create_app(options, self.server)
        self.uv = uvicorn.Server(_uvicorn_config(self.app, options))
        self.thread = threading.Thread(target=self.uv.run, name="stream_s5-server", daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uv.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.port = self.uv.servers[0].sockets[0].getsockname()[1]
        self.server.port = self.port
        self.url = f"ws://{self.options.host}:{self.port}/ws"
        self.http = f"http://{self.options.host}:{self.port}/"
        return self

    def __exit__(self, *exc):
        self.uv.should_exit = True
        self.thread.join(30)
