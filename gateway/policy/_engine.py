"""Evaluating a bundle against one decision input: context in, decision out.

Plan of `evaluate`:
  1. convert the input to CEL values once;
  2. for each policy whose `match` is true: evaluate its variables in order,
     then each rule's condition; a rule that fires yields its effect (and, for
     a defer, its `not_before`); then each cap counts the contact's past sends
     in its rolling window;
  3. any error in steps 2 (an expression that fails, or returns a non-boolean)
     is an ``error`` reason naming the rule, and denies: the gateway fails
     closed;
  4. combine: deny (or error) overrides defer, defer overrides allow. A DEFER
     clears at the latest `not_before` of its reasons; if one of them has none
     (e.g. the time zone is unknown), the DEFER has none either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from gateway.policy._bundle import Bundle, Cap, Expr, Policy, Rule

log = logging.getLogger(__name__)

ALLOW, DENY, DEFER = "ALLOW", "DENY", "DEFER"


@dataclass(frozen=True)
class SendRecord:
    """One past send, as frequency caps count it."""

    at: datetime
    channel: str
    purpose: str


@dataclass(frozen=True)
class DecisionInput:
    """Everything a policy may see; free of storage and I/O."""

    now: datetime
    contact: Mapping[str, Any]
    message: Mapping[str, Any]
    client: Mapping[str, Any] = field(default_factory=dict)
    sends: Sequence[SendRecord] = ()


@dataclass(frozen=True)
class Reason:
    rule_id: str
    policy_id: str
    effect: str  # "deny", "defer" or "error"
    message: str
    citation: str
    not_before: datetime | None = None


@dataclass(frozen=True)
class Decision:
    outcome: str
    reasons: tuple[Reason, ...]
    bundle_hash: str
    not_before: datetime | None = None

    @property
    def rule_ids(self) -> list[str]:
        return [r.rule_id for r in self.reasons]


def evaluate(bundle: Bundle, given: DecisionInput) -> Decision:
    """Decide one message under `bundle`; see the module plan."""
    if given.now.tzinfo is None:
        raise ValueError("DecisionInput.now must be timezone-aware")
    activation = _activation(given)
    reasons: list[Reason] = []
    for policy in bundle.policies:
        reasons.extend(_policy_reasons(policy, activation, given))
    return _combine(reasons, bundle.hash)


def _activation(given: DecisionInput) -> dict[str, Any]:
    return {
        "now": celtypes.TimestampType(given.now.astimezone(UTC)),
        "contact": json_to_cel(dict(given.contact)),
        "message": json_to_cel(dict(given.message)),
        "client": json_to_cel(dict(given.client)),
    }


def _policy_reasons(
    policy: Policy, activation: dict[str, Any], given: DecisionInput
) -> list[Reason]:
    try:
        if not _boolean(policy.match, activation):
            return []
        scope = dict(activation)
        for name, expr in policy.variables:
            scope[name] = _run(expr, scope)
    except _RuleError as exc:
        return [_error(policy, policy.id, exc)]
    reasons = [r for rule in policy.rules if (r := _rule_reason(policy, rule, scope))]
    reasons += [r for cap in policy.caps if (r := _cap_reason(policy, cap, given))]
    return reasons


def _rule_reason(policy: Policy, rule: Rule, scope: dict[str, Any]) -> Reason | None:
    try:
        if not _boolean(rule.condition, scope):
            return None
        not_before = _timestamp(rule.not_before, scope) if rule.not_before else None
    except _RuleError as exc:
        return _error(policy, rule.id, exc)
    return Reason(
        rule_id=rule.id,
        policy_id=policy.id,
        effect=rule.effect,
        message=rule.message,
        citation=rule.citation or policy.citation,
        not_before=not_before,
    )


def _cap_reason(policy: Policy, cap: Cap, given: DecisionInput) -> Reason | None:
    if cap.purposes and given.message.get("purpose") not in cap.purposes:
        return None
    # Rolling windows are arithmetic on UTC instants, never on local wall
    # time (two local 01:30s an hour apart on a fall-back day; field case QH-08).
    now = given.now.astimezone(UTC)
    counted = sorted(
        at
        for s in given.sends
        if (at := s.at.astimezone(UTC)) > now - cap.window
        and (not cap.purposes or s.purpose in cap.purposes)
        and (not cap.channels or s.channel in cap.channels)
    )
    if len(counted) < cap.max:
        return None
    # The cap clears when enough sends have left the window that one more fits:
    # the (n - max + 1)-th oldest send expires, not the oldest one.
    clears = counted[len(counted) - cap.max] + cap.window
    return Reason(
        rule_id=cap.id,
        policy_id=policy.id,
        effect="defer",
        message=cap.message,
        citation=cap.citation or policy.citation,
        not_before=clears,
    )


class _RuleError(Exception):
    pass


def _run(expr: Expr, scope: dict[str, Any]) -> Any:
    try:
        return expr.program.evaluate(scope)
    except Exception as exc:  # CEL errors and host-function errors alike
        raise _RuleError(f"{expr.source!r} failed: {_describe(exc)}") from exc


def _boolean(expr: Expr, scope: dict[str, Any]) -> bool:
    value = _run(expr, scope)
    if not isinstance(value, celtypes.BoolType):
        raise _RuleError(
            f"{expr.source!r} gave {type(value).__name__}, expected a bool"
        )
    return bool(value)


def _timestamp(expr: Expr, scope: dict[str, Any]) -> datetime:
    value = _run(expr, scope)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _RuleError(
            f"{expr.source!r} gave {type(value).__name__}, expected a timestamp"
        )
    utc = value.astimezone(UTC)
    return datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=UTC)


def _describe(exc: Exception) -> str:
    if isinstance(exc, CELEvalError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def _error(policy: Policy, rule_id: str, exc: _RuleError) -> Reason:
    log.warning("policy rule %s could not be evaluated: %s", rule_id, exc)
    return Reason(
        rule_id=rule_id,
        policy_id=policy.id,
        effect="error",
        message=f"rule could not be evaluated, so the message is denied: {exc}",
        citation=policy.citation,
    )


def _combine(reasons: list[Reason], bundle_hash: str) -> Decision:
    if any(r.effect in ("deny", "error") for r in reasons):
        return Decision(DENY, tuple(reasons), bundle_hash)
    if reasons:
        clears = [r.not_before for r in reasons]
        latest = None if None in clears else max(c for c in clears if c is not None)
        return Decision(DEFER, tuple(reasons), bundle_hash, latest)
    return Decision(ALLOW, (), bundle_hash)
