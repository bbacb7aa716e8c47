"""The main job: a real campaign routed through a real gateway, end to end.

`run` starts the gateway on an embedded SQLite file and a free loopback port,
imports the 4,521 customers of the UCI Bank Marketing data set as contacts over
gRPC, replays a term-deposit promotion to every one of them on SendStream, then
syncs the audience tiers to local stand-ins of Meta and Google
(`gateway.ad_platforms_local`) on SyncAudience and records conversions for a
sample of the synced contacts on RecordEvent, reading from the stand-ins' own
state that the converted left their tier's audiences on both platforms. It
summarises what was allowed, deferred and denied, what left the gateway, what
the audiences hold, and whether the audit chain verifies.

Data: S. Moro, R. Laureano and P. Cortez, "Using Data Mining for Bank Direct
Marketing: An Application of the CRISP-DM Methodology", ESM'2011, pp. 117-121
(UCI Machine Learning Repository, CC BY 4.0). The mapping of its columns to
Tollgate's contact model is documented in `CONTACT_MAPPING` and the README.
Phone numbers are synthetic: the fictional 555-01XX lines of US area codes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import random
import secrets
import shutil
import statistics
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
from gateway.ad_platforms_local import LocalGoogle, LocalMeta, serve
from gateway.app import Settings, build_gateway
from gateway.callbacks import CallbackServer
from gateway.kannel_local import LocalKannel
from gateway.policy import Tier
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
# Advertising consent is not in the data set either: a customer ticked the web
# form's ads box (consent for purpose advertising on meta and on google) with
# this probability, drawn from a generator of its own so that the SMS figures
# are those of a run without ads.
AD_CONSENT_SHARE = 0.6
AD_CONSENT_SEED = 5
AD_PLATFORMS = ("meta", "google")
GOOGLE_OPERATING_ACCOUNT = "4521000000"  # the stand-in's Google Ads customer id
# Conversions after the campaign: a fixed-seed sample of the contacts that are
# in these tiers' audiences on both platforms.
CONVERSIONS = 100
CONVERSION_SEED = 7
CONVERTING_TIERS = ("new-high-intent", "engaged-non-converter")
EXPANSION_TIER = "customer-expansion"
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
    ad_consent: bool  # advertising, on meta and on google


@dataclass
class AdPlatforms:
    """The local stand-ins of Meta and Google the demo syncs audiences to."""

    meta: LocalMeta
    google: LocalGoogle

    @classmethod
    def new(cls) -> AdPlatforms:
        return cls(
            LocalMeta(token=secrets.token_hex(16)),
            LocalGoogle(
                token=secrets.token_hex(16),
                operating_account=GOOGLE_OPERATING_ACCOUNT,
                require_consent=True,
            ),
        )

    def start(self, stack: contextlib.ExitStack) -> dict[str, str]:
        """Serve both on loopback until `stack` closes; return the settings
        that point the meta and google plugins at them."""
        meta_url = stack.enter_context(serve(self.meta))
        google_url = stack.enter_context(serve(self.google))
        return {
            "meta_base_url": meta_url,
            "meta_access_token": self.meta.token,
            "google_base_url": google_url,
            "google_access_token": self.google.token,
            "google_operating_account": self.google.operating_account,
            # the ingest requests state the DMA consent, which the stand-in checks
            "google_eea": "true",
        }

    def of(self, platform: str) -> LocalMeta | LocalGoogle:
        return self.meta if platform == "meta" else self.google

    def sizes(self) -> dict[str, dict[str, int]]:
        """Digests held per platform and audience, from the platforms' state."""
        sizes = {}
        for platform in AD_PLATFORMS:
            local = self.of(platform)
            with local.lock:
                sizes[platform] = {
                    a: len(d) for a, d in sorted(local.audiences.items())
                }
        return sizes


def _digests(phone: str) -> dict[str, str]:
    """What each platform holds for a phone number in E.164, as its documents
    ask (computed here, not by the plugins, to check them): Meta the SHA-256
    of the digits with the country code and no plus, Google that of the E.164
    form with the plus."""
    return {
        "meta": hashlib.sha256(phone[1:].encode()).hexdigest(),
        "google": hashlib.sha256(phone.encode()).hexdigest(),
    }


def default_csv() -> Path:
    """The copy of the data set shipped with Tollgate (data/bank-marketing)."""
    root = Path(str(resources.files("gateway"))).parent
    return root / "data" / "bank-marketing" / "bank.csv"


def load_customers(path: Path, limit: int = 0) -> list[Customer]:
    """Read the CSV and map every row; deterministic for a given file."""
    rng = random.Random(2011)
    ads = random.Random(AD_CONSENT_SEED)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    if limit:
        rows = rows[:limit]
    phones = _phone_numbers()
    return [_customer(i, row, rng, ads, phones) for i, row in enumerate(rows)]


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
    index: int,
    row: Mapping[str, str],
    rng: random.Random,
    ads: random.Random,
    phones: Iterator[str],
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
        ad_consent=ads.random() < AD_CONSENT_SHARE,
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
    ad_consent: int = 0
    audiences: list[dict[str, Any]] = field(default_factory=list)
    conversions: dict[str, Any] = field(default_factory=dict)
    platform_audiences: dict[str, dict[str, int]] = field(default_factory=dict)
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
            "ad_consent": self.ad_consent,
            "audiences": self.audiences,
            "conversions": self.conversions,
            "platform_audiences": self.platform_audiences,
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
    ad_platforms: AdPlatforms | None = None,
) -> Summary:
    """Run the whole demo; see the module docstring.

    SMS goes through a real Kannel (bearerbox and smsbox on loopback, with its
    fake SMSC) when Kannel is installed, else to the outbox file; the summary
    says which. `use_kannel` forces one or the other. Audiences go to local
    stand-ins of Meta and Google on loopback: `ad_platforms` if given (a test
    reads their state afterwards), else new ones.
    """
    customers = load_customers(csv_path or default_csv(), limit)
    _fresh(data_dir)
    kannel_wanted = LocalKannel.available() if use_kannel is None else use_kannel
    platforms = ad_platforms or AdPlatforms.new()
    with contextlib.ExitStack() as stack:
        callbacks = CallbackServer()
        stack.callback(callbacks.stop)
        settings = Settings(
            data_dir=data_dir,
            outbox_channels="" if kannel_wanted else "sms",
            unsafe_client_clock=True,
            callback_url=callbacks.url,
        )
        settings.plugin_overrides = platforms.start(stack)
        kannel = None
        if kannel_wanted:
            kannel = stack.enter_context(
                LocalKannel(data_dir / "kannel", f"{callbacks.url}/sms/mo")
            )
            settings.plugin_overrides |= {
                "kannel_sendsms_url": kannel.sendsms_url,
                "kannel_username": kannel.username,
                "kannel_password": kannel.password,
                "kannel_from": SHORT_CODE,
            }
        gateway = build_gateway(settings)
        stack.callback(gateway.store.close)
        callbacks.attach(gateway)
        callbacks.start()
        summary = _route(gateway, customers, at, settings, kannel, platforms)
    summary_path = data_dir / "summary.json"
    summary_path.write_text(json.dumps(summary.to_json(), indent=2), encoding="utf-8")
    return summary


def _route(
    gateway: Gateway,
    customers: Sequence[Customer],
    at: datetime,
    settings: Settings,
    kannel: LocalKannel | None,
    platforms: AdPlatforms,
) -> Summary:
    server, port = build_server(gateway, "127.0.0.1:0")
    server.start()
    summary = Summary(
        at, len(customers), port, settings.store_url(), gateway.bundle.hash
    )
    summary.channel = (
        "Kannel 1.4.5 (bearerbox and smsbox on 127.0.0.1, fake SMSC)"
        if kannel
        else "the outbox file ("
        + ("--outbox given" if LocalKannel.available() else "Kannel is not installed")
        + ")"
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
            started = time.perf_counter()
            _sync_tiers(stub, gateway.bundle.tiers, summary)
            summary.seconds["audiences"] = time.perf_counter() - started
            started = time.perf_counter()
            _conversions(stub, gateway.bundle.tiers, platforms, customers, at, summary)
            summary.seconds["conversions"] = time.perf_counter() - started
    finally:
        server.stop(grace=2).wait()
    summary.stages = Counter(c.stage for c in customers)
    summary.ad_consent = sum(c.ad_consent for c in customers)
    summary.platform_audiences = platforms.sizes()
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
    """Create every contact, its consent and its prior calls over gRPC.

    Consents are dated 30 days before the campaign clock, or before today if
    that is earlier: replies (STOP) are recorded at the real clock, and must
    come after the grants they revoke even when `at` lies in the future.
    """
    consent_at = min(at, datetime.now(UTC)) - timedelta(days=30)
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
        if c.ad_consent:
            for platform in AD_PLATFORMS:
                _consent(
                    stub, ref, True, "web_form", consent_at, platform, "advertising"
                )
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
    channel: str = "sms",
    purpose: str = "marketing",
) -> None:
    stub.RecordConsent(
        pb.RecordConsentRequest(
            contact=ref,
            channel=channel,
            purpose=pb.Purpose.Value("PURPOSE_" + purpose.upper()),
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


def _sync_tiers(
    stub: pb_grpc.GatewayStub, tiers: Sequence[Tier], summary: Summary
) -> None:
    """SyncAudience for every tier that has ad audiences, on both platforms."""
    for tier in tiers:
        for platform in AD_PLATFORMS:
            if platform in tier.ad_audiences:
                summary.audiences.append(_sync(stub, tier, platform, "first"))


def _sync(
    stub: pb_grpc.GatewayStub, tier: Tier, platform: str, label: str
) -> dict[str, Any]:
    answer = stub.SyncAudience(
        pb.SyncAudienceRequest(
            platform=platform,
            tier=tier.id,
            sync_id=f"{CAMPAIGN}/{tier.id}/{platform}/{label}",
        )
    )
    return {
        "tier": tier.id,
        "name": tier.name,
        "platform": platform,
        "audience_id": answer.audience_id,
        "considered": answer.considered,
        "added": answer.added,
        "removed": answer.removed,
        "unchanged": answer.unchanged,
        "excluded_by_rule": dict(sorted(answer.excluded_by_rule.items())),
        "failed": len(answer.failed),
        "error": answer.error,
    }


def _conversions(
    stub: pb_grpc.GatewayStub,
    tiers: Sequence[Tier],
    platforms: AdPlatforms,
    customers: Sequence[Customer],
    at: datetime,
    summary: Summary,
) -> None:
    """Convert a fixed-seed sample of the contacts held in the converting tiers'
    audiences on both platforms; read from the platforms' own state that each
    one's hashed identifiers left its tier's audience on both and, once
    Customer Expansion is synced again, joined that tier's audience; and time
    each removal from the event to the platform's request."""
    by_id = {t.id: t for t in tiers}
    synced = [
        (c, by_id[tier_id])
        for tier_id in CONVERTING_TIERS
        for c in customers
        if _in_audience(platforms, by_id[tier_id], c, AD_PLATFORMS)
    ]
    picked = random.Random(CONVERSION_SEED).sample(
        synced, min(CONVERSIONS, len(synced))
    )
    waits = _convert(stub, platforms, picked, at)
    left = _count_held(platforms, picked, held=False)
    expansion = by_id[EXPANSION_TIER]
    resync = [_sync(stub, expansion, p, "after-conversions") for p in AD_PLATFORMS]
    joined = _count_held(platforms, [(c, expansion) for c, _ in picked], held=True)
    summary.conversions = {
        "tiers": list(CONVERTING_TIERS),
        "candidates": len(synced),
        "converted": len(picked),
        "by_tier": dict(sorted(Counter(t.id for _, t in picked).items())),
        "left_tier_audience": left,
        "expansion_sync": resync,
        "joined_expansion": joined,
        "event_to_request_ms": {p: _spread(waits[p]) for p in (*AD_PLATFORMS, "both")},
    }


def _convert(
    stub: pb_grpc.GatewayStub,
    platforms: AdPlatforms,
    picked: Sequence[tuple[Customer, Tier]],
    at: datetime,
) -> dict[str, list[float]]:
    """RecordEvent ``converted`` for each; milliseconds from each event to the
    request that removed the contact, per platform and until both had it."""
    waits: dict[str, list[float]] = defaultdict(list)
    for k, (customer, tier) in enumerate(picked):
        started = time.monotonic()
        stub.RecordEvent(
            pb.RecordEventRequest(
                contact=pb.ContactRef(external_id=customer.external_id),
                kind="converted",
                at=_stamp(at + timedelta(days=1, minutes=k)),
            )
        )
        held = _digests(customer.phone)
        arrived = []
        for platform in AD_PLATFORMS:
            change = platforms.of(platform).last_change(
                tier.ad_audiences[platform], held[platform]
            )
            if change is not None and change[0] == "remove" and change[1] >= started:
                waits[platform].append(1000 * (change[1] - started))
                arrived.append(change[1])
        if len(arrived) == len(AD_PLATFORMS):
            waits["both"].append(1000 * (max(arrived) - started))
    return waits


def _count_held(
    platforms: AdPlatforms, pairs: Sequence[tuple[Customer, Tier]], *, held: bool
) -> dict[str, int]:
    """How many customers the tier's audience holds (or not, `held` False) on
    each platform, and on both."""
    counts = {
        p: sum(_in_audience(platforms, t, c, [p]) == held for c, t in pairs)
        for p in AD_PLATFORMS
    }
    counts["both"] = sum(
        all(_in_audience(platforms, t, c, [p]) == held for p in AD_PLATFORMS)
        for c, t in pairs
    )
    return counts


def _in_audience(
    platforms: AdPlatforms, tier: Tier, customer: Customer, on: Sequence[str]
) -> bool:
    """Whether the platforms named `on` all hold the customer's hashed phone
    number in the tier's audience (their own state, not the gateway's)."""
    if not customer.phone:
        return False
    held = _digests(customer.phone)
    return all(platforms.of(p).holds(tier.ad_audiences[p], held[p]) for p in on)


def _spread(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "median": 0.0, "max": 0.0}
    return {
        "count": len(values),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


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
    yield from _audience_lines(s)
    yield ""
    yield f"Audit chain: {s.chain_text}"
    yield (
        f"Timing: import {s.seconds.get('import', 0):.1f} s, "
        f"campaign {s.seconds.get('campaign', 0):.1f} s "
        f"({total / max(s.seconds.get('campaign', 1e-9), 1e-9):.0f} decisions/s), "
        f"audiences {s.seconds.get('audiences', 0):.1f} s, "
        f"conversions {s.seconds.get('conversions', 0):.1f} s"
    )


def _audience_lines(s: Summary) -> Iterator[str]:
    yield "Ad audiences: SyncAudience for every tier that has one, on both platforms"
    yield "  (local stand-ins of Meta Custom Audiences and Google Customer Match)"
    yield (
        f"  advertising consent for meta and google: {s.ad_consent} of "
        f"{s.customers} customers"
    )
    yield "  members added per tier and platform, and those refused, by rule (a member"
    yield "  may be refused by several rules):"
    for sync in s.audiences:
        yield from _sync_lines(sync)
    c = s.conversions
    if not c:
        return
    yield ""
    by_tier = ", ".join(f"{t} {n}" for t, n in c["by_tier"].items())
    yield (
        f"Conversions: {c['converted']} contacts converted (RecordEvent), a "
        f"fixed-seed sample of the {c['candidates']}"
    )
    yield f"  held in a tier's audience on both platforms ({by_tier})"
    yield "  read from the platforms' own audiences afterwards:"
    left = ", ".join(f"on {p} {n}" for p, n in c["left_tier_audience"].items())
    yield f"    left their tier's audience: {left}"
    joined = ", ".join(f"on {p} {n}" for p, n in c["joined_expansion"].items())
    yield f"    joined Customer Expansion at its next sync: {joined}"
    waits = c["event_to_request_ms"]
    yield "  from the event to the platform's removal request: " + ", ".join(
        f"{p} median {w['median']:.0f} ms (max {w['max']:.0f})"
        for p, w in waits.items()
    )
    yield "  Customer Expansion's next sync:"
    for sync in c["expansion_sync"]:
        yield from _sync_lines(sync)
    yield "  hashed identifiers each platform holds now:"
    for platform, audiences in s.platform_audiences.items():
        held = ", ".join(f"{a} {n}" for a, n in audiences.items())
        yield f"    {platform}: {held}"


def _sync_lines(sync: Mapping[str, Any]) -> Iterator[str]:
    yield (
        f"    {sync['name']} on {sync['platform']}: {sync['considered']} in the "
        f"tier, {sync['added']} added ({sync['unchanged']} already in, "
        f"{sync['removed']} removed)"
        + (f", {sync['failed']} refused by the platform" if sync["failed"] else "")
        + (f", ERROR {sync['error']}" if sync["error"] else "")
    )
    refused = sorted(sync["excluded_by_rule"].items(), key=lambda kv: (-kv[1], kv[0]))
    if refused:
        yield "      " + ", ".join(f"{rule} {n}" for rule, n in refused)
