"""Static tables behind :mod:`gateway.timezones`.

Role: the facts the resolver needs that phonenumbers does not give correctly, each
table with its source. Invariants: every table is read-only (``MappingProxyType``
of tuples); every zone name in it exists in the bundled ``tzdata`` package (a test
checks this); the country table is read once, at import, from the ``tzdata``
package's own ``zone.tab``, so it always matches the zones zoneinfo loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from types import MappingProxyType
from typing import Final

__all__ = [
    "COUNTRY_ZONES",
    "PHONE_ZONE_OVERRIDES",
    "US_STATE_NAMES",
    "US_STATE_ZONES",
    "PhoneZoneOverride",
]

_EASTERN: Final = "America/New_York"
_CENTRAL: Final = "America/Chicago"
_MOUNTAIN: Final = "America/Denver"
_ARIZONA: Final = "America/Phoenix"
_PACIFIC: Final = "America/Los_Angeles"
_ALASKA: Final = "America/Anchorage"
_ALEUTIAN: Final = "America/Adak"
_HAWAII: Final = "Pacific/Honolulu"

# Every US state, DC and the inhabited territories -> every zone the area spans.
# Source: US Code of Federal Regulations, 49 CFR part 71 "Standard time zone
# boundaries", cross-checked with the US rows of tzdata's zone.tab. Where tzdata
# has several names with today's offsets (e.g. America/Indiana/Indianapolis,
# America/Boise), the zone's main name stands for all of them. Arizona is
# America/Phoenix only: the Navajo Nation's daylight saving time is not modelled.
US_STATE_ZONES: Final = MappingProxyType(
    {
        "US-AK": (_ALASKA, _ALEUTIAN),
        "US-AL": (_CENTRAL,),
        "US-AR": (_CENTRAL,),
        "US-AS": ("Pacific/Pago_Pago",),
        "US-AZ": (_ARIZONA,),
        "US-CA": (_PACIFIC,),
        "US-CO": (_MOUNTAIN,),
        "US-CT": (_EASTERN,),
        "US-DC": (_EASTERN,),
        "US-DE": (_EASTERN,),
        "US-FL": (_EASTERN, _CENTRAL),
        "US-GA": (_EASTERN,),
        "US-GU": ("Pacific/Guam",),
        "US-HI": (_HAWAII,),
        "US-IA": (_CENTRAL,),
        "US-ID": (_MOUNTAIN, _PACIFIC),
        "US-IL": (_CENTRAL,),
        "US-IN": (_EASTERN, _CENTRAL),
        "US-KS": (_CENTRAL, _MOUNTAIN),
        "US-KY": (_EASTERN, _CENTRAL),
        "US-LA": (_CENTRAL,),
        "US-MA": (_EASTERN,),
        "US-MD": (_EASTERN,),
        "US-ME": (_EASTERN,),
        "US-MI": (_EASTERN, _CENTRAL),
        "US-MN": (_CENTRAL,),
        "US-MO": (_CENTRAL,),
        "US-MP": ("Pacific/Saipan",),
        "US-MS": (_CENTRAL,),
        "US-MT": (_MOUNTAIN,),
        "US-NC": (_EASTERN,),
        "US-ND": (_CENTRAL, _MOUNTAIN),
        "US-NE": (_CENTRAL, _MOUNTAIN),
        "US-NH": (_EASTERN,),
        "US-NJ": (_EASTERN,),
        "US-NM": (_MOUNTAIN,),
        "US-NV": (_PACIFIC, _MOUNTAIN),
        "US-NY": (_EASTERN,),
        "US-OH": (_EASTERN,),
        "US-OK": (_CENTRAL,),
        "US-OR": (_PACIFIC, _MOUNTAIN),
        "US-PA": (_EASTERN,),
        "US-PR": ("America/Puerto_Rico",),
        "US-RI": (_EASTERN,),
        "US-SC": (_EASTERN,),
        "US-SD": (_CENTRAL, _MOUNTAIN),
        "US-TN": (_EASTERN, _CENTRAL),
        "US-TX": (_CENTRAL, _MOUNTAIN),
        "US-UT": (_MOUNTAIN,),
        "US-VA": (_EASTERN,),
        "US-VI": ("America/St_Thomas",),
        "US-VT": (_EASTERN,),
        "US-WA": (_PACIFIC,),
        "US-WI": (_CENTRAL,),
        "US-WV": (_EASTERN,),
        "US-WY": (_MOUNTAIN,),
    }
)

# English names as phonenumbers' geocoder writes them ("Florida") -> ISO 3166-2.
US_STATE_NAMES: Final = MappingProxyType(
    {
        "Alabama": "US-AL",
        "Alaska": "US-AK",
        "Arizona": "US-AZ",
        "Arkansas": "US-AR",
        "California": "US-CA",
        "Colorado": "US-CO",
        "Connecticut": "US-CT",
        "Delaware": "US-DE",
        "District of Columbia": "US-DC",
        "Washington D.C.": "US-DC",
        "Florida": "US-FL",
        "Georgia": "US-GA",
        "Hawaii": "US-HI",
        "Idaho": "US-ID",
        "Illinois": "US-IL",
        "Indiana": "US-IN",
        "Iowa": "US-IA",
        "Kansas": "US-KS",
        "Kentucky": "US-KY",
        "Louisiana": "US-LA",
        "Maine": "US-ME",
        "Maryland": "US-MD",
        "Massachusetts": "US-MA",
        "Michigan": "US-MI",
        "Minnesota": "US-MN",
        "Mississippi": "US-MS",
        "Missouri": "US-MO",
        "Montana": "US-MT",
        "Nebraska": "US-NE",
        "Nevada": "US-NV",
        "New Hampshire": "US-NH",
        "New Jersey": "US-NJ",
        "New Mexico": "US-NM",
        "New York": "US-NY",
        "North Carolina": "US-NC",
        "North Dakota": "US-ND",
        "Ohio": "US-OH",
        "Oklahoma": "US-OK",
        "Oregon": "US-OR",
        "Pennsylvania": "US-PA",
        "Rhode Island": "US-RI",
        "South Carolina": "US-SC",
        "South Dakota": "US-SD",
        "Tennessee": "US-TN",
        "Texas": "US-TX",
        "Utah": "US-UT",
        "Vermont": "US-VT",
        "Virginia": "US-VA",
        "Washington": "US-WA",
        "West Virginia": "US-WV",
        "Wisconsin": "US-WI",
        "Wyoming": "US-WY",
    }
)


@dataclass(frozen=True)
class PhoneZoneOverride:
    """A correction of phonenumbers' prefix-to-zone data, with where it comes from."""

    zones: tuple[str, ...]
    source: str


# E.164 digit prefixes (with "+") whose phonenumbers zone is known to be wrong.
# The longest matching prefix wins.
PHONE_ZONE_OVERRIDES: Final = MappingProxyType(
    {
        "+1907581": PhoneZoneOverride(
            zones=(_ALASKA,),
            source=(
                "Unalaska, AK keeps Alaska time; phonenumbers 9.0.43 says "
                "Pacific/Honolulu (https://github.com/daddyz/phonelib/issues/273)"
            ),
        ),
    }
)


def _read_country_zones() -> dict[str, tuple[str, ...]]:
    """Parse tzdata's zone.tab: ISO 3166-1 alpha-2 code -> sorted zone names."""
    text = files("tzdata").joinpath("zoneinfo", "zone.tab").read_text("utf-8")
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        code, _coordinates, zone = line.split("\t")[:3]
        table.setdefault(code, []).append(zone)
    return {code: tuple(sorted(zones)) for code, zones in table.items()}


# ISO 3166-1 alpha-2 -> the zones tzdata lists for that country (zone.tab keeps
# one row per country and zone, unlike zone1970.tab which shares rows).
COUNTRY_ZONES: Final = MappingProxyType(_read_country_zones())
