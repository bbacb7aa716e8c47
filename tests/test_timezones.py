"""Unit tests of gateway.timezones: which zones and regions a recipient may be in."""

from __future__ import annotations

import json
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest

from gateway import _zone_data
from gateway.quiet_hours import inside_window, next_allowed
from gateway.timezones import ZoneResolution, phone_region, resolve_zones, zone_info

_CASES = {
    case["id"]: case
    for case in json.loads(
        (Path(__file__).parent / "data" / "field-cases.json").read_text("utf-8")
    )
}


def _case(case_id: str) -> dict[str, Any]:
    case: dict[str, Any] = _CASES[case_id]
    return case


def _hhmm(text: str) -> time:
    return time.fromisoformat(text)


def _decide(
    case: dict[str, Any], zones: tuple[str, ...]
) -> tuple[str, datetime | None]:
    """ALLOW inside the allowed window (quiet end -> quiet start), else DEFER."""
    now = datetime.fromisoformat(case["input"]["now"])
    quiet = case["input"]["quiet_hours"]
    start, end = _hhmm(quiet["end"]), _hhmm(quiet["start"])
    if inside_window(now, zones, start, end):
        return "ALLOW", None
    return "DEFER", next_allowed(now, zones, start, end)


def _from_phone(phone: str) -> ZoneResolution:
    return resolve_zones(time_zone=None, region=None, phone_e164=phone)


def _local(case: dict[str, Any], zone: str) -> str:
    now = datetime.fromisoformat(case["input"]["now"])
    return now.astimezone(ZoneInfo(zone)).isoformat()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


# Field cases ----------------------------------------------------------------------


def test_TZ_01_area_code_623_is_phoenix_not_denver() -> None:
    case = _case("TZ-01")
    expected = case["expected"]

    resolution = _from_phone(case["input"]["recipient"])

    assert resolution.zones == (expected["resolved_tz"],)
    assert _local(case, expected["resolved_tz"]) == expected["local_time"]
    assert _decide(case, resolution.zones) == (expected["decision"], None)


def test_TZ_03_american_samoa_gets_pago_pago_not_the_nanpa_list() -> None:
    case = _case("TZ-03")
    expected = case["expected"]

    resolution = _from_phone(case["input"]["recipient"])

    assert phone_region(case["input"]["recipient"]) == expected["region"]
    assert resolution.zones == (expected["resolved_tz"],)
    assert resolution.source == "phone-country"
    assert _local(case, expected["resolved_tz"]) == expected["local_time"]
    assert _decide(case, resolution.zones) == (
        expected["decision"],
        _utc(expected["not_before"]),
    )


def test_TZ_05_trinidad_gets_port_of_spain_not_the_nanpa_list() -> None:
    case = _case("TZ-05")
    expected = case["expected"]

    resolution = _from_phone(case["input"]["recipient"])

    assert phone_region(case["input"]["recipient"]) == expected["region"]
    assert resolution.zones == (expected["resolved_tz"],)
    assert resolution.source == "phone-country"
    assert _local(case, expected["resolved_tz"]) == expected["local_time"]
    assert _decide(case, resolution.zones) == (
        expected["decision"],
        _utc(expected["not_before"]),
    )


def test_TZ_07_unalaska_907_581_is_alaska_time_not_honolulu() -> None:
    case = _case("TZ-07")
    expected = case["expected"]

    resolution = _from_phone(case["input"]["recipient"])

    assert expected["resolved_tz"].startswith("America/Anchorage ")
    assert resolution.zones == ("America/Anchorage",)
    assert resolution.source == "phone-override"
    assert resolution.regions == ("US-AK",)
    assert _local(case, "America/Anchorage") == expected["local_time"]
    assert _decide(case, resolution.zones) == (
        expected["decision"],
        _utc(expected["not_before"]),
    )


def test_TZ_09_multi_zone_mobile_waits_until_every_candidate_is_awake() -> None:
    case = _case("TZ-09")
    expected = case["expected"]

    resolution = _from_phone(case["input"]["recipient"])
    decision, not_before = _decide(case, resolution.zones)

    assert list(resolution.zones) == expected["phone_tz_candidates"]
    assert decision == expected["decision"]
    assert not_before == _utc(expected["not_before_if_all_candidates_must_be_awake"])
    assert not_before != _utc(expected["not_before_if_country_eastern_zone"])


def test_PH_01_plus_64_number_is_new_zealand_whatever_the_contact_country() -> None:
    case = _case("PH-01")
    expected = case["expected"]

    resolution = _from_phone(case["input"]["phone"])

    assert phone_region(case["input"]["phone"]) == expected["region"]
    assert resolution.zones == (expected["quiet_hours_tz"],)


# Regions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "region", "zones"),
    [
        pytest.param("+13055550100", "US-FL", ("America/New_York",), id="305-florida"),
        pytest.param("+14055550100", "US-OK", ("America/Chicago",), id="405-oklahoma"),
        pytest.param("+14105550100", "US-MD", ("America/New_York",), id="410-maryland"),
        pytest.param("+12125550100", "US-NY", ("America/New_York",), id="212-city-st"),
    ],
)
def test_state_is_detected_from_area_code(
    phone: str, region: str, zones: tuple[str, ...]
) -> None:
    resolution = _from_phone(phone)

    assert resolution == ZoneResolution(zones=zones, source="phone", regions=(region,))


@pytest.mark.parametrize(
    ("region", "zones"),
    [
        pytest.param("US-FL", ("America/Chicago", "America/New_York"), id="florida"),
        pytest.param("US-OK", ("America/Chicago",), id="oklahoma"),
        pytest.param("US-MD", ("America/New_York",), id="maryland"),
        pytest.param("US-TX", ("America/Chicago", "America/Denver"), id="texas"),
        pytest.param("US-AZ", ("America/Phoenix",), id="arizona"),
        pytest.param("US-AK", ("America/Adak", "America/Anchorage"), id="alaska"),
        pytest.param("US-HI", ("Pacific/Honolulu",), id="hawaii"),
    ],
)
def test_explicit_region_gives_every_zone_the_state_spans(
    region: str, zones: tuple[str, ...]
) -> None:
    resolution = resolve_zones(time_zone=None, region=region, phone_e164=None)

    assert resolution == ZoneResolution(zones=zones, source="region", regions=(region,))


def test_contact_region_and_phone_state_are_both_kept_when_they_disagree() -> None:
    resolution = resolve_zones(
        time_zone=None, region="US-MD", phone_e164="+14055550100"
    )

    assert resolution.zones == ("America/New_York",)
    assert resolution.regions == ("US-MD", "US-OK")


def test_country_region_gives_the_country_zones_from_zone_tab() -> None:
    resolution = resolve_zones(time_zone=None, region="TT", phone_e164=None)

    assert resolution == ZoneResolution(("America/Port_of_Spain",), "region", ())


@pytest.mark.parametrize(
    "region",
    [
        pytest.param("us-fl", id="lower-case"),
        pytest.param("Florida", id="name"),
        pytest.param("US-ZZ", id="no-such-state"),
        pytest.param("ZZ", id="no-such-country"),
    ],
)
def test_unknown_region_is_refused(region: str) -> None:
    with pytest.raises(ValueError, match=repr(region)):
        resolve_zones(time_zone=None, region=region, phone_e164=None)


# Explicit zone and unknown numbers ------------------------------------------------


def test_explicit_time_zone_wins_over_region_and_phone() -> None:
    resolution = resolve_zones(
        time_zone="Europe/Paris", region="US-FL", phone_e164="+14055550100"
    )

    assert resolution == ZoneResolution(
        ("Europe/Paris",), "contact", ("US-FL", "US-OK")
    )


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../etc/passwd", "EST+5"])
def test_explicit_bad_time_zone_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not an IANA time zone name"):
        resolve_zones(time_zone=name, region=None, phone_e164=None)


@pytest.mark.parametrize(
    "phone",
    [
        pytest.param("+15555555555", id="invalid-nanpa"),
        pytest.param("+19999999999", id="unassigned-area-code"),
        pytest.param("+80012345678", id="non-geographic"),
    ],
)
def test_unknown_number_gives_no_zones(phone: str) -> None:
    assert _from_phone(phone).zones == ()
    assert _from_phone(phone).source == "none"


def test_nothing_known_gives_no_zones() -> None:
    resolution = resolve_zones(time_zone=None, region=None, phone_e164=None)

    assert resolution == ZoneResolution((), "none", ())


@pytest.mark.parametrize("phone", ["2125550199", "+1 212 555 0199", "+0123", ""])
def test_phone_not_in_e164_form_is_refused_without_echoing_it(phone: str) -> None:
    with pytest.raises(ValueError, match=r"not in E\.164 form") as raised:
        _from_phone(phone)

    assert phone == "" or phone not in str(raised.value)


def test_toll_free_number_has_no_state() -> None:
    assert _from_phone("+18005550100").regions == ()


# Data tables ---------------------------------------------------------------------


def test_state_table_covers_every_state_and_dc() -> None:
    states = set(_zone_data.US_STATE_NAMES.values())

    assert len(states) == 51
    assert states <= set(_zone_data.US_STATE_ZONES)


def test_every_table_zone_exists_in_tzdata() -> None:
    tables = [
        *_zone_data.US_STATE_ZONES.values(),
        *_zone_data.COUNTRY_ZONES.values(),
        *(entry.zones for entry in _zone_data.PHONE_ZONE_OVERRIDES.values()),
    ]
    names = {zone for zones in tables for zone in zones}

    assert names <= available_timezones()


def test_every_override_is_an_e164_prefix_with_a_source() -> None:
    for prefix, entry in _zone_data.PHONE_ZONE_OVERRIDES.items():
        assert prefix.startswith("+") and prefix[1:].isdigit()
        assert "https://" in entry.source
        assert entry.zones


def test_zone_info_refuses_phonenumbers_unknown_placeholder() -> None:
    with pytest.raises(ValueError, match="'Etc/Unknown'"):
        zone_info("Etc/Unknown")
