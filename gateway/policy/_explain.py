"""Explaining one decision: every policy, rule, variable and deferral."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from gateway.policy._engine import Decision


def _at(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def explain_lines(decision: Decision, tier: str | None = None) -> Iterator[str]:
    """The decision and its trace as text a compliance officer can read;
    `tier` is the contact's tier when the caller knows it ("" for none)."""
    yield f"decision: {decision.outcome}" + (
        f" until {_at(decision.not_before)}" if decision.not_before else ""
    )
    for reason in decision.reasons:
        clears = f" (clears {_at(reason.not_before)})" if reason.not_before else ""
        yield f"  {reason.effect} {reason.rule_id}{clears}: {reason.message}"
    for reason in decision.reported:
        yield f"  [{reason.mode}] {reason.effect} {reason.rule_id}: {reason.message}"
    yield f"bundle: {decision.bundle_hash}"
    if tier is not None:
        yield f"contact tier: {tier or 'none'}"
    for policy in decision.trace:
        yield ""
        yield f"policy {policy.policy_id}: {policy.status}" + (
            f" ({policy.error})" if policy.error else ""
        )
        for name, value in policy.variables.items():
            yield f"  variable {name} = {value!r}"
        for step in policy.rules:
            yield "  " + _step(step.rule_id, step.kind, step.effect, step.mode, step)


def _step(rule_id: str, kind: str, effect: str, mode: str, step: object) -> str:
    fired = getattr(step, "fired", False)
    error = getattr(step, "error", "")
    state = "ERROR" if error else ("fired" if fired else "held")
    text = f"{kind} {rule_id} [{effect}, {mode}]: {state}"
    not_before = getattr(step, "not_before", None)
    if not_before:
        text += f", clears {_at(not_before)}"
    detail = getattr(step, "detail", "")
    if detail:
        text += f" ({detail})"
    if error:
        text += f": {error}"
    return text
