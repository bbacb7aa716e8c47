"""Evaluating a bundle against one decision input: context in, decision out.

Plan of `evaluate`:
  1. convert the input to CEL values once; the bundle's data files were
     converted once, when it loaded;
  2. for each policy in effect on the decision's (UTC) date whose `match` is
     true: evaluate its variables in order, then each rule's condition; a rule
     that fires yields its effect (for a defer, its `not_before`; its message,
     static or computed); each cap counts the contact's past sends in its
     rolling window;
  3. an expression that fails, or gives the wrong type, is an ``error`` reason
     naming the rule; in an enforced rule it denies: the gateway fails closed;
  4. combine the *enforced* reasons: deny (or error) overrides defer, defer
     overrides allow. A DEFER clears at the latest `not_before` of its
     reasons; if one has none (the time zone is unknown), the DEFER has none.
     Reasons of rules in ``warn`` mode are reported with an allowed message;
     those in ``shadow`` mode are only recorded (audit, explain).

Every step is also written to a `Trace`, which `explain` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from gateway.errors import PolicyError
from gateway.policy._bundle import Bundle, Cap, Expr, Policy, Rule
from gateway.policy._functions import CURRENT_NOW, CURRENT_SENDS
from gateway.policy._tiers import NO_TIER, TIERS_FILE, Tier

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
    # Why the contact's tier could not be decided ("" when it could): the
    # decision then fails closed with `TIER_ERROR_RULE`.
    tier_error: str = ""


@dataclass(frozen=True)
class Reason:
    rule_id: str
    policy_id: str
    effect: str  # "deny", "defer" or "error"
    message: str
    citation: str
    not_before: datetime | None = None
    mode: str = "enforce"


@dataclass
class RuleTrace:
    """What one rule or cap did in one evaluation."""

    rule_id: str
    kind: str  # "rule" or "cap"
    effect: str
    mode: str
    fired: bool = False
    error: str = ""
    not_before: datetime | None = None
    detail: str = ""


@dataclass
class PolicyTrace:
    policy_id: str
    status: str  # "applied", "not matched", "not in effect" or "error"
    error: str = ""
    variables: dict[str, Any] = field(default_factory=dict)
    rules: list[RuleTrace] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    outcome: str
    reasons: tuple[Reason, ...]
    bundle_hash: str
    not_before: datetime | None = None
    reported: tuple[Reason, ...] = ()  # warn and shadow reasons
    trace: tuple[PolicyTrace, ...] = ()

    @property
    def rule_ids(self) -> list[str]:
        return [r.rule_id for r in self.reasons]

    @property
    def warnings(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reported if r.mode == "warn")


def evaluate(bundle: Bundle, given: DecisionInput) -> Decision:
    """Decide one message under `bundle`; see the module plan."""
    if given.now.tzinfo is None:
        raise ValueError("DecisionInput.now must be timezone-aware")
    activation = _activation(bundle, given)
    reasons: list[Reason] = []
    traces: list[PolicyTrace] = []
    if given.tier_error:
        reasons.append(_tier_error(given.tier_error))
        traces.append(PolicyTrace(TIERS_FILE, "error", given.tier_error))
    with _current(given):
        for policy in bundle.policies:
            trace = PolicyTrace(policy.id, "applied")
            reasons.extend(_policy_reasons(policy, activation, given, trace))
            traces.append(trace)
    return _combine(reasons, bundle.hash, tuple(traces))


TIER_ERROR_RULE = "tiers.error"
# The gateway's own refusal of a contact with no address for the channel,
# made beside the bundle (no bundle can change it; replay keeps it).
NO_ADDRESS_RULE = "gateway.no-address"


class TierError(Exception):
    """A tier's condition could not be evaluated for a contact."""


def tier_of(bundle: Bundle, contact: Mapping[str, Any], now: datetime) -> Tier | None:
    """The first tier of the bundle whose condition holds for `contact`, or
    None when none does.

    Tier conditions read the contact (and `now`, `data`). Raises `TierError`
    when a condition cannot be evaluated: the contact's tier is then unknown,
    not "none" (see `place_in_tier`).
    """
    if not bundle.tiers:
        return None
    given = DecisionInput(now=now, contact={**contact, **NO_TIER}, message={})
    activation = _activation(bundle, given)
    for tier in bundle.tiers:
        try:
            if _boolean(tier.when, activation):
                return tier
        except _RuleError as exc:
            raise TierError(f"tier {tier.id!r}: {exc}") from exc
    return None


def place_in_tier(
    bundle: Bundle, contact: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], str]:
    """The contact's tier fields (``tier``, ``tier_roles``, ``tier_caps``)
    and, when its tier cannot be decided, why. Such a contact is in no tier,
    so it leaves every tier's audiences, and its messages are denied
    (`DecisionInput.tier_error`)."""
    try:
        tier = tier_of(bundle, contact, now)
    except TierError as exc:
        log.warning("contact tier could not be decided: %s", exc)
        return dict(NO_TIER), str(exc)
    return (tier.context() if tier else dict(NO_TIER)), ""


def _tier_error(error: str) -> Reason:
    return Reason(
        rule_id=TIER_ERROR_RULE,
        policy_id=TIERS_FILE,
        effect="error",
        message=(
            "the contact's tier could not be decided, so its caps and channel "
            f"roles are unknown and the message is denied: {error}"
        ),
        citation="Tollgate audience tiers (policies/tiers.yaml)",
    )


def with_tier(bundle: Bundle, given: DecisionInput) -> DecisionInput:
    """`given` with the contact's tier, roles and caps filled in from the
    bundle's tiers, as the gateway fills them: the tier whose condition holds
    first, or the one named by ``contact.tier`` ("" for none) when given."""
    contact = dict(given.contact)
    if "tier" not in contact:
        fields, error = place_in_tier(bundle, contact, given.now)
        return replace(given, contact=contact | fields, tier_error=error)
    if not contact["tier"]:
        tier = None
    else:
        named = {t.id: t for t in bundle.tiers}
        tier = named.get(str(contact["tier"]))
        if tier is None:
            raise PolicyError(
                f"unknown tier {contact['tier']!r}; tiers.yaml defines "
                f"{', '.join(named) or 'none'}"
            )
    contact.update(tier.context() if tier else NO_TIER)
    return replace(given, contact=contact)


@contextmanager
def _current(given: DecisionInput) -> Iterator[None]:
    sends = CURRENT_SENDS.set(tuple(given.sends))
    now = CURRENT_NOW.set(given.now.astimezone(UTC))
    try:
        yield
    finally:
        CURRENT_SENDS.reset(sends)
        CURRENT_NOW.reset(now)


_DATA_CACHE: dict[str, Any] = {}


def _activation(bundle: Bundle, given: DecisionInput) -> dict[str, Any]:
    data = _DATA_CACHE.get(bundle.hash)
    if data is None:  # converted once per bundle, shared by every evaluation
        data = _DATA_CACHE[bundle.hash] = json_to_cel(dict(bundle.data))
    return {
        "now": celtypes.TimestampType(given.now.astimezone(UTC)),
        "contact": json_to_cel(dict(given.contact)),
        "message": json_to_cel(dict(given.message)),
        "client": json_to_cel(dict(given.client)),
        "data": data,
    }


def _policy_reasons(
    policy: Policy,
    activation: dict[str, Any],
    given: DecisionInput,
    trace: PolicyTrace,
) -> list[Reason]:
    if not policy.in_effect(given.now.astimezone(UTC).date()):
        trace.status = "not in effect"
        return []
    try:
        if not _boolean(policy.match, activation):
            trace.status = "not matched"
            return []
        scope = dict(activation)
        for name, expr in policy.variables:
            scope[name] = _run(expr, scope)
            trace.variables[name] = _plain(scope[name])
    except _RuleError as exc:
        trace.status, trace.error = "error", str(exc)
        return [_error(policy, policy.id, policy.mode, exc)]
    reasons = [_rule_reason(policy, rule, scope, trace) for rule in policy.rules]
    reasons += [_cap_reason(policy, cap, given, trace) for cap in policy.caps]
    return [r for r in reasons if r is not None]


def _rule_reason(
    policy: Policy, rule: Rule, scope: dict[str, Any], trace: PolicyTrace
) -> Reason | None:
    step = RuleTrace(rule.id, "rule", rule.effect, rule.mode)
    trace.rules.append(step)
    try:
        if not _boolean(rule.condition, scope):
            return None
        not_before = _timestamp(rule.not_before, scope) if rule.not_before else None
        message = _text(rule.message_expr, scope) if rule.message_expr else rule.message
    except _RuleError as exc:
        step.error = str(exc)
        return _error(policy, rule.id, rule.mode, exc)
    step.fired, step.not_before = True, not_before
    return Reason(
        rule_id=rule.id,
        policy_id=policy.id,
        effect=rule.effect,
        message=message,
        citation=rule.citation or policy.citation,
        not_before=not_before,
        mode=rule.mode,
    )


def _cap_reason(
    policy: Policy, cap: Cap, given: DecisionInput, trace: PolicyTrace
) -> Reason | None:
    step = RuleTrace(cap.id, "cap", "defer", cap.mode)
    trace.rules.append(step)
    if cap.purposes and given.message.get("purpose") not in cap.purposes:
        step.detail = "message purpose not capped"
        return None
    limit = cap.max
    if cap.tier_cap:
        tier = given.contact.get("tier") or "no tier"
        limit = int((given.contact.get("tier_caps") or {}).get(cap.tier_cap, 0))
        if limit < 1:
            step.detail = f"the contact's tier ({tier}) has no {cap.tier_cap} cap"
            return None
    counted = counted_sends(given.sends, given.now, cap)
    step.detail = f"{len(counted)} of at most {limit} in the last {_hours(cap.window)}"
    if len(counted) < limit:
        return None
    # The cap clears when enough sends have left the window that one more fits:
    # the (n - max + 1)-th oldest send expires, not the oldest one.
    clears = counted[len(counted) - limit] + cap.window
    step.fired, step.not_before = True, clears
    return Reason(
        rule_id=cap.id,
        policy_id=policy.id,
        effect="defer",
        message=cap.message,
        citation=cap.citation or policy.citation,
        not_before=clears,
        mode=cap.mode,
    )


def _hours(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 3600:
        return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
    return f"{seconds // 3600}h"


def counted_sends(
    sends: Sequence[SendRecord], now: datetime, cap: Cap
) -> list[datetime]:
    """The UTC instants of the sends `cap` counts at `now`, oldest first.

    Rolling windows are arithmetic on UTC instants, never on local wall time
    (two local 01:30s an hour apart on a fall-back day; field case QH-08), and
    a send exactly one window old no longer counts (field case FC-02).
    """
    start = now.astimezone(UTC) - cap.window
    return sorted(
        at
        for s in sends
        if (at := s.at.astimezone(UTC)) > start
        and (not cap.purposes or s.purpose in cap.purposes)
        and (not cap.channels or s.channel in cap.channels)
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


def _text(expr: Expr, scope: dict[str, Any]) -> str:
    value = _run(expr, scope)
    if not isinstance(value, str):
        raise _RuleError(
            f"{expr.source!r} gave {type(value).__name__}, expected a string"
        )
    return " ".join(str(value).split())


def _timestamp(expr: Expr, scope: dict[str, Any]) -> datetime:
    value = _run(expr, scope)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _RuleError(
            f"{expr.source!r} gave {type(value).__name__}, expected a timestamp"
        )
    utc = value.astimezone(UTC)
    return datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=UTC)


def _describe(exc: Exception) -> str:
    while isinstance(exc, CELEvalError) and exc.args and len(exc.args) > 2:
        inner = exc.args[2]
        if isinstance(inner, tuple) and inner and isinstance(inner[0], str):
            if exc.args[0] != "evaluation error":
                return str(exc.args[0])
            return inner[0]
        break
    if isinstance(exc, CELEvalError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def _plain(value: Any) -> Any:
    """A CEL value as plain JSON-able Python, for traces."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bool | int | str) or value is None:
        return value if not isinstance(value, str) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _error(policy: Policy, rule_id: str, mode: str, exc: _RuleError) -> Reason:
    log.warning("policy rule %s could not be evaluated: %s", rule_id, exc)
    return Reason(
        rule_id=rule_id,
        policy_id=policy.id,
        effect="error",
        message=(
            "rule could not be evaluated"
            + (", so the message is denied" if mode == "enforce" else "")
            + f": {exc}"
        ),
        citation=policy.citation,
        mode=mode,
    )


def _combine(
    reasons: list[Reason], bundle_hash: str, trace: tuple[PolicyTrace, ...]
) -> Decision:
    enforced = [r for r in reasons if r.mode == "enforce"]
    reported = tuple(r for r in reasons if r.mode != "enforce")
    if any(r.effect in ("deny", "error") for r in enforced):
        return Decision(DENY, tuple(enforced), bundle_hash, None, reported, trace)
    if enforced:
        clears = [r.not_before for r in enforced]
        latest = None if None in clears else max(c for c in clears if c is not None)
        return Decision(DEFER, tuple(enforced), bundle_hash, latest, reported, trace)
    return Decision(ALLOW, (), bundle_hash, None, reported, trace)
