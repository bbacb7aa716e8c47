"""End to end through a real Kannel: the gateway, its callbacks, bearerbox, smsbox.

The kannel plugin is loaded through its entry point and configured from the
environment, as in production. Outgoing messages are read off Kannel's fake
MT SMSC; replies are injected at its fake MO SMSC and come back through
smsbox's get-url to the gateway's callback server; delivery reports come from
bearerbox's fake SMSC module (it reports SMSC acceptance and delivery only).
Every socket is on 127.0.0.1. These tests need Debian's kannel package and
fail, never skip, without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

import audit
from gateway.app import Settings, build_gateway
from gateway.callbacks import CallbackServer
from gateway.kannel_local import LocalKannel
from gateway.service import Gateway, SendInput
from gateway.store import ContactRef
from support import AT, add_contact

SHORT_CODE = "12345"
PHONES = ("+12125550124", "+12125550125", "+12125550126")
WAIT = 10.0  # seconds; every wait below is bounded by it
T = TypeVar("T")


@dataclass
class Stack:
    gateway: Gateway
    kannel: LocalKannel
    callbacks: CallbackServer

    def send(self, ref: ContactRef, key: str, body: str = "Spring offer") -> Any:
        return self.gateway.send(
            SendInput(
                contact=ref,
                channel="sms",
                purpose="marketing",
                campaign="spring",
                body=body,
                idempotency_key=key,
                request_id=key,
                at=AT,
            )
        )

    def records(self, kind: str) -> list[audit.AuditRecord]:
        return [r for r in self.gateway.store.audit_records() if r.kind == kind]


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    if not LocalKannel.available():
        pytest.fail(
            "Kannel is not installed (/usr/sbin/bearerbox, /usr/sbin/smsbox): "
            "run scripts/ensure-kannel"
        )
    callbacks = CallbackServer()
    callbacks.start()
    kannel = LocalKannel(tmp_path / "kannel", f"{callbacks.url}/sms/mo")
    gateway: Gateway | None = None
    try:
        kannel.start()
        for name, value in {
            "SENDSMS_URL": kannel.sendsms_url,
            "USERNAME": kannel.username,
            "PASSWORD": kannel.password,
            "FROM": SHORT_CODE,
            "CHANNELS": "sms",
        }.items():
            monkeypatch.setenv(f"TOLLGATE_PLUGIN_KANNEL_{name}", value)
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url="",
            outbox_channels="",
            callback_url=callbacks.url,
            unsafe_client_clock=True,
        )
        gateway = build_gateway(settings)
        assert gateway.channels.channels == {"sms": "kannel"}
        callbacks.attach(gateway)
        yield Stack(gateway, kannel, callbacks)
    finally:
        kannel.stop()
        callbacks.stop()
        if gateway is not None:
            gateway.store.close()


def _wait(what: str, probe: Callable[[], T | None]) -> T:
    """Poll `probe` until it answers something truthy, for at most WAIT s."""
    deadline = time.monotonic() + WAIT
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT:.0f} s for {what}")
        time.sleep(0.02)


def _mt(phone: str, body: str) -> str:
    return f"{SHORT_CODE} {phone} text {body}"


def _assert_no_phone_number(stack: Stack) -> None:
    records = list(stack.gateway.store.audit_records())
    audit.verify_chain(records)
    dumped = json.dumps([r.body for r in records])
    for phone in PHONES:
        assert phone[2:] not in dumped, "a phone number is in the audit log"


def test_allowed_messages_reach_kannel_and_report_their_delivery(
    stack: Stack,
) -> None:
    granted = [add_contact(stack.gateway, f"c{i}", phone=PHONES[i]) for i in (0, 1)]
    refused = add_contact(stack.gateway, "c2", phone=PHONES[2], consent=False)

    answers = [stack.send(ref, f"k{i}", f"Offer {i}") for i, ref in enumerate(granted)]
    denied = stack.send(refused, "k2", "Offer 2")

    for answer in answers:
        seq = answer["decision"]["audit_seq"]
        assert answer["decision"]["outcome"] == "ALLOW"
        assert answer["delivery"]["status"] == "FORWARDED"
        assert answer["delivery"]["provider_message_id"] == f"kannel-sms-{seq}"
    assert denied["decision"]["outcome"] == "DENY"
    assert denied["delivery"]["status"] == "NOT_ATTEMPTED"
    lines = stack.kannel.wait_for_mt(2, WAIT)
    time.sleep(0.3)  # a third line, were one on its way, would be here by now
    assert sorted(stack.kannel.mt_lines) == sorted(
        [_mt(PHONES[0], "Offer 0"), _mt(PHONES[1], "Offer 1")]
    )
    assert len(lines) == 2

    # bearerbox's fake SMSC reports acceptance (type 8), then delivery (type 1)
    expected = {
        (a["decision"]["audit_seq"], status)
        for a in answers
        for status in ("accepted", "delivered")
    }

    def reports() -> set[tuple[int, str]] | None:
        got = {
            (r.body["decision_seq"], r.body["status"])
            for r in stack.records("delivery_report")
        }
        return got if got >= expected else None

    assert _wait("4 delivery reports", reports) == expected
    assert {r.body["detail"] for r in stack.records("delivery_report")} == {
        "kannel type 1",
        "kannel type 8",
    }
    _assert_no_phone_number(stack)


def test_replies_from_a_phone_stop_start_and_help(stack: Stack) -> None:
    gateway, kannel, program = stack.gateway, stack.kannel, stack.gateway.program
    phone = PHONES[0]
    ref = add_contact(gateway, "c0", phone=phone)
    gateway.record_consent(
        ref, channel="email", purpose="marketing", granted=True, source="web_form"
    )
    assert stack.send(ref, "before")["delivery"]["status"] == "FORWARDED"
    kannel.wait_for_mt(1, WAIT)

    def inbound(count: int) -> Callable[[], list[audit.AuditRecord] | None]:
        return lambda: stack.records("inbound")[count - 1 :] or None

    # 1. STOP: recorded, revoked everywhere, confirmed once on the MT side
    kannel.inject_mo(phone, SHORT_CODE, "STOP")
    [stop] = _wait("the STOP inbound record", inbound(1))
    assert stop.body["intent"] == "opt_out" and stop.body["channel"] == "sms"
    confirmation = _mt(phone, program.opt_out_text)
    _wait("the opt-out confirmation", lambda: confirmation in kannel.mt_lines)
    for channel in ("sms", "email"):
        status = gateway.consent_evidence(ref, channel, "marketing")["status"]
        assert status == "revoked", channel

    # 2. A second STOP (its own message: another body) is not confirmed again
    kannel.inject_mo(phone, SHORT_CODE, "stop")
    _wait("the second STOP inbound record", inbound(2))

    def confirmations() -> list[audit.AuditRecord] | None:
        found = [
            r
            for r in stack.records("decision")
            if r.body["purpose"] == "opt_out_confirmation"
        ]
        return found if len(found) == 2 else None

    first, second = _wait("two confirmation decisions", confirmations)
    assert first.body["outcome"] == "ALLOW" and second.body["outcome"] == "DENY"
    assert {r["rule_id"] for r in second.body["reasons"]} >= {
        "consent.one-confirmation"
    }
    time.sleep(0.3)
    assert kannel.mt_lines.count(confirmation) == 1

    # 3. Marketing after the opt-out is denied and never reaches Kannel
    after = stack.send(ref, "after-stop")
    assert after["decision"]["outcome"] == "DENY"
    assert after["delivery"]["status"] == "NOT_ATTEMPTED"

    # 4. START records an express written opt-in on sms and is answered
    kannel.inject_mo(phone, SHORT_CODE, "START")
    [start] = _wait("the START inbound record", inbound(3))
    assert start.body["intent"] == "opt_in"
    welcome = _mt(phone, program.opt_in_text)
    _wait("the opt-in answer", lambda: welcome in kannel.mt_lines)
    evidence = gateway.consent_evidence(ref, "sms", "marketing")
    assert evidence["status"] == "granted"
    assert evidence["deciding_entry"]["source"] == "keyword"

    # 5. HELP is answered with the program's help text
    kannel.inject_mo(phone, SHORT_CODE, "HELP")
    [help_] = _wait("the HELP inbound record", inbound(4))
    assert help_.body["intent"] == "help"
    help_line = _mt(phone, program.help_text)
    _wait("the help text", lambda: help_line in kannel.mt_lines)

    time.sleep(0.3)
    assert sorted(kannel.mt_lines) == sorted(
        [_mt(phone, "Spring offer"), confirmation, welcome, help_line]
    )
    _assert_no_phone_number(stack)


def test_kannel_down_is_a_failed_delivery_without_the_number(stack: Stack) -> None:
    ref = add_contact(stack.gateway, "c0", phone=PHONES[0])
    stack.kannel.stop()

    answer = stack.send(ref, "while-down")

    assert answer["decision"]["outcome"] == "ALLOW"
    delivery = answer["delivery"]
    assert delivery["status"] == "FAILED"
    assert delivery["error"].startswith("kannel sendsms unreachable")
    assert PHONES[0][2:] not in delivery["error"]
    [record] = stack.records("delivery")
    assert record.body["status"] == "FAILED"
    _assert_no_phone_number(stack)
