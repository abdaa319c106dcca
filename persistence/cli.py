"""``python main.py db upgrade | current | downgrade REV [--db URL]``: schema management."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._engine import DEFAULT_URL, current, downgrade, head_revision, upgrade_to_head
from ._errors import StoreError


def db_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="main.py db", description="Manage the database schema.")
    parser.add_argument("action", choices=("upgrade", "current", "downgrade", "head"))
    parser.add_argument("revision", nargs="?", default="base",
                        help="target of downgrade (default: base)")
    parser.add_argument("--db", default=os.environ.get("TRADING_DB_URL", DEFAULT_URL),
                        help="database URL [env TRADING_DB_URL; default %(default)s]")
    args = parser.parse_args(list(argv))
    try:
        if args.action == "upgrade":
            print(f"upgraded to {upgrade_to_head(args.db)}")
        elif args.action == "current":
            print(current(args.db) or "empty (no schema yet)")
        elif args.action == "head":
            print(head_revision())
        else:
            downgrade(args.db, args.revision)
            print(f"downgraded to {args.revision}")
    except StoreError as exc:
        print(f"main.py db: error: {exc}", file=sys.stderr)
        return 1
    return 0
