"""Unit and property tests of gateway.quiet_hours: window math on UTC instants."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.quiet_hours import (
    in_quiet_hours,
    inside_window,
    local_to_utc,
    next_allowed,
    utc_elapsed,
)

_CASES = {
    case["id"]: case
    for case in json.loads(
        (Path(__file__).parent / "data" / "field-cases.json").read_text("utf-8")
    )
}
_OPEN, _CLOSE = time(8), time(21)
_NEW_YORK = "America/New_York"


def _case(case_id: str) -> dict[str, Any]:
    case: dict[str, Any] = _CASES[case_id]
    return case


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _window(spec: dict[str, str]) -> tuple[time, time]:
    return time.fromisoformat(spec["start"]), time.fromisoformat(spec["end"])


def _at(zone: str, text: str) -> datetime:
    """A naive local ISO time in ``zone`` as a UTC instant (RFC 5545 rule)."""
    return local_to_utc(datetime.fromisoformat(text), zone)


# Field cases ----------------------------------------------------------------------


def test_QH_01_quiet_window_wrapping_midnight_still_applies_after_midnight() -> None:
    case = _case("QH-01")
    zones = [case["input"]["tz"]]

    for name in ("window_a", "window_b"):
        quiet_start, quiet_end = _window(case["input"][name])
        for instant, expected in case["expected"][name].items():
            quiet = in_quiet_hours(_utc(instant), zones, quiet_start, quiet_end)
            assert ("quiet" if quiet else "not quiet") == expected, (name, instant)


def test_QH_01_instants_are_the_stated_local_times() -> None:
    case = _case("QH-01")
    zone = ZoneInfo(case["input"]["tz"])

    for instant, label in case["input"]["instants"].items():
        local = _utc(instant).astimezone(zone).strftime("%H:%M")
        assert label.startswith(f"{local} local"), instant


def test_QH_03_window_edges_are_half_open_to_the_second() -> None:
    case = _case("QH-03")
    zones = [case["input"]["tz"]]
    quiet_start, quiet_end = _window(case["input"]["window"])

    for instant in case["input"]["instants"]:
        quiet = in_quiet_hours(_utc(instant), zones, quiet_start, quiet_end)
        assert ("DEFER" if quiet else "ALLOW") == case["expected"][instant], instant


def test_QH_03_all_day_window_ending_2359_leaves_the_last_minute_quiet() -> None:
    case = _case("QH-03")
    start, end = _window(case["input"]["config_all_day"])
    instant = _utc(case["input"]["instant_all_day"])

    assert not inside_window(instant, [case["input"]["tz"]], start, end)


def test_QH_05_time_in_spring_forward_gap_takes_the_offset_before_the_gap() -> None:
    case = _case("QH-05")
    expected = case["expected"]
    zone = case["input"]["tz"]

    resolved = _at(zone, case["input"]["scheduled_local"])

    assert resolved == _utc(expected["resolved_instant"])
    assert resolved.astimezone(ZoneInfo(zone)).isoformat() == expected["resolved_local"]


def test_QH_07_local_time_uses_the_offset_of_its_date_not_lmt() -> None:
    case = _case("QH-07")
    expected = case["expected"]
    zone = case["input"]["tz"]

    resolved = _at(zone, case["input"]["local"])

    assert resolved == _utc(expected["utc"])
    assert resolved.astimezone(ZoneInfo(zone)).isoformat().endswith(expected["offset"])
    assert resolved != _utc(expected["wrong_result_to_detect"].split(" ")[0])


def test_QH_08_sends_with_the_same_wall_time_are_an_hour_apart() -> None:
    case = _case("QH-08")
    zone = ZoneInfo(case["input"]["recipient_tz"])
    first, second = (_utc(s).astimezone(zone) for s in case["input"]["sends"])

    elapsed = utc_elapsed(first, second)

    assert second - first == timedelta(0)  # the fault: wall-clock arithmetic
    assert elapsed == timedelta(minutes=60)
    assert case["expected"]["elapsed_between_sends"] == "60 minutes"
    assert elapsed >= timedelta(minutes=45)  # rule_a: previous send left the window
    assert elapsed < timedelta(minutes=90)  # rule_b: previous send still counts


# Boundaries ----------------------------------------------------------------------

_ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "America/Phoenix",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "UTC",
]
_DAYS = ["2024-07-15", "2024-03-10", "2024-11-03", "2024-10-06", "2024-04-07"]


@pytest.mark.parametrize("day", _DAYS)
@pytest.mark.parametrize("zone", _ZONES)
@pytest.mark.parametrize(
    ("clock", "inside"),
    [
        pytest.param("07:59:59", False, id="07:59:59"),
        pytest.param("08:00:00", True, id="08:00:00"),
        pytest.param("20:59:59", True, id="20:59:59"),
        pytest.param("21:00:00", False, id="21:00:00"),
    ],
)
def test_window_edges_hold_in_every_zone_and_on_dst_days(
    zone: str, day: str, clock: str, inside: bool
) -> None:
    instant = _at(zone, f"{day}T{clock}")

    assert inside_window(instant, [zone], _OPEN, _CLOSE) is inside


@pytest.mark.parametrize("day", ["2024-03-10", "2024-11-03", "2024-07-15"])
def test_next_allowed_is_exactly_the_opening_on_new_york_dst_days(day: str) -> None:
    now = _at(_NEW_YORK, f"{day}T07:59:30")

    allowed = next_allowed(now, [_NEW_YORK], _OPEN, _CLOSE)

    assert allowed == _at(_NEW_YORK, f"{day}T08:00:00")


@pytest.mark.parametrize("day", ["2024-03-10", "2024-11-03"])
def test_next_allowed_after_closing_is_next_morning_on_new_york_dst_days(
    day: str,
) -> None:
    now = _at(_NEW_YORK, f"{day}T21:00:00")
    tomorrow = (datetime.fromisoformat(day) + timedelta(days=1)).date()

    allowed = next_allowed(now, [_NEW_YORK], _OPEN, _CLOSE)

    assert allowed == _at(_NEW_YORK, f"{tomorrow}T08:00:00")


def test_next_allowed_is_now_when_already_inside() -> None:
    now = _at(_NEW_YORK, "2024-07-15T12:34:56.789")

    assert next_allowed(now, [_NEW_YORK], _OPEN, _CLOSE) == now


def test_window_opening_in_spring_forward_gap_opens_when_the_gap_ends() -> None:
    # 02:30 does not exist on 2024-03-10; 03:00 EDT (07:00Z) is already past it.
    now = _utc("2024-03-10T06:00:00Z")

    allowed = next_allowed(now, [_NEW_YORK], time(2, 30), time(5))

    assert allowed == _utc("2024-03-10T07:00:00Z")


def test_window_opening_at_ambiguous_time_reopens_after_fall_back() -> None:
    # 01:30-01:45 happens twice on 2024-11-03: 05:30Z (EDT) and 06:30Z (EST).
    start, end = time(1, 30), time(1, 45)
    after_first = _utc("2024-11-03T05:50:00Z")

    assert _at(_NEW_YORK, "2024-11-03T01:30") == _utc("2024-11-03T05:30:00Z")
    assert next_allowed(after_first, [_NEW_YORK], start, end) == _utc(
        "2024-11-03T06:30:00Z"
    )


def test_wrapping_window_next_allowed_is_the_evening_opening() -> None:
    now = _at("UTC", "2024-07-15T12:00")

    allowed = next_allowed(now, ["UTC"], time(21), time(7))

    assert allowed == _at("UTC", "2024-07-15T21:00")


def test_zones_too_far_apart_for_a_narrow_window_give_none() -> None:
    now = _utc("2024-07-15T00:00:00Z")

    assert next_allowed(now, ["UTC", "Asia/Tokyo"], time(12), time(13)) is None


def test_two_zones_wait_for_the_later_opening() -> None:
    now = _utc("2024-07-15T11:00:00Z")  # 07:00 New York, 04:00 Los Angeles
    zones = [_NEW_YORK, "America/Los_Angeles"]

    allowed = next_allowed(now, zones, _OPEN, _CLOSE)

    assert allowed == _at("America/Los_Angeles", "2024-07-15T08:00")


# Unknown zones and misuse --------------------------------------------------------


def test_empty_zone_list_is_never_inside_and_always_quiet() -> None:
    now = _utc("2024-07-15T16:00:00Z")

    assert inside_window(now, [], _OPEN, _CLOSE) is False
    assert next_allowed(now, [], _OPEN, _CLOSE) is None
    assert in_quiet_hours(now, [], _CLOSE, _OPEN) is True


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        inside_window(datetime(2024, 7, 15, 12), ["UTC"], _OPEN, _CLOSE)
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        next_allowed(datetime(2024, 7, 15, 12), ["UTC"], _OPEN, _CLOSE)


def test_aware_local_time_is_refused_by_local_to_utc() -> None:
    with pytest.raises(ValueError, match="naive local datetime"):
        local_to_utc(datetime(2024, 7, 15, 12, tzinfo=UTC), _NEW_YORK)


def test_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="expected distinct times"):
        inside_window(_utc("2024-07-15T12:00:00Z"), ["UTC"], _OPEN, _OPEN)


def test_window_time_with_tzinfo_is_refused() -> None:
    with pytest.raises(ValueError, match="naive local times"):
        inside_window(
            _utc("2024-07-15T12:00:00Z"), ["UTC"], time(8, tzinfo=UTC), _CLOSE
        )


def test_unknown_zone_in_list_is_refused() -> None:
    with pytest.raises(ValueError, match="'Mars/Olympus_Mons'"):
        inside_window(
            _utc("2024-07-15T12:00:00Z"), ["Mars/Olympus_Mons"], _OPEN, _CLOSE
        )


def test_non_positive_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="horizon must be positive"):
        next_allowed(_utc("2024-07-15T12:00:00Z"), ["UTC"], _OPEN, _CLOSE, timedelta(0))


# Properties ----------------------------------------------------------------------

_PROPERTY_ZONES = [
    "America/New_York",
    "America/Chicago",
    "America/Phoenix",
    "America/Adak",
    "Europe/London",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "UTC",
]
_instants = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2037, 12, 31),
    timezones=st.just(UTC),
)
_zone_lists = st.lists(st.sampled_from(_PROPERTY_ZONES), min_size=1, max_size=3)
_times = st.times().map(lambda t: t.replace(microsecond=0))


@settings(max_examples=150, deadline=None, database=None)
@given(now=_instants, zones=_zone_lists, start=_times, end=_times)
def test_next_allowed_is_the_first_instant_inside(
    now: datetime, zones: list[str], start: time, end: time
) -> None:
    if start == end:
        return
    allowed = next_allowed(now, zones, start, end)
    if allowed is None:
        return

    assert allowed >= now
    assert inside_window(allowed, zones, start, end)
    if allowed > now:
        assert not inside_window(allowed - timedelta(microseconds=1), zones, start, end)
    steps = 64
    for step in range(steps):
        earlier = now + (allowed - now) * step / steps
        assert not inside_window(earlier, zones, start, end) or earlier == allowed


@settings(max_examples=100, deadline=None, database=None)
@given(now=_instants, zone=st.sampled_from(_PROPERTY_ZONES), start=_times, end=_times)
def test_single_zone_window_always_opens_within_two_days(
    now: datetime, zone: str, start: time, end: time
) -> None:
    if start == end:
        return

    allowed = next_allowed(now, [zone], start, end)

    assert allowed is not None
    assert now <= allowed < now + timedelta(days=2)
