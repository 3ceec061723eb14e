"""Schema drift against the platform's registry (docs/contracts.md, "The schema registry").

- `canonical.py`: how schemas are hashed (sha256 of sorted-key compact JSON).
- `pins.py`, `pin.py`: the pinned schemas in contracts/, and the re-pin command.
- `registry.py`: the registry client (timeouts, bounded retries).
- `check.py`: pins vs registry -> synced | drift | missing_in_registry | unknown.
- `state.py`: persistence in Postgres and the `registry` health component.
- `report.py`: metrics and Pulse drift events.
The job kind is `app/jobs/drift.py`; the routes are `app/api/drift.py`.
"""

from __future__ import annotations

from app.drift.state import health_component

__all__ = ["health_component"]
