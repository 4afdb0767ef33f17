import json

import numpy as np
import pytest

from stream_s5.labels import CLASSES
from stream_s5.serve import protocol as P


def start(**over):
    msg = {"type": "start", "version": 1, "rate": 48000, "channels": 2, "format": "s16le", "classes": "auto",
           "subscribe": ["Speech"]}
    msg.update(over)
    return json.dumps(msg)


def test_start_message_round_trip_and_defaults():
    req = P.parse_start(start(), CLASSES)
    assert (req.rate, req.channels, req.format, req.classes, req.subscribe) == (48000, 2, "s16le", "auto", ["Speech"])
    assert req.frame_bytes == 4
    minimal = P.parse_start(json.dumps({"type": "start", "rate": 16000}), CLASSES)
    assert (minimal.channels, minimal.format, minimal.subscribe) == (1, "f32le", [])
    assert P.parse_start(start(subscribe="all"), CLASSES).subscribe == list(CLASSES)
    assert minimal.framing == "messages" and P.parse_start(start(framing="step"), CLASSES).framing == "step"


@pytest.mark.parametrize("text,match", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"type": "end"}), "first message"),
    (start(version=2), "version 2"),
    (start(rate=0), "rate"),
    (start(rate=True), "rate"),
    (start(rate=44100.5), "rate"),
    (start(channels=9), "channels"),
    (start(format="mp3"), "format"),
    (start(classes="Speech"), "classes"),
    (start(subscribe=["Unicorn"]), "Unicorn"),
    (start(token=5), "token"),
    (start(framing="bundle"), "framing"),
])
def test_bad_start_messages_are_refused_with_a_reason(text, match):
    with pytest.raises(P.ProtocolError, match=match) as info:
        P.parse_start(text, CLASSES)
    assert info.value.close == P.CLOSE["bad_data"]


def test_frames_pack_and_unpack():
    payload = np.arange(6, dtype="<f4")
    data = P.pack_frame(P.CLASS_AUDIO, 123456, payload, index=17)
    kind, index, number, body = P.unpack_frame(data)
    assert (kind, index, number) == (P.CLASS_AUDIO, 17, 123456)
    np.testing.assert_array_equal(np.frombuffer(body, "<f4"), payload)
    with pytest.raises(P.ProtocolError, match="header"):
        P.unpack_frame(b"\x01\x00")
    with pytest.raises(P.ProtocolError, match="kind 9") as info:
        P.unpack_frame(bytes([9, 0, 0, 0, 0, 0, 0, 0]))
    assert info.value.close == P.CLOSE["unsupported"]
    with pytest.raises(P.ProtocolError, match="reserved"):
        P.unpack_frame(bytes([1, 0, 1, 0, 0, 0, 0, 0]))


def test_audio_payloads_decode_in_both_formats():
    x = np.array([[0.5, -0.5], [0.25, -1.0], [0.0, 0.999]], np.float32)
    for fmt in ("s16le", "f32le"):
        req = P.parse_start(start(format=fmt), CLASSES)
        decoded = P.decode_audio(P.encode_audio(x, fmt), req)
        assert decoded.shape == (3, 2)
        scale = 32768.0 if fmt == "s16le" else 1.0
        np.testing.assert_allclose(decoded / scale, x, atol=1 / 32768)
    req = P.parse_start(start(format="s16le"), CLASSES)
    with pytest.raises(P.ProtocolError, match="whole number"):
        P.decode_audio(b"\x00\x01\x02", req)


def test_json_out_is_strict():
    text = P.dumps({"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32(2.0)})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": 2.0}


def test_control_messages():
    assert P.parse_control('{"type": "end"}')["type"] == "end"
    with pytest.raises(P.ProtocolError, match="unknown message type"):
        P.parse_control('{"type": "rewind"}')


def test_step_frames_carry_the_output_and_its_audio_aligned():
    output = {"type": "output", "start": 4096, "length": 3, "final": False, "input_seq": 7, "classes": ["Speech"],
              "audio": ["Speech", "Doorbell"], "backfills": [{"label": "Speech", "start": 1000, "length": 5}],
              "events": [], "note": "é"}  # a non-ASCII byte: lengths are bytes, not characters
    parts = [np.array([1, 2, 3], "f4"), np.array([4, 5, 6], "f4"), np.arange(5, dtype="f4")]
    for extra in ("", "x", "xy", "xyz"):  # every JSON length modulo 4
        data = P.pack_step({**output, "pad": extra}, parts)
        kind, _, number, payload = P.unpack_frame(data)
        assert (kind, number) == (P.STEP, 4096)
        (length,) = P.JSON_LENGTH.unpack_from(payload)
        assert (P.HEADER.size + P.JSON_LENGTH.size + length) % 4 == 0  # a Float32Array view on the page needs it
        got, samples = P.unpack_step(payload)
        assert got["pad"] == extra and got["note"] == "é" and got["audio"] == ["Speech", "Doorbell"]
        for a, b in zip(samples, parts):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(P.ProtocolError, match="announces"):
        P.unpack_step(P.unpack_frame(P.pack_step(output, parts[:2]))[3])
    with pytest.raises(P.ProtocolError, match="does not fit"):
        P.unpack_step(P.JSON_LENGTH.pack(4000) + b"{}  ")
    with pytest.raises(P.ProtocolError, match="JSON length"):
        P.unpack_step(b"\x01")
