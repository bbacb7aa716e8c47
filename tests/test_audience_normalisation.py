"""Identifier normalisation and hashing for ad audiences, on the field cases.

Each case of tests/data/field-cases.json in the audience area runs as a test
named after its id and asserts its `expected` values exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.hookspecs import AudienceMember
from plugins import _audience_ids as ids
from plugins.google_customer_match import _identifiers
from plugins.meta_audiences import _row

CASES = {
    case["id"]: case
    for case in json.loads(
        (Path(__file__).parent / "data" / "field-cases.json").read_text("utf-8")
    )
}


def _case(case_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    case = CASES[case_id]
    return case["input"], case["expected"]


def _digest(text: str) -> str:
    """The 64-hex digest inside an `expected` text such as "sha256('x') = ab…"."""
    return next(word for word in text.split() if ids.is_sha256_hex(word))


def test_AH_01_google_gmail_rules_and_e164_phone() -> None:
    given_input, expected = _case("AH-01")

    email = ids.normalise_email(given_input["email"], gmail_rules=True)
    phone = ids.google_phone(given_input["phone"])

    assert email == expected["normalized_email"]
    assert ids.sha256_hex(email) == expected["sha256_email"]
    assert phone == expected["normalized_phone"]
    assert ids.sha256_hex(phone) == expected["sha256_phone"]
    member = AudienceMember("c1", given_input["email"], given_input["phone"])
    assert _identifiers(member) == [
        {"emailAddress": expected["sha256_email"]},
        {"phoneNumber": expected["sha256_phone"]},
    ]


def test_AH_01_meta_keeps_gmail_dots_and_tags() -> None:
    given_input, _ = _case("AH-01")
    assert ids.normalise_email(given_input["email"], gmail_rules=False) == (
        "jane.doe+shopping@gmail.com"
    )


def test_AH_03_names_trimmed_lower_cased_inner_spaces_kept() -> None:
    given_input, expected = _case("AH-03")

    assert ids.normalise_name(given_input["first_name"]) == expected["first_name"]
    assert ids.sha256_hex(ids.normalise_name(given_input["first_name_2"])) == (
        _digest(expected["first_name_2_sha256"])
    )
    assert ids.sha256_hex(ids.normalise_name(given_input["last_name"])) == (
        _digest(expected["last_name_sha256"])
    )


def test_AH_05_meta_phones_every_row_sent_batch_not_failed() -> None:
    given_input, expected = _case("AH-05")
    batch = {row["external_id"]: row["phone"] for row in given_input["batch"]}

    rows = {
        contact: _row(AudienceMember(contact, phone_e164=phone))
        for contact, phone in batch.items()
    }

    assert len(rows) == len(batch)  # every row is built: the batch is not failed
    assert expected["u1"].startswith("phone omitted")
    assert rows["u1"] == ["", ""]
    assert ids.meta_phone(batch["u2"]) == "18005551234"
    assert rows["u2"][1] == _digest(expected["u2"])
    assert expected["u3"].startswith("passed through unchanged")
    assert rows["u3"][1] == batch["u3"]
    assert expected["u4"].startswith("passed through unchanged")
    assert rows["u4"][1] == batch["u4"]
    assert ids.meta_phone(batch["u5"]) == "442071234567"
    assert rows["u5"][1] == _digest(expected["u5"])
    assert expected["batch"] == "not failed"


def test_AH_07_a_hashed_email_is_not_hashed_again() -> None:
    given_input, expected = _case("AH-07")
    sent = _row(AudienceMember("c1", email=given_input["email"]))[0]
    assert sent == _digest(expected["sent_value"])
    assert expected["sent_value"].endswith("(unchanged)")


def test_PH_01_phone_digests_for_both_platforms() -> None:
    given_input, expected = _case("PH-01")
    phone = given_input["phone"]
    assert (
        ids.sha256_hex(ids.meta_phone(phone))
        == (expected["sha256_meta_digits_6475052806"])
    )
    assert (
        ids.sha256_hex(ids.google_phone(phone))
        == (expected["sha256_google_e164_+6475052806"])
    )


def test_PH_03_a_number_without_country_code_is_never_guessed() -> None:
    given_input, _ = _case("PH-03")
    raw, international = (item["raw"] for item in given_input["inputs"])
    assert ids.google_phone(raw) == ""
    assert ids.meta_phone(raw) == ""
    assert ids.google_phone(international) == "+919812345678"


def test_published_example_google_gmail_normalisation() -> None:
    # The Data Manager API formatting guide's own examples
    # (https://developers.google.com/data-manager/api/devguides/concepts/formatting).
    assert ids.normalise_email("cloudy.sanfrancisco+shopping@gmail.com", True) == (
        "cloudysanfrancisco@gmail.com"
    )
    assert ids.normalise_email("user.name+NYC@Example.com", True) == (
        "user.name+nyc@example.com"
    )
    assert ids.google_phone("+1 (800)555-0100") == "+18005550100"


def test_published_example_x_ads_hash() -> None:
    # X's audience docs: sha256("adsapi") in lower-case hex
    # (https://developer.x.com/en/docs/x-ads-api/audiences/overview/user-data).
    assert ids.sha256_hex("adsapi") == (
        "49e0be2aeccfb51a8dee4c945c8a70a9ac500cf6f5cb08112575f74db9b1470d"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("no-at-sign", "", id="not-an-address"),
        pytest.param("   ", "", id="blank"),
        pytest.param("+.+@gmail.com", "", id="gmail-local-part-empties"),
        pytest.param("A.B@GoogleMail.com", "ab@googlemail.com", id="googlemail"),
    ],
)
def test_unusable_or_edge_addresses(value: str, expected: str) -> None:
    assert ids.normalise_email(value, gmail_rules=True) == expected


@given(st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64))
def test_any_digest_passes_through_lower_cased(digest: str) -> None:
    assert ids.hashed(f" {digest} ", ids.google_phone) == digest.lower()
    assert ids.hashed(digest, ids.meta_phone) == digest.lower()


@given(st.text(max_size=40))
def test_hashed_is_empty_or_a_digest_and_never_raises(value: str) -> None:
    for normalise in (ids.meta_phone, ids.google_phone, ids.normalise_name):
        result = ids.hashed(value, normalise)
        assert result == "" or ids.is_sha256_hex(result)
