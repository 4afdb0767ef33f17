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
import queue
import threading
import time
from collections import deque

import numpy as np

from stream_s5.engine import Backfill, EngineOutput
from stream_s5.serve import protocol as P
from stream_s5.tracker import Event

__all__ = ["RemoteEngine", "ServerError"]


class ServerError(RuntimeError):
    """The server could not be reached, refused the stream, or closed it with a reason."""


def merge_outputs(outs: list[EngineOutput], start: int) -> EngineOutput:
    """Contiguous outputs of one stream → one (what a single feed() of a local Engine would return)."""
    if not outs:
        return EngineOutput(start, 0, {}, [], [])
    start = outs[0].start
    end = max(o.start + o.length for o in outs)
    audio: dict[str, np.ndarray] = {}
    for o in outs:
        for label, samples in o.audio.items():
            buf = audio.setdefault(label, np.zeros(end - start, np.float32))
            buf[o.start - start : o.start - start + samples.size] = samples
    return EngineOutput(start, end - start, audio, [b for o in outs for b in o.backfill],
                        [e for o in outs for e in o.events], any(o.final for o in outs))


class RemoteEngine:
    def __init__(self, url: str, classes="auto", input_rate: int = 16000, input_channels: int = 1,
                 token: str | None = None, fmt: str = "f32le", subscribe="all", timeout_s: float = 10.0,
                 client_name: str = "stream-s5 cli"):
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
                                  "subscribe": subscribe, "client": client_name}))
        except Exception:
            pass  # refused at once: the reason comes with the close, read below
        ready = self._recv_json(timeout_s)
        if ready.get("type") != "ready":
            raise ServerError(f"server refused the stream: {ready.get('message', ready)}")
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
        self.missing_audio_frames = 0
        self._emitted = 0
        self._done = threading.Event()
        self._receiver = threading.Thread(target=self._receive, name="stream_s5-client", daemon=True)
        self._receiver.start()

    def _recv_json(self, timeout_s: float) -> dict:
        try:
            msg = self.ws.recv(timeout=timeout_s)
        except Exception as exc:
            reason = getattr(getattr(exc, "rcvd", None), "reason", "") or str(exc)
            raise ServerError(f"server closed the connection: {reason}") from None
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
                    out = EngineOutput(m["start"], m["length"], {}, [], [Event(**e) for e in m["events"]], m["final"])
                    current = {"out": out, "expect": len(m["audio"]) + len(m["backfills"]), "msg": m}
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
            rcvd = getattr(self.ws, "close_code", None)
            self.close_code = rcvd
            self._done.set()

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
