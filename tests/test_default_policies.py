"""The shipped default policy bundle, evaluated by the pure engine.

Each rule of policies/*.yaml is tried on both sides of each of its boundaries.
Instants are written literally in UTC, with the recipient's local time beside
them, so a reader can check the arithmetic without running it.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.app import default_policies
from gateway.errors import PolicyError
from gateway.policy import DecisionInput, evaluate, load_bundle, with_tier
from gateway.policy._engine import SendRecord
from gateway.timezones import resolve_zones
from tests.policy_support import (
    NOON_NEW_YORK,
    assert_decision,
    cap_policy,
    contact,
    decide,
    message,
    sends,
    utc,
    write_file,
)

BUNDLE = load_bundle(default_policies())
CAP = "frequency-caps.marketing-3-per-24h"
OUTSIDE = "quiet-hours.outside-window"
UNKNOWN_ZONE = "quiet-hours.time-zone-unknown"
NEEDS_GRANT = "consent.marketing-needs-grant"
REVOKED = "consent.revoked"

_CASES = {
    case["id"]: case
    for case in json.loads(
        (Path(__file__).parent / "data" / "field-cases.json").read_text("utf-8")
    )
}

# Every rule and cap id a table below expects to fire; checked against the bundle.
_EXERCISED: set[str] = set()


def _expects(*rule_ids: str) -> list[str]:
    _EXERCISED.update(rule_ids)
    return list(rule_ids)


# --- consent ---------------------------------------------------------------

CONSENT_CASES = [
    pytest.param(message(), contact(), "ALLOW", [], id="marketing-granted"),
    pytest.param(
        message(consent="none"),
        contact(consent={}),
        "DENY",
        _expects(NEEDS_GRANT),
        id="marketing-no-consent-on-record",
    ),
    pytest.param(
        message(consent="revoked"),
        contact(consent={"sms:marketing": "revoked"}),
        "DENY",
        _expects(NEEDS_GRANT, REVOKED),
        id="marketing-revoked-fires-both-rules",
    ),
    pytest.param(
        message(purpose="transactional", consent="none"),
        contact(consent={}),
        "ALLOW",
        [],
        id="transactional-needs-no-marketing-consent",
    ),
    pytest.param(
        message(purpose="transactional", consent="revoked"),
        contact(consent={"sms:transactional": "revoked"}),
        "DENY",
        _expects(REVOKED),
        id="transactional-revoked",
    ),
    pytest.param(
        message(purpose="transactional", consent="none"),
        contact(consent={"sms:marketing": "revoked"}),
        "ALLOW",
        [],
        id="transactional-allowed-when-only-marketing-revoked",
    ),
    pytest.param(
        message(purpose="reminder", consent="revoked"),
        contact(consent={"sms:reminder": "revoked"}),
        "DENY",
        _expects(REVOKED),
        id="reminder-revoked",
    ),
    pytest.param(
        message(
            purpose="opt_out_confirmation",
            consent="revoked",
            opt_out_confirmation_due=True,
        ),
        contact(
            consent={
                "sms:marketing": "revoked",
                "sms:transactional": "revoked",
                "sms:reminder": "revoked",
                "sms:opt_out_confirmation": "revoked",
            },
            do_not_contact=True,
        ),
        "ALLOW",
        [],
        id="opt-out-confirmation-is-the-single-exception",
    ),
    pytest.param(
        message(channel="email", address_kind="email", consent="none"),
        contact(consent={"sms:marketing": "granted"}),
        "DENY",
        [NEEDS_GRANT],
        id="email-marketing-needs-its-own-consent",
    ),
    pytest.param(
        message(channel="outbox", consent="none"),
        contact(),
        "DENY",
        [NEEDS_GRANT],
        id="any-other-channel-name-needs-its-own-consent-too",
    ),
]


@pytest.mark.parametrize(("msg", "to", "outcome", "rule_ids"), CONSENT_CASES)
def test_consent(
    msg: dict[str, Any], to: dict[str, Any], outcome: str, rule_ids: list[str]
) -> None:
    assert_decision(decide(BUNDLE, to=to, msg=msg), outcome, rule_ids)


# --- channel capability -----------------------------------------------------

CHANNEL_CASES = [
    pytest.param(message(), True, "ALLOW", [], id="sms-to-mobile"),
    pytest.param(
        message(),
        False,
        "DENY",
        _expects("channel.sms-to-landline"),
        id="sms-to-landline",
    ),
    pytest.param(
        message(purpose="transactional", consent="none"),
        False,
        "DENY",
        ["channel.sms-to-landline"],
        id="transactional-sms-to-landline",
    ),
    pytest.param(
        message(channel="email", address_kind="email"),
        False,
        "ALLOW",
        [],
        id="email-to-landline-contact",
    ),
]


@pytest.mark.parametrize(("msg", "capable", "outcome", "rule_ids"), CHANNEL_CASES)
def test_channel_capability(
    msg: dict[str, Any], capable: bool, outcome: str, rule_ids: list[str]
) -> None:
    decision = decide(BUNDLE, to=contact(sms_capable=capable), msg=msg)
    assert_decision(decision, outcome, rule_ids)


# --- quiet hours: 08:00-21:00 local ------------------------------------------
# 2026-07-15 is summer: EDT -4, CDT -5, PDT -7; Honolulu is HST -10 all year.

_expects(OUTSIDE, UNKNOWN_ZONE)

NINE_PM_CASES = [
    # New York
    pytest.param(
        "America/New_York",
        "2026-07-15T11:59:00Z",  # 07:59 EDT
        "DEFER",
        "2026-07-15T12:00:00Z",  # 08:00 EDT today
        id="new-york-0759",
    ),
    pytest.param(
        "America/New_York", "2026-07-15T12:00:00Z", "ALLOW", None, id="new-york-0800"
    ),
    pytest.param(
        "America/New_York", "2026-07-16T00:59:00Z", "ALLOW", None, id="new-york-2059"
    ),
    pytest.param(
        "America/New_York",
        "2026-07-16T01:00:00Z",  # 21:00 EDT on the 15th
        "DEFER",
        "2026-07-16T12:00:00Z",  # 08:00 EDT next day
        id="new-york-2100",
    ),
    # Chicago
    pytest.param(
        "America/Chicago",
        "2026-07-15T12:59:00Z",  # 07:59 CDT
        "DEFER",
        "2026-07-15T13:00:00Z",
        id="chicago-0759",
    ),
    pytest.param(
        "America/Chicago", "2026-07-15T13:00:00Z", "ALLOW", None, id="chicago-0800"
    ),
    pytest.param(
        "America/Chicago", "2026-07-16T01:59:00Z", "ALLOW", None, id="chicago-2059"
    ),
    pytest.param(
        "America/Chicago",
        "2026-07-16T02:00:00Z",  # 21:00 CDT on the 15th
        "DEFER",
        "2026-07-16T13:00:00Z",
        id="chicago-2100",
    ),
    # Los Angeles
    pytest.param(
        "America/Los_Angeles",
        "2026-07-15T14:59:00Z",  # 07:59 PDT
        "DEFER",
        "2026-07-15T15:00:00Z",
        id="los-angeles-0759",
    ),
    pytest.param(
        "America/Los_Angeles",
        "2026-07-15T15:00:00Z",
        "ALLOW",
        None,
        id="los-angeles-0800",
    ),
    pytest.param(
        "America/Los_Angeles",
        "2026-07-16T03:59:00Z",
        "ALLOW",
        None,
        id="los-angeles-2059",
    ),
    pytest.param(
        "America/Los_Angeles",
        "2026-07-16T04:00:00Z",  # 21:00 PDT on the 15th
        "DEFER",
        "2026-07-16T15:00:00Z",
        id="los-angeles-2100",
    ),
    # Honolulu
    pytest.param(
        "Pacific/Honolulu",
        "2026-07-15T17:59:00Z",  # 07:59 HST
        "DEFER",
        "2026-07-15T18:00:00Z",
        id="honolulu-0759",
    ),
    pytest.param(
        "Pacific/Honolulu", "2026-07-15T18:00:00Z", "ALLOW", None, id="honolulu-0800"
    ),
    pytest.param(
        "Pacific/Honolulu", "2026-07-16T06:59:00Z", "ALLOW", None, id="honolulu-2059"
    ),
    pytest.param(
        "Pacific/Honolulu",
        "2026-07-16T07:00:00Z",  # 21:00 HST on the 15th
        "DEFER",
        "2026-07-16T18:00:00Z",
        id="honolulu-2100",
    ),
]


@pytest.mark.parametrize(("zone", "now", "outcome", "not_before"), NINE_PM_CASES)
def test_quiet_hours_nine_pm_window(
    zone: str, now: str, outcome: str, not_before: str | None
) -> None:
    rule_ids = [OUTSIDE] if outcome == "DEFER" else []
    decision = decide(BUNDLE, now, to=contact(time_zones=[zone]))
    assert_decision(decision, outcome, rule_ids, not_before)


def _resolved(where: dict[str, str]) -> dict[str, Any]:
    zones = resolve_zones(
        time_zone=None, region=where.get("region"), phone_e164=where.get("phone")
    )
    return contact(
        time_zones=list(zones.zones),
        time_zone_source=zones.source,
        regions=list(zones.regions),
    )


FLORIDA = {"region": "US-FL"}  # Eastern and Central (the panhandle)
OKLAHOMA = {"region": "US-OK"}  # Central
MARYLAND = {"region": "US-MD"}  # Eastern
MIAMI = {"phone": "+13055550100"}  # 305: Eastern, US-FL
OKLAHOMA_CITY = {"phone": "+14055550100"}  # 405: Central, US-OK
BALTIMORE = {"phone": "+14105550100"}  # 410: Eastern, US-MD

# The window closes at 20:00. Florida by region may be on Central or Eastern
# time, so there it closes at 20:00 Eastern and opens at 08:00 Central.
EIGHT_PM_CASES = [
    pytest.param(FLORIDA, "2026-07-15T23:59:00Z", "ALLOW", None, id="fl-1959-et"),
    pytest.param(
        FLORIDA,
        "2026-07-16T00:00:00Z",  # 20:00 EDT
        "DEFER",
        "2026-07-16T13:00:00Z",  # 08:00 CDT, 09:00 EDT
        id="fl-2000-et",
    ),
    pytest.param(
        FLORIDA,
        "2026-07-16T00:59:00Z",
        "DEFER",
        "2026-07-16T13:00:00Z",
        id="fl-2059-et",
    ),
    pytest.param(OKLAHOMA, "2026-07-16T00:59:00Z", "ALLOW", None, id="ok-1959-ct"),
    pytest.param(
        OKLAHOMA, "2026-07-16T01:00:00Z", "DEFER", "2026-07-16T13:00:00Z", id="ok-2000"
    ),
    pytest.param(
        OKLAHOMA, "2026-07-16T01:59:00Z", "DEFER", "2026-07-16T13:00:00Z", id="ok-2059"
    ),
    pytest.param(MARYLAND, "2026-07-15T23:59:00Z", "ALLOW", None, id="md-1959"),
    pytest.param(
        MARYLAND, "2026-07-16T00:00:00Z", "DEFER", "2026-07-16T12:00:00Z", id="md-2000"
    ),
    pytest.param(
        MARYLAND, "2026-07-16T00:59:00Z", "DEFER", "2026-07-16T12:00:00Z", id="md-2059"
    ),
    pytest.param(MIAMI, "2026-07-15T23:59:00Z", "ALLOW", None, id="305-1959"),
    pytest.param(
        MIAMI, "2026-07-16T00:00:00Z", "DEFER", "2026-07-16T12:00:00Z", id="305-2000"
    ),
    pytest.param(
        MIAMI, "2026-07-16T00:59:00Z", "DEFER", "2026-07-16T12:00:00Z", id="305-2059"
    ),
    pytest.param(OKLAHOMA_CITY, "2026-07-16T00:59:00Z", "ALLOW", None, id="405-1959"),
    pytest.param(
        OKLAHOMA_CITY,
        "2026-07-16T01:00:00Z",
        "DEFER",
        "2026-07-16T13:00:00Z",
        id="405-2000",
    ),
    pytest.param(
        OKLAHOMA_CITY,
        "2026-07-16T01:59:00Z",
        "DEFER",
        "2026-07-16T13:00:00Z",
        id="405-2059",
    ),
    pytest.param(BALTIMORE, "2026-07-15T23:59:00Z", "ALLOW", None, id="410-1959"),
    pytest.param(
        BALTIMORE,
        "2026-07-16T00:00:00Z",
        "DEFER",
        "2026-07-16T12:00:00Z",
        id="410-2000",
    ),
    pytest.param(
        BALTIMORE,
        "2026-07-16T00:59:00Z",
        "DEFER",
        "2026-07-16T12:00:00Z",
        id="410-2059",
    ),
]


@pytest.mark.parametrize(("where", "now", "outcome", "not_before"), EIGHT_PM_CASES)
def test_quiet_hours_eight_pm_states(
    where: dict[str, str], now: str, outcome: str, not_before: str | None
) -> None:
    rule_ids = [OUTSIDE] if outcome == "DEFER" else []
    decision = decide(BUNDLE, now, to=_resolved(where))
    assert_decision(decision, outcome, rule_ids, not_before)


@pytest.mark.parametrize(
    "where",
    [
        pytest.param({"region": "US-NY"}, id="region-ny"),
        pytest.param({"phone": "+12125550100"}, id="phone-212-new-york"),
    ],
)
def test_quiet_hours_2059_is_allowed_in_new_york(where: dict[str, str]) -> None:
    # 2026-07-16T00:59Z is 20:59 EDT, deferred in Florida and Maryland above.
    decision = decide(BUNDLE, "2026-07-16T00:59:00Z", to=_resolved(where))
    assert_decision(decision, "ALLOW")


# America/New_York changes to EDT at 2026-03-08 02:00 EST (07:00Z) and back to
# EST at 2026-11-01 02:00 EDT (06:00Z).
DST_CASES = [
    pytest.param(
        "2026-03-08T02:00:00Z",
        "DEFER",
        "2026-03-08T12:00:00Z",
        id="spring-eve-2100-est",
    ),
    pytest.param(
        "2026-03-08T11:59:00Z", "DEFER", "2026-03-08T12:00:00Z", id="spring-0759-edt"
    ),
    pytest.param("2026-03-08T12:00:00Z", "ALLOW", None, id="spring-0800-edt"),
    pytest.param("2026-03-09T00:59:00Z", "ALLOW", None, id="spring-2059-edt"),
    pytest.param(
        "2026-03-09T01:00:00Z", "DEFER", "2026-03-09T12:00:00Z", id="spring-2100-edt"
    ),
    pytest.param(
        "2026-11-01T01:00:00Z", "DEFER", "2026-11-01T13:00:00Z", id="fall-eve-2100-edt"
    ),
    pytest.param(
        "2026-11-01T05:30:00Z",
        "DEFER",
        "2026-11-01T13:00:00Z",
        id="fall-0130-edt-first-pass",
    ),
    pytest.param(
        "2026-11-01T06:30:00Z",
        "DEFER",
        "2026-11-01T13:00:00Z",
        id="fall-0130-est-second-pass",
    ),
    pytest.param(
        "2026-11-01T12:59:00Z", "DEFER", "2026-11-01T13:00:00Z", id="fall-0759-est"
    ),
    pytest.param("2026-11-01T13:00:00Z", "ALLOW", None, id="fall-0800-est"),
    pytest.param("2026-11-02T01:59:00Z", "ALLOW", None, id="fall-2059-est"),
    pytest.param(
        "2026-11-02T02:00:00Z", "DEFER", "2026-11-02T13:00:00Z", id="fall-2100-est"
    ),
]


@pytest.mark.parametrize(("now", "outcome", "not_before"), DST_CASES)
def test_quiet_hours_on_new_york_dst_change_days(
    now: str, outcome: str, not_before: str | None
) -> None:
    rule_ids = [OUTSIDE] if outcome == "DEFER" else []
    decision = decide(BUNDLE, now, to=contact())
    assert_decision(decision, outcome, rule_ids, not_before)


BOTH_COASTS = ["America/New_York", "America/Los_Angeles"]
MULTI_ZONE_CASES = [
    # Winter: EST -5, PST -8. 12:00Z is 07:00 in New York, 04:00 in Los Angeles.
    pytest.param(
        "2026-01-14T12:00:00Z", "DEFER", "2026-01-14T16:00:00Z", id="winter-0700-et"
    ),
    pytest.param(
        "2026-01-14T15:59:00Z", "DEFER", "2026-01-14T16:00:00Z", id="winter-0759-pt"
    ),
    pytest.param("2026-01-14T16:00:00Z", "ALLOW", None, id="winter-0800-pt"),
    pytest.param("2026-01-15T01:59:00Z", "ALLOW", None, id="winter-2059-et"),
    pytest.param(
        "2026-01-15T02:00:00Z", "DEFER", "2026-01-15T16:00:00Z", id="winter-2100-et"
    ),
    # Summer: EDT -4, PDT -7. 12:00Z is 08:00 in New York, 05:00 in Los Angeles.
    pytest.param(
        "2026-07-15T12:00:00Z", "DEFER", "2026-07-15T15:00:00Z", id="summer-0800-et"
    ),
    pytest.param("2026-07-15T15:00:00Z", "ALLOW", None, id="summer-0800-pt"),
]


@pytest.mark.parametrize(("now", "outcome", "not_before"), MULTI_ZONE_CASES)
def test_quiet_hours_must_hold_in_every_candidate_zone(
    now: str, outcome: str, not_before: str | None
) -> None:
    rule_ids = [OUTSIDE] if outcome == "DEFER" else []
    decision = decide(BUNDLE, now, to=contact(time_zones=BOTH_COASTS))
    assert_decision(decision, outcome, rule_ids, not_before)


@pytest.mark.parametrize(
    "purpose",
    [
        pytest.param("marketing", id="marketing"),
        pytest.param("reminder", id="reminder"),
    ],
)
def test_quiet_hours_unknown_zone_holds_without_a_time(purpose: str) -> None:
    to = contact(time_zones=[], time_zone_source="none", regions=[])
    decision = decide(BUNDLE, to=to, msg=message(purpose=purpose))
    assert_decision(decision, "DEFER", [UNKNOWN_ZONE], None)


# 2026-07-15T07:00Z is 03:00 EDT in New York.
EXEMPT_CASES = [
    pytest.param(
        message(purpose="transactional", consent="none"),
        "ALLOW",
        None,
        id="transactional-at-0300",
    ),
    pytest.param(
        message(
            purpose="opt_out_confirmation",
            consent="revoked",
            opt_out_confirmation_due=True,
        ),
        "ALLOW",
        None,
        id="opt-out-confirmation-at-0300",
    ),
    pytest.param(
        message(purpose="reminder", consent="none"),
        "DEFER",
        "2026-07-15T12:00:00Z",
        id="reminder-at-0300-is-held",
    ),
    pytest.param(
        message(channel="email", address_kind="email"),
        "ALLOW",
        None,
        id="email-marketing-at-0300",
    ),
]


@pytest.mark.parametrize(("msg", "outcome", "not_before"), EXEMPT_CASES)
def test_quiet_hours_apply_to_sms_marketing_and_reminders_only(
    msg: dict[str, Any], outcome: str, not_before: str | None
) -> None:
    rule_ids = [OUTSIDE] if outcome == "DEFER" else []
    decision = decide(BUNDLE, "2026-07-15T07:00:00Z", msg=msg)
    assert_decision(decision, outcome, rule_ids, not_before)


# --- suppression --------------------------------------------------------------

SUPPRESSED = [
    pytest.param(
        {"stage": "converted"}, _expects("suppression.converted"), id="converted"
    ),
    pytest.param(
        {"stage": "in_pipeline"}, _expects("suppression.in-pipeline"), id="in-pipeline"
    ),
    pytest.param(
        {"do_not_contact": True},
        _expects("suppression.do-not-contact"),
        id="do-not-contact",
    ),
    pytest.param(
        {"stage": "converted", "do_not_contact": True},
        ["suppression.converted", "suppression.do-not-contact"],
        id="converted-and-do-not-contact",
    ),
]


@pytest.mark.parametrize(("changes", "rule_ids"), SUPPRESSED)
def test_suppression_denies_marketing(
    changes: dict[str, Any], rule_ids: list[str]
) -> None:
    assert_decision(decide(BUNDLE, to=contact(**changes)), "DENY", rule_ids)


@pytest.mark.parametrize(("changes", "rule_ids"), SUPPRESSED)
@pytest.mark.parametrize("purpose", ["transactional", "reminder"])
def test_suppression_spares_service_messages(
    changes: dict[str, Any], rule_ids: list[str], purpose: str
) -> None:
    msg = message(purpose=purpose, consent="none")
    assert_decision(decide(BUNDLE, to=contact(**changes), msg=msg), "ALLOW")


@pytest.mark.parametrize(
    "stage", ["new", "engaged"], ids=["stage-new", "stage-engaged"]
)
def test_suppression_lets_open_stages_through(stage: str) -> None:
    assert_decision(decide(BUNDLE, to=contact(stage=stage)), "ALLOW")


# --- frequency caps: 3 marketing messages in any rolling 24h ------------------
# `now` is 2026-07-15T16:00Z (12:00 EDT); the 24h window is (07-14T16:00Z, now].

_expects(CAP)


def _mixed(*pairs: tuple[str, str, str]) -> list[SendRecord]:
    return [SendRecord(utc(at), channel, purpose) for at, channel, purpose in pairs]


CAP_CASES = [
    pytest.param([], "ALLOW", None, id="first-message"),
    pytest.param(
        sends("2026-07-15T09:00:00Z", "2026-07-15T10:00:00Z"),
        "ALLOW",
        None,
        id="two-prior-third-allowed",
    ),
    pytest.param(
        sends("2026-07-14T17:00:00Z", "2026-07-15T09:00:00Z", "2026-07-15T10:00:00Z"),
        "DEFER",
        "2026-07-15T17:00:00Z",
        id="three-prior-fourth-deferred-until-oldest-plus-24h",
    ),
    pytest.param(
        sends(
            "2026-07-14T17:00:00Z",
            "2026-07-14T18:00:00Z",
            "2026-07-15T09:00:00Z",
            "2026-07-15T10:00:00Z",
        ),
        "DEFER",
        "2026-07-15T18:00:00Z",
        id="four-prior-waits-for-the-second-oldest",
    ),
    pytest.param(
        _mixed(
            ("2026-07-15T08:00:00Z", "voice", "marketing"),
            ("2026-07-15T09:00:00Z", "email", "marketing"),
            ("2026-07-15T10:00:00Z", "sms", "marketing"),
        ),
        "DEFER",
        "2026-07-16T08:00:00Z",
        id="counted-across-channels",
    ),
    pytest.param(
        _mixed(
            ("2026-07-15T08:00:00Z", "sms", "transactional"),
            ("2026-07-15T08:30:00Z", "sms", "reminder"),
            ("2026-07-15T08:45:00Z", "sms", "opt_out_confirmation"),
            ("2026-07-15T09:00:00Z", "sms", "marketing"),
            ("2026-07-15T10:00:00Z", "email", "marketing"),
        ),
        "ALLOW",
        None,
        id="service-sends-not-counted",
    ),
    pytest.param(
        sends("2026-07-14T16:00:00Z", "2026-07-15T09:00:00Z", "2026-07-15T10:00:00Z"),
        "ALLOW",
        None,
        id="send-exactly-24h-old-is-outside",
    ),
    pytest.param(
        sends("2026-07-14T16:00:01Z", "2026-07-15T09:00:00Z", "2026-07-15T10:00:00Z"),
        "DEFER",
        "2026-07-15T16:00:01Z",
        id="send-23h59m59s-old-is-inside",
    ),
]


@pytest.mark.parametrize(("history", "outcome", "not_before"), CAP_CASES)
def test_frequency_cap(
    history: list[SendRecord], outcome: str, not_before: str | None
) -> None:
    rule_ids = [CAP] if outcome == "DEFER" else []
    assert_decision(decide(BUNDLE, history=history), outcome, rule_ids, not_before)


@pytest.mark.parametrize("purpose", ["transactional", "reminder"])
def test_frequency_cap_does_not_limit_service_messages(purpose: str) -> None:
    history = sends(*(f"2026-07-15T{hour:02d}:00:00Z" for hour in range(8, 14)))
    msg = message(purpose=purpose, consent="none")
    assert_decision(decide(BUNDLE, msg=msg, history=history), "ALLOW")


@given(
    inside=st.lists(st.integers(min_value=1, max_value=24 * 3600 - 1), max_size=8),
    outside=st.lists(st.integers(min_value=0, max_value=7 * 24 * 3600), max_size=4),
    service=st.lists(st.integers(min_value=1, max_value=24 * 3600 - 1), max_size=4),
    channels=st.lists(st.sampled_from(["sms", "email", "voice"]), min_size=8),
)
def test_cap_allows_iff_fewer_than_three_marketing_sends_in_24h(
    inside: list[int], outside: list[int], service: list[int], channels: list[str]
) -> None:
    now = utc(NOON_NEW_YORK)
    history = [
        SendRecord(now - timedelta(seconds=age), channels[i], "marketing")
        for i, age in enumerate(inside)
    ]
    history += [
        SendRecord(now - timedelta(hours=24, seconds=age), "sms", "marketing")
        for age in outside
    ]
    history += [
        SendRecord(now - timedelta(seconds=age), "sms", "transactional")
        for age in service
    ]

    decision = decide(BUNDLE, now, history=history)

    if len(inside) < 3:
        assert_decision(decision, "ALLOW")
    else:
        ages = sorted(inside, reverse=True)  # oldest first
        clears = now - timedelta(seconds=ages[len(inside) - 3]) + timedelta(hours=24)
        assert (decision.outcome, decision.rule_ids) == ("DEFER", [CAP])
        assert decision.not_before == clears


# --- combining effects ------------------------------------------------------

THREE_SENDS = sends(
    "2026-07-14T13:00:00Z", "2026-07-14T14:00:00Z", "2026-07-14T15:00:00Z"
)


def test_deny_overrides_defer() -> None:
    # 2026-07-15T07:00Z is 03:00 EDT: outside quiet hours, and no consent.
    decision = decide(
        BUNDLE,
        "2026-07-15T07:00:00Z",
        to=contact(consent={}),
        msg=message(consent="none"),
    )
    assert_decision(decision, "DENY", [NEEDS_GRANT, OUTSIDE], None)


def test_deny_overrides_defer_from_a_cap() -> None:
    decision = decide(
        BUNDLE,
        "2026-07-14T20:00:00Z",
        to=contact(stage="converted"),
        history=THREE_SENDS,
    )
    assert_decision(decision, "DENY", ["suppression.converted", CAP], None)


SEVERAL_DEFERS = [
    # 11:00Z is 07:00 EDT: the window opens at 12:00Z; the cap clears at
    # 13:00Z (oldest send 2026-07-14T13:00Z + 24h), which is later.
    pytest.param(
        "2026-07-15T11:00:00Z",
        THREE_SENDS,
        "2026-07-15T13:00:00Z",
        id="cap-clears-after-the-window-opens",
    ),
    # 06:00Z is 02:00 EDT: the cap clears at 06:30Z, the window opens later.
    pytest.param(
        "2026-07-15T06:00:00Z",
        sends("2026-07-14T06:30:00Z", "2026-07-14T06:40:00Z", "2026-07-14T06:50:00Z"),
        "2026-07-15T12:00:00Z",
        id="window-opens-after-the-cap-clears",
    ),
]


@pytest.mark.parametrize(("now", "history", "not_before"), SEVERAL_DEFERS)
def test_several_defers_clear_at_the_latest(
    now: str, history: list[SendRecord], not_before: str
) -> None:
    decision = decide(BUNDLE, now, history=history)
    assert_decision(decision, "DEFER", [CAP, OUTSIDE], not_before)


def test_a_defer_without_a_time_leaves_the_decision_without_one() -> None:
    to = contact(time_zones=[], time_zone_source="none", regions=[])
    history = sends(
        "2026-07-15T09:00:00Z", "2026-07-15T10:00:00Z", "2026-07-15T11:00:00Z"
    )
    decision = decide(BUNDLE, to=to, history=history)
    assert_decision(decision, "DEFER", [CAP, UNKNOWN_ZONE], None)


# --- days some states forbid solicitation ----------------------------------------

HOLIDAY = "holidays.no-solicitation-day"
OUTSIDE = "quiet-hours.outside-window"
RI = {"regions": ["US-RI"], "time_zones": ["America/New_York"]}
UT = {"regions": ["US-UT"], "time_zones": ["America/Denver"]}

HOLIDAY_CASES = [
    pytest.param(
        "2026-07-04T16:00:00Z", RI, message(), "DEFER", _expects(HOLIDAY),
        "2026-07-05T12:00:00Z", id="rhode-island-july-4-noon-held-to-next-morning",
    ),
    pytest.param(
        "2026-07-03T16:00:00Z", RI, message(), "ALLOW", [], None,
        id="rhode-island-july-3-allowed",
    ),
    pytest.param(
        "2026-07-04T16:00:00Z", {"regions": ["US-NY"]}, message(), "ALLOW", [], None,
        id="new-york-july-4-allowed",
    ),
    pytest.param(
        "2026-07-24T16:00:00Z", UT, message(), "DEFER", _expects(HOLIDAY),
        "2026-07-25T14:00:00Z", id="utah-pioneer-day-held-to-0800-mountain",
    ),
    pytest.param(
        "2026-07-05T02:00:00Z", RI, message(), "DEFER", [HOLIDAY, OUTSIDE],
        "2026-07-05T12:00:00Z", id="rhode-island-22h-local-on-july-4-both-rules",
    ),
    pytest.param(
        "2026-07-05T12:00:00Z", RI, message(), "ALLOW", [], None,
        id="rhode-island-july-5-0800-allowed",
    ),
    pytest.param(
        "2026-07-04T16:00:00Z", RI, message(purpose="transactional"), "ALLOW", [],
        None, id="transactional-on-a-holiday-allowed",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("now", "where", "msg", "outcome", "rules", "not_before"), HOLIDAY_CASES
)
def test_no_solicitation_days(
    now: str,
    where: dict[str, Any],
    msg: dict[str, Any],
    outcome: str,
    rules: list[str],
    not_before: str | None,
) -> None:
    decision = decide(BUNDLE, now, to=contact(**where), msg=msg)
    assert_decision(decision, outcome, rules, not_before)


# --- kinds of consent, and the single opt-out confirmation ---------------------

WRITTEN = "consent.text-marketing-needs-written-consent"
ONE_CONFIRMATION = "consent.one-confirmation"

CONSENT_KIND_CASES = [
    pytest.param(
        message(consent_basis="implied_purchase"), "DENY", _expects(WRITTEN),
        id="implied-consent-is-not-enough-for-marketing-texts",
    ),
    pytest.param(message(consent_basis="express_written"), "ALLOW", [], id="written"),
    pytest.param(
        message(channel="email", address_kind="email", consent_basis="implied_inquiry"),
        "ALLOW", [], id="implied-consent-is-enough-for-marketing-email",
    ),
    pytest.param(
        message(purpose="opt_out_confirmation", consent="revoked",
                opt_out_confirmation_due=True),
        "ALLOW", [], id="the-one-confirmation-goes",
    ),
    pytest.param(
        message(purpose="opt_out_confirmation", consent="revoked",
                opt_out_confirmation_due=False),
        "DENY", _expects(ONE_CONFIRMATION), id="CO-03-a-second-confirmation-is-refused",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("msg", "outcome", "rules"), CONSENT_KIND_CASES)
def test_kinds_of_consent_and_the_single_confirmation(
    msg: dict[str, Any], outcome: str, rules: list[str]
) -> None:
    decision = decide(BUNDLE, msg=msg)
    assert_decision(decision, outcome, rules)


ROLE = "tiers.channel-role"
PIPELINE = {
    "stage": "in_pipeline",
    "tier": "in-pipeline",
    "tier_roles": {"sms": ["reminder", "transactional", "opt_out_confirmation"]},
}


def test_a_promotional_text_to_the_pipeline_tier_is_refused_by_its_role() -> None:
    decision = decide(BUNDLE, to=contact(**PIPELINE))
    assert_decision(decision, "DENY", ["suppression.in-pipeline", *_expects(ROLE)])


def test_a_reminder_to_the_pipeline_tier_is_allowed() -> None:
    decision = decide(BUNDLE, to=contact(**PIPELINE), msg=message(purpose="reminder"))
    assert_decision(decision, "ALLOW", [])


# --- tier caps ----------------------------------------------------------------
# Each shipped tier's own cap (tiers.yaml, caps), read by tier-caps.yaml; the
# contact's tier is computed from its stage, as the gateway computes it.

TIER_CAPS = [
    pytest.param("new", "marketing", 2, "tiers.marketing-per-day", id="new-2"),
    pytest.param("engaged", "marketing", 1, "tiers.marketing-per-day", id="engaged-1"),
    pytest.param(
        "in_pipeline", "reminder", 2, "tiers.reminders-per-day", id="pipeline-2"
    ),
    pytest.param(
        "converted", "reminder", 1, "tiers.reminders-per-day", id="customer-1"
    ),
]


def _tiered(stage: str, purpose: str, history: list[SendRecord]) -> Any:
    given = DecisionInput(
        now=utc(NOON_NEW_YORK),
        contact={k: v for k, v in contact(stage=stage).items() if k != "tier"},
        message=message(purpose=purpose),
        sends=history,
    )
    return evaluate(BUNDLE, with_tier(BUNDLE, given))


@pytest.mark.parametrize(("stage", "purpose", "limit", "rule"), TIER_CAPS)
def test_a_tier_cap_allows_up_to_its_limit_and_holds_the_next(
    stage: str, purpose: str, limit: int, rule: str
) -> None:
    # One send an hour, the oldest (limit) hours ago: the hold lasts until
    # the limit-th newest send is 24 hours old.
    instants = [f"2026-07-15T{16 - h:02d}:00:00Z" for h in range(1, limit + 1)]
    under = _tiered(stage, purpose, sends(*instants[:-1], purpose=purpose))
    over = _tiered(stage, purpose, sends(*instants, purpose=purpose))
    assert_decision(under, "ALLOW", [])
    assert_decision(
        over, "DEFER", _expects(rule), f"2026-07-16T{16 - limit:02d}:00:00Z"
    )


def test_a_tier_cap_counts_only_its_purpose() -> None:
    decision = _tiered(
        "engaged", "marketing", sends("2026-07-15T15:00:00Z", purpose="reminder")
    )
    assert_decision(decision, "ALLOW", [])


AD_MEMBERSHIP = {
    "channel": "meta",
    "purpose": "advertising",
    "address_kind": "audience",
}


@pytest.mark.parametrize(
    ("consent", "rule_ids"),
    [
        pytest.param("granted", [], id="granted"),
        pytest.param("none", ["consent.advertising-needs-grant"], id="none"),
        pytest.param(
            "revoked",
            ["consent.advertising-needs-grant", REVOKED],
            id="revoked",
        ),
    ],
)
def test_an_ad_audience_membership_needs_advertising_consent(
    consent: str, rule_ids: list[str]
) -> None:
    decision = decide(BUNDLE, msg=message(**AD_MEMBERSHIP, consent=consent))
    assert_decision(decision, "DENY" if rule_ids else "ALLOW", _expects(*rule_ids))


def test_every_rule_of_the_bundle_is_exercised() -> None:
    shipped = {rule.id for policy in BUNDLE.policies for rule in policy.rules}
    shipped |= {cap.id for policy in BUNDLE.policies for cap in policy.caps}
    assert shipped == _EXERCISED


# --- field cases ----------------------------------------------------------------


def _case(case_id: str) -> dict[str, Any]:
    case: dict[str, Any] = _CASES[case_id]
    return case


def _cap_bundle(folder: Path, limit: int, window: str) -> Any:
    write_file(folder, "caps.yaml", cap_policy([("test.cap", limit, window)]))
    return load_bundle(folder)


def _copy_of_default_bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    shutil.copytree(
        default_policies(),
        folder,
        ignore=shutil.ignore_patterns("tests", "*.py", "__pycache__"),
    )
    return folder


def test_FC_02_send_exactly_24h_old_is_outside_the_window(tmp_path: Path) -> None:
    case = _case("FC-02")
    assert case["input"]["rule"] == {"max": 1, "window": "24h rolling"}
    bundle = _cap_bundle(tmp_path, 1, "24h")
    history = sends(*case["input"]["history"])
    blocked_at, allowed_at = case["input"]["requests"]

    blocked = decide(bundle, blocked_at, history=history)
    allowed = decide(bundle, allowed_at, history=history)

    # "BLOCK, retry_after 1s"
    assert_decision(blocked, "DEFER", ["test.cap"], "2024-07-11T12:00:00Z")
    assert blocked.not_before is not None
    assert blocked.not_before - utc(blocked_at) == timedelta(seconds=1)
    # "ALLOW (event exactly 24h old is outside the window)"
    assert_decision(allowed, "ALLOW")


def test_FC_04_limit_of_one_lets_the_first_message_through(tmp_path: Path) -> None:
    case = _case("FC-04")
    assert case["input"]["history"] == []
    bundle = _cap_bundle(tmp_path, 1, "24h")
    first, second = case["input"]["requests"]

    assert_decision(decide(bundle, first), "ALLOW")
    decision = decide(bundle, second, history=sends(first))
    assert_decision(decision, "DEFER", ["test.cap"], "2024-07-11T12:00:00Z")


def test_FC_08_cap_of_zero_is_refused_at_load(tmp_path: Path) -> None:
    case = _case("FC-08")
    assert case["input"]["rule"]["max"] == 0
    folder = _copy_of_default_bundle(tmp_path)
    caps = folder / "frequency-caps.yaml"
    caps.write_text(caps.read_text("utf-8").replace("max: 3", "max: 0"), "utf-8")

    with pytest.raises(PolicyError) as refused:
        load_bundle(folder)

    assert "frequency-caps.yaml" in str(refused.value)
    assert CAP in str(refused.value)
    assert "found 0" in str(refused.value)


def test_FC_08_without_the_cap_every_request_is_allowed(tmp_path: Path) -> None:
    case = _case("FC-08")
    folder = _copy_of_default_bundle(tmp_path)
    (folder / "frequency-caps.yaml").unlink()
    bundle = load_bundle(folder)
    # 09:00Z-13:00Z is 10:00-14:00 in London, inside the sending window.
    london = contact(time_zones=["Europe/London"], regions=["GB"])

    decisions: list[str] = []
    history: list[SendRecord] = []
    for at in case["input"]["requests"]:
        decision = decide(bundle, at, to=london, history=history)
        decisions.append(decision.outcome)
        if decision.outcome == "ALLOW":
            history += sends(at)

    assert decisions == case["expected"]["decisions"]


def test_FC_10_over_the_cap_waits_for_the_cap_th_newest_send(tmp_path: Path) -> None:
    case = _case("FC-10")
    assert case["input"]["rule"]["max"] == 2
    bundle = _cap_bundle(tmp_path, 2, "24h")

    decision = decide(
        bundle, case["input"]["request_at"], history=sends(*case["input"]["history"])
    )

    assert_decision(decision, "DEFER", ["test.cap"], "2024-07-11T12:00:00Z")
    assert case["expected"]["retry_not_before"] == "2024-07-11T12:00:00Z"
    assert decision.not_before != utc("2024-07-11T08:00:00Z")  # the wrong value


@pytest.mark.parametrize(
    ("window", "outcome", "not_before"),
    [
        pytest.param("45m", "ALLOW", None, id="rule-a-45m"),
        pytest.param("90m", "DEFER", "2022-11-06T07:00:00Z", id="rule-b-90m"),
    ],
)
def test_QH_08_rolling_windows_use_utc_across_the_fall_back(
    tmp_path: Path, window: str, outcome: str, not_before: str | None
) -> None:
    case = _case("QH-08")
    first, second = case["input"]["sends"]
    assert utc(second) - utc(first) == timedelta(minutes=60)
    bundle = _cap_bundle(tmp_path, 1, window)

    decision = decide(bundle, second, history=sends(first))

    assert_decision(
        decision, outcome, ["test.cap"] if outcome == "DEFER" else [], not_before
    )


@pytest.mark.parametrize(
    ("window", "outcome", "not_before"),
    [
        pytest.param(
            "45m",
            "ALLOW",
            None,
            id="rule-a-45m",
        ),
        pytest.param(
            "90m",
            "DEFER",
            "2022-11-06T07:00:00Z",
            id="rule-b-90m",
        ),
    ],
)
def test_QH_08_same_wall_time_in_one_zone_is_an_hour_apart(
    tmp_path: Path, window: str, outcome: str, not_before: str | None
) -> None:
    # The same sends as the case, given in the recipient's zone: both read
    # 01:30 in New York, and only `fold` tells them apart.
    zone = ZoneInfo(_case("QH-08")["input"]["recipient_tz"])
    first = datetime(2022, 11, 6, 1, 30, tzinfo=zone, fold=0)  # 05:30Z
    second = datetime(2022, 11, 6, 1, 30, tzinfo=zone, fold=1)  # 06:30Z
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(minutes=60)
    bundle = _cap_bundle(tmp_path, 1, window)

    history = [SendRecord(first, "sms", "marketing")]
    decision = decide(bundle, second, history=history)

    rule_ids = ["test.cap"] if outcome == "DEFER" else []
    assert_decision(decision, outcome, rule_ids, not_before)
