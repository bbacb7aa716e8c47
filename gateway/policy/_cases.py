"""Policy test cases and explain inputs: YAML a compliance officer can write.

A case file (``<bundle>/tests/*.yaml``) has optional ``defaults`` and a list
of ``cases``. Each case gives the clock (``at``), the contact, the message,
the contact's past sends and what is expected::

    defaults:
      at: 2026-07-15T16:00:00Z
      contact: {stage: engaged, phone: "+12125550123",
                consent: {"sms:marketing": granted}}
      message: {channel: sms, purpose: marketing}
    cases:
      - name: marketing without consent is denied
        contact: {consent: {}}
        expect: {outcome: DENY, rules: [consent.marketing-needs-grant]}

A case's ``contact`` and ``message`` replace the defaults key by key. A
contact may give ``phone`` (and ``time_zone``, ``region``): its time zones
and regions are then resolved exactly as the gateway resolves them, and the
phone number itself never enters the policy context. The contact's tier,
with its roles and caps, is computed from the bundle's ``tiers.yaml`` as the
gateway computes it; a case may name it instead (``tier: in-pipeline``, or
``tier: ""`` for none). Past sends are
``{ago: 2h, purpose: marketing, channel: sms}`` or ``{at: <instant>, ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from gateway import timezones
from gateway.errors import PolicyError
from gateway.policy._engine import DecisionInput, SendRecord
from gateway.policy._yaml import load as load_yaml

CONTACT_DEFAULTS: Mapping[str, Any] = {
    "id": "ct_test",
    "stage": "new",
    "do_not_contact": False,
    "sms_capable": True,
    "attributes": {},
    "time_zones": [],
    "time_zone_source": "none",
    "regions": [],
    "consent": {},
}
MESSAGE_DEFAULTS: Mapping[str, Any] = {
    "channel": "sms",
    "purpose": "marketing",
    "campaign": "test",
    "address_kind": "phone",
    "body_length": 100,
}
LOCATION_KEYS = ("phone", "time_zone", "region")
CASE_KEYS = {"name", "at", "contact", "message", "sends", "expect"}
EXPECT_KEYS = {"outcome", "rules", "not_before", "warnings"}
_AGO = re.compile(r"^(\d+)([smhd])$")


@dataclass(frozen=True)
class Expectation:
    outcome: str
    rules: tuple[str, ...] | None = None
    not_before: datetime | None = None
    no_not_before: bool = False
    warnings: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Case:
    file: str
    name: str
    given: DecisionInput
    expect: Expectation | None
    raw: Mapping[str, Any] = field(default_factory=dict)


def load_cases(folder: Path) -> list[Case]:
    """Every case of every ``*.yaml`` file in `folder`, in file order."""
    cases: list[Case] = []
    for path in sorted(folder.glob("*.yaml")):
        cases.extend(read_case_file(path))
    return cases


def read_case_file(path: Path) -> list[Case]:
    try:
        doc = load_yaml(path.read_bytes())
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path.name}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise PolicyError(f"{path.name}: expected a mapping with a list of 'cases'")
    defaults = doc.get("defaults") or {}
    return [_case(path.name, defaults, raw, i) for i, raw in enumerate(doc["cases"], 1)]


def read_input(path: Path) -> DecisionInput:
    """One explain input: a single case without `expect`."""
    try:
        doc = load_yaml(path.read_bytes())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: cannot read the input: {exc}") from exc
    if not isinstance(doc, dict):
        raise PolicyError(f"{path.name}: expected a mapping with at, contact, message")
    return _case(path.name, {}, {"name": "input", **doc}, 1).given


def _case(file: str, defaults: Mapping[str, Any], raw: Any, index: int) -> Case:
    where = f"{file}: case #{index}"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: expected a mapping")
    unknown = sorted(str(k) for k in set(raw) - CASE_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(unknown)}")
    name = str(raw.get("name") or f"case {index}")
    where = f"{file}: case {name!r}"
    now = _instant(raw.get("at", defaults.get("at")), where, "at")
    contact = _contact(
        {**_section(defaults, "contact"), **_section(raw, "contact")}, where
    )
    message = {
        **MESSAGE_DEFAULTS,
        **_section(defaults, "message"),
        **_section(raw, "message"),
    }
    message.setdefault(
        "consent",
        contact["consent"].get(f"{message['channel']}:{message['purpose']}", "none"),
    )
    message.setdefault(
        "consent_basis", "express_written" if message["consent"] == "granted" else ""
    )
    message.setdefault("consent_entry", 0)
    message.setdefault(
        "opt_out_confirmation_due", message["purpose"] == "opt_out_confirmation"
    )
    sends = [
        _send(s, now, where) for s in raw.get("sends", defaults.get("sends")) or []
    ]
    given = DecisionInput(now=now, contact=contact, message=message, sends=sends)
    expect = _expect(raw["expect"], where) if "expect" in raw else None
    return Case(file, name, given, expect, raw)


def _section(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise PolicyError(f"{key} must be a mapping, found {value!r}")
    return {str(k): _plain(v) for k, v in value.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, str) else value


def _contact(values: dict[str, Any], where: str) -> dict[str, Any]:
    derived = sorted(set(values) & {"tier_roles", "tier_caps"})
    if derived:
        raise PolicyError(
            f"{where}: {', '.join(derived)} come from tiers.yaml; give the "
            "contact's stage, or name its tier with tier"
        )
    location = {k: values.pop(k) for k in LOCATION_KEYS if k in values}
    contact = {**CONTACT_DEFAULTS, **values}
    if location:
        try:
            zones = timezones.resolve_zones(
                time_zone=location.get("time_zone"),
                region=location.get("region"),
                phone_e164=location.get("phone"),
            )
        except ValueError as exc:
            raise PolicyError(f"{where}: {exc}") from exc
        contact["time_zones"] = list(zones.zones)
        contact["time_zone_source"] = zones.source
        contact["regions"] = list(zones.regions)
    return contact


def _instant(value: Any, where: str, key: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise PolicyError(
                f"{where}: {key} must be an instant like 2026-07-15T16:00:00Z, "
                f"found {value!r}"
            ) from None
    if moment.tzinfo is None:
        raise PolicyError(f"{where}: {key} {value!r} has no UTC offset (add Z)")
    return moment.astimezone(UTC)


def _send(raw: Any, now: datetime, where: str) -> SendRecord:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: each send is a mapping, found {raw!r}")
    if "ago" in raw:
        match = _AGO.match(str(raw["ago"]))
        if match is None:
            raise PolicyError(
                f"{where}: ago must look like 90m or 2h, found {raw['ago']!r}"
            )
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[
            match.group(2)
        ]
        at = now - timedelta(**{unit: int(match.group(1))})
    else:
        at = _instant(raw.get("at"), where, "send at")
    return SendRecord(
        at=at,
        channel=str(raw.get("channel", "sms")),
        purpose=str(raw.get("purpose", "marketing")),
    )


def _expect(raw: Any, where: str) -> Expectation:
    if not isinstance(raw, dict) or raw.get("outcome") not in (
        "ALLOW",
        "DENY",
        "DEFER",
    ):
        raise PolicyError(f"{where}: expect needs an outcome of ALLOW, DENY or DEFER")
    unknown = sorted(str(k) for k in set(raw) - EXPECT_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) in expect: {', '.join(unknown)}")
    not_before = raw.get("not_before")
    return Expectation(
        outcome=str(raw["outcome"]),
        rules=_names(raw.get("rules")),
        not_before=_instant(not_before, where, "not_before") if not_before else None,
        no_not_before="not_before" in raw and not not_before,
        warnings=_names(raw.get("warnings")),
    )


def _names(value: Sequence[Any] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)
