"""Loading a policy bundle: a broken bundle is refused whole, naming what is wrong.

Also the engine's fail-closed side: a rule that cannot be evaluated denies,
and the bundle hash follows every byte of every policy file.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.app import default_policies
from gateway.errors import PolicyError
from gateway.policy import load_bundle
from tests.policy_support import (
    assert_decision,
    cap_policy,
    contact,
    decide,
    rule_policy,
    write_file,
)

GOOD = rule_policy(policy_id="good", rule_id="good.rule")


def _refusal(folder: Path) -> str:
    with pytest.raises(PolicyError) as refused:
        load_bundle(folder)
    return str(refused.value)


def _bundle_of(tmp_path: Path, text: str, name: str = "broken.yaml") -> Path:
    """A folder with one good policy file and `text` as a second one."""
    write_file(tmp_path, "a-good.yaml", GOOD)
    write_file(tmp_path, name, text)
    return tmp_path


# --- refusing a broken file ---------------------------------------------------

BROKEN_FILES = [
    pytest.param(
        "id: x\ndescription: fine\nrules: [\n  - id: y\n",
        ["broken.yaml:4:3:", "not valid YAML"],
        id="invalid-yaml-names-line",
    ),
    pytest.param(
        GOOD.replace("good", "other") + "owner: compliance\n",
        ["unknown key(s) owner"],
        id="unknown-policy-key",
    ),
    pytest.param(
        rule_policy(policy_id="other", extra="    severity: high\n"),
        ["unknown key(s) severity", "policy 'other' rule #1"],
        id="unknown-rule-key",
    ),
    pytest.param(
        GOOD.replace("good", "other").replace("citation: Tollgate test bundle\n", ""),
        ["missing required key(s) citation"],
        id="missing-policy-key",
    ),
    pytest.param(
        rule_policy(policy_id="other").replace(
            "    message: The test rule fired.\n", ""
        ),
        ["give exactly one of message and message_expr"],
        id="missing-rule-message",
    ),
    pytest.param(
        rule_policy(policy_id="other", effect="block"),
        ["rule 'test.rule'", "effect must be one of deny, defer", "'block'"],
        id="bad-effect",
    ),
    pytest.param(
        rule_policy(policy_id="other", effect="allow"),
        ["rule 'test.rule'", "'allow'"],
        id="allow-is-not-an-effect",
    ),
    pytest.param(
        rule_policy(policy_id="other", condition="contact.stage == "),
        ["rule 'test.rule'", "condition is not valid CEL", "contact.stage =="],
        id="cel-syntax-error-in-condition",
    ),
    pytest.param(
        rule_policy(policy_id="other", extra="    not_before: now\n"),
        ["rule 'test.rule'", "not_before is only meaningful for effect 'defer'"],
        id="not-before-on-a-deny-rule",
    ),
    pytest.param(
        rule_policy(
            policy_id="other", effect="defer", extra="    not_before: 'now +'\n"
        ),
        ["rule 'test.rule'", "not_before is not valid CEL"],
        id="cel-syntax-error-in-not-before",
    ),
    pytest.param(
        rule_policy(policy_id="other").replace(
            "rules:\n", "variables:\n  contact: '1'\nrules:\n"
        ),
        ["variables", "'contact' would hide the context name"],
        id="variable-named-contact",
    ),
    pytest.param(
        rule_policy(policy_id="other").replace(
            "rules:\n", "variables:\n  now: '1'\nrules:\n"
        ),
        ["'now' would hide the context name"],
        id="variable-named-now",
    ),
    pytest.param(
        rule_policy(policy_id="other").replace("match: 'true'", "match: 'true &&'"),
        ["policy 'other'", "match is not valid CEL"],
        id="cel-syntax-error-in-match",
    ),
    pytest.param(
        "", ["top level", "expected a mapping, found nothing"], id="empty-file"
    ),
    pytest.param(
        "- id: x\n", ["top level", "expected a mapping, found list"], id="a-list"
    ),
    pytest.param(
        GOOD.replace("good", "other").split("rules:\n")[0],
        ["policy 'other'", "has neither rules nor caps"],
        id="neither-rules-nor-caps",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN_FILES)
def test_broken_file_refuses_the_bundle(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    message = _refusal(_bundle_of(tmp_path, text))

    assert message.startswith("broken.yaml:"), message
    for part in expected:
        assert part in message, message


BAD_CAPS = [
    pytest.param(0, "24h", "max must be a whole number of at least 1", id="max-0"),
    pytest.param(-1, "24h", "found -1", id="max-negative"),
    pytest.param("true", "24h", "found True", id="max-bool"),
    pytest.param("2.5", "24h", "found 2.5", id="max-float"),
    pytest.param("'3'", "24h", "found '3'", id="max-string"),
    pytest.param(
        3, "24 hours", "window must look like 90m, 24h or 7d", id="window-words"
    ),
    pytest.param(3, "0h", "found '0h'", id="window-zero"),
    pytest.param(3, "-1h", "found '-1h'", id="window-negative"),
    pytest.param(3, "1w", "found '1w'", id="window-weeks"),
    pytest.param(3, "24", "found 24", id="window-without-unit"),
    pytest.param(
        3,
        "1000000000d",
        "window",
        id="window-too-long",
    ),
]


@pytest.mark.parametrize(("limit", "window", "expected"), BAD_CAPS)
def test_bad_cap_refuses_the_bundle(
    tmp_path: Path, limit: object, window: str, expected: str
) -> None:
    text = cap_policy([("test.cap", limit, window)])

    message = _refusal(_bundle_of(tmp_path, text, "caps.yaml"))

    assert re.match(r"caps\.yaml(:\d+:\d+)?: cap 'test\.cap':", message), message
    assert expected in message, message


def test_duplicate_rule_id_across_files_names_both(tmp_path: Path) -> None:
    write_file(tmp_path, "first.yaml", rule_policy(policy_id="one", rule_id="r.same"))
    write_file(tmp_path, "second.yaml", rule_policy(policy_id="two", rule_id="r.same"))

    message = _refusal(tmp_path)

    assert re.search(r"second\.yaml: id 'r\.same' .*first\.yaml", message), message


def test_duplicate_cap_id_across_files_names_both(tmp_path: Path) -> None:
    write_file(tmp_path, "first.yaml", cap_policy([("cap.same", 1, "1h")]))
    second = cap_policy([("cap.same", 2, "2h")], policy_id="two")
    write_file(tmp_path, "second.yaml", second)

    message = _refusal(tmp_path)

    assert "second.yaml" in message and "first.yaml" in message, message
    assert "'cap.same'" in message, message


def test_duplicate_policy_id_across_files_names_both(tmp_path: Path) -> None:
    write_file(tmp_path, "first.yaml", rule_policy(policy_id="same", rule_id="r.1"))
    write_file(tmp_path, "second.yaml", rule_policy(policy_id="same", rule_id="r.2"))

    message = _refusal(tmp_path)

    assert "second.yaml: id 'same'" in message and "first.yaml" in message, message


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    write_file(tmp_path, "README.md", "Not a policy.\n")

    message = _refusal(tmp_path)

    assert str(tmp_path) in message and "no *.yaml policy files" in message


def test_non_string_key_is_refused_as_unknown(tmp_path: Path) -> None:
    text = GOOD.replace("good", "other") + "2024: reviewed\n"

    message = _refusal(_bundle_of(tmp_path, text))

    assert message.startswith("broken.yaml:") and "2024" in message, message


def test_duplicate_key_in_one_mapping_is_refused(tmp_path: Path) -> None:
    text = rule_policy(policy_id="other", condition="contact.do_not_contact").replace(
        "    message:", "    condition: 'false'\n    message:"
    )

    message = _refusal(_bundle_of(tmp_path, text))

    assert message.startswith("broken.yaml:") and "condition" in message, message


def test_one_broken_file_refuses_the_whole_bundle(tmp_path: Path) -> None:
    folder = _copy_default(tmp_path / "bundle")
    write_file(folder, "zz-extra.yaml", rule_policy(effect="block"))

    message = _refusal(folder)

    assert message.startswith("zz-extra.yaml:"), message


# --- failing closed at evaluation time ------------------------------------------

# Expressions the type checker refuses when the bundle loads, with their place.
STATIC_ERRORS = [
    pytest.param(
        rule_policy(rule_id="r.missing-field", condition="contact.no_such_field == 1"),
        "p.yaml:8:",
        "unknown field 'no_such_field' of contact",
        id="unknown-field",
    ),
    pytest.param(
        rule_policy(rule_id="r.not-bool", condition='"yes"'),
        "p.yaml:8:",
        "condition must be true or false",
        id="condition-gives-a-string",
    ),
    pytest.param(
        rule_policy(
            rule_id="r.bad-time",
            effect="defer",
            condition="true",
            extra="    not_before: '\"tomorrow\"'\n",
        ),
        "p.yaml:10:",
        "must give a timestamp",
        id="not-before-gives-a-string",
    ),
    pytest.param(
        rule_policy(policy_id="p.bad-match").replace("match: 'true'", "match: '1'"),
        "p.yaml:4:",
        "must be true or false",
        id="match-gives-an-int",
    ),
    pytest.param(
        rule_policy(policy_id="p.bad-variable", condition="limit > 1").replace(
            "rules:\n", "variables:\n  limit: 'contact.nope'\nrules:\n"
        ),
        "p.yaml:6:",
        "unknown field 'nope' of contact",
        id="variable-with-unknown-field",
    ),
    pytest.param(
        rule_policy(
            rule_id="r.fn", condition='insde_window(now, [], "08:00", "21:00")'
        ),
        "p.yaml:8:",
        "did you mean 'inside_window'",
        id="misspelt-function",
    ),
]


@pytest.mark.parametrize(("text", "place", "detail"), STATIC_ERRORS)
def test_a_type_error_refuses_the_bundle_naming_file_line_and_rule(
    tmp_path: Path, text: str, place: str, detail: str
) -> None:
    write_file(tmp_path, "p.yaml", text)

    message = _refusal(tmp_path)

    assert message.startswith(place), message
    assert detail in message, message


# Expressions that pass the type checker but fail on the data they meet.
RUNTIME_ERRORS = [
    pytest.param(
        rule_policy(rule_id="r.missing", condition="contact.attributes.score > 1"),
        "r.missing",
        "score",
        id="missing-attribute",
    ),
    pytest.param(
        rule_policy(rule_id="r.not-bool", condition="contact.attributes.flag"),
        "r.not-bool",
        "expected a bool",
        id="attribute-is-not-a-bool",
    ),
    pytest.param(
        rule_policy(
            rule_id="r.zero", condition="1 / (size(contact.attributes) - 1) == 1"
        ),
        "r.zero",
        "1 / (size(contact.attributes) - 1) == 1",
        id="division-by-zero",
    ),
    pytest.param(
        rule_policy(
            rule_id="r.bad-time",
            effect="defer",
            condition="true",
            extra="    not_before: contact.attributes.flag\n",
        ),
        "r.bad-time",
        "expected a timestamp",
        id="not-before-gives-a-string",
    ),
    pytest.param(
        rule_policy(policy_id="p.bad-match").replace(
            "match: 'true'", "match: contact.attributes.flag"
        ),
        "p.bad-match",
        "expected a bool",
        id="match-gives-a-string",
    ),
    pytest.param(
        rule_policy(policy_id="p.bad-variable", condition="limit > 1").replace(
            "rules:\n", "variables:\n  limit: 'contact.attributes.nope'\nrules:\n"
        ),
        "p.bad-variable",
        "nope",
        id="variable-fails",
    ),
]


@pytest.mark.parametrize(("text", "rule_id", "detail"), RUNTIME_ERRORS)
def test_rule_that_cannot_be_evaluated_denies(
    tmp_path: Path, text: str, rule_id: str, detail: str
) -> None:
    write_file(tmp_path, "p.yaml", text)
    the_contact = contact(attributes={"flag": "yes"})

    decision = decide(load_bundle(tmp_path), to=the_contact)

    assert_decision(decision, "DENY", [rule_id])
    (reason,) = decision.reasons
    assert reason.effect == "error"
    assert "could not be evaluated" in reason.message
    assert detail in reason.message, reason.message


def test_an_error_denies_even_beside_an_allowing_bundle(tmp_path: Path) -> None:
    write_file(tmp_path, "a.yaml", rule_policy(policy_id="a", rule_id="a.quiet"))
    broken = rule_policy(
        policy_id="b", rule_id="b.broken", condition="contact.attributes.x == 1"
    )
    write_file(tmp_path, "b.yaml", broken)

    decision = decide(load_bundle(tmp_path))

    assert_decision(decision, "DENY", ["b.broken"])


# --- the bundle hash --------------------------------------------------------------


def _copy_default(folder: Path) -> Path:
    """The default bundle's policy and data files (not its tests)."""
    shutil.copytree(
        default_policies(),
        folder,
        ignore=shutil.ignore_patterns("tests", "*.py", "__pycache__"),
    )
    return folder


DEFAULT_FILES = sorted(p.name for p in Path(default_policies()).glob("*.yaml"))


def test_bundle_hash_is_stable(tmp_path: Path) -> None:
    first = load_bundle(_copy_default(tmp_path / "one"))
    again = load_bundle(tmp_path / "one")
    elsewhere = load_bundle(_copy_default(tmp_path / "two"))
    (tmp_path / "two" / "notes.txt").write_text("not part of the bundle\n")
    (tmp_path / "two" / "consent.yaml").touch()

    assert first.hash == again.hash == elsewhere.hash
    assert load_bundle(tmp_path / "two").hash == first.hash
    assert first.hash == load_bundle(default_policies()).hash
    assert re.fullmatch(r"[0-9a-f]{64}", first.hash)


@pytest.mark.parametrize("name", DEFAULT_FILES)
@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda raw: raw + b"\n", id="one-byte-appended"),
        pytest.param(
            lambda raw: (
                raw.replace(b"description: >", b"description: |", 1)
                if b"description: >" in raw
                else raw.replace(b"objective: >", b"objective: |", 1)
            ),
            id="one-byte-changed",
        ),
    ],
)
def test_bundle_hash_changes_with_one_byte(
    tmp_path: Path, name: str, edit: Callable[[bytes], bytes]
) -> None:
    folder = _copy_default(tmp_path / "bundle")
    before = load_bundle(folder).hash
    path = folder / name
    raw = path.read_bytes()
    changed = edit(raw)
    assert len(changed) - len(raw) in (0, 1) and changed != raw
    path.write_bytes(changed)

    assert load_bundle(folder).hash != before


def test_bundle_hash_changes_when_a_file_is_renamed(tmp_path: Path) -> None:
    folder = _copy_default(tmp_path / "bundle")
    before = load_bundle(folder).hash
    (folder / "consent.yaml").rename(folder / "consent-v2.yaml")

    assert load_bundle(folder).hash != before


_TIER = """tiers:
  - id: only
    name: Only
    objective: Every contact.
    when: 'true'
    caps: {marketing_per_day: 2}
"""


def _tier_cap_policy(cap_lines: str) -> str:
    return (
        "id: tier-caps\n"
        "description: Tier caps.\n"
        "citation: Tollgate test bundle\n"
        "match: 'true'\n"
        "caps:\n"
        "  - id: test.tier-cap\n"
        f"{cap_lines}"
        "    window: 24h\n"
        "    message: Over the tier's cap.\n"
    )


TIER_CAP_REFUSALS = [
    pytest.param(
        "    max: 2\n    tier_cap: marketing_per_day\n",
        _TIER,
        "cap 'test.tier-cap': give either max",
        id="max-and-tier-cap",
    ),
    pytest.param(
        "", _TIER, "cap 'test.tier-cap': give either max", id="neither-max-nor-tier-cap"
    ),
    pytest.param(
        "    tier_cap: per day\n",
        _TIER,
        "tier_cap must name a cap of tiers.yaml",
        id="tier-cap-not-a-name",
    ),
    pytest.param(
        "    tier_cap: reminders_per_day\n",
        _TIER,
        "tier_cap 'reminders_per_day' is defined by no tier",
        id="tier-cap-no-tier-defines",
    ),
    pytest.param(
        "    max: 3\n",
        _TIER,
        "tier 'only' cap 'marketing_per_day' is enforced by no policy",
        id="tier-cap-nothing-enforces",
    ),
    pytest.param(
        "    tier_cap: marketing_per_day\n    mode: shadow\n",
        _TIER,
        "tier 'only' cap 'marketing_per_day' is enforced by no policy",
        id="tier-cap-read-only-in-shadow-mode",
    ),
    pytest.param(
        "    tier_cap: marketing_per_day\n    mode: warn\n",
        _TIER,
        "tier 'only' cap 'marketing_per_day' is enforced by no policy",
        id="tier-cap-read-only-in-warn-mode",
    ),
    pytest.param(
        "    tier_cap: marketing_per_day\n",
        _TIER.replace(
            "marketing_per_day: 2", "marketing_per_day: 99999999999999999999"
        ),
        "cap 'marketing_per_day' must be a whole number from 1 to 1000000",
        id="tier-cap-too-large",
    ),
    pytest.param(
        "    tier_cap: marketing_per_day\n",
        _TIER.replace("marketing_per_day: 2", "marketing_per_day: true"),
        "found True",
        id="tier-cap-bool",
    ),
    pytest.param(
        "    max: 1000001\n",
        _TIER,
        "max must be at most 1000000",
        id="fixed-cap-too-large",
    ),
]


@pytest.mark.parametrize(("cap_lines", "tiers", "expected"), TIER_CAP_REFUSALS)
def test_tier_caps_and_the_caps_that_read_them_must_match(
    tmp_path: Path, cap_lines: str, tiers: str, expected: str
) -> None:
    write_file(tmp_path, "tiers.yaml", tiers)
    write_file(tmp_path, "tier-caps.yaml", _tier_cap_policy(cap_lines))

    message = _refusal(tmp_path)

    assert expected in message, message


def test_a_cap_reads_its_maximum_from_the_contacts_tier(tmp_path: Path) -> None:
    write_file(tmp_path, "tiers.yaml", _TIER)
    write_file(
        tmp_path,
        "tier-caps.yaml",
        _tier_cap_policy("    tier_cap: marketing_per_day\n"),
    )

    (cap,) = load_bundle(tmp_path).policies[0].caps

    assert (cap.tier_cap, cap.max) == ("marketing_per_day", 0)
