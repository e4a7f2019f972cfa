#!/usr/bin/env python3
"""The hub's entry point: `python run_hub.py --help`."""

import sys

from hub.cli import main

if __name__ == "__main__":
    sys.exit(main())
