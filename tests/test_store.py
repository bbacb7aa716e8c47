"""The store on both backends: migrations, contacts, ledger, sends, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import audit
from gateway import consent
from gateway.errors import ContactNotFoundError
from gateway.models import Base
from gateway.store import ContactFields, ContactRef, Reservation, Store, Verdict

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Store:
    opened = Store.open(store_url)
    yield opened
    opened.close()


def test_migrations_create_every_table_of_the_models(store: Store) -> None:
    inspector = sa.inspect(store.engine)
    tables = set(inspector.get_table_names())
    assert set(Base.metadata.tables) <= tables
    for name, table in Base.metadata.tables.items():
        columns = {c["name"] for c in inspector.get_columns(name)}
        assert columns == {c.name for c in table.columns}, name


def test_migrating_twice_changes_nothing(store: Store) -> None:
    store.append_audit("event", {"contact_id": "ct_1"})
    store.migrate()
    assert [r.seq for r in store.audit_records()] == [1]


def test_upsert_creates_then_updates_keeping_the_pseudonymous_id(store: Store) -> None:
    first, created = store.upsert_contact(
        ContactFields(external_id="x1", phone_e164="+12125550123", stage="new"), NOW
    )
    second, created_again = store.upsert_contact(
        ContactFields(external_id="x1", stage="engaged"), NOW
    )
    snap = store.snapshot(ContactRef(external_id="x1"), None)
    assert created and not created_again
    assert first == second == snap.contact_id
    assert first.startswith("ct_") and "+1212" not in first
    assert snap.stage == "engaged" and snap.phone_e164 == "+12125550123"


def test_unknown_contact_is_reported_by_reference(store: Store) -> None:
    with pytest.raises(ContactNotFoundError, match="no contact with this external_id"):
        store.snapshot(ContactRef(external_id="nobody"), None)


def test_latest_consent_entry_wins_and_every_entry_is_audited(store: Store) -> None:
    store.upsert_contact(ContactFields(external_id="x1"), NOW)
    ref = ContactRef(external_id="x1")
    for granted, minutes in ((True, 0), (False, 5), (True, 10)):
        entry = {
            "channel": "sms",
            "purpose": "marketing",
            "granted": granted,
            "source": "web_form",
            "recorded_at": NOW + timedelta(minutes=minutes),
        }
        store.record_consent(ref, entry, lambda cid: {"contact_id": cid})
    snap = store.snapshot(ref, None)
    assert [e.granted for e in snap.consents] == [True, False, True]
    assert consent.effective(snap.consents, "sms", "marketing", NOW).status == "granted"
    assert [r.kind for r in store.audit_records()] == ["consent"] * 3


def test_snapshot_reads_only_sends_after_the_window_start(store: Store) -> None:
    store.upsert_contact(ContactFields(external_id="x1"), NOW)
    ref = ContactRef(external_id="x1")
    for hours in (30, 24, 2):
        at = NOW - timedelta(hours=hours)

        def decide(snap: object, seq: int, at: datetime = at) -> Verdict:
            return Verdict(
                {"contact_id": "ct"},
                Reservation("sms", "marketing", "c", at),
                {"ok": 1},
            )

        store.decide(ref, NOW, f"k{hours}", "digest", decide)
    snap = store.snapshot(ref, NOW - timedelta(hours=24))
    assert [s.at for s in snap.sends] == [NOW - timedelta(hours=2)]
    assert all(s.at.tzinfo is not None for s in snap.sends)


def test_decide_stores_the_answer_and_replays_it_for_the_same_key(store: Store) -> None:
    store.upsert_contact(ContactFields(external_id="x1"), NOW)
    ref = ContactRef(external_id="x1")
    calls = []

    def decide(snap: object, seq: int) -> Verdict:
        calls.append(seq)
        return Verdict({"contact_id": "ct"}, None, {"answer": seq})

    first = store.decide(ref, NOW, "key-1", "d", decide)
    again = store.decide(ref, NOW, "key-1", "d", decide)
    assert first[0] == {"answer": 1} and not first[1]
    assert again[0] == {"answer": 1} and again[1]
    assert calls == [1]


def test_audit_records_chain_and_verify(store: Store) -> None:
    for i in range(5):
        store.append_audit("event", {"contact_id": f"ct_{i}", "n": i})
    records = list(store.audit_records(batch=2))
    summary = audit.verify_chain(records)
    assert summary.count == 5 and [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == audit.GENESIS_HASH
    assert records[3].prev_hash == records[2].hash


def test_personal_data_never_reaches_the_audit_table(store: Store) -> None:
    with pytest.raises(audit.PersonalDataError):
        store.append_audit("event", {"contact_id": "ct_1", "note": "+12125550123"})
    assert list(store.audit_records()) == []


def test_snapshots_in_batches_are_the_snapshots_of_every_contact(store: Store) -> None:
    for i in range(7):
        ref = ContactRef(external_id=f"x{i}")
        store.upsert_contact(ContactFields(ref.external_id, f"+1212555{i:04d}"), NOW)
        for channel in ("meta", "google")[: i % 3]:
            entry = {
                "channel": channel,
                "purpose": "advertising",
                "granted": True,
                "source": "web_form",
                "recorded_at": NOW - timedelta(minutes=i),
            }
            store.record_consent(ref, entry, lambda cid: {"contact_id": cid})
    confirmation = Reservation("sms", "opt_out_confirmation", "", NOW)
    store.decide(
        ContactRef(external_id="x4"), NOW, "k", "d",
        lambda snap, seq: Verdict({"contact_id": "ct"}, confirmation, {}),
    )  # fmt: skip
    store.erase(ContactRef(external_id="x3"), NOW)

    batched = list(store.snapshots(batch=3))

    one_by_one = [
        store.snapshot(ContactRef(contact_id=c), None) for c in store.contact_ids()
    ]
    assert batched == one_by_one
    assert [s.external_id for s in batched] == ["x0", "x1", "x2", "x4", "x5", "x6"]
    assert batched[3].confirmations == {"sms": NOW}
    assert [len(s.consents) for s in batched] == [0, 1, 2, 1, 2, 0]


def test_append_audits_chains_records_in_one_transaction(store: Store) -> None:
    store.append_audit("event", {"contact_id": "ct_0"})
    begins: list[object] = []
    sa.event.listen(store.engine, "begin", begins.append)

    last = store.append_audits("event", [{"contact_id": f"ct_{i}"} for i in (1, 2, 3)])

    assert last == 4 and len(begins) == 1
    assert store.append_audits("event", []) == 0
    records = list(store.audit_records())
    assert audit.verify_chain(records).count == 4
    assert [r.body["contact_id"] for r in records] == ["ct_0", "ct_1", "ct_2", "ct_3"]
