"""The `stream-s5` command's entry (also `python -m stream_s5`).

Ctrl-C or SIGTERM while the heavy modules load or the models are built is a quiet exit with code 130,
never a traceback; once a stream runs, the CLI's own handler takes over and finishes the files."""

import signal
import sys


def _quiet_exit(signum, frame):
    sys.stderr.write("stream-s5: interrupted\n")
    raise SystemExit(130)


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _quiet_exit)
    from stream_s5.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
