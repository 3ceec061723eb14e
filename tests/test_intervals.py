"""Strict interval parsing used by schedules and retention policies."""

from datetime import timedelta

import pytest

from app.intervals import IntervalError, format_interval, parse_interval


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30 days", timedelta(days=30)),
        ("1d", timedelta(days=1)),
        ("12h", timedelta(hours=12)),
        ("90 minutes", timedelta(minutes=90)),
        ("1 day 6 hours", timedelta(days=1, hours=6)),
        ("PT1H", timedelta(hours=1)),
        ("P2W", timedelta(weeks=2)),
        ("  2 weeks ", timedelta(weeks=2)),
    ],
)
def test_accepts(text, expected):
    assert parse_interval(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "-1 day",
        "0 days",
        "soon",
        "1 fortnight",
        "1.5 days",
        "30",
        "P",
        30,
        None,
        "1 day; DROP TABLE bars",
        "99999999 weeks",
    ],
)
def test_rejects(text):
    with pytest.raises(IntervalError):
        parse_interval(text)


def test_round_trip_format():
    assert format_interval(timedelta(days=30)) == "30 days"
    assert format_interval(timedelta(hours=1)) == "1 hour"
