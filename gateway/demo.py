"""The main job: a real campaign routed through a real gateway, end to end.

`run` starts the gateway on an embedded SQLite file and a free loopback port,
imports the 4,521 customers of the UCI Bank Marketing data set as contacts over
gRPC, replays a term-deposit promotion to every one of them on SendStream, and
summarises what was allowed, deferred and denied, what reached the outbox, and
whether the audit chain verifies.

Data: S. Moro, R. Laureano and P. Cortez, "Using Data Mining for Bank Direct
Marketing: An Application of the CRISP-DM Methodology", ESM'2011, pp. 117-121
(UCI Machine Learning Repository, CC BY 4.0). The mapping of its columns to
Tollgate's contact model is documented in `CONTACT_MAPPING` and the README.
Phone numbers are synthetic: the fictional 555-01XX lines of US area codes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

import audit
from gateway.app import Settings, build_gateway
from gateway.callbacks import CallbackServer
from gateway.kannel_local import LocalKannel
from gateway.server import build_server
from gateway.service import Gateway
from gateway.store import ContactRef, Store
from tollgate.v1 import gateway_pb2 as pb
from tollgate.v1 import gateway_pb2_grpc as pb_grpc

CAMPAIGN = "term-deposit-2026-12"
SHORT_CODE = "12345"
BODY = (
    "Grow your savings: our 12-month term deposit pays 3.1% a year. "
    "Reply YES to hear more. Reply STOP to opt out."
)
CONTACT_MAPPING = {
    "y = yes": "stage converted (already subscribed the term deposit)",
    "poutcome = other, or pdays 0-30": "stage in_pipeline (an open conversation)",
    "previous > 0": "stage engaged (reached by an earlier campaign)",
    "otherwise": "stage new",
    "contact = cellular": "mobile number, can receive SMS",
    "contact = telephone": "landline number, cannot receive SMS",
    "contact = unknown": "no phone number on file",
    "campaign = n": "n - 1 (at most 3) calls in the 24 hours before the promotion",
    "default = yes": "do-not-contact (credit in default: no marketing)",
}
# Area codes spread over every US time zone and the three states with an
# 8 p.m. limit (FL, OK, MD); 500 is non-geographic, so every US zone applies.
AREA_CODES = (
    "212", "646", "718", "617", "215", "202", "404", "919", "803", "313",
    "305", "407", "813", "850", "410", "301", "405", "918", "312", "214",
    "713", "615", "504", "612", "915", "303", "801", "602", "623", "702",
    "213", "415", "619", "206", "503", "808", "907", "500",
)  # fmt: skip
STATE_OF = {
    "212": "US-NY", "305": "US-FL", "405": "US-OK", "410": "US-MD",
    "415": "US-CA", "602": "US-AZ", "713": "US-TX", "808": "US-HI",
}  # fmt: skip


@dataclass(frozen=True)
class Customer:
    """One row of the data set, mapped to the contact model."""

    external_id: str
    stage: str
    phone: str
    sms_capable: bool
    region: str
    do_not_contact: bool
    consent: str  # "granted", "revoked" or "none"
    prior_calls: int
    attributes: Mapping[str, Any]


def default_csv() -> Path:
    """The copy of the data set shipped with Tollgate (data/bank-marketing)."""
    root = Path(str(resources.files("gateway"))).parent
    return root / "data" / "bank-marketing" / "bank.csv"


def load_customers(path: Path, limit: int = 0) -> list[Customer]:
    """Read the CSV and map every row; deterministic for a given file."""
    rng = random.Random(2011)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    if limit:
        rows = rows[:limit]
    phones = _phone_numbers()
    return [_customer(i, row, rng, phones) for i, row in enumerate(rows)]


def _phone_numbers() -> Iterator[str]:
    for line in range(100, 200):
        for area in AREA_CODES:
            yield f"+1{area}555{line:04d}"


def _stage(row: Mapping[str, str]) -> str:
    pdays = int(row["pdays"])
    if row["y"] == "yes":
        return "converted"
    if row["poutcome"] == "other" or 0 <= pdays <= 30:
        return "in_pipeline"
    if int(row["previous"]) > 0:
        return "engaged"
    return "new"


def _customer(
    index: int, row: Mapping[str, str], rng: random.Random, phones: Iterator[str]
) -> Customer:
    phone = "" if row["contact"] == "unknown" else next(phones)
    region = ""
    roll = rng.random()
    if phone and roll < 0.15:
        region = STATE_OF.get(phone[2:5], "")  # the address agrees with the number
    elif phone and roll < 0.20:
        region = "US-FL"  # moved to Florida, kept their old number
    consent_roll = rng.random()
    consent = (
        "granted"
        if consent_roll < 0.82
        else "none"
        if consent_roll < 0.92
        else "revoked"
    )
    return Customer(
        external_id=f"bank-{index + 1:04d}",
        stage=_stage(row),
        phone=phone,
        sms_capable=row["contact"] != "telephone",
        region=region,
        do_not_contact=row["default"] == "yes",
        consent=consent,
        prior_calls=min(int(row["campaign"]) - 1, 3),
        attributes={
            "age": int(row["age"]),
            "job": row["job"],
            "balance_eur": int(row["balance"]),
        },
    )


@dataclass
class Summary:
    at: datetime
    customers: int
    port: int
    store_url: str
    bundle_hash: str
    outcomes: Counter[str] = field(default_factory=Counter)
    rules: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    clears: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    stages: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    forwarded: int = 0
    outbox_lines: int = 0
    outbox_path: str = ""
    channel: str = ""
    allowed_ids: set[str] = field(default_factory=set)
    sent_via_kannel: int = 0
    inbound: dict[str, int] = field(default_factory=dict)
    delivery_reports: dict[str, int] = field(default_factory=dict)
    opted_out_everywhere: int = 0
    chain_ok: bool = False
    chain_text: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def report(self) -> str:
        return "\n".join(_report_lines(self))

    def to_json(self) -> dict[str, Any]:
        """The figures of the report, for scripts and the end-to-end test."""
        return {
            "at": self.at.isoformat(),
            "customers": self.customers,
            "bundle_hash": self.bundle_hash,
            "outcomes": dict(self.outcomes),
            "rules": {outcome: dict(rules) for outcome, rules in self.rules.items()},
            "stages": dict(self.stages),
            "errors": self.errors,
            "forwarded": self.forwarded,
            "outbox_lines": self.outbox_lines,
            "channel": self.channel,
            "sent_via_kannel": self.sent_via_kannel,
            "inbound": self.inbound,
            "delivery_reports": self.delivery_reports,
            "opted_out_everywhere": self.opted_out_everywhere,
            "chain_ok": self.chain_ok,
            "seconds": self.seconds,
        }


def run(
    *,
    data_dir: Path,
    at: datetime,
    limit: int = 0,
    csv_path: Path | None = None,
    use_kannel: bool | None = None,
) -> Summary:
    """Run the whole demo; see the module docstring.

    SMS goes through a real Kannel (bearerbox and smsbox on loopback, with its
    fake SMSC) when Kannel is installed, else to the outbox file; the summary
    says which. `use_kannel` forces one or the other.
    """
    customers = load_customers(csv_path or default_csv(), limit)
    _fresh(data_dir)
    kannel_wanted = LocalKannel.available() if use_kannel is None else use_kannel
    with contextlib.ExitStack() as stack:
        callbacks = CallbackServer()
        stack.callback(callbacks.stop)
        settings = Settings(
            data_dir=data_dir,
            outbox_channels="" if kannel_wanted else "sms",
            unsafe_client_clock=True,
            callback_url=callbacks.url,
        )
        kannel = None
        if kannel_wanted:
            kannel = stack.enter_context(
                LocalKannel(data_dir / "kannel", f"{callbacks.url}/sms/mo")
            )
            settings.plugin_overrides = {
                "kannel_sendsms_url": kannel.sendsms_url,
                "kannel_username": kannel.username,
                "kannel_password": kannel.password,
                "kannel_from": SHORT_CODE,
            }
        gateway = build_gateway(settings)
        stack.callback(gateway.store.close)
        callbacks.attach(gateway)
        callbacks.start()
        summary = _route(gateway, customers, at, settings, kannel)
    summary_path = data_dir / "summary.json"
    summary_path.write_text(json.dumps(summary.to_json(), indent=2), encoding="utf-8")
    return summary


def _route(
    gateway: Gateway,
    customers: Sequence[Customer],
    at: datetime,
    settings: Settings,
    kannel: LocalKannel | None,
) -> Summary:
    server, port = build_server(gateway, "127.0.0.1:0")
    server.start()
    summary = Summary(
        at, len(customers), port, settings.store_url(), gateway.bundle.hash
    )
    summary.channel = (
        "Kannel 1.4.5 (bearerbox and smsbox on 127.0.0.1, fake SMSC)"
        if kannel
        else "the outbox file (Kannel is not installed)"
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            started = time.perf_counter()
            _import(stub, customers, at)
            summary.seconds["import"] = time.perf_counter() - started
            started = time.perf_counter()
            _campaign(stub, customers, at, summary)
            summary.seconds["campaign"] = time.perf_counter() - started
            if kannel is not None:
                _replies(kannel, gateway, customers, summary)
    finally:
        server.stop(grace=2).wait()
    summary.stages = Counter(c.stage for c in customers)
    _check_outbox(settings.data_dir / "outbox.jsonl", summary)
    _verify(gateway.store, summary)
    return summary


def _replies(
    kannel: LocalKannel,
    gateway: Gateway,
    customers: Sequence[Customer],
    summary: Summary,
) -> None:
    """Through Kannel: wait for what was sent, then a few customers reply STOP
    (and one HELP) from their phones; the replies come back through Kannel's
    MO callback, the gateway opts them out everywhere and confirms once."""
    kannel.wait_for_mt(summary.forwarded, timeout=60)
    reached = [c for c in customers if c.external_id in summary.allowed_ids][:4]
    for customer, text in zip(reached, ("STOP", "STOP", "STOP", "help"), strict=False):
        kannel.inject_mo(customer.phone, SHORT_CODE, text)
    expected = summary.forwarded + len(reached)
    summary.sent_via_kannel = len(kannel.wait_for_mt(expected, timeout=30))
    # Kannel reports each message twice: accepted by the SMSC, then delivered
    _wait_for_records(gateway, len(reached), 2 * expected)
    records = list(gateway.store.audit_records())
    summary.inbound = _count(r.body["intent"] for r in records if r.kind == "inbound")
    summary.delivery_reports = _count(
        r.body["status"] for r in records if r.kind == "delivery_report"
    )
    summary.opted_out_everywhere = sum(
        _opted_out_everywhere(gateway, c) for c in reached[:3]
    )


def _wait_for_records(gateway: Gateway, replies: int, reports: int) -> None:
    """Bounded wait for Kannel's callbacks (replies, delivery reports)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kinds = Counter(r.kind for r in gateway.store.audit_records())
        if kinds["inbound"] >= replies and kinds["delivery_report"] >= reports:
            return
        time.sleep(0.2)


def _count(values: Iterator[Any]) -> dict[str, int]:
    return dict(Counter(str(v) for v in values))


def _opted_out_everywhere(gateway: Gateway, customer: Customer) -> bool:
    ref = ContactRef(external_id=customer.external_id)
    return all(
        gateway.consent_evidence(ref, channel, "marketing")["status"] == "revoked"
        for channel in ("sms", "email", "voice")
    )


def _fresh(data_dir: Path) -> None:
    """Empty the demo folder so runs never mix (only Tollgate's own files)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    owned = ("tollgate.db", "tollgate.db-wal", "tollgate.db-shm", "outbox.jsonl")
    for name in (*owned, "summary.json"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.rmtree(data_dir / "tmp", ignore_errors=True)


def _stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(values))
    return out


def _import(
    stub: pb_grpc.GatewayStub, customers: Sequence[Customer], at: datetime
) -> None:
    """Create every contact, its consent and its prior calls over gRPC."""
    consent_at = at - timedelta(days=30)
    for c in customers:
        stub.UpsertContact(
            pb.UpsertContactRequest(
                external_id=c.external_id,
                phone=c.phone,
                stage=pb.Stage.Value("STAGE_" + c.stage.upper()),
                region=c.region,
                do_not_contact=c.do_not_contact,
                sms_capable=c.sms_capable,
                attributes=_struct(c.attributes),
            )
        )
        ref = pb.ContactRef(external_id=c.external_id)
        if c.consent != "none":
            _consent(stub, ref, True, "web_form", consent_at)
        if c.consent == "revoked":
            _consent(stub, ref, False, "keyword", consent_at + timedelta(days=9))
        for k in range(c.prior_calls):
            stub.RecordEvent(
                pb.RecordEventRequest(
                    contact=ref,
                    kind="touch",
                    attributes=_struct(
                        {
                            "channel": "voice",
                            "purpose": "marketing",
                            "campaign": "term-deposit-calls",
                        }
                    ),
                    at=_stamp(at - timedelta(hours=2 + 5 * k)),
                )
            )


def _consent(
    stub: pb_grpc.GatewayStub,
    ref: pb.ContactRef,
    granted: bool,
    source: str,
    at: datetime,
) -> None:
    stub.RecordConsent(
        pb.RecordConsentRequest(
            contact=ref,
            channel="sms",
            purpose=pb.PURPOSE_MARKETING,
            granted=granted,
            source=source,
            at=_stamp(at),
        )
    )


def _campaign(
    stub: pb_grpc.GatewayStub,
    customers: Sequence[Customer],
    at: datetime,
    summary: Summary,
) -> None:
    """Stream the promotion to every customer and tally the answers."""

    def requests() -> Iterator[pb.SendRequest]:
        for c in customers:
            yield pb.SendRequest(
                request_id=c.external_id,
                contact=pb.ContactRef(external_id=c.external_id),
                channel="sms",
                purpose=pb.PURPOSE_MARKETING,
                campaign=CAMPAIGN,
                body=BODY,
                idempotency_key=f"{CAMPAIGN}/{c.external_id}",
                at=_stamp(at),
            )

    for response in stub.SendStream(requests()):
        _tally(response, summary)


def _tally(response: pb.SendResponse, summary: Summary) -> None:
    if response.error:
        summary.errors.append(f"{response.request_id}: {response.error}")
        return
    decision = response.decision
    outcome = pb.Outcome.Name(decision.outcome)
    summary.outcomes[outcome] += 1
    deciding = ("deny", "error") if outcome == "DENY" else ("defer",)
    for reason in decision.reasons:
        if reason.effect not in deciding:
            continue
        summary.rules[outcome][reason.rule_id] += 1
        if reason.HasField("not_before"):
            summary.clears[reason.rule_id].append(
                reason.not_before.ToDatetime(tzinfo=UTC)
            )
    if response.delivery.status == pb.FORWARDED:
        summary.forwarded += 1
        summary.allowed_ids.add(response.request_id)


def _check_outbox(path: Path, summary: Summary) -> None:
    summary.outbox_path = str(path)
    if path.exists():
        with path.open(encoding="utf-8") as lines:
            summary.outbox_lines = sum(1 for line in lines if json.loads(line))


def _verify(store: Store, summary: Summary) -> None:
    try:
        result = audit.verify_chain(store.audit_records())
    except audit.ChainBrokenError as exc:
        summary.chain_text = f"FAILED: {exc}"
        return
    summary.chain_ok = True
    summary.chain_text = (
        f"verified: {result.count} records, intact from seq 1 to {result.head_seq} "
        f"(head {result.head_hash[:16]}...)"
    )


def _report_lines(s: Summary) -> Iterator[str]:
    total = sum(s.outcomes.values())
    yield "Tollgate demo: term-deposit promotion by SMS"
    yield (
        f"  {s.customers} customers of the UCI Bank Marketing data set "
        "(Moro, Laureano and Cortez, ESM'2011)"
    )
    yield (
        f"  campaign clock {s.at.strftime('%Y-%m-%d %H:%M UTC')}; "
        f"gateway on 127.0.0.1:{s.port}"
    )
    yield f"  policy bundle {s.bundle_hash[:16]}...; store {s.store_url}"
    yield "  contacts by stage: " + ", ".join(
        f"{k} {v}" for k, v in sorted(s.stages.items())
    )
    yield ""
    yield "Decisions"
    for outcome in ("ALLOW", "DEFER", "DENY"):
        count = s.outcomes[outcome]
        yield f"  {outcome:<6} {count:>6}  ({100 * count / max(total, 1):.1f}%)"
    if s.errors:
        yield f"  refused as malformed: {len(s.errors)} (first: {s.errors[0]})"
    yield ""
    yield "Denied, by rule (a message may be denied by several rules)"
    for rule, count in s.rules["DENY"].most_common():
        yield f"  {rule:<40} {count:>6}"
    yield ""
    yield "Deferred, by rule, and when each rule clears"
    for rule, count in s.rules["DEFER"].most_common():
        times = s.clears.get(rule, [])
        when = (
            f"from {min(times):%Y-%m-%d %H:%M} to {max(times):%Y-%m-%d %H:%M} UTC"
            if times
            else "held until a time zone is known"
        )
        yield f"  {rule:<40} {count:>6}  {when}"
    yield ""
    yield "What left the gateway"
    yield f"  SMS went through {s.channel}"
    yield f"  forwarded: {s.forwarded}"
    if s.sent_via_kannel:
        yield (
            f"  messages Kannel's SMSC received: {s.sent_via_kannel} (the campaign, "
            "then the answers to the replies below)"
        )
        reports = ", ".join(f"{k} {v}" for k, v in sorted(s.delivery_reports.items()))
        yield f"  delivery reports, recorded against their decisions: {reports}"
        replies = ", ".join(f"{k} {v}" for k, v in sorted(s.inbound.items()))
        yield f"  replies from customers' phones through Kannel: {replies or 'none'}"
        yield (
            f"  opted out on every channel at once after STOP: {s.opted_out_everywhere}"
        )
    else:
        yield f"  lines in {s.outbox_path}: {s.outbox_lines}"
        if s.outbox_lines != s.forwarded or s.outbox_lines != s.outcomes["ALLOW"]:
            yield "  WARNING: the outbox does not match the allowed messages"
    yield ""
    yield f"Audit chain: {s.chain_text}"
    yield (
        f"Timing: import {s.seconds.get('import', 0):.1f} s, "
        f"campaign {s.seconds.get('campaign', 0):.1f} s "
        f"({total / max(s.seconds.get('campaign', 1e-9), 1e-9):.0f} decisions/s)"
    )
