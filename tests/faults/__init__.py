"""Fault injection: real processes, Postgres and Redis on 127.0.0.1, each case bounded."""
