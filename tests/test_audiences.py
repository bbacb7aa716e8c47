"""Tiers synced to ad platforms (their local stand-ins), and suppression at once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import audit
from gateway.ad_platforms_local import LocalGoogle, LocalMeta, serve
from gateway.app import Settings, build_gateway
from gateway.audiences import NOT_IN_TIER_RULE, AudienceSync
from gateway.cli import main
from gateway.errors import InvalidRequestError
from gateway.hookspecs import AudienceChange, AudienceSyncResult
from gateway.server import build_server
from gateway.service import ContactInput, Gateway, InboundInput
from gateway.store import ContactRef
from plugins._audience_ids import sha256_hex
from tollgate.v1 import gateway_pb2 as pb
from tollgate.v1 import gateway_pb2_grpc as pb_grpc

TOKEN, ACCOUNT = "test-token", "1234567890"

# external id -> (stage, ad consent, do not contact)
PEOPLE = {
    "n1": ("new", True, False),
    "n2": ("new", True, False),
    "n3": ("new", False, False),  # no ad consent
    "n4": ("new", True, True),  # do not contact
    "e1": ("engaged", True, False),
    "c1": ("converted", True, False),
}


@pytest.fixture
def mocks() -> Iterator[tuple[LocalMeta, LocalGoogle, str, str]]:
    meta = LocalMeta(token=TOKEN)
    google = LocalGoogle(token=TOKEN, operating_account=ACCOUNT, require_consent=True)
    with serve(meta) as meta_url, serve(google) as google_url:
        yield meta, google, meta_url, google_url


@pytest.fixture
def gateway(
    tmp_path: Path, store_url: str, mocks: tuple[LocalMeta, LocalGoogle, str, str]
) -> Iterator[Gateway]:
    _, _, meta_url, google_url = mocks
    settings = Settings(
        data_dir=tmp_path,
        database_url=store_url,
        outbox_channels="sms",
        plugin_overrides={
            "meta_base_url": meta_url,
            "meta_access_token": TOKEN,
            "google_base_url": google_url,
            "google_access_token": TOKEN,
            "google_operating_account": ACCOUNT,
            "google_eea": "true",
        },
    )
    built = build_gateway(settings)
    for i, (name, (stage, consented, dnc)) in enumerate(PEOPLE.items()):
        built.upsert_contact(
            ContactInput(
                external_id=name, phone=f"+1212555{100 + i:04d}",
                email=f"{name}@example.com", stage=stage, do_not_contact=dnc,
            )
        )  # fmt: skip
        if consented:
            for platform in ("meta", "google"):
                built.record_consent(
                    ContactRef(external_id=name), channel=platform,
                    purpose="advertising", granted=True, source="web_form",
                )  # fmt: skip
    yield built
    built.store.close()


def _at_once(n: int, task: Callable[[], object]) -> list[Exception]:
    """Run `task` on `n` threads released together; the errors they raised."""
    start, errors = threading.Barrier(n), []

    def run() -> None:
        start.wait()
        try:
            task()
        except Exception as exc:  # collected for the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def _hash(name: str) -> str:
    return sha256_hex(f"{name}@example.com")


def _id(gateway: Gateway, name: str) -> str:
    return gateway.store.snapshot(ContactRef(external_id=name), None).contact_id


def test_a_tier_reaches_both_platforms_with_only_the_allowed_members(
    gateway: Gateway, mocks: tuple[LocalMeta, LocalGoogle, str, str]
) -> None:
    meta, google, _, _ = mocks
    sync = AudienceSync(gateway)
    reports = [sync.sync(p, tier_id="new-high-intent") for p in ("meta", "google")]
    for report in reports:
        assert (report.considered, report.added, report.removed) == (4, 2, 0)
        assert report.excluded_by_rule == {
            "consent.advertising-needs-grant": 1,
            "suppression.do-not-contact": 1,
        }
        assert report.error == "" and report.failed == {}
    assert _hash("n1") in meta.audiences["tg-new-high-intent"]
    assert _hash("n3") not in meta.audiences["tg-new-high-intent"]
    google_hashes = set().union(*google.audiences.values())
    assert {_hash("n1"), _hash("n2")} <= google_hashes
    assert _hash("n4") not in google_hashes
    again = sync.sync("meta", tier_id="new-high-intent")
    assert (again.added, again.removed, again.unchanged) == (0, 0, 2)
    records = list(gateway.store.audit_records())
    audit.verify_chain(records)
    decisions = [r for r in records if r.kind == "audience_decision"]
    assert len(decisions) == 12 and "@" not in str([r.body for r in records])


def test_a_conversion_leaves_every_audience_of_its_old_tier_at_once(
    gateway: Gateway, mocks: tuple[LocalMeta, LocalGoogle, str, str]
) -> None:
    meta, google, _, _ = mocks
    sync = AudienceSync(gateway)
    for platform in ("meta", "google"):
        sync.sync(platform, tier_id="new-high-intent")
    started = time.perf_counter()
    gateway.record_event(ContactRef(external_id="n1"), kind="converted")
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"\nconversion to removal on both platforms: {elapsed_ms:.1f} ms")
    assert _hash("n1") not in meta.audiences["tg-new-high-intent"]
    assert _hash("n1") not in set().union(*google.audiences.values())
    assert _hash("n2") in meta.audiences["tg-new-high-intent"]
    assert gateway.store.memberships(_id(gateway, "n1")) == []
    removals = [
        r for r in gateway.store.audit_records()
        if r.kind == "audience_sync" and r.body["removed"]
    ]  # fmt: skip
    assert [r.body["platform"] for r in removals] == ["meta", "google"]
    assert all(r.body["removed"] == [_id(gateway, "n1")] for r in removals)


def test_an_opt_out_removes_the_contact_from_every_audience(
    gateway: Gateway, mocks: tuple[LocalMeta, LocalGoogle, str, str]
) -> None:
    meta, _, _, _ = mocks
    AudienceSync(gateway).sync("meta", tier_id="new-high-intent")
    gateway.report_inbound(
        InboundInput(channel="sms", sender="+12125550101", text="STOP")
    )
    assert _hash("n2") not in meta.audiences["tg-new-high-intent"]
    assert gateway.store.memberships(_id(gateway, "n2")) == []


def test_an_explicit_member_list_and_bad_requests(gateway: Gateway) -> None:
    sync = AudienceSync(gateway)
    refs = [ContactRef(external_id=n) for n in ("e1", "c1", "n3")]
    report = sync.sync("meta", audience_id="tg-manual", members=refs)
    assert (report.considered, report.added) == (3, 2)
    with pytest.raises(InvalidRequestError, match="unknown tier"):
        sync.sync("meta", tier_id="nope")
    with pytest.raises(InvalidRequestError, match="no plugin syncs"):
        sync.sync("tiktok", tier_id="new-high-intent")
    with pytest.raises(InvalidRequestError, match="no audience on 'meta'"):
        sync.sync("meta", tier_id="in-pipeline")


def test_sync_audience_over_grpc(gateway: Gateway) -> None:
    server, port = build_server(gateway, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            answer = stub.SyncAudience(
                pb.SyncAudienceRequest(platform="google", tier="new-high-intent")
            )
            with pytest.raises(grpc.RpcError) as caught:
                stub.SyncAudience(pb.SyncAudienceRequest(platform="google", tier="x"))
    finally:
        server.stop(grace=None).wait()
    assert (answer.added, answer.audience_id) == (2, "tg-new-high-intent")
    assert dict(answer.excluded_by_rule)["suppression.do-not-contact"] == 1
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_tier_sync_takes_a_few_transactions_not_some_per_member(
    gateway: Gateway,
) -> None:
    """Regression: a sync read every contact in its own transaction and
    audited every member decision in a transaction (a commit) of its own."""
    for i in range(40):
        ref = ContactRef(external_id=f"more{i}")
        gateway.upsert_contact(
            ContactInput(external_id=ref.external_id, phone=f"+1212555{200 + i:04d}")
        )
        gateway.record_consent(
            ref, channel="meta", purpose="advertising", granted=True, source="web_form"
        )
    begins: list[object] = []
    sa.event.listen(gateway.store.engine, "begin", begins.append)

    report = AudienceSync(gateway).sync("meta", tier_id="new-high-intent")

    assert (report.considered, report.added) == (44, 42)
    # pending removals, members, 2 batches of contacts, audit, membership,
    # and one re-read of the contacts added
    assert len(begins) <= 8
    decisions = [
        r for r in gateway.store.audit_records() if r.kind == "audience_decision"
    ]
    assert len(decisions) == 44


def test_a_member_with_no_address_to_match_on_is_refused_and_audited(
    gateway: Gateway,
) -> None:
    gateway.upsert_contact(ContactInput(external_id="blank", stage="new"))
    blank = gateway.store.snapshot(ContactRef(external_id="blank"), None).contact_id

    report = AudienceSync(gateway).sync("meta", tier_id="new-high-intent")

    assert report.excluded_by_rule["gateway.no-address"] == 1
    [record] = [
        r
        for r in gateway.store.audit_records()
        if r.kind == "audience_decision" and r.body["contact_id"] == blank
    ]
    assert (record.body["outcome"], record.body["reasons"]) == (
        "DENY",
        ["gateway.no-address"],
    )
    assert record.body["bundle_hash"] == gateway.bundle.hash


AUDIENCE = "tg-new-high-intent"
Mocks = tuple[LocalMeta, LocalGoogle, str, str]


def _platforms_of(gateway: Gateway, name: str) -> list[str]:
    return [p for p, _ in gateway.store.memberships(_id(gateway, name))]


def _decisions_of(gateway: Gateway, name: str) -> list[dict[str, object]]:
    contact_id = _id(gateway, name)
    return [
        r.body
        for r in gateway.store.audit_records()
        if r.kind == "audience_decision" and r.body["contact_id"] == contact_id
    ]


def test_a_revocation_recorded_with_record_consent_leaves_the_audiences_at_once(
    gateway: Gateway, mocks: Mocks
) -> None:
    """Regression: only a STOP reply removed a contact from its audiences; a
    revocation recorded through RecordConsent left it in them."""
    meta, google, _, _ = mocks
    sync = AudienceSync(gateway)
    for platform in ("meta", "google"):
        sync.sync(platform, tier_id="new-high-intent")

    gateway.record_consent(
        ContactRef(external_id="n1"), channel="meta", purpose="advertising",
        granted=False, source="web_form",
    )  # fmt: skip
    gateway.record_consent(
        ContactRef(external_id="n2"), channel="*", purpose="*",
        granted=False, source="crm",
    )  # fmt: skip
    gateway.record_consent(
        ContactRef(external_id="e1"), channel="sms", purpose="marketing",
        granted=False, source="crm",
    )  # fmt: skip

    assert _hash("n1") not in meta.audiences[AUDIENCE]
    assert _platforms_of(gateway, "n1") == ["google"]  # google consent stands
    assert _hash("n2") not in meta.audiences[AUDIENCE]
    assert _hash("n2") not in set().union(*google.audiences.values())
    assert _platforms_of(gateway, "n2") == []
    assert gateway.store.audience_removals() == []  # carried out, mark cleared


def test_a_revocation_a_platform_refused_is_retried_by_the_next_sync(
    gateway: Gateway, mocks: Mocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta, _, _, _ = mocks
    AudienceSync(gateway).sync("meta", tier_id="new-high-intent")
    real = gateway.channels.sync_audience
    down = AudienceSyncResult(error="platform unreachable")
    monkeypatch.setattr(gateway.channels, "sync_audience", lambda change: down)

    gateway.record_consent(
        ContactRef(external_id="n1"), channel="*", purpose="advertising",
        granted=False, source="web_form",
    )  # fmt: skip
    assert gateway.store.audience_removals() == [_id(gateway, "n1")]

    monkeypatch.setattr(gateway.channels, "sync_audience", real)
    AudienceSync(gateway).sync("google", tier_id="new-high-intent")
    assert _hash("n1") not in meta.audiences[AUDIENCE]
    assert gateway.store.audience_removals() == []


def test_concurrent_syncs_of_one_audience_all_succeed(
    gateway: Gateway, mocks: Mocks
) -> None:
    """Regression: two syncs of one audience both added its members, and the
    second failed on uq_audience_member after the platform had the change."""
    meta, _, _, _ = mocks
    reports = []

    errors = _at_once(
        4,
        lambda: reports.append(
            AudienceSync(gateway).sync("meta", tier_id="new-high-intent")
        ),
    )

    assert errors == []
    assert sum(r.added for r in reports) == 2
    assert {_hash("n1"), _hash("n2")} <= meta.audiences[AUDIENCE]
    assert gateway.store.audience_members("meta", AUDIENCE) == {
        _id(gateway, "n1"),
        _id(gateway, "n2"),
    }


def test_syncs_of_one_audience_do_not_interleave(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gateway.channels.sync_audience
    guard = threading.Lock()
    in_flight, most = [0], [0]

    def slow(change: AudienceChange) -> AudienceSyncResult:
        with guard:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.05)
        try:
            return real(change)
        finally:
            with guard:
                in_flight[0] -= 1

    monkeypatch.setattr(gateway.channels, "sync_audience", slow)
    start = threading.Barrier(3)

    def run(name: str) -> None:
        start.wait()
        refs = [ContactRef(external_id=name)]
        AudienceSync(gateway).sync("meta", audience_id="tg-manual", members=refs)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("n1", "n2", "e1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert most[0] == 1
    assert gateway.store.audience_members("meta", "tg-manual") == {
        _id(gateway, n) for n in ("n1", "n2", "e1")
    }


def test_apply_audience_is_idempotent_under_concurrency(gateway: Gateway) -> None:
    store, now = gateway.store, datetime.now(UTC)
    members = [_id(gateway, "n1"), _id(gateway, "n2")]
    absent = [_id(gateway, "e1")]

    errors = _at_once(
        4,
        lambda: store.apply_audience("meta", "tg-x", members, absent, {"test": 1}, now),
    )
    store.apply_audience("meta", "tg-x", members, absent, {"test": 2}, now)

    assert errors == []
    assert store.audience_members("meta", "tg-x") == set(members)


def test_a_conversion_racing_a_sync_leaves_the_prospecting_audience(
    gateway: Gateway, mocks: Mocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the sync decided on a snapshot read before the conversion,
    the conversion's suppression found no membership yet, and the sync then
    added the converted contact."""
    meta, _, _, _ = mocks
    real = gateway.channels.sync_audience

    def convert_first(change: AudienceChange) -> AudienceSyncResult:
        if any(m.contact_id == _id(gateway, "n1") for m in change.add):
            gateway.record_event(ContactRef(external_id="n1"), kind="converted")
        return real(change)

    monkeypatch.setattr(gateway.channels, "sync_audience", convert_first)
    report = AudienceSync(gateway).sync("meta", tier_id="new-high-intent")

    assert report.added == 2  # n1 was added, then taken out at once
    assert _hash("n1") not in meta.audiences[AUDIENCE]
    assert _hash("n2") in meta.audiences[AUDIENCE]
    assert gateway.store.audience_members("meta", AUDIENCE) == {_id(gateway, "n2")}
    last = _decisions_of(gateway, "n1")[-1]
    assert (last["outcome"], last["reasons"]) == ("DENY", [NOT_IN_TIER_RULE])


def test_a_member_list_for_a_tier_audience_adds_only_members_of_the_tier(
    gateway: Gateway, mocks: Mocks
) -> None:
    """Regression: an explicit member list added a converted contact to the
    prospecting audience."""
    meta, _, _, _ = mocks
    refs = [ContactRef(external_id=n) for n in ("c1", "n1")]

    report = AudienceSync(gateway).sync("meta", audience_id=AUDIENCE, members=refs)

    assert (report.considered, report.added) == (2, 1)
    assert report.excluded_by_rule[NOT_IN_TIER_RULE] == 1
    assert _hash("n1") in meta.audiences[AUDIENCE]
    assert _hash("c1") not in meta.audiences[AUDIENCE]
    [refused] = _decisions_of(gateway, "c1")
    assert (refused["outcome"], refused["reasons"]) == ("DENY", [NOT_IN_TIER_RULE])


@pytest.mark.parametrize(
    "audience_id",
    [
        pytest.param("a" * 201, id="longer-than-the-column"),
        pytest.param("tg/../other", id="slash"),
        pytest.param("tg\nnew", id="control-character"),
        pytest.param("tg-+12125550100", id="phone-number"),
        pytest.param("n1@example.com", id="e-mail"),
    ],
)
def test_a_bad_audience_id_is_refused_before_anything_is_sent(
    gateway: Gateway, mocks: Mocks, audience_id: str
) -> None:
    meta, _, _, _ = mocks
    refs = [ContactRef(external_id="n1")]
    with pytest.raises(InvalidRequestError) as caught:
        AudienceSync(gateway).sync("meta", audience_id=audience_id, members=refs)
    assert caught.value.field == "audience_id"
    assert meta.audiences == {}
    assert [r for r in gateway.store.audit_records() if "audience" in r.kind] == []


def test_a_member_list_is_checked_and_each_member_decided_once(
    gateway: Gateway,
) -> None:
    sync = AudienceSync(gateway)
    with pytest.raises(InvalidRequestError, match=r"give a tier or a member list$"):
        sync.sync("meta", audience_id="tg-manual")
    empty = [ContactRef(external_id="n1"), ContactRef()]
    with pytest.raises(InvalidRequestError, match=r"members\[1\]: is required"):
        sync.sync("meta", audience_id="tg-manual", members=empty)
    n1 = ContactRef(external_id="n1")
    twice = [n1, n1, ContactRef(contact_id=_id(gateway, "n1"))]

    report = sync.sync("meta", audience_id="tg-manual", members=twice)

    assert (report.considered, report.added) == (1, 1)
    assert len(_decisions_of(gateway, "n1")) == 1


def test_sync_audience_over_grpc_refuses_bad_input(gateway: Gateway) -> None:
    server, port = build_server(gateway, "127.0.0.1:0")
    server.start()
    codes = []
    requests = [
        pb.SyncAudienceRequest(
            platform="meta",
            audience_id="tg/x",
            members=[pb.ContactRef(external_id="n1")],
        ),
        pb.SyncAudienceRequest(platform="meta", members=[pb.ContactRef()]),
        pb.SyncAudienceRequest(platform="meta"),
    ]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            for request in requests:
                with pytest.raises(grpc.RpcError) as caught:
                    stub.SyncAudience(request)
                codes.append((caught.value.code(), caught.value.details()))
    finally:
        server.stop(grace=None).wait()
    assert [c for c, _ in codes] == [grpc.StatusCode.INVALID_ARGUMENT] * 3
    assert codes[0][1].startswith("audience_id:")
    assert codes[1][1].startswith("members[0]:")
    assert "give a tier or a member list" in codes[2][1]


def test_a_contacts_history_shows_its_audience_decisions_and_changes(
    gateway: Gateway, store_url: str
) -> None:
    AudienceSync(gateway).sync("meta", tier_id="new-high-intent")
    gateway.record_event(ContactRef(external_id="n1"), kind="converted")
    contact = _id(gateway, "n1")

    result = CliRunner().invoke(
        main, ["audit", "history", contact, "--json", "--db", store_url]
    )

    assert result.exit_code == 0, result.output
    lines = [
        (entry["kind"], entry["summary"])
        for entry in json.loads(result.output)
        if entry["kind"].startswith("audience")
    ]
    assert lines == [
        (
            "audience_decision",
            "ALLOW membership of meta audience tg-new-high-intent "
            "(tier new-high-intent); rules none",
        ),
        ("audience_sync", "added to meta audience tg-new-high-intent"),
        (
            "audience_decision",
            "DENY membership of meta audience tg-new-high-intent "
            "(tier customer-expansion); rules gateway.not-in-tier",
        ),
        ("audience_sync", "removed from meta audience tg-new-high-intent"),
    ]
