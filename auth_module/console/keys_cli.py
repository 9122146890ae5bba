"""``auth-module keys create|list|revoke --config PATH ...`` (CONTRACT.md §9).

The key file is found from the station file (beside it, named after it), wherever the
command is run from. ``create`` prints the new key once, alone on its last line; ``list``
never shows a key. Errors: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import cast

from .keys import KeyError_, Role, create_key, keys_path, list_keys, revoke_key


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auth-module keys",
                                     description="Access keys for the station console.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="create|list|revoke")
    create = sub.add_parser("create", help="make a key and print it once")
    create.add_argument("--config", required=True, metavar="PATH", help="the station file")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["admin", "viewer"])
    create.add_argument("--expires", metavar="RFC3339", default=None)
    lister = sub.add_parser("list", help="name, role, created, expires, last used")
    lister.add_argument("--config", required=True, metavar="PATH", help="the station file")
    revoke = sub.add_parser("revoke", help="revoke a key by its name")
    revoke.add_argument("--config", required=True, metavar="PATH", help="the station file")
    revoke.add_argument("name")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from ..station import StationError, load_station

    try:
        load_station(args.config)  # the right file, and a usable one
    except StationError as exc:
        print(f"auth-module: {exc}", file=sys.stderr)
        return 2
    path = keys_path(args.config)
    try:
        if args.command == "create":
            key, info = create_key(path, args.name, cast(Role, args.role), args.expires)
            print(f"name: {info.name}\nrole: {info.role}\nexpires: {info.expires or 'never'}")
            print("the key (shown only this once; store it now):")
            print(key)
        elif args.command == "list":
            keys = list_keys(path)
            if not keys:
                print("no keys")
            rows = [("NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED")] + [
                (k.name, k.role, k.created, k.expires or "never", k.last_used or "never")
                for k in keys]
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            for row in rows if keys else []:
                print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        else:
            revoke_key(path, args.name)
            print(f"revoked: {args.name}")
    except KeyError_ as exc:
        print(f"auth-module: keys {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"auth-module: keys {args.command}: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
