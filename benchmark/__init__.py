"""cmcbench: benchmark and metrics suite for semantic (cross-modal) image compression."""

import os
import shlex
import sys

__version__ = "0.1.0"


def command() -> str:
    """How to start cmcbench again from where it was started, for the commands that messages print: `python
    bench.py` in the checkout, `python PATH/bench.py` from another folder, `cmcbench` for the installed command."""
    started = sys.argv[0] if sys.argv else ""
    name = os.path.splitext(os.path.basename(started))[0]
    if name == "cmcbench":
        return "cmcbench"
    if name == "bench" and os.path.abspath(started) != os.path.abspath("bench.py"):
        return "python " + shlex.quote(started)
    return "python bench.py"
