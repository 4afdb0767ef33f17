"""The stream-s5 WebSocket protocol, version 1 (docs/protocol.md): small JSON text messages for control
and state, binary frames with an 8-byte header for audio. Pure functions, no I/O: the server, the
Python client and the tests share them; the page's app.js implements the same layout.

Binary frame: `kind: u8, index: u8, reserved: u16 = 0, number: u32` (little-endian), then the payload.
- kind 1 AUDIO_IN (client → server): number = sequence number (0, 1, 2, … without gaps), payload =
  interleaved samples in the format of the start message (s16le or f32le), whole frames only.
- kind 2 CLASS_AUDIO (server → client): index = class index, number = first sample on the output
  timeline (bundle rate), payload = f32le mono samples at the bundle rate.
- kind 3 BACKFILL (server → client): as CLASS_AUDIO; the samples replace that stretch of the class's
  stream (a class detected late gets its true start).
- kind 4 STEP (server → client, when the start message asks for `"framing": "step"`): one message per
  output instead of an `output` JSON followed by its audio frames: number = output start, payload =
  `json_length: u32`, the output JSON (space-padded to a multiple of 4 bytes), then the float32 samples of
  every label in its "audio" (length each) and of every backfill (its length each), in that order.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["VERSION", "AUDIO_IN", "CLASS_AUDIO", "BACKFILL", "STEP", "FRAMINGS", "FORMATS", "pack_step", "unpack_step", "ProtocolError", "StartRequest",
           "pack_frame", "unpack_frame", "decode_audio", "encode_audio", "parse_start", "dumps", "CLOSE",
           "RECONNECT_CODES"]

VERSION = 1
AUDIO_IN, CLASS_AUDIO, BACKFILL, STEP = 1, 2, 3, 4
HEADER = struct.Struct("<BBHI")
JSON_LENGTH = struct.Struct("<I")
# "messages": an output JSON, then one binary frame per audio part; "step": all of it in one STEP frame
# (a quarter of the WebSocket messages per stream and step: what limits a server's stream count).
FRAMINGS = ("messages", "step")
FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
MAX_CHANNELS = 8
MAX_SEQ = 2**32 - 1

# WebSocket close codes the server uses, with their meaning in this protocol
CLOSE = {
    "normal": 1000,  # end of stream, everything sent
    "going_away": 1001,  # server shutting down / draining
    "unsupported": 1003,  # a binary frame of an unknown kind, or text where audio was expected
    "bad_data": 1007,  # malformed JSON, header, payload size or sequence
    "policy": 1008,  # bad token or origin, idle, too many messages per second
    "too_big": 1009,  # a frame over the size limit
    "internal": 1011,  # the engine failed on this stream
    "replica_lost": 1012,  # the process serving the stream died (sent by the Ray Serve proxy): reconnect
    "full": 1013,  # capacity reached: try again later
}
# Closes after which a client may reconnect with a fresh stream (elsewhere): the stream was lost, not refused
RECONNECT_CODES = frozenset({1001, 1006, 1011, 1012})


class ProtocolError(ValueError):
    """A message that breaks the protocol; `close` is the WebSocket close code it earns."""

    def __init__(self, message: str, close: str = "bad_data"):
        super().__init__(message)
        self.close = CLOSE[close]


@dataclass
class StartRequest:
    rate: int
    channels: int
    format: str
    classes: str | list[str] = "auto"
    subscribe: list[str] = field(default_factory=list)  # classes whose separated audio the client wants
    token: str | None = None
    client: str = ""
    framing: str = "messages"

    @property
    def frame_bytes(self) -> int:
        return self.channels * FORMATS[self.format].itemsize


def parse_start(text: str | bytes, known_classes) -> StartRequest:
    """The client's first message → StartRequest, or ProtocolError with a clear reason."""
    msg = _loads(text)
    if msg.get("type") != "start":
        raise ProtocolError(f"the first message must be {{'type': 'start', ...}}, got type {msg.get('type')!r}")
    if msg.get("version", VERSION) != VERSION:
        raise ProtocolError(f"protocol version {msg.get('version')!r} is not supported (this server speaks {VERSION})")
    rate, channels, fmt = msg.get("rate"), msg.get("channels", 1), msg.get("format", "f32le")
    if isinstance(rate, bool) or not isinstance(rate, int) or not 4000 <= rate <= 384000:
        raise ProtocolError(f"'rate' must be an integer sample rate in 4000..384000 Hz, got {rate!r}")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(f"'channels' must be an integer in 1..{MAX_CHANNELS}, got {channels!r}")
    if fmt not in FORMATS:
        raise ProtocolError(f"'format' must be one of {sorted(FORMATS)}, got {fmt!r}")
    classes = msg.get("classes", "auto")
    if not (classes == "auto" or isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ProtocolError("'classes' must be \"auto\" or a list of class names")
    subscribe = parse_subscribe(msg.get("subscribe", []), known_classes)
    token = msg.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("'token' must be a string")
    framing = msg.get("framing", "messages")
    if framing not in FRAMINGS:
        raise ProtocolError(f"'framing' must be one of {list(FRAMINGS)}, got {framing!r}")
    return StartRequest(rate, channels, fmt, classes, subscribe, token, str(msg.get("client", ""))[:100], framing)


def parse_subscribe(value, known_classes) -> list[str]:
    """"all", or a list of class names → the list (unknown names are an error)."""
    if value == "all":
        return list(known_classes)
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ProtocolError("'subscribe' must be \"all\" or a list of class names")
    unknown = [c for c in value if c not in known_classes]
    if unknown:
        raise ProtocolError(f"unknown class(es) in 'subscribe': {', '.join(unknown)}")
    return list(dict.fromkeys(value))


def parse_control(text: str | bytes) -> dict:
    """A text message after start: {'type': 'subscribe' | 'end' | 'ping', ...}."""
    msg = _loads(text)
    if msg.get("type") not in ("subscribe", "end", "ping"):
        raise ProtocolError(f"unknown message type {msg.get('type')!r} (expected subscribe, end or ping)")
    return msg


def _loads(text) -> dict:
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a text message must be a JSON object")
    return msg


def pack_frame(kind: int, number: int, payload: bytes | np.ndarray, index: int = 0) -> bytes:
    if isinstance(payload, np.ndarray):
        payload = payload.tobytes()
    return HEADER.pack(kind, index, 0, number & MAX_SEQ) + payload


def unpack_frame(data: bytes) -> tuple[int, int, int, memoryview]:
    """→ (kind, index, number, payload)."""
    if len(data) < HEADER.size:
        raise ProtocolError(f"a binary frame needs an {HEADER.size}-byte header, got {len(data)} bytes")
    kind, index, reserved, number = HEADER.unpack_from(data)
    if kind not in (AUDIO_IN, CLASS_AUDIO, BACKFILL, STEP):
        raise ProtocolError(f"unknown binary frame kind {kind}", close="unsupported")
    if reserved:
        raise ProtocolError("reserved header bytes must be 0")
    return kind, index, number, memoryview(data)[HEADER.size :]


def pack_step(output: dict, parts: list[np.ndarray]) -> bytes:
    """An output message and its audio parts (the labels of output["audio"], then output["backfills"],
    in order) → one STEP frame."""
    text = dumps(output).encode()
    text += b" " * (-len(text) % 4)  # the samples start 4-byte aligned (a Float32Array view needs it)
    return b"".join([HEADER.pack(STEP, 0, 0, int(output["start"]) & MAX_SEQ), JSON_LENGTH.pack(len(text)), text,
                     *(np.asarray(p, "<f4").tobytes() for p in parts)])


def unpack_step(payload) -> tuple[dict, list[np.ndarray]]:
    """A STEP frame's payload → (output message, [samples per label of "audio", then per backfill])."""
    if len(payload) < JSON_LENGTH.size:
        raise ProtocolError("a step frame needs its JSON length")
    (length,) = JSON_LENGTH.unpack_from(payload)
    body = JSON_LENGTH.size + length
    if length % 4 or body > len(payload):
        raise ProtocolError(f"a step frame's JSON length {length} does not fit its {len(payload)}-byte payload")
    output = _loads(bytes(payload[JSON_LENGTH.size : body]))
    sizes = [int(output["length"])] * len(output.get("audio", [])) + [int(b["length"]) for b in output.get("backfills", [])]
    if (len(payload) - body) != 4 * sum(sizes):
        raise ProtocolError(f"a step frame carries {len(payload) - body} bytes of audio, its JSON announces {4 * sum(sizes)}")
    samples = np.frombuffer(payload, "<f4", offset=body)
    bounds = np.cumsum([0, *sizes])
    return output, [samples[a:b].copy() for a, b in zip(bounds[:-1], bounds[1:])]


def encode_audio(samples: np.ndarray, fmt: str) -> bytes:
    """[frames, channels] or [frames] float in [-1, 1] → interleaved bytes in `fmt`."""
    x = np.asarray(samples, np.float32)
    if fmt == "s16le":
        return (np.clip(x, -1.0, 32767 / 32768) * 32768).round().astype("<i2").tobytes()
    return x.astype("<f4").tobytes()


def decode_audio(payload, request: StartRequest) -> np.ndarray:
    """An AUDIO_IN payload → [frames, channels] in its integer or float dtype (the engine scales
    integers and repairs non-finite floats, counting them)."""
    if len(payload) % request.frame_bytes:
        raise ProtocolError(f"audio payload of {len(payload)} bytes is not a whole number of "
                            f"{request.channels}-channel {request.format} frames")
    return np.frombuffer(payload, FORMATS[request.format]).reshape(-1, request.channels)


def dumps(msg: dict) -> str:
    """Strict JSON (non-finite numbers become null)."""
    return json.dumps(_finite(msg), allow_nan=False, separators=(",", ":"))


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value
