#!/usr/bin/env python3
"""cmcbench command line; `python bench.py --help` lists the commands."""

import os
import signal
import sys


def _stopped_while_starting(signum, frame):
    """Ctrl-C or SIGTERM while the libraries load, before anything is written: a quiet exit, no traceback."""
    sys.stderr.write("\nStopped before the command started; nothing was written.\n")
    os._exit(130 if signum == signal.SIGINT else 143)


if __name__ == "__main__":
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
        signal.signal(signal.SIGINT, _stopped_while_starting)
    signal.signal(signal.SIGTERM, _stopped_while_starting)

    from benchmark.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, main

    code = main()
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        # Stopped: finished work is on disk and the workers are killed. Leave now, without the interpreter's exit
        # hooks, which join the process pool's threads and could wait on a result a killed worker never sends.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    # Done: a signal from here on would only kill the interpreter's teardown (which puts the default handlers
    # back, except "ignore") and turn a finished command's exit status into -15 or -2. Blocking it in this
    # thread is not enough: a process-directed signal goes to any thread (torch's, the pool's) not blocking it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)
