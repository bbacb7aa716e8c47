"""The hash chain: building, verifying, tampering, and the personal-data guard."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import (
    GENESIS_HASH,
    RECORD_HASH_PREFIX,
    AuditRecord,
    CanonicalizationError,
    ChainBrokenError,
    PersonalDataError,
    canonical_json,
    make_record,
    record_hash,
    verify_chain,
)

NOW = "2026-12-04T15:00:00.123456Z"

ChainFactory = Callable[[int], list[AuditRecord]]


def rehash(record: AuditRecord) -> AuditRecord:
    """Return ``record`` with its hash recomputed, as a careful forger would."""
    digest = record_hash(
        record.seq,
        record.recorded_at,
        record.kind,
        record.body,
        record.prev_hash,
        record.salt,
    )
    return dataclasses.replace(record, hash=digest)


# Building and verifying


def test_GENESIS_HASH_is_64_zeros() -> None:
    assert GENESIS_HASH == "0" * 64


def test_record_hash_is_sha256_of_prefix_and_canonical_fields() -> None:
    expected_input = (
        b"tollgate-audit-record-v1\x00"
        b'{"body":{"a":1,"b":"\xc3\xa9"},"kind":"decision","prev_hash":"'
        + b"0" * 64
        + b'","recorded_at":"2026-12-04T15:00:00Z","seq":1}'
    )

    digest = record_hash(
        1, "2026-12-04T15:00:00Z", "decision", {"b": "é", "a": 1}, GENESIS_HASH
    )

    assert RECORD_HASH_PREFIX == b"tollgate-audit-record-v1\x00"
    assert digest == hashlib.sha256(expected_input).hexdigest()


def test_make_record_links_to_its_predecessor() -> None:
    first = make_record(None, "decision", {"contact": "ct_1"}, NOW)
    second = make_record(first, "delivery", {"contact": "ct_1"}, NOW)

    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.hash == record_hash(
        2, NOW, "delivery", second.body, first.hash, second.salt
    )


def test_make_record_keeps_a_copy_of_the_body() -> None:
    body: dict[str, Any] = {"rules": ["CO-03"], "pair": ("a", 1)}
    record = make_record(None, "decision", body, NOW)
    body["rules"].append("CO-05")

    assert record.body == {"rules": ["CO-03"], "pair": ["a", 1]}
    verify_chain([record])


def test_chain_verifies_and_reports_its_head(chain_of: ChainFactory) -> None:
    records = chain_of(8)

    summary = verify_chain(records)

    assert (summary.count, summary.head_seq) == (8, 8)
    assert summary.head_hash == records[-1].hash


def test_empty_chain_verifies_with_count_0() -> None:
    summary = verify_chain([])

    assert (summary.count, summary.head_seq, summary.head_hash) == (0, 0, GENESIS_HASH)


def test_verification_streams_and_stops_at_the_first_failure(
    chain_of: ChainFactory,
) -> None:
    records = chain_of(3)
    edited = dataclasses.replace(records[1], kind="event")

    def stream() -> Iterator[AuditRecord]:
        yield records[0]
        yield edited
        raise AssertionError("verify_chain read past the first broken record")

    with pytest.raises(ChainBrokenError) as caught:
        verify_chain(stream())

    assert caught.value.seq == 2


# Tampering: every change is caught at the first record it touches


def _edit(index: int, **changes: Any) -> Callable[[list[AuditRecord]], None]:
    def mutate(records: list[AuditRecord]) -> None:
        records[index] = dataclasses.replace(records[index], **changes)

    return mutate


def _delete(start: int, stop: int) -> Callable[[list[AuditRecord]], None]:
    def mutate(records: list[AuditRecord]) -> None:
        del records[start:stop]

    return mutate


def _swap(first: int, second: int) -> Callable[[list[AuditRecord]], None]:
    def mutate(records: list[AuditRecord]) -> None:
        records[first], records[second] = records[second], records[first]

    return mutate


def _insert_forged_after_2(records: list[AuditRecord]) -> None:
    forged = make_record(records[1], "decision", {"contact": "ct_forged"}, NOW)
    records.insert(2, forged)


def _insert_copy_of_3(records: list[AuditRecord]) -> None:
    records.insert(3, records[2])


def _swap_and_renumber_3_and_4(records: list[AuditRecord]) -> None:
    third, fourth = records[2], records[3]
    records[2] = dataclasses.replace(fourth, seq=3, prev_hash=third.prev_hash)
    records[3] = dataclasses.replace(third, seq=4, prev_hash=records[2].hash)


def _rewrite_body_of_5_and_rehash(records: list[AuditRecord]) -> None:
    records[4] = rehash(dataclasses.replace(records[4], body={"contact": "ct_x"}))


TAMPERING = [
    pytest.param(
        _edit(4, body={"contact": "ct_other"}), 5, "stored hash", id="edit-body"
    ),
    pytest.param(_edit(2, kind="event"), 3, "stored hash", id="edit-kind"),
    pytest.param(_edit(1, recorded_at=NOW), 2, "stored hash", id="edit-recorded-at"),
    pytest.param(_edit(3, hash="f" * 64), 4, "stored hash", id="edit-hash"),
    pytest.param(_edit(5, prev_hash="e" * 64), 6, "prev_hash", id="edit-prev-hash"),
    pytest.param(_edit(3, seq=40), 40, "expected 4 after record 3", id="edit-seq"),
    pytest.param(_delete(2, 3), 4, "expected 3 after record 2", id="delete"),
    pytest.param(_delete(0, 1), 2, "must start at 1", id="delete-first"),
    pytest.param(_delete(2, 5), 6, "expected 3 after record 2", id="truncate-middle"),
    pytest.param(_insert_forged_after_2, 3, "position 4", id="insert-forged"),
    pytest.param(_insert_copy_of_3, 3, "position 4", id="insert-duplicate"),
    pytest.param(_swap(2, 3), 4, "position 3", id="reorder"),
    pytest.param(_swap_and_renumber_3_and_4, 3, "stored hash", id="reorder-renumbered"),
    pytest.param(_rewrite_body_of_5_and_rehash, 6, "prev_hash", id="edit-and-rehash"),
]


@pytest.mark.parametrize(("mutate", "seq", "fragment"), TAMPERING)
def test_tampering_is_detected_at_the_first_bad_record(
    chain_of: ChainFactory,
    mutate: Callable[[list[AuditRecord]], None],
    seq: int,
    fragment: str,
) -> None:
    records = chain_of(8)
    mutate(records)

    with pytest.raises(ChainBrokenError) as caught:
        verify_chain(records)

    assert caught.value.seq == seq
    assert fragment in caught.value.reason
    assert str(caught.value) == f"audit record {seq}: {caught.value.reason}"


def test_broken_hash_message_gives_both_hashes(chain_of: ChainFactory) -> None:
    records = chain_of(5)
    records[4] = dataclasses.replace(records[4], kind="event")
    recomputed = rehash(records[4]).hash

    with pytest.raises(ChainBrokenError) as caught:
        verify_chain(records)

    assert str(caught.value) == (
        f"audit record 5: stored hash {records[4].hash[:12]}… does not match "
        f"recomputed {recomputed[:12]}… (record edited?)"
    )


def test_truncated_tail_is_only_visible_in_the_head(chain_of: ChainFactory) -> None:
    records = chain_of(8)

    summary = verify_chain(records[:5])

    assert (summary.count, summary.head_seq) == (5, 5)
    assert summary.head_hash != records[-1].hash


def test_record_that_cannot_be_hashed_breaks_the_chain(chain_of: ChainFactory) -> None:
    records = chain_of(3)
    records[1] = dataclasses.replace(records[1], body={"amount": 1.5})

    with pytest.raises(ChainBrokenError, match=r"body\.amount") as caught:
        verify_chain(records)

    assert caught.value.seq == 2
    assert isinstance(caught.value.__cause__, CanonicalizationError)


# Personal data never enters a record

PERSONAL = [
    pytest.param({"to": "+447700900123"}, "body.to", "phone", id="e164-phone"),
    pytest.param({"to": "call +44 7700 900123"}, "body.to", "phone", id="spaced-phone"),
    pytest.param({"to": "+1-415-555-0100"}, "body.to", "phone", id="dashed-phone"),
    pytest.param({"to": "alice@example.com"}, "body.to", "e-mail", id="email"),
    pytest.param(
        {"a": {"b": [{"c": "x", "d": "reply to bob.smith+ads@mail.example.org"}]}},
        "body.a.b[0].d",
        "e-mail",
        id="nested-email",
    ),
    pytest.param(
        {"recipients": {"+33612345678": "ok"}},
        "a key of body.recipients",
        "phone",
        id="phone-as-key",
    ),
    pytest.param(
        {"list": ["ok", ("+4915112345678",)]}, "body.list[1][0]", "phone", id="tuple"
    ),
]


@pytest.mark.parametrize(("body", "path", "fragment"), PERSONAL)
def test_personal_data_is_refused_naming_the_path_only(
    body: dict[str, Any], path: str, fragment: str
) -> None:
    with pytest.raises(PersonalDataError) as caught:
        make_record(None, "decision", body, NOW)

    message = str(caught.value)
    assert caught.value.path == path
    assert message.startswith(f"{path} holds what looks like")
    assert fragment in message
    for leaked in ("7700", "555", "example", "612345678", "15112345678"):
        assert leaked not in message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("ct_9f8e7d6c", id="pseudonymous-id"),
        pytest.param("2026-12-04T15:00:00+01:00", id="utc-offset"),
        pytest.param("+123456", id="six-digits"),
        pytest.param("rule CO-03 matched @ 15:00", id="at-sign-alone"),
    ],
)
def test_ordinary_strings_are_not_taken_for_personal_data(text: str) -> None:
    record = make_record(None, "decision", {"note": text}, NOW)

    assert record.body == {"note": text}


# Misuse of make_record is a programming error


@pytest.mark.parametrize(
    ("kind", "body", "recorded_at", "error"),
    [
        pytest.param("", {}, NOW, ValueError, id="empty-kind"),
        pytest.param("Decision!", {}, NOW, ValueError, id="odd-kind"),
        pytest.param("decision", {}, "2026-12-04 15:00:00", ValueError, id="no-T-no-Z"),
        pytest.param(
            "decision", {}, "2026-12-04T16:00:00+01:00", ValueError, id="offset"
        ),
        pytest.param("decision", {}, "2026-13-04T15:00:00Z", ValueError, id="month-13"),
        pytest.param(
            "decision", ["not", "a", "mapping"], NOW, TypeError, id="list-body"
        ),
    ],
)
def test_make_record_rejects_misuse(
    kind: str, body: Any, recorded_at: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        make_record(None, kind, body, recorded_at)


# Properties of every chain

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="@+"), max_size=12)
_SCALARS = st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | _TEXT
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
_BODIES = st.dictionaries(_TEXT, _JSON, max_size=5)
_KINDS = st.sampled_from(["decision", "delivery", "consent", "event"])


def _chain(bodies: list[dict[str, Any]], kinds: list[str]) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for body, kind in zip(bodies, kinds, strict=False):
        records.append(make_record(records[-1] if records else None, kind, body, NOW))
    return records


@given(bodies=st.lists(_BODIES, max_size=8), kinds=st.lists(_KINDS, min_size=8))
def test_any_generated_chain_verifies(
    bodies: list[dict[str, Any]], kinds: list[str]
) -> None:
    records = _chain(bodies, kinds)

    summary = verify_chain(records)

    assert (summary.count, summary.head_seq) == (len(records), len(records))
    assert summary.head_hash == (records[-1].hash if records else GENESIS_HASH)


@given(
    bodies=st.lists(_BODIES, min_size=1, max_size=8),
    kinds=st.lists(_KINDS, min_size=8),
    data=st.data(),
)
def test_changing_one_body_fails_exactly_at_that_record(
    bodies: list[dict[str, Any]], kinds: list[str], data: st.DataObject
) -> None:
    records = _chain(bodies, kinds)
    index = data.draw(st.integers(0, len(records) - 1), label="index")
    original = canonical_json(records[index].body)
    new_body = data.draw(_BODIES.filter(lambda b: canonical_json(b) != original))
    records[index] = dataclasses.replace(records[index], body=new_body)

    with pytest.raises(ChainBrokenError) as caught:
        verify_chain(records)

    assert caught.value.seq == index + 1
    assert "stored hash" in caught.value.reason
