"""Canonical JSON: byte-exact output, refusals naming the path, field cases."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections import OrderedDict
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from audit import (
    AuditRecord,
    CanonicalizationError,
    ChainBrokenError,
    canonical_json,
    make_record,
    verify_chain,
)

FIELD_CASES = Path(__file__).parents[1] / "data" / "field-cases.json"


def field_case(case_id: str) -> dict[str, Any]:
    """Return the field case ``case_id`` from tests/data/field-cases.json."""
    cases = json.loads(FIELD_CASES.read_text(encoding="utf-8"))
    (case,) = [case for case in cases if case["id"] == case_id]
    return dict(case)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"b": 1, "a": 2}, b'{"a":2,"b":1}', id="top-level-keys"),
        pytest.param(
            {"z": {"y": {"b": [{"d": 1, "c": 2}], "a": None}}},
            b'{"z":{"y":{"a":null,"b":[{"c":2,"d":1}]}}}',
            id="keys-at-every-depth",
        ),
        pytest.param(
            {"a": 1, "B": 2, "_": 3, "é": 4, "aa": 5},
            '{"B":2,"_":3,"a":1,"aa":5,"é":4}'.encode(),
            id="keys-by-code-point",
        ),
        pytest.param([3, 1, 2], b"[3,1,2]", id="arrays-keep-order"),
        pytest.param((1, "x"), b'[1,"x"]', id="tuple-is-array"),
        pytest.param(
            [True, False, None, 0, -7], b"[true,false,null,0,-7]", id="scalars"
        ),
        pytest.param(
            {"text": "Zoë → 東京 ☕"},
            '{"text":"Zoë → 東京 ☕"}'.encode(),
            id="non-ascii-as-utf8",
        ),
        pytest.param(
            {"q": 'say "hi"\\\n\t\x01'},
            b'{"q":"say \\"hi\\"\\\\\\n\\t\\u0001"}',
            id="escapes",
        ),
        pytest.param(
            [2**53 - 1, -(2**53 - 1)],
            b"[9007199254740991,-9007199254740991]",
            id="largest-safe-integers",
        ),
        pytest.param({}, b"{}", id="empty-object"),
    ],
)
def test_canonical_bytes(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected


def test_equal_mappings_give_equal_bytes_whatever_their_type() -> None:
    plain = {"b": [1, {"y": 2, "x": 3}], "a": "s"}
    ordered = OrderedDict([("a", "s"), ("b", (1, MappingProxyType({"x": 3, "y": 2})))])

    assert canonical_json(ordered) == canonical_json(plain)
    assert canonical_json(MappingProxyType(plain)) == canonical_json(plain)


@pytest.mark.parametrize(
    ("value", "path", "fragment"),
    [
        pytest.param({"amount": 1.5}, "amount", "floating-point", id="float"),
        pytest.param({"a": [0, float("nan")]}, "a[1]", "nan", id="nan"),
        pytest.param({"a": {"b": float("inf")}}, "a.b", "inf", id="infinity"),
        pytest.param({"a": {1: "x"}}, "a", "key of type int", id="int-key"),
        pytest.param({"a": {None: "x"}}, "a", "key of type NoneType", id="none-key"),
        pytest.param({"n": 2**53}, "n", "2**53", id="integer-too-big"),
        pytest.param({"n": -(2**53)}, "n", "2**53", id="integer-too-small"),
        pytest.param({"s": {1, 2}}, "s", "type set", id="set"),
        pytest.param({"b": b"raw"}, "b", "type bytes", id="bytes"),
        pytest.param(
            {"when": datetime.date(2026, 12, 4)}, "when", "type date", id="date"
        ),
        pytest.param({"t": "a\ud800b"}, "t", "surrogate", id="lone-surrogate"),
        pytest.param(
            {"x-y": {"k": 0.5}}, '["x-y"].k', "floating-point", id="quoted-key"
        ),
        pytest.param(1.0, "", "floating-point", id="top-level-float"),
    ],
)
def test_refusals_name_the_path(value: object, path: str, fragment: str) -> None:
    with pytest.raises(CanonicalizationError) as caught:
        canonical_json(value)

    assert caught.value.path == path
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(path or "the top-level value")


def test_refuses_nesting_deeper_than_the_limit() -> None:
    deep: object = "leaf"
    for _ in range(100):
        deep = [deep]

    with pytest.raises(CanonicalizationError, match="nested deeper"):
        canonical_json(deep)


def test_bool_is_not_written_as_an_integer() -> None:
    assert canonical_json({"flag": True, "count": 1}) == b'{"count":1,"flag":true}'


# Field case AU-01: the writer hashed JSON.stringify of a record later stored as
# JSONB, which reorders keys, so the verifier's re-serialisation broke the chain;
# and a top-level key list dropped nested keys from the hash.


def _au01_record(payload: dict[str, Any]) -> AuditRecord:
    return make_record(None, "event", payload, "2026-12-04T15:00:00Z")


def _verdict(records: list[AuditRecord]) -> str:
    """Return the verification result in the field case's words."""
    try:
        verify_chain(records)
    except ChainBrokenError as exc:
        return f"FAIL at seq {exc.seq}"
    return "OK"


def test_AU_01_key_order_does_not_change_canonical_payload() -> None:
    case = field_case("AU-01")
    written = case["input"]["entry_written"]["payload"]
    read_back = case["input"]["entry_read_back"]["payload"]

    assert canonical_json(written).decode() == case["expected"]["canonical_payload"]
    assert canonical_json(read_back).decode() == case["expected"]["canonical_payload"]


def test_AU_01_key_order_of_read_back_record_does_not_break_chain() -> None:
    case = field_case("AU-01")
    written = _au01_record(case["input"]["entry_written"]["payload"])
    read_back = dataclasses.replace(
        written, body=case["input"]["entry_read_back"]["payload"]
    )

    assert read_back.seq == case["input"]["entry_read_back"]["seq"]
    assert _verdict([read_back]) == case["expected"]["verify_untampered"]


def test_AU_01_tampered_nested_key_fails_at_its_seq() -> None:
    case = field_case("AU-01")
    written = _au01_record(case["input"]["entry_written"]["payload"])
    tampered_payload = json.loads(json.dumps(case["input"]["entry_read_back"]))
    tampered_payload["payload"]["a"]["c"] = 4  # the case's "change payload.a.c to 4"
    tampered = dataclasses.replace(written, body=tampered_payload["payload"])

    assert _verdict([tampered]) == case["expected"]["verify_tampered"]
    with pytest.raises(ChainBrokenError, match=r"record edited\?"):
        verify_chain([tampered])


# Field case AU-03: Python writes 1.0 where JavaScript writes 1, so a verifier in
# another language hashes other bytes. Floats are refused outright.


def test_AU_03_float_in_payload_is_refused_naming_its_path() -> None:
    case = field_case("AU-03")
    payload = case["input"]["payload"]
    assert isinstance(payload["amount"], float)

    with pytest.raises(CanonicalizationError) as caught:
        make_record(None, "delivery", payload, "2026-12-04T15:00:00Z")

    assert caught.value.path == "body.amount"
    assert "integers and strings only" in str(caught.value)


def test_AU_03_integer_payload_matches_the_javascript_form() -> None:
    case = field_case("AU-03")
    as_integer = {"amount": int(case["input"]["payload"]["amount"])}

    assert canonical_json(as_integer).decode() == case["expected"]["js_form"]
    assert json.dumps(case["input"]["payload"]) == case["expected"]["python_form"]
