"""The job worker: `python -m worker` runs ledger jobs from the RQ queue."""
