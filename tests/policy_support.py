"""Helpers shared by the policy tests: decision inputs and temporary bundles.

`contact()` and `message()` give a context the default bundle allows (an
engaged New York contact with granted SMS marketing consent); each test
overrides only what its case is about.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.policy import Decision, DecisionInput, evaluate
from gateway.policy._bundle import Bundle
from gateway.policy._engine import SendRecord

NOON_NEW_YORK = "2026-07-15T16:00:00Z"
"""12:00 EDT on an ordinary summer Wednesday: inside every quiet-hours window."""


def utc(text: str) -> datetime:
    """An aware datetime from an ISO 8601 text ending in ``Z``."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"expected an aware instant, found {text!r}")
    return value


def contact(**changes: Any) -> dict[str, Any]:
    """A contact every default policy allows, with `changes` applied."""
    base: dict[str, Any] = {
        "id": "ct_0001",
        "stage": "engaged",
        "tier": "",
        "tier_roles": {},
        "tier_caps": {},
        "do_not_contact": False,
        "sms_capable": True,
        "attributes": {},
        "time_zones": ["America/New_York"],
        "time_zone_source": "contact",
        "regions": ["US-NY"],
        "consent": {"sms:marketing": "granted"},
    }
    return base | changes


def message(**changes: Any) -> dict[str, Any]:
    """An SMS marketing message with granted consent, with `changes` applied."""
    base: dict[str, Any] = {
        "channel": "sms",
        "purpose": "marketing",
        "campaign": "summer-sale",
        "consent": "granted",
        "consent_basis": "express_written",
        "consent_entry": 1,
        "opt_out_confirmation_due": False,
        "address_kind": "phone",
        "body_length": 42,
    }
    return base | changes


def sends(
    *instants: str, channel: str = "sms", purpose: str = "marketing"
) -> list[SendRecord]:
    """Past sends at the given ISO instants, all on one channel and purpose."""
    return [SendRecord(utc(at), channel, purpose) for at in instants]


def decide(
    bundle: Bundle,
    now: str | datetime = NOON_NEW_YORK,
    *,
    to: dict[str, Any] | None = None,
    msg: dict[str, Any] | None = None,
    history: Sequence[SendRecord] = (),
) -> Decision:
    """Evaluate `bundle` for one message; defaults are an allowed message."""
    at = utc(now) if isinstance(now, str) else now
    given = DecisionInput(
        now=at,
        contact=to if to is not None else contact(),
        message=msg if msg is not None else message(),
        sends=list(history),
    )
    return evaluate(bundle, given)


def assert_decision(
    decision: Decision,
    outcome: str,
    rule_ids: Iterable[str] = (),
    not_before: str | None = None,
) -> None:
    """Assert the outcome, the exact rule ids (as a multiset) and `not_before`."""
    expected_nb = utc(not_before) if not_before is not None else None
    assert (decision.outcome, sorted(decision.rule_ids), decision.not_before) == (
        outcome,
        sorted(rule_ids),
        expected_nb,
    ), decision.reasons


def write_file(folder: Path, name: str, text: str) -> Path:
    """Write one policy file (UTF-8) into `folder` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def cap_policy(
    caps: Sequence[tuple[str, object, object]],
    *,
    policy_id: str = "test-caps",
    purposes: str = "[marketing]",
) -> str:
    """A policy file of frequency caps shaped like policies/frequency-caps.yaml.

    Each cap is ``(id, max, window)``; the values are written as given, so a
    test can write a bad ``max`` or ``window`` verbatim.
    """
    lines = [
        f"id: {policy_id}",
        "description: >",
        "  Test caps on marketing messages, counted across every channel.",
        "citation: >",
        "  Tollgate test bundle",
        "match: 'message.purpose == \"marketing\"'",
        "caps:",
    ]
    for cap_id, limit, window in caps:
        lines += [
            f"  - id: {cap_id}",
            f"    max: {limit}",
            f"    window: {window}",
            f"    purposes: {purposes}",
            "    message: >",
            "      The contact already received enough marketing messages.",
        ]
    return "\n".join(lines) + "\n"


def rule_policy(
    *,
    policy_id: str = "test-rules",
    rule_id: str = "test.rule",
    effect: str = "deny",
    condition: str = "contact.do_not_contact",
    extra: str = "",
) -> str:
    """A one-rule policy file; `extra` lines are appended to the rule verbatim."""
    text = (
        f"id: {policy_id}\n"
        "description: A test policy.\n"
        "citation: Tollgate test bundle\n"
        "match: 'true'\n"
        "rules:\n"
        f"  - id: {rule_id}\n"
        f"    effect: {effect}\n"
        f"    condition: '{condition}'\n"
        "    message: The test rule fired.\n"
    )
    return text + extra
