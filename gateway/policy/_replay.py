"""Re-deciding recorded decisions under a candidate bundle.

Each decision's audit record holds its PII-free context (clock, contact,
message, counted sends). `replay` evaluates that context under another
bundle, placing the contact in the candidate's tiers, and reports which
decisions would change, and by which rules, so the impact of a policy change
is known before it ships.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.policy._bundle import Bundle
from gateway.policy._engine import (
    NO_ADDRESS_RULE,
    DecisionInput,
    SendRecord,
    evaluate,
    with_tier,
)
from gateway.policy._tiers import NO_TIER


@dataclass
class ReplayReport:
    decisions: int = 0
    skipped: int = 0
    changed: int = 0
    transitions: Counter[str] = field(default_factory=Counter)
    rules_added: Counter[str] = field(default_factory=Counter)
    rules_removed: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        yield (
            f"{self.decisions} recorded decisions replayed, {self.changed} would "
            f"change"
            + (f", {self.skipped} without a context skipped" if self.skipped else "")
        )
        for transition, count in self.transitions.most_common():
            yield f"  {transition:<16} {count:>7}"
        if self.rules_added:
            yield "rules that would newly fire:"
            for rule, count in self.rules_added.most_common():
                yield f"  + {rule:<43} {count:>7}"
        if self.rules_removed:
            yield "rules that would no longer fire:"
            for rule, count in self.rules_removed.most_common():
                yield f"  - {rule:<43} {count:>7}"
        for example in self.examples:
            yield f"  e.g. audit record {example}"


def replay(
    records: Iterable[tuple[int, Mapping[str, Any]]], bundle: Bundle
) -> ReplayReport:
    """Replay (seq, decision body) pairs under `bundle`."""
    report = ReplayReport()
    for seq, body in records:
        given = _input(body.get("context"))
        if given is None:
            report.skipped += 1
            continue
        report.decisions += 1
        decision = evaluate(bundle, with_tier(bundle, given))
        before = {
            r["rule_id"]
            for r in body.get("reasons", [])
            if r.get("mode", "enforce") == "enforce"
        }
        kept = before & {NO_ADDRESS_RULE}
        after = set(decision.rule_ids) | kept
        outcome = "DENY" if kept else decision.outcome
        if outcome == body.get("outcome") and before == after:
            continue
        report.changed += 1
        report.transitions[f"{body.get('outcome')} -> {outcome}"] += 1
        report.rules_added.update(after - before)
        report.rules_removed.update(before - after)
        if len(report.examples) < 5:
            report.examples.append(
                f"{seq} (contact {body.get('contact_id')}): "
                f"{body.get('outcome')} -> {outcome}"
            )
    return report


def _input(context: Any) -> DecisionInput | None:
    if not isinstance(context, Mapping) or "now" not in context:
        return None
    sends = [
        SendRecord(datetime.fromisoformat(s["at"]), s["channel"], s["purpose"])
        for s in context.get("sends", [])
    ]
    # The tier is computed afresh, so a change to tiers.yaml is replayed too.
    contact = {k: v for k, v in context["contact"].items() if k not in NO_TIER}
    return DecisionInput(
        now=datetime.fromisoformat(context["now"]),
        contact=contact,
        message=dict(context["message"]),
        sends=sends,
    )
