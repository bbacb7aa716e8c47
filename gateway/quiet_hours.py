"""Quiet-hour window math over a recipient's candidate time zones.

Role: decide whether an instant lies inside a local-time sending window in every
zone a recipient may be in, and find the earliest instant that does. Pure.

Invariants:
- A window is the half-open local-time interval [start, end); when end is before
  start it wraps midnight (21:00-07:00). start == end is refused as ambiguous.
- An empty zone list is never inside a window (unknown zone fails closed).
- All arithmetic is on aware UTC instants, never wall-clock subtraction inside
  one zone (two wall times that differ only by ``fold`` are an hour apart).
- A local time in a spring-forward gap takes the offset in force before the gap
  and an ambiguous one its first occurrence (RFC 5545, zoneinfo ``fold=0``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from gateway.timezones import zone_info

__all__ = [
    "in_quiet_hours",
    "inside_window",
    "local_to_utc",
    "next_allowed",
    "utc_elapsed",
]

# Offsets are sampled this often to find their changes; no zone changes its
# offset twice within an hour.
_OFFSET_SAMPLE: Final = timedelta(hours=1)
_RESOLUTION: Final = timedelta(microseconds=1)


def inside_window(now: datetime, zones: Sequence[str], start: time, end: time) -> bool:
    """True only if ``now``'s local time is in [start, end) in every zone."""
    _check_aware("now", now)
    _check_window(start, end)
    if not zones:
        return False
    return all(
        _inside_local(now.astimezone(zone_info(zone)).time(), start, end)
        for zone in zones
    )


def in_quiet_hours(
    now: datetime, zones: Sequence[str], quiet_start: time, quiet_end: time
) -> bool:
    """True if ``now`` is quiet in any zone, or the zones are unknown.

    The quiet window [quiet_start, quiet_end) is the complement of the allowed
    window [quiet_end, quiet_start), so this is ``not inside_window`` of that.
    """
    return not inside_window(now, zones, quiet_end, quiet_start)


def next_allowed(
    now: datetime,
    zones: Sequence[str],
    start: time,
    end: time,
    horizon: timedelta = timedelta(days=8),
) -> datetime | None:
    """The earliest UTC instant in [now, now + horizon) inside the window everywhere.

    None when ``zones`` is empty or no instant in the horizon is inside the window
    in every zone at once. The answer is ``now`` or an instant at which some zone's
    window opens or its offset changes, so only those candidates are tried.
    """
    _check_aware("now", now)
    _check_window(start, end)
    if horizon <= timedelta(0):
        raise ValueError(f"horizon must be positive (got {horizon})")
    if not zones:
        return None

    first = now.astimezone(UTC)
    limit = first + horizon
    candidates = {first}
    for zone in {zone_info(name) for name in zones}:
        candidates.update(_openings(zone, start, first, limit))
        candidates.update(_offset_changes(zone, first, limit))
    for candidate in sorted(c for c in candidates if first <= c < limit):
        if inside_window(candidate, zones, start, end):
            return candidate
    return None


def local_to_utc(local: datetime, zone: str) -> datetime:
    """The UTC instant of a naive local time in ``zone`` (RFC 5545 rule).

    A time in a spring-forward gap uses the offset before the gap (02:30 on a
    New York spring-forward day is 07:30Z, i.e. 03:30 EDT); an ambiguous time
    its first occurrence.
    """
    if local.tzinfo is not None:
        raise ValueError(
            f"local must be a naive local datetime (got one with tzinfo {local.tzinfo})"
        )
    return local.replace(tzinfo=zone_info(zone), fold=0).astimezone(UTC)


def utc_elapsed(earlier: datetime, later: datetime) -> timedelta:
    """Time elapsed from ``earlier`` to ``later``, computed on UTC instants."""
    _check_aware("earlier", earlier)
    _check_aware("later", later)
    return later.astimezone(UTC) - earlier.astimezone(UTC)


def _inside_local(local: time, start: time, end: time) -> bool:
    """Whether a wall-clock time is in [start, end); wraps midnight if end < start."""
    if start < end:
        return start <= local < end
    return local >= start or local < end


def _openings(
    zone: ZoneInfo, start: time, first: datetime, limit: datetime
) -> Iterator[datetime]:
    """UTC instants at which the window opens in ``zone`` between first and limit.

    Both readings of an ambiguous or missing local time are given (fold 0 and 1):
    after a fall-back the wall clock passes ``start`` a second time.
    """
    day = first.astimezone(zone).date() - timedelta(days=1)
    last_day = limit.astimezone(zone).date() + timedelta(days=1)
    while day <= last_day:
        for fold in (0, 1):
            yield _opening(day, start, zone, fold)
        day += timedelta(days=1)


def _opening(day: date, start: time, zone: ZoneInfo, fold: int) -> datetime:
    """The UTC instant of ``start`` on ``day`` in ``zone`` with the given fold."""
    local = datetime.combine(day, start, tzinfo=zone).replace(fold=fold)
    return local.astimezone(UTC)


def _offset_changes(
    zone: ZoneInfo, first: datetime, limit: datetime
) -> Iterator[datetime]:
    """UTC instants in [first, limit] at which ``zone`` changes its UTC offset."""
    before = first
    while before < limit:
        after = min(before + _OFFSET_SAMPLE, limit)
        if _offset(zone, before) != _offset(zone, after):
            yield _first_with_new_offset(zone, before, after)
        before = after


def _first_with_new_offset(
    zone: ZoneInfo, before: datetime, after: datetime
) -> datetime:
    """Bisect to the first microsecond after ``before`` with ``after``'s offset."""
    old = _offset(zone, before)
    while after - before > _RESOLUTION:
        middle = before + (after - before) // 2
        if _offset(zone, middle) == old:
            before = middle
        else:
            after = middle
    return after


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta | None:
    """UTC offset of ``zone`` at an aware instant."""
    return instant.astimezone(zone).utcoffset()


def _check_aware(name: str, value: datetime) -> None:
    """Raise ``ValueError`` unless ``value`` is a timezone-aware datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be a timezone-aware datetime (got naive {value.isoformat()})"
        )


def _check_window(start: time, end: time) -> None:
    """Raise ``ValueError`` unless start and end are distinct naive local times."""
    if start.tzinfo is not None or end.tzinfo is not None:
        raise ValueError(
            f"window times must be naive local times (got {start} and {end} "
            "with a tzinfo)"
        )
    if start == end:
        raise ValueError(
            f"window start and end are both {start}: expected distinct times "
            "(an empty or all-day window is ambiguous)"
        )
