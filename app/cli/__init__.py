"""`mds`: the store's command-line client (click + rich), over the HTTP API only.

It reads `STORE_URL` (default http://127.0.0.1:8082) and `ADMIN_TOKEN` (default the
store's own default, `iamalive`) from the environment or a `.env` in the working
directory; `--url` / `--token` override both. It never touches the database or Redis.
`python -m app.cli` is the same program.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from app.cli.commands import run

    return run(argv)
