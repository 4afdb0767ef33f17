"""The `stream-s5` command.

    stream-s5 --input mic --classes auto                   # live, with a terminal view
    stream-s5 --input scene.wav --classes auto --output out/
    stream-s5 --input demo --output out/                    # a seeded synthetic scene
    stream-s5 eval --scenes 200 --seed 1000 --json eval.json
    stream-s5 compare a.json b.json                         # is b better than a on the same scenes, beyond noise?
    stream-s5 serve                                         # server + live page on http://127.0.0.1:8765/
    stream-s5 --input scene.wav --server ws://127.0.0.1:8765/ws --output out/   # through a server
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np

from stream_s5.bundle import BundleError, load_bundle
from stream_s5.conditioning import InputError
from stream_s5.engine import BudgetError, Engine, EngineFault, EngineOptions, StageTimer
from stream_s5.labels import CLASSES, parse_class_list
from stream_s5.serve.client import ServerError
from stream_s5.sinks import OutputError

__all__ = ["main"]


class _Stop:
    """Ctrl-C / SIGTERM: finish the current block, flush, close files."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True


# ---------------------------------------------------------------- argument types (clear messages, exit 2)
def _number(text: str, kind=float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, not {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _ranged(kind, low=None, high=None, low_open=False):
    """An argparse type: a number of `kind` in [low, high] ((low, high] with low_open)."""
    def parse(text: str):
        value = _number(text, kind)
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '≥'} {low}, not {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be ≤ {high}, not {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


_SECONDS = _ranged(float, 0, 86400 * 365, low_open=True)
_MS = _ranged(float, 0, 60000, low_open=True)
_THREADS = _ranged(int, 1, 256)


def _refine_arg(text: str):
    """'auto' or a pass count (checked against the bundle's max_passes when the engine is built)."""
    if text == "auto":
        return text
    return _ranged(int, 1, 64)(text)


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-s5", description="Real-time sound event detection and per-class separation.",
                                epilog="Subcommands: 'stream-s5 eval --help' scores the bundle on held-out scenes; "
                                       "'stream-s5 compare --help' compares two evaluations of the same scenes; "
                                       "'stream-s5 serve --help' runs the streaming server and its live page.")
    p.add_argument("--input", default="mic", help="mic | demo | PATH to an audio file (default: mic)")
    p.add_argument("--classes", default="auto", help="auto, or a comma-separated list such as Speech,Doorbell")
    p.add_argument("--output", default=None, help="folder for <Class>.wav, events.jsonl, summary.json")
    p.add_argument("--model", default=None, help="model bundle folder, or a shipped bundle by name: default (mono 16 kHz), spatial (4-channel 32 kHz)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --output (otherwise such a folder is refused)")
    p.add_argument("--refine", type=_refine_arg, default=None,
                   help="refinement passes K, or 'auto' to fit the budget (default: the bundle's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--budget-ms", type=_MS, default=None, help="compute budget per hop (default: the bundle's hop)")
    p.add_argument("--duration", type=_SECONDS, default=None, help="stop after this many seconds of input")
    p.add_argument("--realtime", action="store_true", help="pace a file or demo input in real time")
    p.add_argument("--play", default=None, help="play these classes live on an output device (comma-separated)")
    p.add_argument("--input-device", default=None, help="input device index or name (see --list-devices)")
    p.add_argument("--output-device", default=None, help="playback device index or name")
    p.add_argument("--rate", type=_ranged(int, 4000, 384000), default=None,
                   help="microphone sample rate (default: the device's)")
    p.add_argument("--channels", type=_ranged(int, 1, 64), default=None, help="microphone channels (default: up to 2)")
    p.add_argument("--seed", type=_ranged(int, 0, 2**32 - 1), default=0, help="seed of the demo scene")
    p.add_argument("--threads", type=_THREADS, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--no-view", action="store_true", help="no live terminal view")
    p.add_argument("--list-classes", action="store_true")
    p.add_argument("--list-devices", action="store_true")
    p.add_argument("--server", default=None, metavar="URL",
                   help="run through a stream-s5 server (ws://HOST:PORT/ws) instead of a local engine")
    p.add_argument("--token", default=None, help="the server's access token (with --server)")
    return p


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-s5 serve",
                                description="Streaming server: one WebSocket per stream, batched through shared "
                                            "sessions, and the live monitoring page (docs/server.md).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (non-loopback needs --token)")
    p.add_argument("--port", type=_ranged(int, 0, 65535), default=8765, help="TCP port (0: any free port)")
    p.add_argument("--max-streams", type=_ranged(int, 1, 4096), default=16, help="streams served at once; more are refused")
    p.add_argument("--model", default=None, help="model bundle folder, or a shipped bundle by name: default (mono 16 kHz), spatial (4-channel 32 kHz)")
    p.add_argument("--refine", type=_refine_arg, default=None, help="refinement passes K, or 'auto'")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=_THREADS, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--budget-ms", type=_MS, default=None, help="compute budget per hop")
    p.add_argument("--token", default=None, help="clients must present this token (?token= or Bearer header)")
    p.add_argument("--allow-origin", action="append", default=[], help="another page origin allowed to connect")
    p.add_argument("--max-speed", type=_ranged(float, 0, 1000, low_open=True), default=2.0,
                   help="input pace limit per stream, × real time")
    p.add_argument("--max-frame-kib", type=_ranged(float, 1, 65536), default=256, help="largest binary frame accepted")
    p.add_argument("--idle-timeout", type=_SECONDS, default=30.0, help="close streams silent this long (s)")
    p.add_argument("--tick-ms", type=_ranged(float, 0, 1000), default=16.0,
                   help="step the streams at most once per tick, so that streams whose audio arrives within it share "
                        "the hop's model calls (throughput vs lag; 0: step whenever one stream is ready)")
    p.add_argument("--drain-grace-s", type=_SECONDS, default=30.0,
                   help="when a replica is stopped (scale-down): how long its streams may go on before they are closed")
    ray = p.add_argument_group("Ray Serve (pip install -e \".[ray]\"; docs/scaling.md)")
    ray.add_argument("--ray", action="store_true", help="run as a Ray Serve application (replicas, autoscaling)")
    ray.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    scale = ray.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=_ranged(int, 1, 1024), default=None, help="fixed number of replicas (default 1)")
    scale.add_argument("--autoscale", type=_autoscale_arg, default=None, metavar="MIN:MAX",
                       help="replicas follow the number of open streams, between MIN and MAX")
    ray.add_argument("--replica-cpus", type=_ranged(float, 0, 1024, low_open=True), default=1.0,
                     help="CPUs reserved per replica")
    ray.add_argument("--replica-gpus", type=_ranged(float, 0, 64), default=0.0, help="GPUs reserved per replica")
    ray.add_argument("--ingress", choices=("haproxy", "proxy"), default=None,
                     help="Ray Serve's ingress: haproxy (default: HAProxy forwards each WebSocket to its replica) or "
                          "proxy (its Python proxy: a Ray call per message, dead replicas' streams closed with a reason)")
    return p


def _autoscale_arg(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX (e.g. 1:4), not {text}")
    lo, hi = _ranged(int, 0, 1024)(lo), _ranged(int, 1, 1024)(hi)
    if lo > hi:
        raise argparse.ArgumentTypeError(f"MIN must be ≤ MAX, not {text}")
    return lo, hi


def run_serve(argv) -> int:
    parser = _serve_parser()
    args = parser.parse_args(argv)
    from stream_s5.serve.server import ServerOptions, run_server

    if not args.ray and (args.address or args.replicas or args.autoscale or args.ingress):
        parser.error("--address, --replicas, --autoscale and --ingress need --ray")
    if args.ray and args.port == 0:
        parser.error("--ray needs a fixed --port (Ray Serve's proxy binds it on every node)")
    options = ServerOptions(host=args.host, port=args.port, max_streams=args.max_streams, model=args.model,
                            refine=args.refine, device=args.device, threads=args.threads, budget_ms=args.budget_ms,
                            token=args.token, allowed_origins=tuple(args.allow_origin), max_speed=args.max_speed,
                            max_frame_bytes=int(args.max_frame_kib * 1024), idle_timeout_s=args.idle_timeout,
                            tick_ms=args.tick_ms, drain_grace_s=args.drain_grace_s)
    try:
        if args.ray:
            try:
                from stream_s5.serve.ray_app import RayOptions, find_haproxy, run_ray
            except ImportError as exc:
                parser.error(f"--ray needs Ray Serve: pip install -e \".[ray]\" ({exc})")
            try:
                options.check()
                ray_options = RayOptions(address=args.address, replicas=args.replicas or 1, autoscale=args.autoscale,
                                         cpus_per_replica=args.replica_cpus, gpus_per_replica=args.replica_gpus,
                                         ingress=args.ingress or "haproxy")
                ray_options.check()
                if ray_options.ingress == "haproxy" and args.address is None:
                    find_haproxy()
            except (ValueError, RuntimeError) as exc:
                parser.error(str(exc))
            return run_ray(options, ray_options)
        return run_server(options)
    except KeyboardInterrupt:
        return 130


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-s5 eval", description="Score the bundle on held-out synthetic scenes through the streaming engine.")
    p.add_argument("--scenes", type=_ranged(int, 1, 1000000), default=200)
    p.add_argument("--seed", type=_ranged(int, 0, 2**31 - 1), default=1000)
    p.add_argument("--duration", type=_ranged(float, 2.0, 3600.0), default=10.0, help="seconds per scene")
    p.add_argument("--refine", type=_ranged(int, 1, 64), default=None)
    p.add_argument("--mode", choices=["stream", "oracle", "offline"], default="stream",
                   help="stream: detected classes; oracle: true classes given; offline: whole clip known")
    p.add_argument("--model", default=None)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--threads", type=_THREADS, default=1)
    p.add_argument("--soundbank", default=None,
                   help="build the scenes from this soundbank folder (e.g. the real-recordings bank of export.realbank) "
                        "instead of the procedural one")
    p.add_argument("--split", default=None, help="sub-folder of --soundbank to use (train | valid)")
    p.add_argument("--p-no-target", type=_ranged(float, 0.0, 1.0), default=None,
                   help="share of scenes without a target (default 0.1; 0.2 with --soundbank, for false-alarm rates)")
    dcase = p.add_argument_group("DCASE 2025 Task 4 test folder (docs/evaluation.md, 'DCASE layout')")
    dcase.add_argument("--dcase", default=None, metavar="DIR",
                       help="score DIR/soundscape/*.wav against DIR/oracle_target/<name>_<Class>.wav with the official "
                            "CA-SDRi and label accuracy, instead of generated scenes")
    dcase.add_argument("--write-estimates", default=None, metavar="EST",
                       help="with --dcase: write <name>_<Class>.wav estimates here (the official evaluator's "
                            "--use_generated_waveform input)")
    dcase.add_argument("--mono-input", choices=["reference", "mean"], default="reference",
                       help="with --dcase and a mono bundle: feed the reference channel 0 (default) or the channel mean")
    dcase.add_argument("--dcase-rate", type=_ranged(int, 0, 384000), default=32000,
                       help="required soundscape rate (0: any); the official sets are 32000 Hz")
    dcase.add_argument("--dcase-channels", type=_ranged(int, 0, 64), default=4,
                       help="required soundscape channel count (0: any); the official sets have 4")
    dcase.add_argument("--max-classes", type=_ranged(int, 0, 18), default=3,
                       help="with --dcase: keep at most this many estimates per soundscape, the most energetic "
                            "(the official evaluator's n_sources is 3; 0: no limit)")
    dcase.add_argument("--limit", type=_ranged(int, 1, 10**7), default=None, help="with --dcase: only the first N soundscapes")
    return p


def _device_arg(value):
    if value is None:
        return None
    return int(value) if str(value).isdigit() else value


def _make_source(args, bundle):
    from stream_s5.sources import DemoSource, FileSource, MicSource

    if args.input == "mic":
        return MicSource(device=_device_arg(args.input_device), rate=args.rate, channels=args.channels,
                         duration=args.duration)
    if args.input == "demo":
        return DemoSource(seed=args.seed, duration=args.duration or 10.0, rate=bundle.sample_rate,
                          channels=bundle.channels, realtime=args.realtime)
    return FileSource(args.input, realtime=args.realtime)


def _repair_notes(repairs: dict | None, source, bundle) -> list[str]:
    """What the input conditioning did, in words for the terminal (the counts are in summary.json)."""
    if not repairs:
        return []
    notes = []
    if repairs.get("resampled"):
        notes.append(f"resampled {source.rate} → {bundle.sample_rate} Hz")
    if repairs.get("downmixed"):
        notes.append(f"downmixed {source.channels} → {bundle.channels} channel(s)")
    if repairs.get("upmixed"):
        notes.append(f"mono copied to {bundle.channels} channels (no spatial cues)")
    if repairs.get("nonfinite_samples"):
        notes.append(f"{repairs['nonfinite_samples']} non-finite sample(s) set to 0")
    if repairs.get("clipped_samples"):
        notes.append(f"{repairs['clipped_samples']} sample(s) clipped to ±1")
    return notes


def run(args) -> int:
    # Ctrl-C / SIGTERM from the first moment: setting a flag, so that no traceback is possible; the
    # stream stops at the next block and every file is finished.
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(args, stop: _Stop) -> int:
    from stream_s5.sinks import ClassWavSink, EventsSink, PlaybackSink, prepare_output_folder, write_summary

    bundle = load_bundle(args.model)
    play = parse_class_list(args.play, bundle.classes) if args.play else None
    out_dir = Path(args.output) if args.output else None
    removed = prepare_output_folder(out_dir, bundle.classes, args.overwrite) if out_dir else []
    if removed:
        print(f"--overwrite: removed {len(removed)} file(s) of an earlier run from {out_dir}: {', '.join(removed)}")
    source = _make_source(args, bundle)
    if args.server:
        from stream_s5.serve.client import ResilientEngine

        # a lost stream (its replica died or drained) is taken up again by a fresh one, and said so
        engine = ResilientEngine(args.server, classes=args.classes, input_rate=source.rate,
                                 input_channels=source.channels, token=args.token,
                                 notify=lambda line: print(f"stream-s5: {line}", flush=True))
    else:
        engine = Engine(bundle, classes=args.classes, refine=args.refine, device=args.device, input_rate=source.rate,
                        input_channels=source.channels,
                        options=EngineOptions(threads=args.threads, budget_ms=args.budget_ms))
    wav_sink = events_sink = player = None
    from stream_s5.live import LiveView, ProgressView

    live = args.input == "mic" and not args.no_view and sys.stdout.isatty() and not args.server
    view = LiveView(engine, source) if live else ProgressView(source, enabled=not args.no_view and sys.stderr.isatty())
    limit = int(args.duration * source.rate) if args.duration and args.input != "mic" else None
    fed = 0
    sink_timer = StageTimer()  # output I/O per fed block
    energy = 0.0  # input level for the summary (is the device delivering sound at all?)
    started = time.perf_counter()
    first_block_s = None
    kept_events, retracted = [], []
    fault = None
    open_onsets: set[str] = set()  # classes with an onset not yet finished (kept if the run stops there)
    try:
        if out_dir:
            wav_sink = ClassWavSink(out_dir, bundle.sample_rate, source.rate, classes=list(engine.fixed or []))
            events_sink = EventsSink(out_dir / "events.jsonl")
        if play:
            player = PlaybackSink(play, bundle.sample_rate, device=_device_arg(args.output_device))
        sinks = [sink for sink in (wav_sink, events_sink, player) if sink is not None]

        def deliver(out):
            t_io = time.perf_counter()
            for sink in sinks:
                sink.write(out) if sink is not events_sink else sink.write(out.events)
            sink_timer.add(time.perf_counter() - t_io)
            for event in out.events:
                if event.offset is None:
                    open_onsets.add(event.label)
                    continue
                open_onsets.discard(event.label)
                (retracted if event.retracted else kept_events).append(event)

        with view:
            try:
                for block in source:
                    if stop.requested:
                        break
                    if limit is not None:
                        block = block[: max(0, limit - fed)]
                        if block.shape[0] == 0:
                            break
                    out = engine.feed(block)
                    fed += block.shape[0]
                    energy += float(np.square(block, dtype=np.float64).sum())
                    if first_block_s is None and engine.frames_done:
                        first_block_s = time.perf_counter() - started
                    deliver(out)
                    view.update(out, fed)
                if hasattr(source, "stop"):
                    source.stop()
                deliver(engine.flush())
            except EngineFault as exc:  # documented faults: the files are finished up to here
                fault = str(exc)
    finally:
        if wav_sink:
            wav_sink.close(fed, keep=None if engine.fixed else {e.label for e in kept_events} | open_onsets)
        if events_sink:
            events_sink.close()
        if player:
            player.close(drain=not stop.requested)  # Ctrl-C stops at once
        if args.server:
            engine.close()
    stats = engine.stats()
    stats["timings"]["sinks"] = sink_timer.summary()
    detected = sorted({e.label for e in kept_events})
    mean_square = energy / max(1, fed * source.channels)
    summary = {
        "input": args.input, "input_rate": source.rate, "input_channels": source.channels,
        "input_seconds": fed / source.rate, "wall_seconds": time.perf_counter() - started,
        "input_rms_dbfs": 10 * math.log10(mean_square + 1e-20) if math.isfinite(mean_square) else None,
        "first_block_seconds": first_block_s, "classes": args.classes, "detected_classes": detected,
        "outputs": wav_sink.labels if wav_sink else [], "events": len(kept_events),
        "retracted_onsets": len(retracted), "interrupted": stop.requested, **stats,
        "overflows": getattr(source, "overflows", 0),
        "playback_underflow_frames": player.underflow_frames if player else 0,
        "playback_played_frames": player.played_frames if player else 0,
        "playback_unplayed_frames": player.unplayed_frames if player else 0,
        "playback_overflow_frames": player.ring.overflow_frames if player else 0,  # the device fell > 2 s behind
        "late_backfill_samples": wav_sink.late_backfill_samples if wav_sink else 0,
        "removed_stale_outputs": removed, "fault": fault,
        "bundle": str(bundle.path) if not args.server else engine.ready.get("bundle"),
    }
    if hasattr(source, "scene"):
        summary["demo_truth"] = [{"label": e.label, "onset": e.onset, "offset": e.offset} for e in source.scene.events]
    if out_dir:
        write_summary(out_dir / "summary.json", summary)
    t = stats["timings"]
    print(f"detected: {', '.join(detected) or 'nothing'}")
    for e in kept_events:
        print(f"  {e.label:18s} {e.onset:7.2f}–{e.offset:7.2f} s  peak {e.peak:.2f}  (decided at {e.decided_at:.2f} s)")
    if retracted:
        labels = ", ".join(sorted({e.label for e in retracted}))
        print(f"retracted {len(retracted)} onset(s) shorter than the minimum event length: {labels}")
    notes = _repair_notes(stats.get("repairs"), source, bundle)
    if notes:
        print("input repairs: " + "; ".join(notes))
    if summary["overflows"]:
        print(f"input overflows: {summary['overflows']} (audio was lost: the device delivered faster than it was read)")
    print(f"{fed / source.rate:.1f} s of audio in {summary['wall_seconds']:.1f} s; block p50 {t['block'].get('p50_ms', 0):.2f} ms "
          f"p99 {t['block'].get('p99_ms', 0):.2f} ms; deadline misses {stats['deadline_misses']}; device {stats['device']}")
    if fault:
        print(f"stream-s5: error: the stream stopped after {fed / source.rate:.1f} s: {fault}", file=sys.stderr)
    if stop.requested:
        print(f"interrupted after {fed / source.rate:.1f} s of input: the outputs hold everything up to there")
    if out_dir:
        print(f"wrote {len(summary['outputs'])} class stream(s), events.jsonl and summary.json to {out_dir}")
    return 1 if fault else 130 if stop.requested else 0


def run_compare(argv) -> int:
    p = argparse.ArgumentParser(prog="stream-s5 compare",
                                description="Paired bootstrap over scenes of two 'stream-s5 eval --json' files of the same "
                                            "scenes: each metric's difference (second − first) with its confidence interval.")
    p.add_argument("first", help="eval JSON of the reference bundle")
    p.add_argument("second", help="eval JSON of the candidate, same scenes")
    p.add_argument("--resamples", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the comparison here")
    args = p.parse_args(argv)
    import json

    from rich.console import Console
    from rich.table import Table

    from stream_s5.evaluate import compare

    runs = []
    for path in (args.first, args.second):
        try:
            runs.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            print(f"stream-s5 compare: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    try:
        result = compare(runs[0], runs[1], resamples=args.resamples, seed=args.seed)
    except ValueError as exc:
        print(f"stream-s5 compare: {exc}", file=sys.stderr)
        return 2
    table = Table(title=f"{args.second} − {args.first} ({result['scenes']} paired scenes, "
                        f"{result['resamples']} resamples, {result['level']:.0%} interval)")
    for column in ("metric", "first", "second", "difference", "interval", "P(second better)"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, row in result["metrics"].items():
        def fmt(x):
            return "—" if x is None else f"{x:+.3f}" if x is row["difference"] else f"{x:.3f}"
        interval = "—" if row["ci_low"] is None else f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
        better = "—" if row["p_b_better"] is None else f"{row['p_b_better']:.2f}"
        table.add_row(key, fmt(row["a"]), fmt(row["b"]), fmt(row["difference"]), interval, better)
    Console().print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"first": args.first, "second": args.second, **result}, indent=2) + "\n")
    return 0


def run_eval(argv) -> int:
    args = _eval_parser().parse_args(argv)
    from rich.progress import Progress

    from stream_s5.evaluate import EvalOptions, evaluate

    if args.dcase:
        return _run_dcase_eval(args)
    if args.write_estimates:
        print("stream-s5 eval: --write-estimates needs --dcase DIR", file=sys.stderr)
        return 2

    p_no_target = args.p_no_target if args.p_no_target is not None else (0.2 if args.soundbank else 0.1)
    if args.soundbank:
        folder = Path(args.soundbank) / args.split if args.split else Path(args.soundbank)
        if not folder.is_dir():
            print(f"stream-s5 eval: soundbank folder not found: {folder}", file=sys.stderr)
            return 2
    opts = EvalOptions(scenes=args.scenes, seed=args.seed, duration=args.duration, refine=args.refine, mode=args.mode,
                       threads=args.threads, soundbank=args.soundbank, split=args.split, p_no_target=p_no_target)
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(f"eval ({args.mode})", total=args.scenes)
        summary = evaluate(args.model, opts, progress=lambda done, total: progress.update(task, completed=done))
    _print_eval(summary)
    if args.json:
        from stream_s5.sinks import strict_json

        Path(args.json).write_text(strict_json(summary, indent=2) + "\n")
    return 0


def _run_dcase_eval(args) -> int:
    from rich.progress import Progress

    from stream_s5.bundle import BundleError, load_bundle
    from stream_s5.dcase import DcaseLayoutError, DcaseOptions, score_dcase
    from stream_s5.sinks import strict_json

    opts = DcaseOptions(rate=args.dcase_rate or None, channels=args.dcase_channels or None, refine=args.refine,
                        threads=args.threads, mono_input=args.mono_input, write_estimates=args.write_estimates, limit=args.limit,
                        max_classes=args.max_classes or None)
    try:
        bundle = load_bundle(args.model)
    except BundleError as exc:
        print(f"stream-s5 eval: {exc}", file=sys.stderr)
        return 2
    if args.write_estimates:
        est = Path(args.write_estimates)
        if est.exists() and (not est.is_dir() or any(est.glob("*.wav"))):
            print(f"stream-s5 eval: {est} exists and holds .wav files (or is not a folder): estimates from another run "
                  "would be scored with these; give an empty or new folder", file=sys.stderr)
            return 2
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("eval (DCASE folder)", total=None)
        try:
            summary = score_dcase(args.dcase, bundle, opts,
                                  progress=lambda done, total: progress.update(task, completed=done, total=total))
        except DcaseLayoutError as exc:  # the folder is checked before any soundscape is streamed
            print(f"stream-s5 eval: {exc}", file=sys.stderr)
            return 2
    _print_eval({**summary, "settings": {**summary["settings"], "mode": "DCASE folder"}})
    if args.json:
        Path(args.json).write_text(strict_json(summary, indent=2) + "\n")
    return 0


def _print_eval(summary: dict):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"stream-s5 eval ({summary['settings']['mode']}, {summary['scenes']} scenes, "
                        f"K={summary['settings']['passes']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("CA-SDRi (dB)", "ca_sdri_db"), ("label accuracy", "label_accuracy"), ("SI-SDRi detected (dB)", "si_sdri_db"),
            ("SED segment F1 (1 s)", "segment_f1"), ("SED event F1 (200 ms)", "event_f1"),
            ("median onset delay (s)", "median_onset_delay_s"), ("false alarms / minute (no-target scenes)", "false_alarms_per_minute"),
            ("RTF", "rtf")]
    for name, key in rows:
        if key not in summary:
            continue  # e.g. no SED figures for a DCASE test folder (it has no event lists)
        value = summary.get(key)
        table.add_row(name, "—" if value is None else f"{value:.3f}")
    console = Console()
    console.print(table)
    per_class = Table(title="per class (scene level)")
    for column in ("class", "present", "detected", "false", "recall", "precision", "SDRi detected (dB)"):
        per_class.add_column(column, justify="left" if column == "class" else "right")

    def fmt(value):
        return "—" if value is None else f"{value:.2f}"

    for name, row in summary.get("per_class", {}).items():
        per_class.add_row(name, str(row["present"]), str(row["detected"]), str(row["false"]), fmt(row["recall"]),
                          fmt(row["precision"]), fmt(row["sdri_detected_db"]))
    console.print(per_class)


def _list_devices() -> int:
    from stream_s5.sources import list_devices

    listing = list_devices()
    if not listing.strip():
        print("stream-s5: error: no audio devices found (PortAudio sees none: no sound card, no sound server "
              "such as PulseAudio, or libportaudio2 without a host API); --input FILE or --input demo need none",
              file=sys.stderr)
        return 2
    print(listing)
    return 0


def main(argv=None) -> int:
    """Exit codes: 0 done; 2 bad input, arguments, model, output folder or device (a message, never a
    traceback); 1 a fault while running (the outputs are finished up to it); 130 interrupted."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["eval"]:
            return run_eval(argv[1:])
        if argv[:1] == ["compare"]:
            return run_compare(argv[1:])
        if argv[:1] == ["serve"]:
            return run_serve(argv[1:])
        args = _run_parser().parse_args(argv)
        if args.list_classes:
            bundle = load_bundle(args.model)
            print("\n".join(bundle.classes if bundle else CLASSES))
            return 0
        if args.list_devices:
            return _list_devices()
        return run(args)
    except KeyboardInterrupt:
        print("stream-s5: interrupted", file=sys.stderr)
        return 130
    except (InputError, BundleError, BudgetError, OutputError, ValueError, ServerError) as exc:
        print(f"stream-s5: error: {exc}", file=sys.stderr)
        return 2
    except EngineFault as exc:
        print(f"stream-s5: error: the stream stopped: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # PortAudio errors (no device, bad device, device gone) are not worth a traceback
        if type(exc).__name__ != "PortAudioError":
            if isinstance(exc, OSError):  # disk full, folder removed mid-run, …
                print(f"stream-s5: error: {exc}", file=sys.stderr)
                return 1
            raise
        print(f"stream-s5: error: audio device: {exc} (see 'stream-s5 --list-devices'; --input FILE or "
              "--input demo need no device)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
