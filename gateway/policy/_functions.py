"""Host functions that policies call, so they read like the regulation.

Each takes and returns CEL values and is bound to every compiled program once,
when the bundle loads; nothing is copied into each evaluation. `sends_in`
reads the decision's past sends from a context variable the engine sets for
the length of one evaluation. Signatures for the type checker are declared in
`gateway.policy._context`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

from celpy import celtypes

from gateway import quiet_hours
from gateway.timezones import zone_info

# Set by the engine around one evaluation (see _engine._current).
CURRENT_SENDS: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "tollgate_current_sends", default=()
)
CURRENT_NOW: contextvars.ContextVar[datetime | None] = contextvars.ContextVar(
    "tollgate_current_now", default=None
)


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


def strictest_window(table: Any, regions: Any) -> celtypes.MapType:
    """The narrowest permitted window among the default and the regions'.

    `table` is a data file's entries: a ``default`` entry and one per region
    (e.g. ``US-FL``), each with ``start`` and ``end``. The latest start and the
    earliest end win, so every jurisdiction the recipient may be in is obeyed.
    """
    entries = [table["default"], *(table[r] for r in regions if r in table)]
    start = max(_clock(e["start"]) for e in entries)
    end = min(_clock(e["end"]) for e in entries)
    return celtypes.MapType(
        {
            celtypes.StringType("start"): celtypes.StringType(start.strftime("%H:%M")),
            celtypes.StringType("end"): celtypes.StringType(end.strftime("%H:%M")),
        }
    )


def local_time(now: Any, zone: Any) -> celtypes.StringType:
    """The wall-clock time ("HH:MM") at `now` in `zone`."""
    local = _instant(now).astimezone(zone_info(str(zone)))
    return celtypes.StringType(local.strftime("%H:%M"))


def next_local_day(now: Any, zones: Any) -> celtypes.TimestampType:
    """The first instant at which a new local day has begun in every zone."""
    names = _zones(zones)
    if not names:
        raise ValueError("next_local_day needs at least one time zone")
    starts = []
    for name in names:
        local = _instant(now).astimezone(zone_info(name))
        midnight = datetime.combine(local.date() + timedelta(days=1), time())
        starts.append(quiet_hours.local_to_utc(midnight, name))
    return celtypes.TimestampType(max(starts))


def no_solicitation_day(
    days: Any, regions: Any, now: Any, zones: Any
) -> celtypes.BoolType:
    """True when, in any candidate zone, today is a listed day for a region.

    `days` is a data file's entries: each has ``region`` and ``dates``
    (ISO dates). Where the zone is unknown, today's UTC date is used.
    """
    wanted = {str(r) for r in regions}
    listed = {
        str(d)
        for entry in days
        if str(entry["region"]) in wanted
        for d in entry["dates"]
    }
    today = {_instant(now).astimezone(zone_info(z)).date().isoformat() for z in zones}
    today = today or {_instant(now).date().isoformat()}
    return celtypes.BoolType(bool(listed & today))


def sends_in(window: Any, purpose: Any = None, channel: Any = None) -> celtypes.IntType:
    """How many of the contact's sends fall in the last `window`, optionally
    only those of one purpose and one channel ("" means any)."""
    now = CURRENT_NOW.get()
    if now is None:
        raise ValueError("sends_in() is only available while deciding a message")
    start = now - _duration(window)
    count = sum(
        1
        for s in CURRENT_SENDS.get()
        if s.at.astimezone(UTC) > start
        and (not purpose or s.purpose == str(purpose))
        and (not channel or s.channel == str(channel))
    )
    return celtypes.IntType(count)


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    raise ValueError(f"expected a duration such as duration('24h'), found {value!r}")


HOST_FUNCTIONS: Mapping[str, Any] = {
    "inside_window": inside_window,
    "next_allowed": next_allowed,
    "strictest_window": strictest_window,
    "local_time": local_time,
    "next_local_day": next_local_day,
    "no_solicitation_day": no_solicitation_day,
    "sends_in": sends_in,
}
