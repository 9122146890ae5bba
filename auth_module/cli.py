"""``auth-module --config station.yaml``: run until SIGINT or SIGTERM, then exit 0.

Every failure a user can cause ends in one line on stderr and a non-zero status, never a
traceback: 2 for a station file (or station) that is wrong, 1 for anything unexpected.
"""

from __future__ import annotations

import argparse
import signal
import sys
from . import __version__
from .stopping import StopSignal


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auth-module",
        description="EVerest-compatible authorization module for EV chargers, over MQTT.",
    )
    parser.add_argument("--config", required=True, metavar="PATH",
                        help="the station file (YAML): broker, module id, config, connections")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # First thing: a SIGTERM during start-up must still end in a clean exit 0.
    stop = StopSignal()  # also ends a start-up call at once (no polling)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from .station import StationError, load_station

    try:
        station = load_station(args.config)
    except StationError as exc:
        print(f"auth-module: {exc}", file=sys.stderr)
        return 2

    from .logs import configure_logging
    from .module import AuthModule, StartupError

    configure_logging(station.logging.level, station.logging.format, station.logging.show_tokens,
                      cache=True)
    try:
        module = AuthModule(station)
    except StationError as exc:  # a plugin's name or options
        print(f"auth-module: {exc}", file=sys.stderr)
        return 2
    try:
        module.run(stop)
    except StartupError as exc:
        print(f"auth-module: {args.config}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # last resort: one line, not a traceback
        print(f"auth-module: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
