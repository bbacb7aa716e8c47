"""The gRPC face of the gateway: protobuf in, `gateway.service` calls, protobuf out.

Errors are mapped at this one boundary: a malformed request is
INVALID_ARGUMENT naming the field, an unknown contact NOT_FOUND, a store that
cannot be reached UNAVAILABLE, and anything unexpected INTERNAL; in every one of
those cases nothing was sent. The server also serves the standard health and
reflection services, so `grpcurl` can list and call it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from audit import AuditError
from gateway.errors import (
    ConfigurationError,
    ConsentConflictError,
    ContactNotFoundError,
    InvalidRequestError,
    StoreError,
    TollgateError,
    UnknownChannelError,
)
from gateway.service import ContactInput, Gateway, InboundInput, SendInput
from gateway.store import ContactRef
from tollgate.v1 import gateway_pb2 as pb
from tollgate.v1 import gateway_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
_PURPOSES = {
    pb.PURPOSE_MARKETING: "marketing",
    pb.PURPOSE_REMINDER: "reminder",
    pb.PURPOSE_TRANSACTIONAL: "transactional",
    pb.PURPOSE_OPT_OUT_CONFIRMATION: "opt_out_confirmation",
    pb.PURPOSE_ADVERTISING: "advertising",
}
_STAGES = {
    pb.STAGE_NEW: "new",
    pb.STAGE_ENGAGED: "engaged",
    pb.STAGE_IN_PIPELINE: "in_pipeline",
    pb.STAGE_CONVERTED: "converted",
}
_STAGE_ENUM = {name: value for value, name in _STAGES.items()}
_PURPOSE_NAMES: dict[int, str] = {int(k): v for k, v in _PURPOSES.items()}


class GatewayServicer(pb_grpc.GatewayServicer):
    """Implements tollgate.v1.Gateway over a `Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def Send(
        self, request: pb.SendRequest, context: grpc.ServicerContext
    ) -> pb.SendResponse:
        return _guarded(
            context, lambda: _send_response(self.gateway.send(_send_input(request)))
        )

    def SendStream(
        self, request_iterator: Iterator[pb.SendRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.SendResponse]:
        for request in request_iterator:
            try:
                yield _send_response(self.gateway.send(_send_input(request)))
            except (TollgateError, AuditError) as exc:
                # One bad request does not end a campaign: it is answered with
                # its error, nothing is sent for it, and the stream goes on.
                yield pb.SendResponse(request_id=request.request_id, error=str(exc))
            except Exception:
                log.exception("stream request failed; nothing was sent for it")
                yield pb.SendResponse(
                    request_id=request.request_id,
                    error="internal error; nothing was sent for this request",
                )

    def Check(
        self, request: pb.SendRequest, context: grpc.ServicerContext
    ) -> pb.SendResponse:
        return _guarded(
            context, lambda: _send_response(self.gateway.check(_send_input(request)))
        )

    def UpsertContact(
        self, request: pb.UpsertContactRequest, context: grpc.ServicerContext
    ) -> pb.UpsertContactResponse:
        def work() -> pb.UpsertContactResponse:
            contact_id, created = self.gateway.upsert_contact(_contact_input(request))
            return pb.UpsertContactResponse(contact_id=contact_id, created=created)

        return _guarded(context, work)

    def RecordConsent(
        self, request: pb.RecordConsentRequest, context: grpc.ServicerContext
    ) -> pb.RecordConsentResponse:
        def work() -> pb.RecordConsentResponse:
            contact_id, seq = self.gateway.record_consent(
                _ref(request.contact),
                channel=request.channel,
                purpose=_consent_purpose(request.purpose),
                granted=request.granted,
                source=request.source,
                at=_time(request, "at"),
                legal_basis=_BASES.get(request.legal_basis, ""),
                expires_at=_time(request, "expires_at"),
                disclosure_text=request.disclosure_text,
                pending=request.pending_confirmation,
            )
            return pb.RecordConsentResponse(contact_id=contact_id, audit_seq=seq)

        return _guarded(context, work)

    def ReportInbound(
        self, request: pb.ReportInboundRequest, context: grpc.ServicerContext
    ) -> pb.ReportInboundResponse:
        def work() -> pb.ReportInboundResponse:
            answer = self.gateway.report_inbound(
                InboundInput(
                    channel=request.channel,
                    sender=getattr(request, "from"),
                    text=request.text,
                    headers=dict(request.headers),
                    subject=request.subject,
                    received_at=_time(request, "received_at"),
                    provider_message_id=request.provider_message_id,
                    provider_confirmed=request.provider_confirmed,
                )
            )
            reply = answer["reply"]
            return pb.ReportInboundResponse(
                intent=pb.Intent.Value(answer["intent"].upper()),
                keyword=answer["keyword"],
                rule=answer["rule"],
                contact_id=answer["contact_id"],
                audit_seq=answer["audit_seq"],
                reply=_send_response(reply) if reply else None,
            )

        return _guarded(context, work)

    def SyncAudience(
        self, request: pb.SyncAudienceRequest, context: grpc.ServicerContext
    ) -> pb.SyncAudienceResponse:
        from gateway.audiences import AudienceSync

        def work() -> pb.SyncAudienceResponse:
            report = AudienceSync(self.gateway).sync(
                request.platform,
                tier_id=request.tier,
                audience_id=request.audience_id,
                members=[_ref(m) for m in request.members],
                sync_id=request.sync_id,
            )
            return pb.SyncAudienceResponse(
                platform=report.platform,
                audience_id=report.audience_id,
                considered=report.considered,
                added=report.added,
                removed=report.removed,
                unchanged=report.unchanged,
                excluded_by_rule=dict(report.excluded_by_rule),
                failed=report.failed,
                error=report.error,
                audit_seq=report.audit_seq,
            )

        return _guarded(context, work)

    def GetConsent(
        self, request: pb.GetConsentRequest, context: grpc.ServicerContext
    ) -> pb.GetConsentResponse:
        def work() -> pb.GetConsentResponse:
            evidence = self.gateway.consent_evidence(
                _ref(request.contact),
                request.channel,
                _consent_purpose(request.purpose),
            )
            deciding = evidence["deciding_entry"]
            return pb.GetConsentResponse(
                contact_id=evidence["contact_id"],
                status=evidence["status"],
                deciding_entry=_consent_entry(deciding) if deciding else None,
                ledger=[_consent_entry(e) for e in evidence["ledger"]],
            )

        return _guarded(context, work)

    def RecordEvent(
        self, request: pb.RecordEventRequest, context: grpc.ServicerContext
    ) -> pb.RecordEventResponse:
        def work() -> pb.RecordEventResponse:
            contact_id, stage, seq = self.gateway.record_event(
                _ref(request.contact),
                kind=request.kind,
                attributes=json_format.MessageToDict(request.attributes),
                at=_time(request, "at"),
            )
            return pb.RecordEventResponse(
                contact_id=contact_id, stage=_STAGE_ENUM[stage], audit_seq=seq
            )

        return _guarded(context, work)

    def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetStatusResponse:
        status = self.gateway.holder.status()
        return pb.GetStatusResponse(
            bundle_hash=status.hash,
            bundle_source=status.source,
            bundle_loaded_at=_stamp(status.loaded_at.isoformat()),
            cel_runtime=status.runtime,
            reloads=status.reloads,
            reload_failures=status.failures,
            last_reload_error=status.last_error,
            last_reload_error_at=(
                _stamp(status.last_error_at.isoformat())
                if status.last_error_at
                else None
            ),
            channels=sorted(self.gateway.channels.channels),
        )


def _guarded(context: grpc.ServicerContext, work: Callable[[], T]) -> T:
    """Run `work`, turning gateway errors into gRPC status codes."""
    try:
        return work()
    except InvalidRequestError as exc:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except ContactNotFoundError as exc:
        _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
    except ConsentConflictError as exc:
        _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except UnknownChannelError as exc:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"channel: {exc}")
    except StoreError as exc:
        _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
    except AuditError as exc:
        log.error("request refused by the audit log: %s", exc)
        _abort(
            context, grpc.StatusCode.FAILED_PRECONDITION, f"cannot be audited: {exc}"
        )
    except Exception:
        log.exception("request failed; nothing was sent")
        _abort(context, grpc.StatusCode.INTERNAL, "internal error; nothing was sent")


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, text: str) -> NoReturn:
    context.abort(code, text)
    raise AssertionError("unreachable: context.abort raises")


def _ref(ref: pb.ContactRef) -> ContactRef:
    return ContactRef(external_id=ref.external_id, contact_id=ref.contact_id)


_BASES = {
    pb.EXPRESS_WRITTEN: "express_written",
    pb.EXPRESS: "express",
    pb.IMPLIED_PURCHASE: "implied_purchase",
    pb.IMPLIED_INQUIRY: "implied_inquiry",
}


def _consent_purpose(value: int) -> str:
    return "*" if value == pb.PURPOSE_ALL else _purpose(value)


def _consent_entry(entry: Mapping[str, Any]) -> pb.ConsentEntry:
    return pb.ConsentEntry(
        entry_id=entry["entry_id"],
        channel=entry["channel"],
        purpose=entry["purpose"],
        granted=entry["granted"],
        source=entry["source"],
        recorded_at=_stamp(entry["recorded_at"]),
        legal_basis=entry["legal_basis"],
        expires_at=_stamp(entry["expires_at"]),
        disclosure_sha256=entry["disclosure_sha256"],
        pending=entry["pending"],
    )


def _purpose(value: int) -> str:
    if value not in _PURPOSE_NAMES:
        raise InvalidRequestError("purpose", "must be set (marketing, reminder, ...)")
    return _PURPOSE_NAMES[value]


def _time(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidRequestError(field, "is not a valid timestamp") from exc


def _send_input(request: pb.SendRequest) -> SendInput:
    return SendInput(
        request_id=request.request_id,
        contact=_ref(request.contact),
        channel=request.channel,
        purpose=_purpose(request.purpose),
        campaign=request.campaign,
        body=request.body,
        idempotency_key=request.idempotency_key,
        at=_time(request, "at"),
    )


def _contact_input(request: pb.UpsertContactRequest) -> ContactInput:
    return ContactInput(
        external_id=request.external_id,
        phone=request.phone,
        email=request.email,
        stage=_STAGES.get(request.stage, "") if request.stage else "",
        time_zone=request.time_zone,
        region=request.region,
        do_not_contact=request.do_not_contact,
        sms_capable=request.sms_capable if request.HasField("sms_capable") else None,
        attributes=(
            json_format.MessageToDict(request.attributes)
            if request.HasField("attributes")
            else None
        ),
    )


def _stamp(text: str) -> timestamp_pb2.Timestamp | None:
    if not text:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(text))
    return stamp


def _reason(r: Mapping[str, Any]) -> pb.Reason:
    return pb.Reason(
        rule_id=r["rule_id"],
        policy_id=r["policy_id"],
        effect=r["effect"],
        message=r["message"],
        citation=r["citation"],
        not_before=_stamp(r["not_before"]),
        mode=r.get("mode", "enforce"),
    )


def _trace(policy: Mapping[str, Any]) -> pb.PolicyTrace:
    variables = struct_pb2.Struct()
    variables.update(policy["variables"])
    return pb.PolicyTrace(
        policy_id=policy["policy_id"],
        status=policy["status"],
        error=policy["error"],
        variables=variables,
        rules=[
            pb.RuleTrace(
                rule_id=r["rule_id"],
                kind=r["kind"],
                effect=r["effect"],
                mode=r["mode"],
                fired=r["fired"],
                error=r["error"],
                not_before=_stamp(r["not_before"]),
                detail=r["detail"],
            )
            for r in policy["rules"]
        ],
    )


def _send_response(response: Mapping[str, Any]) -> pb.SendResponse:
    decision = response["decision"]
    delivery = response["delivery"]
    return pb.SendResponse(
        request_id=response["request_id"],
        replayed=response.get("replayed", False),
        decision=pb.Decision(
            outcome=pb.Outcome.Value(decision["outcome"]),
            not_before=_stamp(decision["not_before"]),
            reasons=[_reason(r) for r in decision["reasons"]],
            warnings=[_reason(r) for r in decision.get("warnings", [])],
            bundle_hash=decision["bundle_hash"],
            audit_seq=decision["audit_seq"],
            contact_id=decision["contact_id"],
            decided_at=_stamp(decision["decided_at"]),
        ),
        delivery=pb.Delivery(
            status=pb.DeliveryStatus.Value(delivery["status"]),
            provider_message_id=delivery["provider_message_id"],
            error=delivery["error"],
            audit_seq=delivery.get("audit_seq", 0),
        ),
        explanation=[_trace(p) for p in response.get("explanation", [])],
    )


def build_server(
    gateway: Gateway, address: str = "127.0.0.1:0", workers: int = 8
) -> tuple[grpc.Server, int]:
    """Create (not start) a server on `address`; return it and its bound port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    pb_grpc.add_GatewayServicer_to_server(GatewayServicer(gateway), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise ConfigurationError(f"cannot listen on {address}")
    return server, port
