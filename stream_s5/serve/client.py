"""The Python client: an `Engine`-shaped front for a stream-s5 server.

    from stream_s5.serve.client import RemoteEngine
    with RemoteEngine("ws://127.0.0.1:8765/ws", input_rate=48000, input_channels=1) as eng:
        out = eng.feed(block)      # sends the block; returns what the server has sent back so far
        out = eng.flush()          # end of stream: waits for the rest (final output, summary)

`stream-s5 --input FILE|mic --server URL` uses it in place of a local Engine, so the same sinks write
the same `<Class>.wav`, `events.jsonl` and `summary.json`. One socket, one receiver thread that turns
the server's messages back into `EngineOutput`s; lag = time from sending an input frame to receiving
the output that consumed it (the server names that frame in `input_seq`).
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections import deque

import numpy as np

from stream_s5.engine import Backfill, EngineOutput
from stream_s5.serve import protocol as P
from stream_s5.tracker import Event

__all__ = ["RemoteEngine", "ResilientEngine", "ServerError"]


class ServerError(RuntimeError):
    """The server could not be reached, refused the stream, or closed it with a reason; `code`: the
    WebSocket close code when there was one."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def merge_outputs(outs: list[EngineOutput], start: int) -> EngineOutput:
    """Outputs of one stream → one (what a single feed() of a local Engine would return); where they
    overlap, the later one wins."""
    if not outs:
        return EngineOutput(start, 0, {}, [], [])
    start = min(o.start for o in outs)
    end = max(o.start + o.length for o in outs)
    audio: dict[str, np.ndarray] = {}
    for o in outs:
        for label, samples in o.audio.items():
            buf = audio.setdefault(label, np.zeros(end - start, np.float32))
            buf[o.start - start : o.start - start + samples.size] = samples
    return EngineOutput(start, end - start, audio, [b for o in outs for b in o.backfill],
                        [e for o in outs for e in o.events], any(o.final for o in outs))


def _output_of(m: dict) -> EngineOutput:
    """An output message → its EngineOutput, audio still to come."""
    return EngineOutput(m["start"], m["length"], {}, [], [Event(**e) for e in m["events"]], m["final"])


class RemoteEngine:
    def __init__(self, url: str, classes="auto", input_rate: int = 16000, input_channels: int = 1,
                 token: str | None = None, fmt: str = "f32le", subscribe="all", timeout_s: float = 10.0,
                 client_name: str = "stream-s5 cli", framing: str = "step"):
        from websockets.sync.client import connect

        self.url, self.input_rate, self.input_channels, self.fmt = url, int(input_rate), int(input_channels), fmt
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self._connection = connect(url, additional_headers=headers, open_timeout=timeout_s, max_size=None,
                                       compression=None)
            self.ws = self._connection.__enter__()
        except Exception as exc:
            raise ServerError(f"cannot connect to {url}: {exc}") from None
        classes_msg = classes if classes in (None, "auto") else [c.strip() for c in
                                                                   (classes.split(",") if isinstance(classes, str) else classes)]
        try:
            self.ws.send(P.dumps({"type": "start", "version": P.VERSION, "rate": self.input_rate,
                                  "channels": self.input_channels, "format": fmt, "classes": classes_msg or "auto",
                                  "subscribe": subscribe, "client": client_name, "framing": framing}))
        except Exception:
            pass  # refused at once: the reason comes with the close, read below
        ready = self._recv_json(timeout_s)
        if ready.get("type") != "ready":
            self._connection.__exit__(None, None, None)
            raise ServerError(f"server refused the stream: {ready.get('message', ready)}", ready.get("code"))
        self.ready = ready
        self.classes = ready["classes"]
        self.rate, self.channels, self.hop = ready["rate"], ready["channels"], ready["hop"]
        self.replica = ready["replica"]
        self.fixed = ready.get("fixed_classes")
        self.frames_done = 0
        self._outputs: queue.Queue = queue.Queue()
        self._sent: dict[int, float] = {}
        self._seq = 0
        self.lags_ms: deque = deque(maxlen=100_000)
        self.timing: dict = {}
        self.summary: dict | None = None
        self.error: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.missing_audio_frames = 0
        self._emitted = 0
        self._done = threading.Event()
        self._receiver = threading.Thread(target=self._receive, name="stream_s5-client", daemon=True)
        self._receiver.start()

    def _recv_json(self, timeout_s: float) -> dict:
        try:
            msg = self.ws.recv(timeout=timeout_s)
        except Exception as exc:
            rcvd = getattr(exc, "rcvd", None)
            reason = getattr(rcvd, "reason", "") or str(exc)
            raise ServerError(f"server closed the connection: {reason}", getattr(rcvd, "code", None)) from None
        if isinstance(msg, bytes):
            raise ServerError("server sent audio before 'ready'")
        return json.loads(msg)

    # ------------------------------------------------------------------ receiving
    def _receive(self):
        current: dict | None = None  # an 'output' message waiting for its binary frames
        try:
            for msg in self.ws:
                if isinstance(msg, bytes):
                    kind, index, start, payload = P.unpack_frame(msg)
                    if kind == P.STEP:
                        self._on_step(*P.unpack_step(payload))
                        continue
                    if current is None:
                        continue
                    samples = np.frombuffer(payload, "<f4").copy()
                    label = self.classes[index]
                    if kind == P.CLASS_AUDIO:
                        current["out"].audio[label] = samples
                    else:
                        current["out"].backfill.append(Backfill(label, start, samples))
                    current["expect"] -= 1
                    if current["expect"] == 0:
                        self._finish(current)
                        current = None
                    continue
                if current is not None:  # the server dropped some of its audio frames (we did not read)
                    self.missing_audio_frames += current["expect"]
                    self._finish(current)
                    current = None
                m = json.loads(msg)
                kind = m.get("type")
                if kind == "output":
                    current = {"out": _output_of(m), "expect": len(m["audio"]) + len(m["backfills"]), "msg": m}
                    if current["expect"] == 0:
                        self._finish(current)
                        current = None
                elif kind == "timing":
                    self.timing = m
                elif kind == "end":
                    self.summary = m
                elif kind == "error":
                    self.error = m.get("message")
        except Exception as exc:  # connection closed
            if self.summary is None and self.error is None:
                reason = getattr(getattr(exc, "rcvd", None), "reason", "")
                self.error = reason or None
        finally:
            if current is not None:
                self._finish(current)
            self.close_code = getattr(self.ws, "close_code", None)
            self.close_reason = getattr(self.ws, "close_reason", None)
            self._done.set()

    def _on_step(self, m: dict, parts: list[np.ndarray]):
        """One STEP frame: the output and its audio together."""
        out = _output_of(m)
        out.audio.update(zip(m["audio"], parts))
        out.backfill.extend(Backfill(b["label"], b["start"], a) for b, a in zip(m["backfills"], parts[len(m["audio"]):]))
        self.missing_audio_frames += int(m.get("dropped_audio", 0))
        self._finish({"out": out, "msg": m})

    @property
    def lost(self) -> bool:
        """The connection ended before the stream's end, in a way that a fresh stream may cure (the
        serving process died or drained; docs/protocol.md), as opposed to a refusal."""
        return self._done.is_set() and self.summary is None and (
            self.close_code is None or self.close_code in P.RECONNECT_CODES)

    def _finish(self, current: dict):
        out, m = current["out"], current["msg"]
        # labels the server ran but did not send (not subscribed) are silent here, as the page shows
        seq = m.get("input_seq")
        if seq is not None and seq in self._sent:
            self.lags_ms.append((time.monotonic() - self._sent.pop(seq)) * 1000.0)
            for old in [s for s in self._sent if s < seq]:
                self._sent.pop(old, None)
        self._outputs.put(out)

    # ------------------------------------------------------------------ Engine's shape
    def _take(self, wait_final: bool = False, timeout_s: float = 120.0) -> EngineOutput:
        outs = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                out = self._outputs.get(timeout=0.05 if wait_final else 0)
            except queue.Empty:
                if not wait_final or (outs and outs[-1].final):
                    break
                if self._done.is_set() and self._outputs.empty():
                    break
                if time.monotonic() > deadline:
                    raise ServerError(f"no end of stream from {self.url} within {timeout_s:g} s")
                continue
            outs.append(out)
            if out.final:
                break
        merged = merge_outputs(outs, self._emitted)
        self._emitted = merged.start + merged.length
        self.frames_done = max(self.frames_done, self._emitted // self.hop)
        return merged

    def feed(self, samples) -> EngineOutput:
        if self.error:
            raise ServerError(f"server closed the stream: {self.error}")
        x = np.asarray(samples, np.float32)
        if x.ndim == 1:
            x = x[:, None]
        max_frames = max(1, (int(self.ready["limits"]["max_frame_bytes"]) // (4 * x.shape[1])))
        for i in range(0, max(x.shape[0], 1), max_frames):
            part = x[i : i + max_frames]
            if not part.shape[0]:
                break
            self._sent[self._seq] = time.monotonic()
            try:
                self.ws.send(P.pack_frame(P.AUDIO_IN, self._seq, P.encode_audio(part, self.fmt)))
            except Exception as exc:
                raise ServerError(f"server closed the stream: {self.error or exc}") from None
            self._seq += 1
        return self._take()

    def flush(self) -> EngineOutput:
        try:
            self.ws.send(P.dumps({"type": "end"}))
        except Exception as exc:
            raise ServerError(f"server closed the stream: {self.error or exc}") from None
        out = self._take(wait_final=True)
        if not out.final:
            raise ServerError(f"the stream ended without its final output: {self.error or 'connection closed'}")
        self._done.wait(10)
        return out

    def stats(self) -> dict:
        t = (self.summary or {}).get("timing") or self.timing
        lags = np.asarray(self.lags_ms, np.float64)
        p50, p99 = (float(np.percentile(lags, 50)), float(np.percentile(lags, 99))) if lags.size else (None, None)
        return {
            "timings": {"block": {k.replace("hop_ms_", "") + "_ms": v for k, v in t.items()
                                  if k in ("hop_ms_p50", "hop_ms_p99")}},
            "deadline_misses": t.get("deadline_misses", 0),
            "hops": self.frames_done,
            "device": f"server {self.url} ({self.replica})",
            "repairs": (self.summary or {}).get("repairs"),
            "server": {"url": self.url, "replica": self.replica, "lag_ms_p50": p50, "lag_ms_p99": p99,
                       "server_lag_ms_p50": t.get("lag_ms_p50"), "server_lag_ms_p99": t.get("lag_ms_p99"),
                       "dropped_frames": t.get("dropped_frames"), "late_outputs": t.get("late_outputs"),
                       "missing_audio_frames": self.missing_audio_frames, "budget_ms": t.get("budget_ms")},
        }

    def close(self):
        try:
            self._connection.__exit__(None, None, None)
        except Exception:
            pass
        self._receiver.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ResilientEngine:
    """A `RemoteEngine` that outlives the process serving it.

    When the stream is lost (its replica died, drained, or restarted: close codes in
    `protocol.RECONNECT_CODES`) it connects again — behind Ray Serve the new stream lands on a live
    replica — with a fresh state, and replays the last `warmup_s` of input so that the new state has
    context; the replayed stretch's output is dropped (the lost stream had already delivered it), so
    the output timeline goes on where it stopped. What is lost, honestly counted in `reconnects`:
    input the lost stream had received but not answered is replayed (up to `replay_s` back; beyond that
    it becomes silence, `gap_s`), and events it left open are closed at the moment of loss
    (`closed_events`). A refusal (token, origin, bad start) is never retried; "full" and unreachable are
    retried until `reconnect_window_s` is spent.
    """

    NO_RETRY = frozenset({P.CLOSE["policy"], P.CLOSE["unsupported"], P.CLOSE["bad_data"], P.CLOSE["too_big"]})

    def __init__(self, url: str, *, reconnects: int = 5, reconnect_window_s: float = 30.0, replay_s: float = 10.0,
                 warmup_s: float = 3.0, notify=lambda line: None, **remote_args):
        self._remote_args = {"url": url, **remote_args}
        self.remote = RemoteEngine(**self._remote_args)  # the first connection: a refusal is final
        self.url, self.ready, self.classes, self.fixed = url, self.remote.ready, self.remote.classes, self.remote.fixed
        self.rate, self.hop = self.remote.rate, self.remote.hop
        self.input_rate = self.remote.input_rate
        self.max_reconnects, self.window_s = int(reconnects), float(reconnect_window_s)
        self.replay_frames, self.warmup_s = int(replay_s * self.input_rate), float(warmup_s)
        self.notify = notify
        self.offset = 0  # where the current stream's sample 0 lies on the output timeline (bundle rate)
        self.trim_until = 0  # output before this was delivered by a lost stream: the replay's copy is dropped
        self.fed = 0  # input frames fed so far
        self._replay: deque = deque()  # (first input frame, block) of the last replay_s seconds
        self._replay_size = 0
        self.open_events: dict[str, Event] = {}
        self.reconnects: list[dict] = []
        self.gave_up = False  # no replica took a lost stream within the window: nothing more to try
        self.replicas = [self.remote.replica]
        self._lags: list[float] = []

    @property
    def replica(self) -> str:
        return self.remote.replica

    @property
    def frames_done(self) -> int:
        return (self.offset + self.remote._emitted) // self.hop

    # ------------------------------------------------------------------ timeline
    def _shift(self, out: EngineOutput) -> EngineOutput:
        """An output of the current stream → the client's timeline, minus what a lost stream gave already."""
        start, length, audio = out.start + self.offset, out.length, dict(out.audio)
        cut = min(max(0, self.trim_until - start), length)
        if cut:
            audio = {label: a[cut:] for label, a in audio.items()}
        # a wholly dropped (or empty) output becomes an empty one at the trim point: merge_outputs spans starts
        start, length = max(start + cut, self.trim_until), length - cut
        backfill = []
        for b in out.backfill:
            b_start = b.start + self.offset
            b_cut = max(0, self.trim_until - b_start)
            if b_cut < b.audio.size:
                backfill.append(Backfill(b.label, b_start + b_cut, b.audio[b_cut:]))
        dt = self.offset / self.rate
        events = [Event(e.label, e.onset + dt, None if e.offset is None else e.offset + dt, e.peak, e.decided_at + dt,
                        e.retracted) for e in out.events]
        for e in events:
            if e.offset is None:
                self.open_events[e.label] = e
            else:
                self.open_events.pop(e.label, None)
        return EngineOutput(start, length, audio, backfill, events, out.final)

    def _remember(self, x: np.ndarray):
        self._replay.append((self.fed, x))
        self._replay_size += x.shape[0]
        while self._replay and self._replay_size - self._replay[0][1].shape[0] >= self.replay_frames:
            self._replay_size -= self._replay.popleft()[1].shape[0]

    def _replay_from(self, frame: int):
        for first, block in self._replay:
            if first + block.shape[0] > frame:
                yield block[max(0, frame - first):]

    # ------------------------------------------------------------------ Engine's shape
    def feed(self, samples) -> EngineOutput:
        x = np.asarray(samples, np.float32)
        x = x[:, None] if x.ndim == 1 else x
        self._remember(x)
        self.fed += x.shape[0]
        try:
            return self._shift(self.remote.feed(x))
        except ServerError as exc:
            return self._take_up(exc)

    def flush(self) -> EngineOutput:
        outs = []
        while True:
            try:
                outs.append(self._shift(self.remote.flush()))
                return merge_outputs(outs, self.offset)
            except ServerError as exc:
                outs.append(self._take_up(exc))

    def _take_up(self, exc: ServerError) -> EngineOutput:
        """A call failed: if the stream was lost, go on in a new one (again if that is lost while the
        input is replayed); anything else is raised."""
        outs = []
        while True:
            if not self._was_lost():
                raise exc
            try:
                outs.append(self._recover())
                return merge_outputs(outs, self.offset)
            except ServerError as again:
                exc = again

    def _was_lost(self) -> bool:
        if self.gave_up:
            return False
        self.remote._done.wait(2.0)  # a failed send can come just before the receiver sees the close
        return self.remote.lost and len(self.reconnects) < self.max_reconnects

    def _recover(self) -> EngineOutput:
        """The current stream is lost: what it still delivered, events closed at the loss, a new stream
        warmed up on replayed input."""
        lost = self.remote
        outs = [self._shift(lost._take())]
        emitted = max(self.offset + lost._emitted, self.trim_until)  # a stream lost while replaying gave less
        t_loss = emitted / self.rate
        closing = [Event(e.label, e.onset, t_loss, e.peak, t_loss) for e in self.open_events.values()]
        self.open_events.clear()
        outs.append(EngineOutput(emitted, 0, {}, [], closing))
        self._lags.extend(lost.lags_ms)
        lost.close()
        record = {"at_input_s": self.fed / self.input_rate, "lost_replica": lost.replica, "code": lost.close_code,
                  "reason": lost.close_reason or lost.error or "", "closed_events": [e.label for e in closing]}
        self.remote = self._connect_again(record)
        # resume a little before the loss, on a sample that maps exactly to both rates
        step = self.rate // math.gcd(self.rate, self.input_rate)
        oldest = self._replay[0][0] if self._replay else self.fed
        want = max(0, emitted - int(self.warmup_s * self.rate))
        resume = max(want // step * step, -(-oldest * self.rate // self.input_rate // step) * step)
        resume_in = resume * self.input_rate // self.rate
        self.offset, self.trim_until = resume, emitted
        record.update(replica=self.remote.replica, lost_at_s=t_loss, resumed_at_s=resume / self.rate,
                      replayed_s=(self.fed - resume_in) / self.input_rate, gap_s=max(0, resume - emitted) / self.rate)
        self.reconnects.append(record)
        self.replicas.append(self.remote.replica)
        self.notify(f"replica {lost.replica} lost (close {record['code']}: {record['reason'] or 'no reason'}) at "
                    f"{record['at_input_s']:.2f} s; reconnected to replica {self.remote.replica} with a fresh state, "
                    f"replaying {record['replayed_s']:.2f} s of input"
                    + (f"; {record['gap_s']:.2f} s of output lost" if record["gap_s"] else ""))
        for block in list(self._replay_from(resume_in)):
            outs.append(self._shift(self.remote.feed(block)))  # a second loss here: _take_up tries again
        return merge_outputs(outs, emitted)

    def _connect_again(self, record: dict) -> RemoteEngine:
        deadline, wait, last = time.monotonic() + self.window_s, 0.2, None
        while time.monotonic() < deadline:
            try:
                return RemoteEngine(**self._remote_args)
            except ServerError as exc:
                if exc.code in self.NO_RETRY:
                    self.gave_up = True
                    raise
                last = exc
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            wait = min(2.0, wait * 2)
        self.gave_up = True
        raise ServerError(f"replica {record['lost_replica']} lost ({record['reason'] or record['code']}) and no "
                          f"replica took the stream again within {self.window_s:g} s: {last}")

    def stats(self) -> dict:
        stats = self.remote.stats()
        lags = np.asarray(self._lags + list(self.remote.lags_ms), np.float64)
        if lags.size:
            stats["server"]["lag_ms_p50"] = float(np.percentile(lags, 50))
            stats["server"]["lag_ms_p99"] = float(np.percentile(lags, 99))
        stats["server"].update(reconnects=self.reconnects, replicas=self.replicas)
        stats["hops"] = self.frames_done
        return stats

    @property
    def summary(self) -> dict | None:
        return self.remote.summary

    def close(self):
        self.remote.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
