"""Operator commands: `python -m app.manage migrate [--dry-run]` and `python -m app.manage status`.

For local runs and emergencies; in production, prefer `POST /migrate`, which records the
run in the job ledger.
"""

from __future__ import annotations

import argparse
import json
import sys

from app import config, db, logs, migrator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.manage")
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser("migrate", help="apply pending migrations now")
    mig.add_argument("--dry-run", action="store_true", help="list pending migrations only")
    sub.add_parser("status", help="print the schema version")
    args = parser.parse_args(argv)
    try:
        settings = config.load_settings()
    except config.ConfigError as exc:
        logs.fatal(str(exc))
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    if args.command == "migrate":
        result = migrator.apply(settings, dry_run=args.dry_run)
    else:
        with db.connect(settings, autocommit=True) as conn:
            result = migrator.status(conn)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
