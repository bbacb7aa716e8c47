"""A real gRPC server on port 0 driven by a real client, on both stores."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import audit
from gateway.service import Gateway
from support import AT, NY_PHONE
from tollgate.v1 import gateway_pb2 as pb
from tollgate.v1 import gateway_pb2_grpc as pb_grpc

Live = tuple[pb_grpc.GatewayStub, Gateway, grpc.Channel]


def _at() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(AT)
    return stamp


def _contact(
    stub: pb_grpc.GatewayStub, external_id: str = "c1", consent: bool = True
) -> None:
    stub.UpsertContact(pb.UpsertContactRequest(external_id=external_id, phone=NY_PHONE))
    if consent:
        stub.RecordConsent(
            pb.RecordConsentRequest(
                contact=pb.ContactRef(external_id=external_id),
                channel="sms",
                purpose=pb.PURPOSE_MARKETING,
                granted=True,
                source="web_form",
            )
        )


def _request(
    key: str = "k1", external_id: str = "c1", **fields: object
) -> pb.SendRequest:
    values: dict[str, object] = {
        "request_id": key,
        "contact": pb.ContactRef(external_id=external_id),
        "channel": "sms",
        "purpose": pb.PURPOSE_MARKETING,
        "campaign": "spring",
        "body": "Our new savings rate is here.",
        "idempotency_key": key,
        "at": _at(),
    }
    values.update(fields)
    return pb.SendRequest(**values)  # type: ignore[arg-type]


def _outbox(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "outbox.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_send_allows_forwards_and_audits(grpc_stub: Live, tmp_path: Path) -> None:
    stub, gateway, _ = grpc_stub
    _contact(stub)
    response = stub.Send(_request())
    decision = response.decision
    assert decision.outcome == pb.ALLOW and not decision.reasons
    assert decision.bundle_hash == gateway.bundle.hash
    assert response.delivery.status == pb.FORWARDED
    assert response.delivery.provider_message_id.startswith("outbox-")
    sent = _outbox(tmp_path)
    assert [m["to"] for m in sent] == [NY_PHONE]
    assert sent[0]["provider_message_id"] == response.delivery.provider_message_id
    records = {r.seq: r for r in gateway.store.audit_records()}
    assert records[decision.audit_seq].kind == "decision"
    assert records[decision.audit_seq].body["outcome"] == "ALLOW"
    assert records[response.delivery.audit_seq].kind == "delivery"
    assert response.delivery.audit_seq > decision.audit_seq


def test_denied_send_carries_every_reason_and_sends_nothing(
    grpc_stub: Live, tmp_path: Path
) -> None:
    stub, _, _ = grpc_stub
    _contact(stub, consent=False)
    response = stub.Send(_request())
    reasons = {r.rule_id: r for r in response.decision.reasons}
    assert response.decision.outcome == pb.DENY
    assert set(reasons) == {"consent.marketing-needs-grant"}
    assert reasons["consent.marketing-needs-grant"].citation.startswith("TCPA")
    assert response.delivery.status == pb.NOT_ATTEMPTED
    assert _outbox(tmp_path) == []


def test_check_evaluates_without_any_side_effect(
    grpc_stub: Live, tmp_path: Path
) -> None:
    stub, gateway, _ = grpc_stub
    _contact(stub)
    before = (gateway.store.counts(), len(list(gateway.store.audit_records())))
    response = stub.Check(_request())
    after = (gateway.store.counts(), len(list(gateway.store.audit_records())))
    assert response.decision.outcome == pb.ALLOW
    assert response.decision.audit_seq == 0
    assert before == after
    assert _outbox(tmp_path) == []


def test_retry_with_the_same_key_replays_and_sends_once(
    grpc_stub: Live, tmp_path: Path
) -> None:
    stub, _, _ = grpc_stub
    _contact(stub)
    first = stub.Send(_request("retry-1"))
    second = stub.Send(_request("retry-1"))
    assert not first.replayed and second.replayed
    assert second.decision.audit_seq == first.decision.audit_seq
    assert second.delivery.provider_message_id == first.delivery.provider_message_id
    assert len(_outbox(tmp_path)) == 1


def test_reusing_a_key_for_another_message_is_refused(grpc_stub: Live) -> None:
    stub, _, _ = grpc_stub
    _contact(stub)
    stub.Send(_request("reused"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Send(_request("reused", body="A different text."))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency_key" in caught.value.details()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"idempotency_key": ""}, "idempotency_key", id="no-key"),
        pytest.param({"channel": "pigeon"}, "channel", id="unknown-channel"),
        pytest.param({"purpose": pb.PURPOSE_UNSPECIFIED}, "purpose", id="no-purpose"),
        pytest.param({"body": ""}, "body", id="empty-body"),
        pytest.param({"body": "x" * 1601}, "body", id="body-too-long"),
        pytest.param({"contact": pb.ContactRef()}, "contact", id="no-contact"),
    ],
)
def test_malformed_send_is_invalid_argument_naming_the_field(
    grpc_stub: Live, fields: dict[str, object], field: str
) -> None:
    stub, gateway, _ = grpc_stub
    _contact(stub)
    records = len(list(gateway.store.audit_records()))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Send(_request(**fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field)
    assert len(list(gateway.store.audit_records())) == records


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        pytest.param({"phone": "not a number"}, "phone", id="phone-garbage"),
        pytest.param({"phone": "919812345678"}, "phone", id="PH-03-digits-only-indian"),
        pytest.param({"email": "no-at-sign"}, "email", id="email"),
        pytest.param({"time_zone": "Mars/Olympus"}, "time_zone", id="zone"),
        pytest.param({"region": "US-ZZ"}, "region", id="region"),
        pytest.param({"external_id": ""}, "external_id", id="no-external-id"),
    ],
)
def test_malformed_contact_is_refused_naming_the_field_not_the_value(
    grpc_stub: Live, request_fields: dict[str, str], field: str
) -> None:
    stub, gateway, _ = grpc_stub
    values = {"external_id": "c9", **request_fields}
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpsertContact(pb.UpsertContactRequest(**values))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field)
    if "phone" in request_fields:
        assert request_fields["phone"] not in caught.value.details()
    assert gateway.store.counts()["contacts"] == 0


def test_unknown_contact_is_not_found(grpc_stub: Live) -> None:
    stub, _, _ = grpc_stub
    with pytest.raises(grpc.RpcError) as caught:
        stub.Send(_request(external_id="ghost"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_send_stream_answers_in_order_and_survives_a_bad_request(
    grpc_stub: Live, tmp_path: Path
) -> None:
    stub, gateway, _ = grpc_stub
    for i in range(5):
        _contact(stub, f"c{i}", consent=i != 3)
    requests = [_request(f"s{i}", f"c{i}") for i in range(5)]
    requests.insert(2, _request("bad", "c0", channel="pigeon"))
    responses = list(stub.SendStream(iter(requests)))
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert "channel" in responses[2].error
    outcomes = [pb.Outcome.Name(r.decision.outcome) for r in responses if not r.error]
    assert outcomes == ["ALLOW", "ALLOW", "ALLOW", "DENY", "ALLOW"]
    assert len(_outbox(tmp_path)) == 4
    audit.verify_chain(gateway.store.audit_records())


def test_record_event_moves_the_stage_and_suppression_follows(grpc_stub: Live) -> None:
    stub, _, _ = grpc_stub
    _contact(stub)
    event = stub.RecordEvent(
        pb.RecordEventRequest(contact=pb.ContactRef(external_id="c1"), kind="converted")
    )
    response = stub.Send(_request())
    assert event.stage == pb.STAGE_CONVERTED
    assert [r.rule_id for r in response.decision.reasons] == [
        "suppression.converted",
        "tiers.channel-role",  # customers get no promotional SMS in their tier
    ]


def test_health_and_reflection_are_served(grpc_stub: Live) -> None:
    _, _, channel = grpc_stub
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="tollgate.v1.Gateway"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"tollgate.v1.Gateway", "grpc.health.v1.Health"} <= names
