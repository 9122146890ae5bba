"""``auth-module --config station.yaml``: run until SIGINT or SIGTERM, then exit 0.

Also ``auth-module --everest`` (under EVerest's manager) and ``auth-module everest-module
DIR`` (the module folder the manager starts): CONTRACT.md §8, :mod:`auth_module.everest`;
and ``auth-module keys ...``, the console's access keys (§9, :mod:`auth_module.console`).

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
        epilog="Access keys of the station console: auth-module keys create|list|revoke "
               "--config PATH ... (see `auth-module keys --help`).",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--config", metavar="PATH",
                      help="the station file (YAML): broker, module id, config, connections")
    mode.add_argument("--everest", action="store_true",
                      help="run under EVerest's manager: module id, prefix and broker from its "
                           "EV_* environment, configuration from the manager (see "
                           "`auth-module everest-module --help`)")
    parser.add_argument("--module-dir", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["everest-module"]:
        return _everest_module(argv[1:])
    if argv[:1] == ["keys"]:  # the console's access keys (CONTRACT.md §9)
        from .console.keys_cli import main as keys_main

        return keys_main(argv[1:])
    args = build_parser().parse_args(argv)
    # First thing: a SIGTERM during start-up must still end in a clean exit 0.
    stop = StopSignal()  # also ends a start-up call at once (no polling)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.everest:
        from .everest.runner import run_everest

        return run_everest(stop, args.module_dir)
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


def _everest_module(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="auth-module everest-module",
        description="Write DIR/NAME/manifest.yaml and DIR/NAME/module.py: an EVerest module "
                    "folder. Put it in EVerest's modules directory and use `module: NAME` "
                    "where the EVerest config has `module: Auth` (docs/everest.md).")
    parser.add_argument("dir", metavar="DIR", help="where to write the folder NAME")
    parser.add_argument("--name", default="PyAuth", help="the module name (default: PyAuth)")
    args = parser.parse_args(argv)
    from .everest.folder import FolderError, write_module_folder

    try:
        folder = write_module_folder(args.dir, args.name)
    except FolderError as exc:
        print(f"auth-module: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {folder}/manifest.yaml and {folder}/module.py; in the EVerest config use "
          f"`module: {args.name}` in place of `module: Auth`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
