"""``tollgate audit history``: one contact's audit records, in order, no PII."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.hookspecs import DeliveryReport
from gateway.service import Gateway, SendInput
from gateway.store import ContactRef
from support import AT, NY_PHONE, GatewayFactory, add_contact


def _send(gateway: Gateway, ref: ContactRef, key: str) -> int:
    answer = gateway.send(
        SendInput(
            contact=ref,
            channel="sms",
            purpose="marketing",
            campaign="spring",
            body="hello",
            idempotency_key=key,
            at=AT,
        )
    )
    seq: int = answer["decision"]["audit_seq"]
    return seq


@pytest.fixture
def two_contacts(
    make_gateway: GatewayFactory, store_url: str
) -> tuple[str, str, str, int]:
    """Contact a's whole life, interleaved with contact b's records.

    Returns (store url, a's contact id, b's contact id, a's consent entry id).
    """
    gateway = make_gateway(store_url)
    a = add_contact(gateway, "a", phone=NY_PHONE, email="a@example.com")
    b = add_contact(gateway, "b", phone="+12125550199")
    decision = _send(gateway, a, "ka")
    _send(gateway, b, "kb")
    gateway.record_delivery_report(
        "sms", DeliveryReport(audit_seq=decision, status="delivered", detail="")
    )
    gateway.record_event(a, kind="purchase", at=AT)
    gateway.record_event(b, kind="purchase", at=AT)
    a_id, _ = gateway.store.erase(a, datetime.now(UTC))
    b_id = gateway.store.snapshot(b, None).contact_id
    entry = gateway.consent_evidence(ContactRef(contact_id=a_id), "sms", "marketing")
    return store_url, a_id, b_id, entry["ledger"][0]["entry_id"]


def _history(url: str, contact: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["audit", "history", contact, "--db", url, *extra]
    )
    return result.exit_code, result.output


def test_json_history_lists_one_contacts_records_in_order(
    two_contacts: tuple[str, str, str, int],
) -> None:
    url, a_id, b_id, consent_entry = two_contacts
    code, output = _history(url, a_id, "--json")

    assert code == 0, output
    entries = json.loads(output)
    kinds = [e["kind"] for e in entries]
    assert kinds == [
        "consent",
        "decision",
        "delivery",
        "delivery_report",
        "event",
        "erasure",
    ]
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs)
    assert all(set(e) == {"seq", "recorded_at", "kind", "summary", "details"}
               for e in entries)  # fmt: skip
    decision = entries[1]["details"]
    assert decision["outcome"] == "ALLOW"
    assert decision["consent_entry"] == consent_entry
    assert entries[2]["details"]["status"] == "FORWARDED"
    assert entries[3]["details"]["status"] == "delivered"
    assert entries[4]["details"]["event"] == "purchase"
    assert b_id not in output


def test_text_history_is_aligned_and_names_the_evidence(
    two_contacts: tuple[str, str, str, int],
) -> None:
    url, a_id, b_id, consent_entry = two_contacts
    code, output = _history(url, a_id)

    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].split() == ["seq", "recorded_at", "kind", "summary"]
    assert len(lines) == 7
    summary_column = lines[0].index("summary")
    assert all(line[summary_column - 2 : summary_column] == "  " for line in lines)
    assert f"consent evidence entry #{consent_entry}" in lines[2]
    assert "sms:marketing granted via web_form" in lines[1]
    assert "personal data erased" in lines[6]
    assert b_id not in output
    assert "+1212" not in output and "@" not in output


def test_unknown_contact_has_an_empty_history(
    two_contacts: tuple[str, str, str, int],
) -> None:
    url = two_contacts[0]
    assert _history(url, "ct_nobody", "--json") == (0, "[]\n")
    code, output = _history(url, "ct_nobody")
    assert code == 0 and "no audit records" in output


def test_an_address_is_refused_without_echoing_it(
    two_contacts: tuple[str, str, str, int],
) -> None:
    code, output = _history(two_contacts[0], NY_PHONE)
    assert code == 2
    assert "ct_" in output and NY_PHONE not in output


def test_like_wildcards_in_the_id_match_nothing_else(
    two_contacts: tuple[str, str, str, int],
) -> None:
    url, a_id, *_ = two_contacts
    code, output = _history(url, a_id[:-1] + "_", "--json")
    assert (code, output) == (0, "[]\n")
