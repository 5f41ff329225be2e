#!/usr/bin/env python3
"""cmcbench command line; `python bench.py --help` lists the commands."""

import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
