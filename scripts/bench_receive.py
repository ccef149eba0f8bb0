#!/usr/bin/env python3
"""Thin wrapper: receive-path latency benchmark (logic in bridge/bench/receive.py)."""

import sys

from bridge.bench.receive import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
