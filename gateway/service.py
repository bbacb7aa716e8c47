"""The path of one message, independent of gRPC.

`Gateway.send` follows DESIGN.md's path: validate the request, resolve the
contact, build the PII-free policy context, evaluate the bundle, append the
decision to the audit log (with the frequency-cap reservation, in the same
transaction), forward an allowed message through its channel plugin, and
append the delivery outcome. Nothing leaves the gateway before its decision is
in the audit log; any failure before that point sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway import consent, lifecycle, timezones
from gateway.channels import ChannelRegistry
from gateway.errors import (
    ConsentConflictError,
    InvalidRequestError,
    UnknownChannelError,
)
from gateway.hookspecs import DeliveryReport, OutboundMessage
from gateway.identity import (
    check_text,
    normalise_email,
    normalise_phone,
    plain_attributes,
    refuse_personal_data,
)
from gateway.inbound import Intent, classify
from gateway.policy import (
    Bundle,
    Decision,
    DecisionInput,
    Reason,
    evaluate,
    place_in_tier,
)
from gateway.policy._context import PURPOSES
from gateway.policy._engine import NO_ADDRESS_RULE, SendRecord
from gateway.reload import BundleHolder
from gateway.store import (
    ContactFields,
    ContactRef,
    ContactSnapshot,
    Reservation,
    Store,
    Verdict,
)

log = logging.getLogger(__name__)

MAX_BODY = 1600
MAX_NAME = 200
IMPORT_SOURCE = "import"
DELIVERY_REPORT_STATUSES = ("delivered", "failed", "accepted", "buffered")
CLOCK_SKEW = timedelta(minutes=5)
# Seconds after which a retry re-delivers an allowed message whose delivery
# outcome was never recorded (see Gateway._replay).
REDELIVER_AFTER = 60.0
TOUCH_EVENT = "touch"
# The form of the ids the store gives (`store.new_contact_id`); an older id of
# this form may hold a long run of digits and is still ours, not a phone.
CONTACT_ID = re.compile(r"ct_[0-9a-f]{20}")
ADVERTISING = "advertising"


@dataclass(frozen=True)
class SendInput:
    """One message request, as the transport hands it over."""

    contact: ContactRef
    channel: str
    purpose: str
    campaign: str
    body: str
    idempotency_key: str
    request_id: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class InboundInput:
    """A reply from a contact, as the transport hands it over."""

    channel: str
    sender: str
    text: str
    headers: Mapping[str, str] = field(default_factory=dict)
    subject: str = ""
    received_at: datetime | None = None
    provider_message_id: str = ""
    provider_confirmed: bool = False


@dataclass(frozen=True)
class ProgramInfo:
    """What the program answers to keywords; set by TOLLGATE_PROGRAM_* too."""

    help_text: str = (
        "Tollgate demo bank alerts and offers. Msg frequency varies. "
        "Msg&data rates may apply. Reply STOP to opt out."
    )
    opt_out_text: str = (
        "Tollgate demo bank: you are unsubscribed and will receive no more "
        "messages. Reply START to subscribe again."
    )
    opt_in_text: str = (
        "Tollgate demo bank: you are subscribed again. Reply HELP for help, "
        "STOP to opt out."
    )
    opt_in_disclosure: str = (
        "By replying START you agree to receive recurring marketing texts from "
        "Tollgate demo bank. Consent is not a condition of purchase."
    )


@dataclass(frozen=True)
class ContactInput:
    external_id: str
    phone: str = ""
    email: str = ""
    stage: str = ""
    time_zone: str = ""
    region: str = ""
    do_not_contact: bool = False
    sms_capable: bool | None = None
    attributes: Mapping[str, Any] | None = None


class Gateway:
    """Decides, audits and forwards; shared by the gRPC server and the CLI."""

    def __init__(
        self,
        store: Store,
        bundle: Bundle | BundleHolder,
        channels: ChannelRegistry,
        *,
        clock: Callable[[], datetime] | None = None,
        unsafe_client_clock: bool = False,
        program: ProgramInfo | None = None,
    ) -> None:
        self.store = store
        self.holder = (
            bundle if isinstance(bundle, BundleHolder) else BundleHolder.fixed(bundle)
        )
        self.channels = channels
        self._clock = clock or (lambda: datetime.now(UTC))
        self.unsafe_client_clock = unsafe_client_clock
        self.program = program or ProgramInfo()
        if unsafe_client_clock:
            log.warning(
                "UNSAFE: callers may set the decision clock (SendRequest.at); a "
                "wrong clock defeats quiet hours and caps. For tests and replays only."
            )

    # -- messages -----------------------------------------------------------

    @property
    def bundle(self) -> Bundle:
        """The bundle serving now (it may be swapped by a reload)."""
        return self.holder.current

    def check(self, request: SendInput) -> dict[str, Any]:
        """Evaluate only: nothing is forwarded, counted, stored or audited.

        The answer also carries the explanation: every policy and rule, its
        mode, the values of its variables, and when each deferral clears.
        """
        self._validate(request, need_key=False)
        now = self._now(request.at)
        bundle = self.bundle
        snap = self.store.snapshot(request.contact, now - bundle.history_window)
        decision, _ = self._decide(bundle, snap, request, now)
        response = _response(request, decision, snap.contact_id, now, audit_seq=0)
        response["explanation"] = explanation(decision)
        return response

    def send(self, request: SendInput) -> dict[str, Any]:
        """Decide one message and forward it when allowed; see module doc."""
        self._validate(request, need_key=True)
        now = self._now(request.at)
        digest = _digest(request)
        outcome: dict[str, Any] = {}
        bundle = self.bundle  # one bundle for the whole decision

        def decide(snap: ContactSnapshot, seq: int) -> Verdict:
            decision, context = self._decide(bundle, snap, request, now)
            outcome["decision"] = decision
            response = _response(request, decision, snap.contact_id, now, seq)
            if decision.outcome == "ALLOW":  # forwarded right after the commit
                response["delivery"] = {
                    **response["delivery"],
                    "status": "IN_FLIGHT",
                    "attempted_at": self._clock().isoformat(),
                }
            return Verdict(
                audit_body=_audit_body(request, decision, snap.contact_id, context),
                reservation=_reservation(request, decision, now),
                response=response,
            )

        response, replayed, snap = self.store.decide(
            request.contact,
            now - bundle.history_window,
            request.idempotency_key,
            digest,
            decide,
        )
        if replayed or snap is None:
            return self._replay(request, response)
        response = dict(response)
        decision = outcome["decision"]
        _log_decision(request, response)
        if decision.outcome == "ALLOW":
            response = {**response, **self._forward(request, snap, response)}
        return response

    def _validate(self, request: SendInput, *, need_key: bool) -> None:
        check_ref(request.contact)
        check_text(request.request_id, "request_id", required=False)
        check_text(request.campaign, "campaign", required=False)
        check_text(request.idempotency_key, "idempotency_key", required=need_key)
        try:
            self.channels.require(request.channel)
        except UnknownChannelError as exc:
            raise InvalidRequestError("channel", str(exc)) from exc
        if request.purpose not in PURPOSES:
            raise InvalidRequestError(
                "purpose", f"must be one of {', '.join(PURPOSES)}"
            )
        if not request.body or len(request.body) > MAX_BODY:
            raise InvalidRequestError("body", f"must hold 1 to {MAX_BODY} characters")
        if "\x00" in request.body:
            raise InvalidRequestError("body", "holds a NUL character")
        if request.at is not None and not self.unsafe_client_clock:
            raise InvalidRequestError(
                "at",
                "the gateway decides on its own clock (start it with "
                "--unsafe-client-clock to replay a campaign at a fixed time)",
            )

    def _now(self, at: datetime | None) -> datetime:
        if at is None:
            return self._clock()
        log.info("decision clock set by the caller (unsafe client clock): %s", at)
        return at.astimezone(UTC)

    def _replay(self, request: SendInput, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a retry with the first answer; finish a stuck delivery.

        An allowed message whose delivery never completed (the gateway stopped
        while the plugin had it) is handed to its plugin again, with the same
        idempotency key, once its last attempt is older than
        `REDELIVER_AFTER` seconds. Plugins that de-duplicate on the key make
        this exactly-once; the audit log records every attempt.
        """
        response = {**stored, "request_id": request.request_id, "replayed": True}
        claimed = self.store.claim_delivery(
            request.idempotency_key, self._clock(), REDELIVER_AFTER
        )
        if claimed is None:
            return response
        log.warning(
            "re-delivering request=%s after an unfinished delivery (audit_seq=%d)",
            request.request_id,
            claimed["decision"]["audit_seq"],
        )
        snap = self.store.snapshot(request.contact, None)
        return {**response, **self._forward(request, snap, claimed)}

    def _decide(
        self, bundle: Bundle, snap: ContactSnapshot, request: SendInput, now: datetime
    ) -> tuple[Decision, dict[str, Any]]:
        given = self._input(bundle, snap, request, now)
        decision = evaluate(bundle, given)
        kind = self.channels.address_kind(request.channel)
        if _address(snap, kind) is None:
            decision = _deny_no_address(decision, kind)
        context = {
            "now": now.isoformat(),
            "contact": dict(given.contact),
            "message": dict(given.message),
            "sends": [
                {"at": s.at.isoformat(), "channel": s.channel, "purpose": s.purpose}
                for s in given.sends
            ],
        }
        return decision, context

    def _input(
        self, bundle: Bundle, snap: ContactSnapshot, request: SendInput, now: datetime
    ) -> DecisionInput:
        return self.decision_input(
            bundle,
            snap,
            now,
            channel=request.channel,
            purpose=request.purpose,
            campaign=request.campaign,
            address_kind=self.channels.address_kind(request.channel),
            body_length=len(request.body),
        )

    def decision_input(
        self,
        bundle: Bundle,
        snap: ContactSnapshot,
        now: datetime,
        *,
        channel: str,
        purpose: str,
        campaign: str,
        address_kind: str,
        body_length: int = 0,
    ) -> DecisionInput:
        """The PII-free policy context for one contact and one message (or
        one audience membership, with address kind ``audience``)."""
        zones = timezones.resolve_zones(
            time_zone=snap.time_zone, region=snap.region, phone_e164=snap.phone_e164
        )
        consents = consent.statuses(snap.consents, now)
        state = consent.effective(snap.consents, channel, purpose, now)
        due = consent.confirmation_due(
            snap.consents, channel, snap.confirmations.get(channel)
        )
        contact = {
            "id": snap.contact_id,
            "stage": snap.stage,
            "do_not_contact": snap.do_not_contact,
            "sms_capable": snap.sms_capable,
            "attributes": dict(snap.attributes),
            "time_zones": list(zones.zones),
            "time_zone_source": zones.source,
            "regions": list(zones.regions),
            "consent": consents,
        }
        fields, tier_error = place_in_tier(bundle, contact, now)
        contact.update(fields)
        message = {
            "channel": channel,
            "purpose": purpose,
            "campaign": campaign,
            "consent": state.status,
            "consent_basis": state.basis,
            "consent_entry": state.entry.id if state.entry else 0,
            "opt_out_confirmation_due": due,
            "address_kind": address_kind,
            "body_length": body_length,
        }
        sends = [SendRecord(s.at, s.channel, s.purpose) for s in snap.sends]
        return DecisionInput(
            now=now, contact=contact, message=message, sends=sends,
            tier_error=tier_error,
        )  # fmt: skip

    def _forward(
        self, request: SendInput, snap: ContactSnapshot, response: Mapping[str, Any]
    ) -> dict[str, Any]:
        kind = self.channels.address_kind(request.channel)
        message = OutboundMessage(
            channel=request.channel,
            to=_address(snap, kind) or "",
            body=request.body,
            contact_id=snap.contact_id,
            campaign=request.campaign,
            purpose=request.purpose,
            idempotency_key=request.idempotency_key,
            audit_seq=response["decision"]["audit_seq"],
        )
        result = self.channels.deliver(message)
        delivery = {
            "status": "FORWARDED" if result.provider_message_id else "FAILED",
            "provider_message_id": result.provider_message_id,
            "error": result.error,
        }
        body = {
            "contact_id": snap.contact_id,
            "decision_seq": message.audit_seq,
            "channel": request.channel,
            **delivery,
        }

        def update(seq: int) -> dict[str, Any]:
            return {"delivery": {**delivery, "audit_seq": seq}}

        seq = self.store.complete(request.idempotency_key, body, update)
        log.info(
            "delivery request=%s contact=%s status=%s audit_seq=%d",
            request.request_id,
            snap.contact_id,
            delivery["status"],
            seq,
        )
        return update(seq)

    # -- contacts, consent, events -------------------------------------------

    def upsert_contact(self, given: ContactInput) -> tuple[str, bool]:
        """Create or update a contact; identifiers are normalised first."""
        check_text(given.external_id, "external_id", required=True)
        phone, sms = (None, None)
        if given.phone:
            phone, sms = normalise_phone(given.phone)
        if given.stage and given.stage not in lifecycle.STAGES:
            raise InvalidRequestError(
                "stage", f"must be one of {', '.join(lifecycle.STAGES)}"
            )
        if given.time_zone or given.region:
            _check_location(given.time_zone, given.region.upper())
        attributes = None
        if given.attributes is not None:
            attributes = plain_attributes(given.attributes, "attributes")
            refuse_personal_data(attributes, "attributes")
        fields = ContactFields(
            external_id=given.external_id,
            phone_e164=phone,
            email=normalise_email(given.email) if given.email else None,
            stage=given.stage or None,
            time_zone=given.time_zone or None,
            region=given.region.upper() or None,
            do_not_contact=given.do_not_contact,
            sms_capable=given.sms_capable if given.sms_capable is not None else sms,
            attributes=attributes,
        )
        return self.store.upsert_contact(fields, self._clock())

    def record_consent(
        self,
        ref: ContactRef,
        *,
        channel: str,
        purpose: str,
        granted: bool,
        source: str,
        at: datetime | None = None,
        legal_basis: str = "",
        expires_at: datetime | None = None,
        disclosure_text: str = "",
        pending: bool = False,
        provider_confirmed: bool = False,
    ) -> tuple[str, int]:
        """Append a consent grant or revocation to the ledger and the audit log.

        ``channel`` and ``purpose`` may be ``*`` (every channel or purpose). A
        grant names its legal basis (express written by default); consent
        implied by a purchase or inquiry expires (by default after 18 or 3
        months). Only the SHA-256 of the disclosure text shown is kept. An
        import never turns a revoked consent back on: it is refused. A
        revocation that covers advertising on an ad platform takes the
        contact out of the audiences it may no longer be in, at once.
        """
        check_ref(ref)
        if channel != consent.ALL:
            check_text(channel, "channel", required=True, limit=40)
        if purpose not in (*PURPOSES, consent.ALL):
            raise InvalidRequestError(
                "purpose", f"must be one of {', '.join(PURPOSES)} or *"
            )
        check_text(source, "source", required=True, limit=40)
        basis = legal_basis or ("express_written" if granted else "")
        if granted and basis not in consent.LEGAL_BASES:
            raise InvalidRequestError(
                "legal_basis", f"must be one of {', '.join(consent.LEGAL_BASES)}"
            )
        if len(disclosure_text) > 20_000:
            raise InvalidRequestError(
                "disclosure_text", "is longer than 20000 characters"
            )
        when = self._not_future(at, "at") or self._clock()
        entry = {
            "channel": channel,
            "purpose": purpose,
            "granted": granted,
            "source": source,
            "recorded_at": when,
            "legal_basis": basis,
            "expires_at": (expires_at.astimezone(UTC) if expires_at else None)
            or (consent.default_expiry(basis, when) if granted else None),
            "disclosure_sha256": (
                hashlib.sha256(disclosure_text.encode()).hexdigest()
                if disclosure_text
                else None
            ),
            "pending": pending and granted,
            "provider_confirmed": provider_confirmed and not granted,
        }

        def body(contact_id: str) -> dict[str, Any]:
            expiry = entry["expires_at"]
            assert expiry is None or isinstance(expiry, datetime)
            return {
                **entry,
                "recorded_at": when.isoformat(),
                "expires_at": expiry.isoformat() if expiry else "",
                "disclosure_sha256": entry["disclosure_sha256"] or "",
                "contact_id": contact_id,
            }

        def refuse_regrant(snap: ContactSnapshot) -> None:
            _refuse_regrant(snap, channel, purpose, when)

        # only an import's grant reads the ledger under the contact's lock
        guard = refuse_regrant if granted and _is_import(source) else None
        leaves = not granted and self._covers_advertising(channel, purpose)
        contact_id, seq, _ = self.store.record_consent(
            ref, entry, body, guard, leaves_audiences=leaves
        )
        if leaves:
            self.suppress_audiences(contact_id, revocation=True)
        return contact_id, seq

    def _covers_advertising(self, channel: str, purpose: str) -> bool:
        """Whether consent for (channel, purpose) governs ad audiences."""
        platform = (
            channel == consent.ALL or channel in self.channels.audience_platforms()
        )
        return platform and purpose in (ADVERTISING, consent.ALL)

    def consent_evidence(
        self, ref: ContactRef, channel: str, purpose: str, at: datetime | None = None
    ) -> dict[str, Any]:
        """What the ledger says now for one channel and purpose, the entry
        that decides it, and the whole ledger of the contact."""
        check_ref(ref)
        when = self._clock() if at is None else at.astimezone(UTC)
        snap = self.store.snapshot(ref, None)
        state = consent.effective(snap.consents, channel, purpose, when)
        return {
            "contact_id": snap.contact_id,
            "channel": channel,
            "purpose": purpose,
            "status": state.status,
            "deciding_entry": state.entry.evidence() if state.entry else None,
            "ledger": [e.evidence() for e in snap.consents],
        }

    # -- inbound replies and delivery reports ----------------------------------

    def report_inbound(self, reply: InboundInput) -> dict[str, Any]:
        """Classify a reply, record it, and act on it.

        An opt-out revokes every purpose on every channel at once (one ledger
        entry for ``*``/``*``), marks the contact for removal from every ad
        audience, and is confirmed by exactly one message on the channel it
        came in on, unless the provider confirmed it already. START records an
        express written opt-in on that channel. HELP is answered with the
        program information. Auto-replies and other text change nothing.
        """
        check_text(reply.channel, "channel", required=True, limit=40)
        check_text(reply.provider_message_id, "provider_message_id", required=False)
        seen_key = (
            f"inbound/{reply.channel}/{reply.provider_message_id}"
            if reply.provider_message_id
            else ""
        )
        if seen_key and (seen := self.store.replayed(seen_key)) is not None:
            return {**seen[1], "replayed": True}  # a provider's retry: answered once
        kind = self.channels.address_kind(reply.channel)
        sender = _normalise_address(kind, reply.sender)
        found = classify(
            reply.text[:5000], headers=reply.headers, subject=reply.subject
        )
        now = self._clock()
        when = self._not_future(reply.received_at, "received_at") or now
        refs = self.store.find_by_address(kind, sender)
        ids = [r.contact_id for r in refs]
        seq = self.store.append_audit(
            "inbound",
            {
                "contact_id": ids[0] if ids else "",
                "contact_ids": ids,
                "channel": reply.channel,
                "intent": str(found.intent),
                "keyword": found.keyword,
                "rule": found.rule,
                "received_at": when.isoformat(),
            },
        )
        answer: dict[str, Any] = {
            "intent": str(found.intent),
            "keyword": found.keyword,
            "rule": found.rule,
            "contact_id": ids[0] if ids else "",
            "audit_seq": seq,
            "reply": None,
        }
        log.info(
            "inbound channel=%s contacts=%s intent=%s audit_seq=%d",
            reply.channel, ",".join(ids) or "-", found.intent, seq,
        )  # fmt: skip
        if refs:
            answer["reply"] = self._act_on(reply, refs, found.intent, seq)
        if seen_key:
            self._remember(seen_key, answer)
        return answer

    def _not_future(self, moment: datetime | None, field_name: str) -> datetime | None:
        """Refuse a caller's time in the future: consent is ordered by time,
        so a future-dated entry would outrank every later one. (With the
        unsafe client clock the caller owns the clock, and this is not checked.)"""
        if moment is None:
            return None
        moment = moment.astimezone(UTC)
        if not self.unsafe_client_clock and moment > self._clock() + CLOCK_SKEW:
            raise InvalidRequestError(field_name, "is in the future")
        return moment

    def _remember(self, key: str, answer: Mapping[str, Any]) -> None:
        """Keep the answer to a provider's reply id, to answer its retries."""
        if not self.store.remember(key, answer, self._clock()):
            log.info("a provider retried a reply while it was being handled")

    def _act_on(
        self, reply: InboundInput, refs: list[ContactRef], intent: Intent, seq: int
    ) -> dict[str, Any] | None:
        """Act for every contact holding the address; answer the address once.
        Consent changes are recorded at processing time, never at a time the
        provider or caller gave, so a reply cannot be ordered before a grant
        it answers."""
        if intent is Intent.OPT_OUT:
            for ref in refs:
                self.record_consent(  # which also empties its ad audiences
                    ref, channel=consent.ALL, purpose=consent.ALL, granted=False,
                    source="keyword", provider_confirmed=reply.provider_confirmed,
                )  # fmt: skip
            if reply.provider_confirmed:
                return None
            return self._program_reply(
                reply, refs[0], "opt_out_confirmation", self.program.opt_out_text, seq
            )
        if intent is Intent.OPT_IN:
            for ref in refs:
                self.record_consent(
                    ref, channel=reply.channel, purpose=consent.ALL, granted=True,
                    source="keyword", legal_basis="express_written",
                    disclosure_text=self.program.opt_in_disclosure,
                )  # fmt: skip
            return self._program_reply(
                reply, refs[0], "transactional", self.program.opt_in_text, seq
            )
        if intent is Intent.HELP:
            return self._program_reply(
                reply, refs[0], "transactional", self.program.help_text, seq
            )
        return None

    def _program_reply(
        self, reply: InboundInput, ref: ContactRef, purpose: str, body: str, seq: int
    ) -> dict[str, Any]:
        """Answer a keyword through the ordinary path: decided and audited.
        The key names the reply's audit record, not the provider's id (which
        may be derived from the sender's number)."""
        request = SendInput(
            contact=ref,
            channel=reply.channel,
            purpose=purpose,
            campaign=f"keyword-{purpose}",
            body=body,
            idempotency_key=f"reply/{reply.channel}/{seq}",
            request_id=f"reply-{purpose}",
        )
        return self.send(request)

    def record_delivery_report(self, channel: str, report: DeliveryReport) -> int:
        """Append a provider's delivery report against the original decision."""
        if report.status not in DELIVERY_REPORT_STATUSES:
            raise InvalidRequestError(
                "status", f"must be one of {', '.join(DELIVERY_REPORT_STATUSES)}"
            )
        check_text(report.detail, "detail", required=False)
        if not 0 < report.audit_seq < 2**63:
            raise InvalidRequestError("audit_seq", "is out of range")
        decision = self.store.audit_record(report.audit_seq)
        if (
            decision is None
            or decision.kind != "decision"
            or decision.body.get("outcome") != "ALLOW"
            or decision.body.get("channel") != channel
        ):
            raise InvalidRequestError(
                "audit_seq",
                f"{report.audit_seq} is not a message allowed on channel {channel!r}",
            )
        return self.store.append_audit(
            "delivery_report",
            {
                "decision_seq": report.audit_seq,
                "contact_id": decision.body.get("contact_id", ""),
                "channel": channel,
                "status": report.status,
                "detail": report.detail,
            },
        )

    def record_event(
        self,
        ref: ContactRef,
        *,
        kind: str,
        attributes: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> tuple[str, str, int]:
        """Record an event; the contact's stage follows (see `lifecycle`)."""
        check_ref(ref)
        check_text(kind, "kind", required=True, limit=60)
        plain = plain_attributes(attributes or {}, "attributes")
        refuse_personal_data(plain, "attributes")
        when = self._clock() if at is None else at.astimezone(UTC)
        entry = {"kind": kind, "attributes": plain, "occurred_at": when}
        touch = _touch(kind, plain, when)

        def body(contact_id: str, stage: str) -> dict[str, Any]:
            return {
                "contact_id": contact_id,
                "kind": kind,
                "stage": stage,
                "occurred_at": when.isoformat(),
            }

        contact_id, stage, seq = self.store.record_event(
            ref, entry, lambda stage: lifecycle.stage_after(stage, kind), body, touch
        )
        self.suppress_audiences(contact_id)
        return contact_id, stage, seq

    def suppress_audiences(self, contact_id: str, *, revocation: bool = False) -> int:
        """Take the contact out of every ad audience it may no longer be in,
        at once (a conversion, a pipeline entry, an opt-out ...); after a
        `revocation` of advertising consent, clear its removal mark once
        done. Returns how many audiences it left."""
        from gateway.audiences import AudienceSync  # built on this module

        if not self.channels.audience_platforms():
            return 0
        reports = AudienceSync(self).suppress(
            contact_id, self._clock(), revocation=revocation
        )
        return sum(r.removed for r in reports)


def _touch(
    kind: str, attributes: Mapping[str, Any], when: datetime
) -> Reservation | None:
    """A ``touch`` event is a message sent outside the gateway (a call, a
    mailing); it carries ``channel`` and ``purpose`` and counts against caps."""
    if kind != TOUCH_EVENT:
        return None
    channel, purpose = attributes.get("channel"), attributes.get("purpose")
    if not isinstance(channel, str) or not channel or len(channel) > 40:
        raise InvalidRequestError(
            "attributes.channel", "a touch event needs the channel it used"
        )
    if purpose not in PURPOSES:
        raise InvalidRequestError(
            "attributes.purpose", f"must be one of {', '.join(PURPOSES)}"
        )
    campaign = str(attributes.get("campaign", ""))[:MAX_NAME]
    return Reservation(channel, str(purpose), campaign, when)


def _is_import(source: str) -> bool:
    return "import" in source.strip().lower()


def _refuse_regrant(
    snap: ContactSnapshot, channel: str, purpose: str, when: datetime
) -> None:
    """Refuse an import that would re-grant any revoked pair it covers,
    wildcards included (``*`` covers every channel or purpose)."""
    channels = {e.channel for e in snap.consents} | {channel, "(any other)"}
    purposes = {e.purpose for e in snap.consents} | {purpose, *PURPOSES}
    for c in sorted(channels - {consent.ALL}):
        for p in sorted(purposes - {consent.ALL}):
            if channel not in (c, consent.ALL) or purpose not in (p, consent.ALL):
                continue
            current = consent.effective(snap.consents, c, p, when)
            if current.status == "revoked" and current.entry is not None:
                raise ConsentConflictError(
                    f"{c}:{p} consent was revoked on "
                    f"{current.entry.recorded_at:%Y-%m-%d} (source "
                    f"{current.entry.source}); an import cannot grant it again, "
                    "only a new consent from the contact can"
                )


def _normalise_address(kind: str, raw: str) -> str:
    if kind == "phone":
        return normalise_phone(raw, "from")[0]
    return normalise_email(raw, "from")


def check_ref(ref: ContactRef, field: str = "contact") -> None:
    """Refuse a contact reference that names nobody or holds what looks like
    personal data; `field` names it in the error."""
    if not (ref.external_id or ref.contact_id):
        raise InvalidRequestError(field, "is required (external_id or contact_id)")
    check_text(ref.external_id, f"{field}.external_id", required=False)
    if not CONTACT_ID.fullmatch(ref.contact_id):
        check_text(ref.contact_id, f"{field}.contact_id", required=False, limit=40)


def _check_location(zone: str, region: str) -> None:
    """Refuse a time zone or region the resolver would not accept later."""
    checks = (("time_zone", zone, None), ("region", None, region))
    for name, time_zone, where in checks:
        if not (time_zone or where):
            continue
        try:
            timezones.resolve_zones(time_zone=time_zone, region=where, phone_e164=None)
        except ValueError as exc:
            raise InvalidRequestError(name, str(exc)) from exc


def _address(snap: ContactSnapshot, kind: str) -> str | None:
    return snap.phone_e164 if kind == "phone" else snap.email


def _deny_no_address(decision: Decision, kind: str) -> Decision:
    reason = Reason(
        rule_id=NO_ADDRESS_RULE,
        policy_id="gateway",
        effect="deny",
        message=f"The contact has no {kind} address for this channel.",
        citation="Tollgate gateway: a message needs an address to go anywhere",
    )
    return replace(
        decision, outcome="DENY", reasons=(*decision.reasons, reason), not_before=None
    )


def _digest(request: SendInput) -> str:
    fields = asdict(request)
    fields.pop("request_id")
    fields["at"] = request.at.isoformat() if request.at else None
    raw = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()


def _reservation(
    request: SendInput, decision: Decision, now: datetime
) -> Reservation | None:
    if decision.outcome != "ALLOW":
        return None
    return Reservation(request.channel, request.purpose, request.campaign, now)


def _reason_dict(reason: Reason) -> dict[str, Any]:
    return {
        "rule_id": reason.rule_id,
        "policy_id": reason.policy_id,
        "effect": reason.effect,
        "message": reason.message,
        "citation": reason.citation,
        "not_before": reason.not_before.isoformat() if reason.not_before else "",
        "mode": reason.mode,
    }


def explanation(decision: Decision) -> list[dict[str, Any]]:
    """The decision's trace as plain data: policies, variables, rules."""
    return [
        {
            "policy_id": p.policy_id,
            "status": p.status,
            "error": p.error,
            "variables": p.variables,
            "rules": [
                {
                    "rule_id": r.rule_id,
                    "kind": r.kind,
                    "effect": r.effect,
                    "mode": r.mode,
                    "fired": r.fired,
                    "error": r.error,
                    "not_before": r.not_before.isoformat() if r.not_before else "",
                    "detail": r.detail,
                }
                for r in p.rules
            ],
        }
        for p in decision.trace
    ]


def _response(
    request: SendInput,
    decision: Decision,
    contact_id: str,
    now: datetime,
    audit_seq: int,
) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "replayed": False,
        "decision": {
            "outcome": decision.outcome,
            "not_before": decision.not_before.isoformat()
            if decision.not_before
            else "",
            "reasons": [_reason_dict(r) for r in decision.reasons],
            "warnings": [_reason_dict(r) for r in decision.warnings],
            "bundle_hash": decision.bundle_hash,
            "audit_seq": audit_seq,
            "contact_id": contact_id,
            "decided_at": now.isoformat(),
        },
        "delivery": {"status": "NOT_ATTEMPTED", "provider_message_id": "", "error": ""},
    }


def _audit_body(
    request: SendInput,
    decision: Decision,
    contact_id: str,
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """The decision's audit record: PII-free, enough to replay the decision."""
    return {
        "contact_id": contact_id,
        "request_id": request.request_id,
        "idempotency_key": request.idempotency_key,
        "channel": request.channel,
        "purpose": request.purpose,
        "campaign": request.campaign,
        "outcome": decision.outcome,
        "not_before": decision.not_before.isoformat() if decision.not_before else "",
        "bundle_hash": decision.bundle_hash,
        # every rule that fired or errored, enforced or not (warn, shadow)
        "reasons": [
            {"rule_id": r.rule_id, "effect": r.effect, "mode": r.mode}
            for r in (*decision.reasons, *decision.reported)
        ],
        "context": dict(context),
    }


def _log_decision(request: SendInput, response: Mapping[str, Any]) -> None:
    decision = response["decision"]
    log.info(
        "decision request=%s contact=%s outcome=%s rules=%s audit_seq=%d",
        request.request_id,
        decision["contact_id"],
        decision["outcome"],
        ",".join(r["rule_id"] for r in decision["reasons"]) or "-",
        decision["audit_seq"],
    )
