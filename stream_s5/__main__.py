"""The `stream-s5` command's entry (also `python -m stream_s5`).

Ctrl-C or SIGTERM while the heavy modules load or the models are built is a quiet exit with code 130,
never a traceback; once a stream runs, the CLI's own handler takes over and finishes the files."""

import os
import signal
import sys


def _quiet_exit(signum, frame):
    # os._exit, not SystemExit: an exception raised inside a library's import can be swallowed by a bare
    # `except:` there (seen: the run then went on to the end and exited 0). No output file is open while
    # this handler is installed, so there is nothing to finish.
    sys.stderr.write("stream-s5: interrupted\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(130)


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _quiet_exit)
    from stream_s5.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
