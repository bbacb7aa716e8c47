"""The default bundle's own policy suite (policies/tests), on every CEL runtime.

- the shipped cases pass, cover every rule on both sides, and decide the same
  on the interpreted and the compiled cel-python runners;
- the CEL field cases (CEL-01 getHours and time zones, CEL-03 size of strings
  and bytes) give the expected values on both runners, directly and inside a
  bundle rule (loader, type checker and engine);
- `tollgate policy test` fails loudly on a failing case and, with
  ``--require-coverage``, on a rule the cases never exercise on both sides.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.app import default_policies
from gateway.cli import main
from gateway.policy import (
    RUNTIMES,
    DecisionInput,
    _runtime,
    evaluate,
    load_bundle,
    load_cases,
    run_tests,
)

RUNTIME_NAMES = sorted(RUNTIMES)
FIELD_CASES = Path(__file__).parent / "data" / "field-cases.json"
SUITE = default_policies() / "tests"
POLICY_FILES = (
    "consent",
    "channel-capability",
    "quiet-hours",
    "holidays",
    "suppression",
    "frequency-caps",
)


def _field_case(case_id: str) -> dict[str, Any]:
    cases = json.loads(FIELD_CASES.read_text(encoding="utf-8"))
    (case,) = [c for c in cases if c["id"] == case_id]
    return dict(case)


# -- the shipped suite -------------------------------------------------------


def test_the_suite_has_one_case_file_per_policy() -> None:
    names = {p.stem for p in SUITE.glob("*.yaml")}
    assert set(POLICY_FILES) <= names
    for stem in POLICY_FILES:
        text = (SUITE / f"{stem}.yaml").read_text(encoding="utf-8")
        assert text.startswith("#"), f"{stem}.yaml must open with a comment"


@pytest.mark.parametrize("runtime_name", RUNTIME_NAMES)
def test_shipped_suite_passes_with_full_coverage(runtime_name: str) -> None:
    bundle = load_bundle(default_policies(), runtime_name)
    assert bundle.runtime == runtime_name
    report = run_tests(bundle)
    assert report.cases == len(load_cases(SUITE)) > 100
    assert report.failures == []
    assert report.uncovered == []
    assert set(report.coverage) == set(bundle.rule_ids())
    for rule, coverage in report.coverage.items():
        assert coverage.fired > 0 and coverage.held > 0, rule


def test_every_shipped_case_has_an_exact_expectation() -> None:
    for case in load_cases(SUITE):
        assert case.expect is not None, case.name
        assert case.expect.rules is not None, case.name
        if case.expect.outcome == "DEFER":
            has_time = case.expect.not_before is not None
            assert has_time or case.expect.no_not_before, case.name


def test_both_runtimes_decide_every_shipped_case_alike() -> None:
    bundles = {name: load_bundle(default_policies(), name) for name in RUNTIME_NAMES}
    cases = load_cases(SUITE)
    assert cases
    for case in cases:
        seen = {}
        for name, bundle in bundles.items():
            decision = evaluate(bundle, case.given)
            seen[name] = (
                decision.outcome,
                sorted(decision.rule_ids),
                decision.not_before,
            )
        first, *others = seen.values()
        assert all(o == first for o in others), f"{case.file}: {case.name}: {seen}"


# -- field cases CEL-01 and CEL-03 -------------------------------------------


def _cel_values(runtime_name: str, expressions: list[str]) -> list[Any]:
    cel = _runtime.RUNTIMES[runtime_name]
    return [cel.compile(source, {}).evaluate({}) for source in expressions]


def _yaml_string(text: str) -> str:
    """`text` as a YAML double-quoted scalar, non-ASCII characters kept as is
    (an escaped astral character would become two surrogates in YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _bundle_values(
    tmp_path: Path, runtime_name: str, expressions: list[str], expected: list[int]
) -> list[tuple[str, str]]:
    """Each expression in a rule of a one-policy bundle; (rule id, message)."""
    rules = "".join(
        textwrap.dedent(
            f"""\
              - id: field.expr-{i}
                effect: deny
                condition: {_yaml_string(f"{source} == {want}")}
                message_expr: {_yaml_string(f'"value " + string({source})')}
            """
        )
        for i, (source, want) in enumerate(zip(expressions, expected, strict=True))
    )
    folder = tmp_path / f"bundle-{runtime_name}"
    folder.mkdir()
    (folder / "field.yaml").write_text(
        textwrap.dedent(
            """\
            id: field
            description: Field case expressions, evaluated by the engine.
            citation: tests/data/field-cases.json
            match: 'true'
            rules:
            """
        )
        + textwrap.indent(rules, "  "),
        encoding="utf-8",
    )
    bundle = load_bundle(folder, runtime_name)
    given = DecisionInput(
        now=datetime(2026, 7, 15, 16, tzinfo=UTC),
        contact={},
        message={},
    )
    decision = evaluate(bundle, given)
    assert all(r.effect == "deny" for r in decision.reasons), decision.reasons
    return [(r.rule_id, r.message) for r in decision.reasons]


def _check_field_case(case_id: str, runtime_name: str, tmp_path: Path) -> None:
    case = _field_case(case_id)
    expressions = list(case["input"]["expressions"])
    expected = list(case["expected"]["results"])

    values = _cel_values(runtime_name, expressions)
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    assert [int(v) for v in values] == expected

    fired = _bundle_values(tmp_path, runtime_name, expressions, expected)
    assert fired == [
        (f"field.expr-{i}", f"value {want}") for i, want in enumerate(expected)
    ]


@pytest.mark.parametrize("runtime_name", RUNTIME_NAMES)
def test_field_case_cel_01_get_hours_uses_utc_or_the_named_zone(
    runtime_name: str, tmp_path: Path
) -> None:
    """getHours() is UTC (18); with a zone, that zone's wall clock (19, 14)."""
    _check_field_case("CEL-01", runtime_name, tmp_path)


@pytest.mark.parametrize("runtime_name", RUNTIME_NAMES)
def test_field_case_cel_03_size_counts_code_points_and_bytes(
    runtime_name: str, tmp_path: Path
) -> None:
    """size() of a string counts code points (5, 1); of bytes, bytes (4)."""
    _check_field_case("CEL-03", runtime_name, tmp_path)


# -- `tollgate policy test` on failing and uncovered bundles ----------------

_POLICY = """\
id: demo
description: A two-rule policy for testing the test runner.
citation: none (test fixture)
match: 'message.purpose == "marketing"'
rules:
  - id: demo.landline
    effect: deny
    condition: '!contact.sms_capable'
    message: A landline.
  - id: demo.converted
    effect: deny
    condition: 'contact.stage == "converted"'
    message: Converted.
"""


def _bundle_with_cases(tmp_path: Path, cases: str) -> Path:
    folder = tmp_path / "bundle"
    (folder / "tests").mkdir(parents=True)
    (folder / "demo.yaml").write_text(_POLICY, encoding="utf-8")
    (folder / "tests" / "demo.yaml").write_text(
        textwrap.dedent(
            """\
            defaults:
              at: 2026-07-15T16:00:00Z
              contact: {stage: engaged}
              message: {channel: sms, purpose: marketing}
            """
        )
        + cases,
        encoding="utf-8",
    )
    return folder


def test_policy_test_exits_1_on_a_failing_case_naming_it(tmp_path: Path) -> None:
    folder = _bundle_with_cases(
        tmp_path,
        textwrap.dedent(
            """\
            cases:
              - name: a converted landline contact is wrongly expected allowed
                contact: {stage: converted, sms_capable: false}
                expect: {outcome: ALLOW}
              - name: an engaged contact is allowed
                expect: {outcome: ALLOW, rules: []}
            """
        ),
    )
    result = CliRunner().invoke(main, ["policy", "test", str(folder)])
    assert result.exit_code == 1, result.output
    assert (
        "FAIL demo.yaml: a converted landline contact is wrongly expected allowed"
        in result.output
    )
    assert (
        "expected ALLOW, got DENY; rules that fired: "
        "demo.landline (deny), demo.converted (deny)"
    ) in result.output
    assert "1 passed, 1 failed" in result.output


def test_policy_test_exits_1_on_a_wrong_not_before(tmp_path: Path) -> None:
    folder = _bundle_with_cases(
        tmp_path,
        textwrap.dedent(
            """\
            cases:
              - name: a denial expected to carry a release time
                contact: {stage: converted}
                expect: {outcome: DENY, rules: [demo.converted],
                         not_before: 2026-07-16T12:00:00Z}
            """
        ),
    )
    result = CliRunner().invoke(main, ["policy", "test", str(folder)])
    assert result.exit_code == 1, result.output
    assert "FAIL demo.yaml: a denial expected to carry a release time" in result.output
    assert "expected not_before 2026-07-16T12:00:00Z, got none" in result.output


def test_require_coverage_exits_1_naming_an_untested_rule(tmp_path: Path) -> None:
    folder = _bundle_with_cases(
        tmp_path,
        textwrap.dedent(
            """\
            cases:
              - name: a landline is denied
                contact: {sms_capable: false}
                expect: {outcome: DENY, rules: [demo.landline]}
              - name: a mobile is allowed
                contact: {sms_capable: true}
                expect: {outcome: ALLOW, rules: []}
            """
        ),
    )
    plain = CliRunner().invoke(main, ["policy", "test", str(folder)])
    assert plain.exit_code == 0, plain.output
    assert "2 passed, 0 failed" in plain.output

    strict = CliRunner().invoke(
        main, ["policy", "test", str(folder), "--require-coverage"]
    )
    assert strict.exit_code == 1, strict.output
    assert "-- demo.converted" in strict.output
    assert "ok demo.landline" in strict.output
    assert "not covered on both sides: demo.converted" in strict.output


@pytest.mark.parametrize("runtime_name", RUNTIME_NAMES)
def test_policy_test_cli_passes_the_default_bundle(runtime_name: str) -> None:
    result = CliRunner().invoke(
        main,
        ["policy", "test", "--require-coverage", "--cel-runtime", runtime_name],
    )
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output
    assert " 0 failed" in result.output
