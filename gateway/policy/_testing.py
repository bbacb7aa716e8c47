"""Running a bundle's own tests, with per-rule coverage.

A rule is *covered* when the tests show both sides of it: at least one case
where it fires and at least one where its policy applies and it does not.
`run_tests` returns a `TestReport`; `tollgate policy test` prints it and exits
non-zero on a failure (or, with ``--require-coverage``, on an uncovered rule).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import PolicyError
from gateway.policy._bundle import Bundle
from gateway.policy._cases import Case, load_cases
from gateway.policy._engine import Decision, evaluate, with_tier


@dataclass
class Coverage:
    fired: int = 0
    held: int = 0  # its policy applied and it did not fire

    @property
    def both_sides(self) -> bool:
        return self.fired > 0 and self.held > 0


@dataclass
class TestReport:
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    coverage: dict[str, Coverage] = field(default_factory=dict)

    @property
    def uncovered(self) -> list[str]:
        return [rule for rule, c in self.coverage.items() if not c.both_sides]

    def lines(self) -> Iterator[str]:
        yield from self.failures
        yield ""
        yield "rule coverage (cases where it fired / where it held):"
        for rule, c in self.coverage.items():
            mark = "ok " if c.both_sides else "-- "
            yield f"  {mark}{rule:<45} fired {c.fired:>3}  held {c.held:>3}"
        passed = self.cases - len(self.failures)
        yield ""
        yield f"{passed} passed, {len(self.failures)} failed"


def run_tests(bundle: Bundle, folder: Path | None = None) -> TestReport:
    """Run every case in ``<bundle>/tests`` (or `folder`) against `bundle`."""
    cases = load_cases(folder or Path(bundle.source) / "tests")
    report = TestReport(cases=len(cases))
    report.coverage = {rule: Coverage() for rule in bundle.rule_ids()}
    for case in cases:
        try:
            given = with_tier(bundle, case.given)
        except PolicyError as exc:
            raise PolicyError(f"{case.file}: case {case.name!r}: {exc}") from None
        decision = evaluate(bundle, given)
        _count(report, decision)
        problem = _mismatch(case, decision)
        if problem:
            report.failures.append(f"FAIL {case.file}: {case.name}\n  {problem}")
    return report


def _count(report: TestReport, decision: Decision) -> None:
    for policy in decision.trace:
        if policy.status != "applied":
            continue
        for step in policy.rules:
            coverage = report.coverage.setdefault(step.rule_id, Coverage())
            if step.fired or step.error:
                coverage.fired += 1
            else:
                coverage.held += 1


def _mismatch(case: Case, decision: Decision) -> str:
    expect = case.expect
    if expect is None:
        return "no 'expect' given"
    fired = ", ".join(f"{r.rule_id} ({r.effect})" for r in decision.reasons) or "none"
    got = f"got {decision.outcome}; rules that fired: {fired}"
    if decision.outcome != expect.outcome:
        return f"expected {expect.outcome}, {got}"
    if expect.rules is not None and sorted(expect.rules) != sorted(decision.rule_ids):
        return f"expected rules {', '.join(expect.rules) or 'none'}, {got}"
    warned = sorted(r.rule_id for r in decision.warnings)
    if expect.warnings is not None and sorted(expect.warnings) != warned:
        return (
            f"expected warnings {', '.join(expect.warnings)}, got {', '.join(warned)}"
        )
    if expect.not_before is not None and decision.not_before != expect.not_before:
        wanted = expect.not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"expected not_before {wanted}, got {_at(decision)}"
    if expect.no_not_before and decision.not_before is not None:
        return f"expected no not_before, got {_at(decision)}"
    return ""


def _at(decision: Decision) -> str:
    moment = decision.not_before
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "none"
