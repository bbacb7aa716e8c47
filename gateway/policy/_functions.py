"""Host functions that policies call, so they read like the regulation.

Each takes and returns CEL values. They are bound to every compiled program
once, at load time; nothing is copied into each evaluation.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from celpy import celtypes

from gateway import quiet_hours


def _clock(value: Any) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError as exc:
        raise ValueError(
            f"expected a local time like '08:00', found {value!r}"
        ) from exc


def _zones(value: Any) -> list[str]:
    return [str(zone) for zone in value]


def _instant(value: Any) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"expected a timestamp, found {value!r}")
    return value.astimezone(UTC)


def inside_window(now: Any, zones: Any, start: Any, end: Any) -> celtypes.BoolType:
    """True when local time is inside [start, end) in every candidate zone."""
    inside = quiet_hours.inside_window(
        _instant(now), _zones(zones), _clock(start), _clock(end)
    )
    return celtypes.BoolType(inside)


def next_allowed(now: Any, zones: Any, start: Any, end: Any) -> celtypes.TimestampType:
    """The earliest instant, from now, inside the window in every zone."""
    found = quiet_hours.next_allowed(
        _instant(now), _zones(zones), _clock(start), _clock(end)
    )
    if found is None:
        raise ValueError(
            f"no instant in the next 8 days is inside {start}-{end} "
            f"in all of {_zones(zones)}"
        )
    return celtypes.TimestampType(found)


HOST_FUNCTIONS = {
    "inside_window": inside_window,
    "next_allowed": next_allowed,
}
