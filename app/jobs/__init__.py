"""Jobs: the ledger, the runner, and one module per job kind.

To add a kind: write `app/jobs/<kind>.py` defining `KIND = JobKind(...)` (see
`base.py`), list it below, and add a trigger route in `app/api/`.
"""

from __future__ import annotations

from app.jobs import aggregates, drift, housekeeping, migrate, retention
from app.jobs.base import JobKind

KINDS: dict[str, JobKind] = {m.KIND.name: m.KIND for m in (migrate, drift, retention, aggregates, housekeeping)}

from app.jobs import backfill  # noqa: E402 - two kinds: backfill.bars_ohlcv, backfill.aggregates

KINDS.update(backfill.KINDS)
