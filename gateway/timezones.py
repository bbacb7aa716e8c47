"""Which time zones a recipient may be in, for quiet hours.

Role: turn a contact's stored time zone, region and phone number into the IANA
zones (and ISO 3166-2 regions) the recipient may be in. Pure: no I/O, no state.

Invariants:
- The first source that answers wins: explicit zone, then region, then phone.
- ``zones`` is sorted and de-duplicated; empty means unknown, never a guess.
- Known faults of phonenumbers' prefix data are corrected as classes: an
  override table for wrong prefixes, and the country's own zones when a number
  only gets its whole calling code's zone list (e.g. every NANPA zone).
- ``regions`` holds the contact's region and the phone's US state together, so
  a policy can apply the strictest rule when they disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import geocoder
from phonenumbers import timezone as phone_timezone
from phonenumbers.tzdata import TIMEZONE_DATA as PHONE_ZONE_DATA

from gateway._zone_data import (
    COUNTRY_ZONES,
    PHONE_ZONE_OVERRIDES,
    US_STATE_NAMES,
    US_STATE_ZONES,
)

__all__ = ["ZoneResolution", "phone_region", "resolve_zones", "zone_info"]

_E164: Final = re.compile(r"\+[1-9][0-9]{1,14}")
_REGION: Final = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")
_STATE_SUFFIX: Final = re.compile(r", ([A-Z]{2})$")


@dataclass(frozen=True)
class ZoneResolution:
    """The zones and regions a recipient may be in, and which input gave them.

    ``source`` is one of "contact", "region", "phone", "phone-override",
    "phone-country" or "none".
    """

    zones: tuple[str, ...]
    source: str
    regions: tuple[str, ...]


def zone_info(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` of an IANA name; ``ValueError`` if tzdata does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"time zone {name!r} is not an IANA time zone name known to tzdata "
            "(expected e.g. 'America/New_York')"
        ) from error


def resolve_zones(
    *, time_zone: str | None, region: str | None, phone_e164: str | None
) -> ZoneResolution:
    """Resolve a recipient's candidate zones: explicit zone, then region, then phone.

    Raises ``ValueError`` for an unknown zone name, a region that is not an ISO
    3166 code tzdata or the US state table knows, or a phone not in E.164 form.
    """
    regions = _regions(region, phone_e164)
    if time_zone is not None:
        return ZoneResolution((zone_info(time_zone).key,), "contact", regions)
    if region is not None:
        return ZoneResolution(_region_zones(region), "region", regions)
    if phone_e164 is not None:
        zones, source = _phone_zones(phone_e164)
        return ZoneResolution(zones, source, regions)
    return ZoneResolution((), "none", regions)


def phone_region(phone_e164: str) -> str | None:
    """ISO 3166-1 alpha-2 code of a number's region, or None if it has none."""
    number = _parse(phone_e164)
    if number is None:
        return None
    code = phonenumbers.region_code_for_number(number)
    return str(code) if code and code != "001" else None


def _region_zones(region: str) -> tuple[str, ...]:
    """Zones of a US state (49 CFR part 71) or of a country (tzdata zone.tab)."""
    code = _check_region(region)
    if code.startswith("US-"):
        return tuple(sorted(set(US_STATE_ZONES[code])))
    country = code.split("-")[0]
    if country not in COUNTRY_ZONES:
        raise ValueError(
            f"region {region!r} names no country in tzdata's zone.tab "
            "(expected an ISO 3166 code such as 'US-FL' or 'AU')"
        )
    return COUNTRY_ZONES[country]


def _check_region(region: str) -> str:
    """Return ``region`` if it looks like ISO 3166 and a US code is a known state."""
    if not _REGION.fullmatch(region):
        raise ValueError(
            f"region {region!r} is not an ISO 3166 code "
            "(expected e.g. 'US-FL' or 'AU', upper case)"
        )
    if region.startswith("US-") and region not in US_STATE_ZONES:
        raise ValueError(
            f"region {region!r} is not a US state, DC or territory "
            "(expected e.g. 'US-FL')"
        )
    return region


def _regions(region: str | None, phone_e164: str | None) -> tuple[str, ...]:
    """ISO 3166-2 regions from the contact's region and the phone's US state."""
    found: set[str] = set()
    if region is not None and "-" in _check_region(region):
        found.add(region)
    if phone_e164 is not None:
        state = _phone_state(phone_e164)
        if state is not None:
            found.add(state)
    return tuple(sorted(found))


def _phone_state(phone_e164: str) -> str | None:
    """The US state of a number's area code ("Miami, FL" -> "US-FL"), if any."""
    number = _parse(phone_e164)
    if number is None or phonenumbers.region_code_for_number(number) != "US":
        return None
    description = str(geocoder.description_for_number(number, "en"))
    if description in US_STATE_NAMES:
        return US_STATE_NAMES[description]
    suffix = _STATE_SUFFIX.search(description)
    if suffix is not None and f"US-{suffix.group(1)}" in US_STATE_ZONES:
        return f"US-{suffix.group(1)}"
    return None


def _phone_zones(phone_e164: str) -> tuple[tuple[str, ...], str]:
    """Zones of a phone number and the source label, corrected for known faults."""
    number = _parse(phone_e164)
    if number is None or not phonenumbers.is_valid_number(number):
        return (), "none"

    override = _override(phone_e164)
    if override is not None:
        return override, "phone-override"

    zones = _known(phone_timezone.time_zones_for_number(number))
    country = phone_region(phone_e164)
    country_zones = COUNTRY_ZONES.get(country or "", ())
    if _is_calling_code_list(number, zones) and 0 < len(country_zones) < len(zones):
        return country_zones, "phone-country"
    return zones, ("phone" if zones else "none")


def _override(phone_e164: str) -> tuple[str, ...] | None:
    """Zones from the longest override prefix matching the number, if any."""
    matches = [
        prefix for prefix in PHONE_ZONE_OVERRIDES if phone_e164.startswith(prefix)
    ]
    if not matches:
        return None
    return tuple(sorted(PHONE_ZONE_OVERRIDES[max(matches, key=len)].zones))


def _is_calling_code_list(
    number: phonenumbers.PhoneNumber, zones: tuple[str, ...]
) -> bool:
    """True when ``zones`` is the list phonenumbers keeps for the whole calling code.

    phonenumbers returns that list for numbers it cannot place (non-geographic
    types, or prefixes missing from its data, e.g. most +1 684 American Samoa
    and +1 868 Trinidad and Tobago numbers get all 42 NANPA zones).
    """
    whole_code = PHONE_ZONE_DATA.get(str(number.country_code), ())
    return bool(zones) and zones == _known(whole_code)


def _known(zones: tuple[str, ...]) -> tuple[str, ...]:
    """Sorted, de-duplicated zone names, without phonenumbers' "Etc/Unknown"."""
    return tuple(sorted({str(z) for z in zones} - {phone_timezone.UNKNOWN_TIMEZONE}))


def _parse(phone_e164: str) -> phonenumbers.PhoneNumber | None:
    """Parse an E.164 string; ``ValueError`` if it is not E.164, None if unparsable."""
    if not _E164.fullmatch(phone_e164):
        # The number itself stays out of the message: it may end up in a log.
        raise ValueError(
            f"phone_e164 is not in E.164 form (got {len(phone_e164)} characters; "
            "expected '+' and 2 to 15 digits, e.g. '+14155550100')"
        )
    try:
        return phonenumbers.parse(phone_e164, None)
    except phonenumbers.NumberParseException:
        return None
