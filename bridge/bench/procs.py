"""Entry points the lab starts as subprocesses (``python -m bridge.bench.procs emulate|run ...``).

- ``emulate``: ``bridge emulate`` with the same flags plus ``--no-loopback-ice``. In the server
  namespace the emulator must offer its namespace address as its ICE candidate, but ``bridge emulate``
  always keeps candidates on 127.0.0.1 (``EmulatorConfig.loopback_ice`` has no CLI flag yet), so this
  wrapper builds the config itself.
- ``run``: ``bridge run`` with the same flags plus ``--loopback-ice``: when the lab has no namespaces
  (no root), the client must also keep its ICE candidates on 127.0.0.1 (ENVIRONMENT.md "aiortc").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys

from bridge.cli import build_parser
from bridge.cli import main as bridge_main


def emulate(argv: list[str]) -> int:
    from bridge.emulator.cli import config_from_args, serve

    loopback = "--no-loopback-ice" not in argv
    args = build_parser().parse_args(["emulate", *[a for a in argv if a != "--no-loopback-ice"]])
    config = dataclasses.replace(config_from_args(args), loopback_ice=loopback)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, args.host, args.port))
    return 0


def run(argv: list[str]) -> int:
    if "--loopback-ice" not in argv:
        return bridge_main(["run", *argv])
    from bridge.rtc.loopback import loopback_candidates

    with loopback_candidates():
        return bridge_main(["run", *[a for a in argv if a != "--loopback-ice"]])


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("emulate", "run"):
        print("usage: python -m bridge.bench.procs emulate|run [flags]", file=sys.stderr)
        return 2
    return emulate(argv[1:]) if argv[0] == "emulate" else run(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
