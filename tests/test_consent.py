"""One consent truth: the ledger, replies (STOP, START, HELP), evidence, erasure."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

import audit
from gateway.callbacks import CallbackServer
from gateway.cli import main
from gateway.errors import ConsentConflictError, InvalidRequestError
from gateway.hookspecs import (
    DeliveryReport,
    DeliveryResult,
    InboundReply,
    OutboundMessage,
    hookimpl,
)
from gateway.service import ContactInput, Gateway, InboundInput, SendInput
from gateway.store import ContactRef
from support import AT, NY_PHONE, GatewayFactory, add_contact
from tollgate.v1 import gateway_pb2 as pb
from tollgate.v1 import gateway_pb2_grpc as pb_grpc

CASES = {
    c["id"]: c
    for c in json.loads(
        (Path(__file__).parent / "data" / "field-cases.json").read_text()
    )
}


def _send(gateway: Gateway, ref: ContactRef, key: str, **fields: object) -> dict:
    values: dict[str, object] = {
        "contact": ref, "channel": "sms", "purpose": "marketing", "campaign": "c",
        "body": "hello", "idempotency_key": key, "at": AT,
    }  # fmt: skip
    values.update(fields)
    return gateway.send(SendInput(**values))  # type: ignore[arg-type]


def _outcome(response: Mapping[str, object]) -> str:
    decision = response["decision"]
    assert isinstance(decision, dict)
    return str(decision["outcome"])


def _reply(
    gateway: Gateway, text: str, *, sender: str = NY_PHONE, **more: object
) -> dict:
    return gateway.report_inbound(
        InboundInput(channel="sms", sender=sender, text=text, **more)  # type: ignore[arg-type]
    )


def _outbox(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "outbox.jsonl"
    return (
        [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    )


# --- the ledger ---------------------------------------------------------------


def test_a_grant_keeps_its_basis_expiry_and_only_the_hash_of_the_disclosure(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway, consent=False)
    gateway.record_consent(
        ref, channel="email", purpose="marketing", granted=True, source="checkout",
        legal_basis="implied_purchase", at=AT,
        disclosure_text="We may e-mail you offers.",
    )  # fmt: skip
    evidence = gateway.consent_evidence(ref, "email", "marketing", at=AT)
    entry = evidence["deciding_entry"]
    assert evidence["status"] == "granted"
    assert entry["legal_basis"] == "implied_purchase"
    assert entry["expires_at"] == (AT + timedelta(days=548)).isoformat()
    assert len(entry["disclosure_sha256"]) == 64
    later = gateway.consent_evidence(
        ref, "email", "marketing", at=AT + timedelta(days=549)
    )
    assert later["status"] == "expired"
    records = "\n".join(str(r.body) for r in gateway.store.audit_records())
    assert "We may e-mail you offers" not in records


def test_an_implied_consent_does_not_allow_marketing_texts(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway, consent=False)
    gateway.record_consent(
        ref, channel="sms", purpose="marketing", granted=True, source="checkout",
        legal_basis="implied_purchase",
    )  # fmt: skip
    response = _send(gateway, ref, "k1")
    reasons = [r["rule_id"] for r in response["decision"]["reasons"]]
    assert reasons == ["consent.text-marketing-needs-written-consent"]


def test_a_double_opt_in_counts_only_once_confirmed(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway, consent=False)
    gateway.record_consent(
        ref,
        channel="sms",
        purpose="marketing",
        granted=True,
        source="web_form",
        pending=True,
    )
    pending = _send(gateway, ref, "k1")
    gateway.record_consent(
        ref, channel="sms", purpose="marketing", granted=True, source="keyword"
    )
    confirmed = _send(gateway, ref, "k2")
    assert _outcome(pending) == "DENY" and _outcome(confirmed) == "ALLOW"


def test_an_import_never_turns_a_revoked_consent_back_on(
    make_gateway: GatewayFactory, store_url: str
) -> None:
    gateway = make_gateway(store_url)
    ref = add_contact(gateway)
    _reply(gateway, "STOP")
    with pytest.raises(ConsentConflictError, match="an import cannot grant it again"):
        gateway.record_consent(
            ref, channel="sms", purpose="marketing", granted=True, source="import"
        )
    assert gateway.consent_evidence(ref, "sms", "marketing")["status"] == "revoked"
    gateway.record_consent(
        ref, channel="sms", purpose="marketing", granted=True, source="web_form"
    )
    assert gateway.consent_evidence(ref, "sms", "marketing")["status"] == "granted"


def test_a_grant_with_an_unknown_legal_basis_is_refused(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway, consent=False)
    with pytest.raises(InvalidRequestError, match=r"^legal_basis"):
        gateway.record_consent(
            ref,
            channel="sms",
            purpose="marketing",
            granted=True,
            source="x",
            legal_basis="vibes",
        )


# --- replies ------------------------------------------------------------------


def test_stop_revokes_every_channel_and_is_confirmed_exactly_once(
    make_gateway: GatewayFactory, store_url: str, tmp_path: Path
) -> None:
    gateway = make_gateway(store_url)
    ref = add_contact(gateway)
    gateway.record_consent(
        ref, channel="email", purpose="marketing", granted=True, source="web"
    )
    first = _reply(gateway, "Stop. Thank you", provider_message_id="mo-1")
    again = _reply(gateway, "STOP", provider_message_id="mo-2")
    sent = _outbox(tmp_path)
    assert first["intent"] == "opt_out" and first["reply"] is not None
    assert again["reply"]["decision"]["outcome"] == "DENY"
    assert [m["purpose"] for m in sent] == ["opt_out_confirmation"]
    for channel in ("sms", "email", "voice"):
        assert (
            gateway.consent_evidence(ref, channel, "marketing")["status"] == "revoked"
        )
    assert gateway.store.audience_removals() == [first["contact_id"]]
    assert _outcome(_send(gateway, ref, "after-stop")) == "DENY"


def test_a_stop_the_provider_already_confirmed_is_not_confirmed_again(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = make_gateway()
    add_contact(gateway)
    answer = _reply(gateway, "STOP", provider_confirmed=True)
    assert answer["reply"] is None and _outbox(tmp_path) == []


def test_CO_03_after_a_stop_marketing_and_a_second_confirmation_are_blocked(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    case = CASES["CO-03"]
    gateway = make_gateway()
    ref = add_contact(gateway, phone=case["input"]["events"][0]["from"])
    _reply(
        gateway,
        "STOP",
        sender=case["input"]["events"][0]["from"],
        provider_confirmed=True,
    )
    marketing = _send(gateway, ref, "k-marketing")
    confirmation = _send(gateway, ref, "k-confirm", purpose="opt_out_confirmation")
    assert case["expected"]["12:05 marketing"].startswith("BLOCK")
    assert _outcome(marketing) == "DENY"
    assert "consent.revoked" in [r["rule_id"] for r in marketing["decision"]["reasons"]]
    assert _outcome(confirmation) == "DENY"
    assert [r["rule_id"] for r in confirmation["decision"]["reasons"]] == [
        "consent.one-confirmation"
    ]
    assert _outbox(tmp_path) == []


def test_CO_01_polite_stops_opt_out_and_a_buried_stop_does_not(
    make_gateway: GatewayFactory,
) -> None:
    case = CASES["CO-01"]
    gateway = make_gateway()
    for i, text in enumerate(case["input"]["inbound_messages"]):
        phone = f"+1212555{100 + i:04d}"
        ref = add_contact(gateway, f"c{i}", phone=phone)
        answer = _reply(gateway, text, sender=phone)
        expected = case["expected"][text]
        opted_out = (
            gateway.consent_evidence(ref, "sms", "marketing")["status"] == "revoked"
        )
        assert opted_out == (not expected.startswith("not an opt-out")), text
        assert answer["intent"] == (
            "other" if "not an opt-out" in expected else "opt_out"
        )


def test_CO_06_an_auto_reply_changes_no_consent(make_gateway: GatewayFactory) -> None:
    case = CASES["CO-06"]["input"]["inbound_email"]
    gateway = make_gateway(outbox_channels="sms,email:email")
    gateway.upsert_contact(ContactInput(external_id="pat", email=case["from"]))
    ref = ContactRef(external_id="pat")
    gateway.record_consent(
        ref, channel="email", purpose="marketing", granted=True, source="web"
    )
    answer = gateway.report_inbound(
        InboundInput(
            channel="email", sender=case["from"], text=case["body"],
            headers=case["headers"], subject=case["subject"],
        )
    )  # fmt: skip
    assert answer["intent"] == CASES["CO-06"]["expected"]["classification"]
    assert gateway.consent_evidence(ref, "email", "marketing")["status"] == "granted"


def test_CO_05_a_channel_opt_out_blocks_that_channel_only(
    make_gateway: GatewayFactory,
) -> None:
    case = CASES["CO-05"]
    gateway = make_gateway(outbox_channels="sms,email:email")
    gateway.upsert_contact(
        ContactInput(external_id="c-1001", phone=case["input"]["contact"]["mobile"],
                     email="c1001@example.com")
    )  # fmt: skip
    ref = ContactRef(external_id="c-1001")
    for channel in ("sms", "email"):
        gateway.record_consent(
            ref, channel=channel, purpose="marketing", granted=True, source="web"
        )
    gateway.record_consent(
        ref, channel="sms", purpose="*", granted=False, source="unsubscribed"
    )
    sms = _send(gateway, ref, "sms-1")
    email = _send(gateway, ref, "email-1", channel="email")
    assert _outcome(sms) == "DENY" and case["expected"]["sms"].startswith("BLOCK")
    assert _outcome(email) == "ALLOW" and case["expected"]["email"].startswith("ALLOW")


def test_CO_08_blocklisted_and_unconfirmed_are_suppressed_and_the_campaign_goes_on(
    make_gateway: GatewayFactory,
) -> None:
    case = CASES["CO-08"]
    gateway = make_gateway()
    outcomes = {}
    for i, sub in enumerate(case["input"]["subscribers"]):
        ref = add_contact(
            gateway, sub["id"], phone=f"+1212555{100 + i:04d}", consent=False,
            do_not_contact=sub["status"] == "blocklisted",
        )  # fmt: skip
        gateway.record_consent(
            ref, channel="sms", purpose="marketing", granted=True, source="web_form",
            pending=sub["subscription"] == "unconfirmed",
        )  # fmt: skip
        outcomes[sub["id"]] = _outcome(_send(gateway, ref, f"k-{sub['id']}"))
    sent = [k for k, v in outcomes.items() if v == "ALLOW"]
    assert sent == case["expected"]["sent"]
    assert set(outcomes) == {"A", "B", "C"}  # every subscriber was evaluated


def test_CO_11_a_contact_who_converts_mid_sequence_gets_no_further_steps(
    make_gateway: GatewayFactory,
) -> None:
    case = CASES["CO-11"]
    gateway = make_gateway()
    ref = add_contact(gateway, case["input"]["contact"])
    gateway.record_event(ref, kind="converted")
    for step in ("step_3", "step_4"):
        response = _send(gateway, ref, step)
        assert _outcome(response) == "DENY"
        assert "suppression.converted" in [
            r["rule_id"] for r in response["decision"]["reasons"]
        ]
        assert case["expected"][step] == "BLOCK (suppression:converted)"


def test_start_opts_in_again_and_help_is_answered(
    make_gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLLGATE_PROGRAM_HELP", "Acme alerts. Reply STOP to opt out.")
    gateway = make_gateway()
    ref = add_contact(gateway)
    _reply(gateway, "STOP", provider_message_id="1")
    start = _reply(gateway, "START", provider_message_id="2")
    help_ = _reply(gateway, "help", provider_message_id="3")
    assert start["intent"] == "opt_in"
    assert gateway.consent_evidence(ref, "sms", "marketing")["status"] == "granted"
    bodies = [m["body"] for m in _outbox(tmp_path)]
    assert len(bodies) == 3 and bodies[2] == "Acme alerts. Reply STOP to opt out."
    assert help_["reply"]["delivery"]["status"] == "FORWARDED"


def test_a_reply_from_an_unknown_number_is_recorded_without_a_contact(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway()
    answer = _reply(gateway, "STOP", sender="+12125550777")
    record = gateway.store.audit_record(answer["audit_seq"])
    assert answer["contact_id"] == "" and record is not None
    assert record.body["intent"] == "opt_out" and "+1212" not in str(record.body)


# --- over gRPC --------------------------------------------------------------


def test_report_inbound_and_get_consent_over_grpc(
    grpc_stub: tuple[pb_grpc.GatewayStub, Gateway, grpc.Channel],
) -> None:
    stub, gateway, _ = grpc_stub
    add_contact(gateway)
    request = pb.ReportInboundRequest(channel="sms", text="UNSUBSCRIBE")
    setattr(request, "from", "(212) 555-0123")
    answer = stub.ReportInbound(request)
    evidence = stub.GetConsent(
        pb.GetConsentRequest(
            contact=pb.ContactRef(external_id="c1"), channel="sms",
            purpose=pb.PURPOSE_MARKETING,
        )
    )  # fmt: skip
    assert answer.intent == pb.OPT_OUT and answer.keyword == "unsubscribe"
    assert answer.reply.delivery.status == pb.FORWARDED
    assert evidence.status == "revoked"
    assert (
        evidence.deciding_entry.channel == "*"
        and evidence.deciding_entry.source == "keyword"
    )
    assert [e.granted for e in evidence.ledger] == [True, False]


def test_an_import_conflict_is_failed_precondition_over_grpc(
    grpc_stub: tuple[pb_grpc.GatewayStub, Gateway, grpc.Channel],
) -> None:
    stub, gateway, _ = grpc_stub
    ref = add_contact(gateway)
    gateway.record_consent(
        ref, channel="sms", purpose="*", granted=False, source="agent"
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.RecordConsent(
            pb.RecordConsentRequest(
                contact=pb.ContactRef(external_id="c1"), channel="sms",
                purpose=pb.PURPOSE_MARKETING, granted=True, source="import",
            )
        )  # fmt: skip
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# --- provider callbacks over HTTP ------------------------------------------------


class _FakeProvider:
    """A plugin whose provider calls back with ?from=...&text=... and ?seq=&ok=."""

    @hookimpl
    def tollgate_channels(self) -> dict[str, str]:
        return {"fake": "phone"}

    @hookimpl
    def tollgate_deliver(self, message: OutboundMessage) -> DeliveryResult | None:
        if message.channel != "fake":
            return None
        return DeliveryResult(provider_message_id=f"fake-{message.audit_seq}")

    @hookimpl
    def tollgate_parse_callback(
        self, channel: str, kind: str, query: Mapping[str, str]
    ) -> InboundReply | DeliveryReport | None:
        if channel != "fake":
            return None
        if kind == "mo":
            return InboundReply(sender=query["from"], text=query["text"])
        if kind == "dlr":
            return DeliveryReport(
                int(query["seq"]), "delivered" if query["ok"] else "failed"
            )
        raise ValueError(f"unknown callback kind {kind!r}")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_provider_callbacks_reach_the_gateway_over_loopback_http(
    make_gateway: GatewayFactory,
) -> None:
    server = CallbackServer()
    try:
        gateway = make_gateway(plugins=(_FakeProvider(),))
        server.attach(gateway)
        server.start()
        ref = add_contact(gateway)
        sent = _send(gateway, ref, "k1", channel="fake", purpose="transactional")
        sms = _send(gateway, ref, "k3")["decision"]["audit_seq"]
        seq = sent["decision"]["audit_seq"]
        assert _get(f"{server.url}/fake/dlr?seq={seq}&ok=1") == 200
        assert _get(f"{server.url}/fake/dlr?seq={sms}&ok=1") == 400  # another channel
        assert _get(f"{server.url}/fake/dlr?seq=1&ok=1") == 400  # not a decision
        assert _get(f"{server.url}/fake/mo?from=%2B12125550123&text=STOP") == 200
        assert _get(f"{server.url}/fake/dlr?seq=999999&ok=1") == 400
        assert _get(f"{server.url}/fake/weird") == 400
        assert _get(f"{server.url}/nosuch/mo?from=x") == 400
    finally:
        server.stop()
    kinds = [r.kind for r in gateway.store.audit_records()]
    assert "delivery_report" in kinds and "inbound" in kinds
    assert gateway.consent_evidence(ref, "sms", "marketing")["status"] == "revoked"
    audit.verify_chain(gateway.store.audit_records())


# --- erasure ----------------------------------------------------------------


def test_erase_removes_personal_data_and_keeps_the_chain_verifiable(
    make_gateway: GatewayFactory, store_url: str
) -> None:
    gateway = make_gateway(store_url)
    ref = add_contact(gateway, email="jane@example.com", attributes={"age": 40})
    _send(gateway, ref, "k1")
    contact_id = gateway.store.snapshot(ref, None).contact_id
    runner = CliRunner()
    erased = runner.invoke(main, ["contacts", "erase", contact_id, "--db", store_url])
    verify = runner.invoke(main, ["audit", "verify", "--db", store_url])
    snap = gateway.store.snapshot(ContactRef(contact_id=contact_id), None)
    assert erased.exit_code == 0, erased.output
    assert snap.phone_e164 is None and snap.email is None and snap.attributes == {}
    assert snap.external_id == f"erased:{contact_id}" and snap.erased
    assert verify.exit_code == 0, verify.output
    last = list(gateway.store.audit_records())[-1]
    assert last.kind == "erasure" and last.body["contact_id"] == contact_id
    after = _send(gateway, ContactRef(contact_id=contact_id), "k2")
    assert _outcome(after) == "DENY"


def test_a_provider_retrying_a_reply_is_answered_once(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway)
    first = _reply(gateway, "STOP", provider_message_id="kannel-abc")
    retry = _reply(gateway, "STOP", provider_message_id="kannel-abc")
    inbound = [r for r in gateway.store.audit_records() if r.kind == "inbound"]
    ledger = gateway.consent_evidence(ref, "sms", "marketing")["ledger"]
    assert retry["replayed"] and retry["audit_seq"] == first["audit_seq"]
    assert len(inbound) == 1 and len(ledger) == 2  # the grant and one opt-out
    assert len(_outbox(tmp_path)) == 1
