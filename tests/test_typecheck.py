"""The static CEL checker: every problem kind, every supported construct.

The environment is the one the gateway declares for a decision (contact,
message, client, now and the quiet-hours host functions). A valid expression
must raise nothing, because a false alarm refuses a valid policy bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy import _context
from gateway.policy._typecheck import (
    BOOL,
    BYTES,
    DOUBLE,
    DURATION,
    DYN,
    INT,
    STRING,
    TIMESTAMP,
    UINT,
    CelType,
    CheckProblem,
    FunctionSig,
    Limits,
    TypeEnv,
    check,
    list_of,
    map_of,
    record,
)

POLICIES = Path(__file__).resolve().parent.parent / "policies"

CONTACT = record(
    "contact",
    {
        "id": STRING,
        "stage": STRING,
        "tier": STRING,
        "do_not_contact": BOOL,
        "sms_capable": BOOL,
        "attributes": map_of(STRING, DYN),
        "time_zones": list_of(STRING),
        "time_zone_source": STRING,
        "regions": list_of(STRING),
        "consent": map_of(STRING, STRING),
    },
)
MESSAGE = record(
    "message",
    {
        "channel": STRING,
        "purpose": STRING,
        "campaign": STRING,
        "consent": STRING,
        "body_length": INT,
    },
)
WINDOW_ARGS = (TIMESTAMP, list_of(STRING), STRING, STRING)
ENV = TypeEnv(
    variables={
        "now": TIMESTAMP,
        "contact": CONTACT,
        "message": MESSAGE,
        "client": map_of(STRING, DYN),
    },
    functions=(
        FunctionSig("inside_window", WINDOW_ARGS, BOOL),
        FunctionSig("next_allowed", WINDOW_ARGS, TIMESTAMP),
    ),
)
CONTACT_FIELDS = (
    "attributes, consent, do_not_contact, id, regions, sms_capable, stage, tier, "
    "time_zone_source, time_zones"
)


# -- Valid expressions raise nothing -------------------------------------------

VALID = [
    pytest.param('contact.stage == "converted"', BOOL, id="field-equality"),
    pytest.param("!contact.sms_capable", BOOL, id="negation"),
    pytest.param(
        'message.channel == "sms" && message.purpose in ["marketing", "reminder"]',
        BOOL,
        id="in-list-literal",
    ),
    pytest.param('"sms:marketing" in contact.consent', BOOL, id="in-map"),
    pytest.param('contact.consent["sms:marketing"] == "granted"', BOOL, id="index-map"),
    pytest.param('contact.time_zones[0] == "America/New_York"', BOOL, id="index-list"),
    pytest.param(
        'contact.regions.exists(r, r in ["US-FL", "US-OK"]) ? "20:00" : "21:00"',
        STRING,
        id="ternary-with-macro",
    ),
    pytest.param(
        "contact.regions.all(r, contact.time_zones.exists(z, z != r))",
        BOOL,
        id="nested-macros",
    ),
    pytest.param('contact.regions.exists_one(r, r == "US-FL")', BOOL, id="exists-one"),
    pytest.param(
        'contact.regions.filter(r, r.startsWith("US-")).size() > 0',
        BOOL,
        id="filter-then-size",
    ),
    pytest.param(
        'contact.regions.map(r, r + "!").exists(x, x.endsWith("!"))',
        BOOL,
        id="map-macro",
    ),
    pytest.param(
        "contact.consent.exists(k, contact.consent[k] == 'granted')",
        BOOL,
        id="macro-over-map-keys",
    ),
    pytest.param("[1, 2, 3].map(x, x > 1, x * 2)[0] == 4", BOOL, id="map-with-filter"),
    pytest.param(
        'contact.stage.startsWith("in_") || contact.tier.contains("gold")',
        BOOL,
        id="string-methods",
    ),
    pytest.param('contact.id.matches("^c-[0-9]+$")', BOOL, id="matches-method"),
    pytest.param('matches(contact.id, "^c-")', BOOL, id="matches-function"),
    pytest.param(
        'now.getHours("America/New_York") >= 8 && now.getDayOfWeek() < 6',
        BOOL,
        id="timestamp-methods",
    ),
    pytest.param('duration("90m").getMinutes() == 90', BOOL, id="duration-method"),
    pytest.param('now + duration("24h")', TIMESTAMP, id="timestamp-plus-duration"),
    pytest.param('now - duration("1h") < now', BOOL, id="timestamp-minus-duration"),
    pytest.param(
        'now - timestamp("2026-01-01T00:00:00Z") > duration("24h")',
        BOOL,
        id="timestamp-difference",
    ),
    pytest.param("message.body_length * 2 + 1 > 160 / 2 % 7", BOOL, id="arithmetic"),
    pytest.param("-message.body_length < 0", BOOL, id="unary-minus"),
    pytest.param("1u + uint(message.body_length) > 0u", BOOL, id="uint"),
    pytest.param("double(message.body_length) / 2.0 >= 0.5", BOOL, id="double"),
    pytest.param(
        '"Hello " + contact.id + ", " + string(message.body_length)',
        STRING,
        id="string-concatenation",
    ),
    pytest.param('b"ab" + bytes("c") == b"abc"', BOOL, id="bytes"),
    pytest.param("has(contact.attributes.vip)", BOOL, id="has-on-map"),
    pytest.param("has(contact.stage)", BOOL, id="has-on-record"),
    pytest.param("contact.attributes.vip == true", BOOL, id="map-of-dyn-field"),
    pytest.param("client.limits.daily > 3", BOOL, id="client-map"),
    pytest.param('client["tier"] == contact.tier', BOOL, id="client-index"),
    pytest.param("size(contact.time_zones) == 0", BOOL, id="size-function"),
    pytest.param("contact.regions.size() + size(contact.id) > 1", BOOL, id="size"),
    pytest.param("size({'a': 1}) == 1 && size(b'x') == 1", BOOL, id="size-map-bytes"),
    pytest.param("{'a': [1, 2]}['a'][1] == 2", BOOL, id="map-literal"),
    pytest.param("[] == [] && {} == {}", BOOL, id="empty-literals"),
    pytest.param("[1, 'a'].size() == 2", BOOL, id="mixed-list-is-dyn"),
    pytest.param("contact.stage == null || null == contact.stage", BOOL, id="null"),
    pytest.param("type(contact.stage) == string", BOOL, id="type-function"),
    pytest.param("dyn(contact.stage) > 3", BOOL, id="dyn-escapes-checking"),
    pytest.param("int('3') + int(now) > 0", BOOL, id="int-conversion"),
    pytest.param("bool('true') && bool(true)", BOOL, id="bool-conversion"),
    pytest.param(
        "size(contact.time_zones) > 0\n"
        "  && !inside_window(now, contact.time_zones, '08:00', '21:00')",
        BOOL,
        id="host-function",
    ),
    pytest.param(
        "next_allowed(now, contact.time_zones, '08:00', '21:00')",
        TIMESTAMP,
        id="host-function-timestamp",
    ),
    pytest.param("(((contact.do_not_contact)))", BOOL, id="parentheses"),
    pytest.param("contact.attributes.score > 3 ? 1 : 2.0", None, id="mixed-ternary"),
    pytest.param(
        "contact.tier == 'gold' // a comment\n  && contact.sms_capable",
        BOOL,
        id="comment-and-newline",
    ),
]


@pytest.mark.parametrize(("source", "expected"), VALID)
def test_valid_expression_raises_nothing(source: str, expected: CelType | None) -> None:
    celpy.Environment().compile(source)  # the case itself is valid CEL
    assert check(source, ENV, expected)[1] == []


INFERRED = [
    pytest.param("contact.stage", STRING, id="string-field"),
    pytest.param("contact.time_zones", list_of(STRING), id="list-field"),
    pytest.param("contact.consent", map_of(STRING, STRING), id="map-field"),
    pytest.param("contact.consent['sms']", STRING, id="map-value"),
    pytest.param("contact.attributes.vip", DYN, id="map-of-dyn-value"),
    pytest.param("contact", CONTACT, id="record"),
    pytest.param('now + duration("24h")', TIMESTAMP, id="timestamp-arithmetic"),
    pytest.param("now - now", DURATION, id="timestamp-difference"),
    pytest.param("message.body_length / 2", INT, id="int-arithmetic"),
    pytest.param("1.5 * 2.0", DOUBLE, id="double-arithmetic"),
    pytest.param("2u", UINT, id="uint-literal"),
    pytest.param("b'x'", BYTES, id="bytes-literal"),
    pytest.param("contact.regions.filter(r, r != '')", list_of(STRING), id="filter"),
    pytest.param("contact.regions.map(r, size(r))", list_of(INT), id="map-macro"),
    pytest.param("[1, 2]", list_of(INT), id="list-literal"),
    pytest.param("{'a': true}", map_of(STRING, BOOL), id="map-literal"),
    pytest.param("true ? 'a' : 'b'", STRING, id="ternary"),
    pytest.param("true ? 'a' : 1", DYN, id="ternary-mixed"),
    pytest.param("now.getHours()", INT, id="method-result"),
    pytest.param("contact.regions + ['US-FL']", list_of(STRING), id="list-concat"),
]


@pytest.mark.parametrize(("source", "inferred"), INFERRED)
def test_inferred_type(source: str, inferred: CelType) -> None:
    assert check(source, ENV) == (inferred, [])


# -- Each problem kind: message, line and column -------------------------------

PROBLEMS = [
    pytest.param(
        'contact.stge == "x"',
        BOOL,
        (
            1,
            9,
            f"unknown field 'stge' of contact; known fields: {CONTACT_FIELDS}; "
            "did you mean 'stage'?",
        ),
        id="unknown-field",
    ),
    pytest.param(
        "has(message.chanel)",
        BOOL,
        (
            1,
            13,
            "unknown field 'chanel' of message; known fields: body_length, "
            "campaign, channel, consent, purpose; did you mean 'channel'?",
        ),
        id="unknown-field-in-has",
    ),
    pytest.param(
        'contact.stage == "x"\n  && contct.tier == "gold"',
        BOOL,
        (2, 6, "unknown identifier 'contct'; did you mean 'contact'?"),
        id="unknown-identifier-on-line-2",
    ),
    pytest.param(
        "blocked",
        BOOL,
        (
            1,
            1,
            "unknown identifier 'blocked'; known names: client, contact, message, now",
        ),
        id="unknown-identifier-known-names",
    ),
    pytest.param(
        "contact.regions.exists(r, x == 'US-FL')",
        BOOL,
        (
            1,
            27,
            "unknown identifier 'x'; known names: client, contact, message, now, r",
        ),
        id="unknown-identifier-in-macro",
    ),
    pytest.param(
        "contact.regions.exists(r, r == 'US-FL') || r == 'US-OK'",
        BOOL,
        (1, 44, "unknown identifier 'r'; known names: client, contact, message, now"),
        id="macro-variable-out-of-scope",
    ),
    pytest.param(
        "insde_window(now, contact.time_zones, '08:00', '21:00')",
        BOOL,
        (1, 1, "function 'insde_window' does not exist; did you mean 'inside_window'?"),
        id="unknown-function",
    ),
    pytest.param(
        "contact.stage.startswith('in_')",
        BOOL,
        (1, 15, "method 'startswith' does not exist; did you mean 'startsWith'?"),
        id="unknown-method",
    ),
    pytest.param(
        "inside_window(now, contact.time_zones, '08:00')",
        BOOL,
        (
            1,
            1,
            "function 'inside_window' takes 4 arguments (timestamp, list(string), "
            "string, string), but is given 3",
        ),
        id="wrong-argument-count",
    ),
    pytest.param(
        "now.getHours('UTC', 'Europe/Paris') > 8",
        BOOL,
        (1, 5, "method 'getHours' takes 0 or 1 arguments, but is given 2"),
        id="wrong-argument-count-optional",
    ),
    pytest.param(
        "inside_window(now, contact.stage, '08:00', '21:00')",
        BOOL,
        (
            1,
            1,
            "argument 2 of 'inside_window' must be a list(string), "
            "but contact.stage gives a string",
        ),
        id="wrong-argument-type",
    ),
    pytest.param(
        "size(1) > 0",
        BOOL,
        (
            1,
            1,
            "argument 1 of 'size' must be a string, bytes, a list or a map, "
            "but 1 gives an int",
        ),
        id="size-of-int",
    ),
    pytest.param(
        "contact.stage.getHours() > 8",
        BOOL,
        (
            1,
            15,
            "method 'getHours' applies to a timestamp or a duration, "
            "but contact.stage gives a string",
        ),
        id="method-on-wrong-receiver",
    ),
    pytest.param(
        "startsWith(contact.stage, 'in_')",
        BOOL,
        (1, 1, "'startsWith' is a method; write it as value.startsWith(...)"),
        id="method-called-as-function",
    ),
    pytest.param(
        "contact.stage.int() > 0",
        BOOL,
        (1, 15, "'int' is a function, not a method; write it as int(...)"),
        id="function-called-as-method",
    ),
    pytest.param(
        "contact.stage > 3",
        BOOL,
        (1, 15, "'>' cannot compare contact.stage (a string) with 3 (an int)"),
        id="compare-string-with-int",
    ),
    pytest.param(
        "message.body_length == '160'",
        BOOL,
        (
            1,
            21,
            "'==' cannot compare message.body_length (an int) with '160' (a string)",
        ),
        id="equality-int-with-string",
    ),
    pytest.param(
        '"a" && true',
        BOOL,
        (1, 1, "'&&' needs true or false on each side, but \"a\" gives a string"),
        id="and-on-string",
    ),
    pytest.param(
        "contact.do_not_contact || contact.tier",
        BOOL,
        (
            1,
            27,
            "'||' needs true or false on each side, but contact.tier gives a string",
        ),
        id="or-on-string",
    ),
    pytest.param(
        "!contact.stage",
        BOOL,
        (1, 2, "'!' needs true or false, but contact.stage gives a string"),
        id="not-on-string",
    ),
    pytest.param(
        "-contact.stage == 1",
        BOOL,
        (1, 2, "'-' needs a number, but contact.stage gives a string"),
        id="minus-on-string",
    ),
    pytest.param(
        "contact.stage + 1 == 'x'",
        BOOL,
        (1, 15, "'+' cannot combine contact.stage (a string) with 1 (an int)"),
        id="add-string-and-int",
    ),
    pytest.param(
        "message.body_length * 1.5 > 3.0",
        BOOL,
        (
            1,
            21,
            "'*' cannot combine message.body_length (an int) with 1.5 (a double)",
        ),
        id="mixed-numbers",
    ),
    pytest.param(
        "contact.stage in 'converted'",
        BOOL,
        (
            1,
            15,
            "'in' needs a list or a map on its right, but 'converted' gives a string",
        ),
        id="in-on-string",
    ),
    pytest.param(
        "message.body_length in contact.regions",
        BOOL,
        (
            1,
            21,
            "'in' cannot look for an int among the string items of contact.regions",
        ),
        id="in-wrong-item-type",
    ),
    pytest.param(
        "contact.time_zones['first'] == 'UTC'",
        BOOL,
        (
            1,
            20,
            "a list position here must be an int, but 'first' gives a string",
        ),
        id="list-index-string",
    ),
    pytest.param(
        "message.body_length.count == 1",
        BOOL,
        (
            1,
            21,
            "message.body_length gives an int, which has no field 'count'",
        ),
        id="field-of-int",
    ),
    pytest.param(
        "contact.stage.exists(s, s == 'x')",
        BOOL,
        (
            1,
            15,
            "'exists' works on a list or a map, but contact.stage gives a string",
        ),
        id="macro-on-string",
    ),
    pytest.param(
        "contact.regions.exists(r)",
        BOOL,
        (
            1,
            17,
            "'exists' takes a variable name and an expression, "
            "e.g. list.exists(x, x > 0)",
        ),
        id="macro-without-body",
    ),
    pytest.param(
        "contact.regions.all(r, r)",
        BOOL,
        (1, 24, "the condition of 'all' must be true or false, but r gives a string"),
        id="macro-condition-not-bool",
    ),
    pytest.param(
        "has(contact)",
        BOOL,
        (
            1,
            1,
            "has() needs exactly one field selection, e.g. has(contact.attributes.vip)",
        ),
        id="has-without-field",
    ),
    pytest.param(
        "contact.tier ? 1 : 2",
        INT,
        (
            1,
            1,
            "the condition before '?' must be true or false, "
            "but contact.tier gives a string",
        ),
        id="ternary-condition",
    ),
    pytest.param(
        "contact.stage",
        BOOL,
        (1, 1, "condition must be true or false, but this expression gives a string"),
        id="condition-not-bool",
    ),
    pytest.param(
        "  contact.stage",
        TIMESTAMP,
        (
            1,
            3,
            "this expression must give a timestamp, but it gives a string",
        ),
        id="not-before-not-timestamp",
    ),
    pytest.param(
        "message.body_length",
        STRING,
        (1, 1, "this expression must give a string, but it gives an int"),
        id="message-not-string",
    ),
]


@pytest.mark.parametrize(("source", "expected", "problem"), PROBLEMS)
def test_problem_is_reported(
    source: str, expected: CelType, problem: tuple[int, int, str]
) -> None:
    assert check(source, ENV, expected)[1] == [CheckProblem(*problem)]


def test_every_problem_is_reported_in_source_order() -> None:
    source = "contact.stge == 'x'\n&& insde_window(nw, [], '', '')"

    problems = check(source, ENV, BOOL)[1]

    assert [(p.line, p.column) for p in problems] == [(1, 9), (2, 4), (2, 17)]


def test_unknown_name_is_dyn_and_raises_no_second_problem() -> None:
    # contct is reported once; its field, and the comparison, are then unknown.
    assert len(check("contct.stage > 3", ENV, BOOL)[1]) == 1


# -- Limits --------------------------------------------------------------------

LIMITS = [
    pytest.param(
        "contact.stage == '" + "x" * 20 + "'",
        Limits(max_length=30),
        "the expression is 39 characters long; the limit is 30",
        id="length",
    ),
    pytest.param(
        " || ".join(["contact.do_not_contact"] * 6),
        Limits(max_nodes=10),
        "the expression has 17 parts; the limit is 10",
        id="nodes",
    ),
    pytest.param(
        "size(" * 4 + "'x'" + ")" * 4 + " > 0",
        Limits(max_depth=4),
        "the expression is nested 6 levels deep; the limit is 4",
        id="depth",
    ),
]


@pytest.mark.parametrize(("source", "limits", "message"), LIMITS)
def test_limit_is_enforced(source: str, limits: Limits, message: str) -> None:
    assert check(source, ENV, BOOL, limits) == (DYN, [CheckProblem(1, 1, message)])


def test_expression_at_its_limits_passes() -> None:
    # Six selections (12 nodes: each a name and a field) joined by five '||'.
    source = " || ".join(["contact.do_not_contact"] * 6)

    limits = Limits(max_length=len(source), max_nodes=17, max_depth=3)

    assert check(source, ENV, BOOL, limits) == (BOOL, [])


def test_long_and_chain_counts_as_one_level() -> None:
    # The chain, the field selection and the name: three levels.
    source = " && ".join(["contact.sms_capable"] * 40)

    assert check(source, ENV, BOOL, Limits(max_depth=3))[1] == []


def test_deep_nesting_over_default_limit_is_refused_without_crashing() -> None:
    source = "(" * 200 + "true" + ")" * 200 + " && " + "!" * 60 + "true"

    problems = check(source, ENV, BOOL)[1]

    assert [p.message for p in problems] == [
        "the expression is nested 62 levels deep; the limit is 32"
    ]


# -- The shipped policies pass -------------------------------------------------


def _bundle_env() -> dict[str, CelType]:
    """The variables of the gateway's declared context, with the data files."""
    data = {
        path.stem: yaml.safe_load(path.read_text())["entries"]
        for path in sorted((POLICIES / "data").glob("*.yaml"))
    }
    return dict(_context.variable_types(data))


def _policy_expressions(doc: dict[str, Any]) -> list[tuple[str, str, CelType | None]]:
    """(where, source, expected) of every expression, variables in order."""
    found: list[tuple[str, str, CelType | None]] = [("match", doc["match"], BOOL)]
    for name, source in (doc.get("variables") or {}).items():
        found.append((f"variables.{name}", source, None))
    for rule in doc.get("rules") or []:
        found.append((f"{rule['id']}.condition", rule["condition"], BOOL))
        if "not_before" in rule:
            found.append((f"{rule['id']}.not_before", rule["not_before"], TIMESTAMP))
        if "message_expr" in rule:
            found.append((f"{rule['id']}.message_expr", rule["message_expr"], STRING))
    return found


@pytest.mark.parametrize(
    "path",
    sorted(p for p in POLICIES.glob("*.yaml") if p.name != "tiers.yaml"),
    ids=lambda p: str(p.stem),
)
def test_shipped_policy_passes(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    variables = _bundle_env()

    for where, source, expected in _policy_expressions(doc):
        env = TypeEnv(variables, _context.HOST_SIGNATURES)
        inferred, problems = check(source, env, expected)
        assert problems == [], f"{path.name} {where}"
        if where.startswith("variables."):
            variables[where.removeprefix("variables.")] = inferred


def test_policies_of_the_first_bundle_pass() -> None:
    # The quiet-hours policy as first shipped, before its windows became data.
    variables = dict(ENV.variables)
    window_end = (
        'contact.regions.exists(r, r in ["US-FL", "US-OK", "US-MD"])'
        ' ? "20:00" : "21:00"'
    )

    for name, source in (("window_start", '"08:00"'), ("window_end", window_end)):
        inferred, problems = check(source, TypeEnv(variables, ENV.functions))
        assert (inferred, problems) == (STRING, [])
        variables[name] = inferred
    env = TypeEnv(variables, ENV.functions)

    assert check(
        "!inside_window(now, contact.time_zones, window_start, window_end)", env, BOOL
    ) == (BOOL, [])
    assert check(
        "next_allowed(now, contact.time_zones, window_start, window_end)",
        env,
        TIMESTAMP,
    ) == (TIMESTAMP, [])


# -- Property: check never raises ----------------------------------------------

ATOMS = [
    "contact.stage",
    "contact.stge",
    "contact.do_not_contact",
    "contact.time_zones",
    "contact.regions",
    "contact.consent",
    "contact.attributes.vip",
    "message.body_length",
    "message.channel",
    "client.limit",
    "now",
    "nobody",
    "r",
    "1",
    "2u",
    "1.5",
    "'sms'",
    "b'x'",
    "true",
    "null",
    "[]",
    "{}",
    "duration('1h')",
]
BINARY = ["==", "!=", "<", ">=", "+", "-", "*", "/", "%", "&&", "||", "in"]


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(children, st.sampled_from(BINARY), children)
    return st.one_of(
        pair.map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda a: f"!({a})"),
        children.map(lambda a: f"-({a})"),
        st.tuples(children, children, children).map(
            lambda t: "({} ? {} : {})".format(*t)
        ),
        children.map(lambda a: f"contact.regions.exists(r, {a})"),
        children.map(lambda a: f"({a}).map(r, {a})"),
        children.map(lambda a: f"size({a})"),
        children.map(lambda a: f"has(({a}).stage)"),
        children.map(lambda a: f"({a}).startsWith({a})"),
        children.map(lambda a: f"({a}).getHours()"),
        st.tuples(children, children).map(lambda t: "({})[{}]".format(*t)),
        st.tuples(children, children).map(lambda t: "[{}, {}]".format(*t)),
        st.tuples(children, children).map(lambda t: "{{{}: {}}}".format(*t)),
        st.tuples(children, children).map(
            lambda t: "inside_window({}, {}, '08:00', '21:00')".format(*t)
        ),
        children.map(lambda a: f"({a}).stage"),
    )


EXPRESSIONS = st.recursive(st.sampled_from(ATOMS), _combine, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(EXPRESSIONS, st.sampled_from([None, BOOL, TIMESTAMP, STRING]))
def test_check_never_raises(source: str, expected: CelType | None) -> None:
    celpy.Environment().compile(source)

    inferred, problems = check(source, ENV, expected)

    assert isinstance(inferred, CelType)
    lines = source.count("\n") + 1
    for problem in problems:
        assert 1 <= problem.line <= lines and problem.column >= 1
        assert problem.message
