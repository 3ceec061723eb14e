"""Fixtures of the fault suite (the shared ones live in tests/conftest.py, helpers in tests/support/)."""

from __future__ import annotations

import pytest

from tests.support.pg_cluster import PgCluster


@pytest.fixture
def pg_cluster():
    """A throwaway Postgres cluster (run as the postgres user) the test may stop and start."""
    cluster = PgCluster().init().start()
    yield cluster
    cluster.destroy()
