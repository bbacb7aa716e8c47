"""The gateway's store: contacts, consent ledger, events, sends and audit log.

All access goes through SQLAlchemy; SQLite (a file) is the embedded default and
a PostgreSQL URL works the same. The schema is created by the Alembic
migrations in `gateway/migrations`.

Invariants:
- Every write that appends to the audit log is a unit of work committed in a
  group (`gateway._group_commit`): the group's transaction first locks the
  single `audit_head` row, so the chain never forks, even with several
  gateways on one database (on SQLite every write transaction is BEGIN
  IMMEDIATE, which serialises writers; on PostgreSQL the head row is locked
  with SELECT ... FOR UPDATE). Each unit runs in a SAVEPOINT: a unit that
  fails is rolled back alone and its caller gets its error; the others
  commit. A caller returns only once its group has committed.
- A decision, its audit record, its frequency-cap reservation and its
  idempotency entry are one unit, written while the contact's row is locked,
  so concurrent requests for one contact see each other's sends and a cap can
  never be exceeded.
- Locks are taken in one order, the audit head before any contact row, so
  writers on several gateways cannot deadlock.
- Phone numbers and e-mail addresses live only in `contacts`.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import audit
from gateway import models
from gateway._group_commit import GroupCommitter, Unit
from gateway.consent import ConsentEntry
from gateway.errors import ContactNotFoundError, KeyReusedError, StoreError
from gateway.identity import looks_personal

log = logging.getLogger(__name__)


MIGRATIONS = Path(__file__).parent / "migrations"

GROUP_LIMIT: Final = 256
"""At most this many audited writes share one transaction."""

T = TypeVar("T")


@dataclass(frozen=True)
class ContactRef:
    """A reference to a contact: the caller's id or the pseudonymous one."""

    external_id: str = ""
    contact_id: str = ""

    def describe(self) -> str:
        """Which kind of reference; never the value (it may be the caller's
        own identifier for a person)."""
        return "this contact_id" if self.contact_id else "this external_id"


@dataclass(frozen=True)
class PastSend:
    at: datetime
    channel: str
    purpose: str


@dataclass(frozen=True)
class ContactSnapshot:
    """Everything a decision may read about one contact, at one instant."""

    pk: int
    contact_id: str
    external_id: str
    phone_e164: str | None
    email: str | None
    stage: str
    tier: str | None
    time_zone: str | None
    region: str | None
    do_not_contact: bool
    sms_capable: bool
    attributes: Mapping[str, Any]
    # the whole consent ledger of the contact, oldest first
    consents: tuple[ConsentEntry, ...] = ()
    sends: tuple[PastSend, ...] = ()
    # channel -> when its last opt-out confirmation was sent
    confirmations: Mapping[str, datetime] = field(default_factory=dict)
    erased: bool = False


@dataclass(frozen=True)
class ContactFields:
    """What UpsertContact may set; None leaves the stored value unchanged."""

    external_id: str
    phone_e164: str | None = None
    email: str | None = None
    stage: str | None = None
    time_zone: str | None = None
    region: str | None = None
    do_not_contact: bool | None = None
    sms_capable: bool | None = None
    attributes: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Reservation:
    """A send to count against frequency caps, written with its decision."""

    channel: str
    purpose: str
    campaign: str
    at: datetime


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint as stored: its size, root, note and signing key."""

    id: int
    size: int
    root_hex: str
    note: str
    signed_at: datetime
    key_name: str


@dataclass(frozen=True)
class Verdict:
    """What a decision callback hands back to `Store.decide`."""

    audit_body: Mapping[str, Any]
    reservation: Reservation | None
    response: Mapping[str, Any]


class Store:
    """Transactions over the database; one instance per gateway process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.committer = GroupCommitter(self._commit_group, GROUP_LIMIT)
        """Commits every write that appends to the audit log, in groups."""

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to `url`, bring its schema up to date and return the store."""
        engine = _create_engine(url)
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        """Apply every Alembic migration not yet applied."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    # -- contacts -----------------------------------------------------------

    def upsert_contact(self, fields: ContactFields, now: datetime) -> tuple[str, bool]:
        """Create or update a contact by external id; return (contact_id, created)."""
        with self._sessions.begin() as session:
            row = session.scalar(
                sa.select(models.Contact)
                .where(models.Contact.external_id == fields.external_id)
                .with_for_update()
            )
            created = row is None
            if row is None:
                row = _new_contact(fields.external_id, now)
                session.add(row)
            _apply(row, fields, now)
            return row.contact_id, created

    def snapshot(self, ref: ContactRef, since: datetime | None) -> ContactSnapshot:
        """Read one contact with its consents and sends since `since`."""
        with self._sessions.begin() as session:
            row = _find(session, ref, lock=False)
            return _snapshot(session, row, since)

    def snapshots(self, batch: int = 500) -> Iterator[ContactSnapshot]:
        """Every contact not erased, in creation order, with its consent
        ledger and no sends: what an audience decision reads.

        Streams: one transaction and three queries per `batch` contacts,
        where `snapshot` takes one transaction per contact.
        """
        last = 0
        while True:
            with self._sessions.begin() as session:
                rows = session.scalars(
                    sa.select(models.Contact)
                    .where(models.Contact.id > last, models.Contact.erased_at.is_(None))
                    .order_by(models.Contact.id)
                    .limit(batch)
                ).all()
                pks = [row.id for row in rows]
                consents = _consents_of(session, pks)
                confirmations = _confirmations_of(session, pks)
                found = [
                    _snapshot_of(row, consents.get(row.id, ()), confirmations, ())
                    for row in rows
                ]
            if not rows:
                return
            yield from found
            last = rows[-1].id

    def snapshots_of(self, contact_ids: Sequence[str]) -> list[ContactSnapshot]:
        """These contacts (erased ones too), read as `snapshots` reads them,
        in one transaction; an unknown id is left out."""
        with self._sessions.begin() as session:
            rows = session.scalars(
                sa.select(models.Contact)
                .where(models.Contact.contact_id.in_(list(contact_ids)))
                .order_by(models.Contact.id)
            ).all()
            pks = [row.id for row in rows]
            consents = _consents_of(session, pks)
            confirmations = _confirmations_of(session, pks)
            return [
                _snapshot_of(row, consents.get(row.id, ()), confirmations, ())
                for row in rows
            ]

    def record_consent(
        self,
        ref: ContactRef,
        entry: Mapping[str, Any],
        audit_body: Callable[[str], Mapping[str, Any]],
        guard: Callable[[ContactSnapshot], None] | None = None,
        *,
        leaves_audiences: bool = False,
    ) -> tuple[str, int, int]:
        """Append a consent entry and its audit record.

        `guard` sees the contact (with its whole ledger) under the contact's
        lock and may refuse the entry by raising. With `leaves_audiences` (a
        revocation that covers advertising) the contact is also marked, in
        the same transaction, as due to leave its ad audiences, until
        `audience_removal_done`. Returns (contact_id, audit seq, entry id).
        """

        def work(writer: _Writer) -> tuple[str, int, int]:
            session = writer.session
            row = _find(session, ref, lock=True)
            if guard is not None:
                guard(_snapshot(session, row, None))
            seq = writer.append("consent", audit_body(row.contact_id))
            consent = models.Consent(contact_pk=row.id, audit_seq=seq, **entry)
            session.add(consent)
            if leaves_audiences:
                row.audience_removal_due = True
            session.flush()
            return row.contact_id, seq, consent.id

        return self._write(work)

    def find_by_address(self, kind: str, address: str) -> list[ContactRef]:
        """Every contact whose phone (E.164) or e-mail is `address`: an
        opt-out belongs to the address, whoever else holds it."""
        column = models.Contact.phone_e164 if kind == "phone" else models.Contact.email
        with self._sessions.begin() as session:
            found = session.scalars(
                sa.select(models.Contact.contact_id)
                .where(column == address, models.Contact.erased_at.is_(None))
                .order_by(models.Contact.id)
            ).all()
        return [ContactRef(contact_id=c) for c in found]

    def erase(self, ref: ContactRef, now: datetime) -> tuple[str, int]:
        """Remove a contact's personal data; keep the PII-free ledger and the
        audit chain, and append the erasure to it. Returns (contact_id, seq)."""

        def work(writer: _Writer) -> tuple[str, int]:
            row = _find(writer.session, ref, lock=True)
            row.phone_e164 = row.email = row.time_zone = row.region = None
            row.external_id = f"erased:{row.contact_id}"
            row.attributes = {}
            row.do_not_contact = True
            row.erased_at = row.updated_at = now
            writer.session.execute(
                sa.update(models.Event)
                .where(models.Event.contact_pk == row.id)
                .values(attributes={})
            )
            seq = writer.append(
                "erasure", {"contact_id": row.contact_id, "erased_at": now.isoformat()}
            )
            return row.contact_id, seq

        return self._write(work)

    def contact_ids(self) -> list[str]:
        """Pseudonymous ids of every contact not erased, in creation order."""
        with self._sessions.begin() as session:
            return list(
                session.scalars(
                    sa.select(models.Contact.contact_id)
                    .where(models.Contact.erased_at.is_(None))
                    .order_by(models.Contact.id)
                )
            )

    def audience_members(self, platform: str, audience_id: str) -> set[str]:
        """Contact ids in a platform audience, as last synced."""
        with self._sessions.begin() as session:
            return set(
                session.scalars(
                    sa.select(models.Contact.contact_id)
                    .join(
                        models.AudienceMemberRow,
                        models.AudienceMemberRow.contact_pk == models.Contact.id,
                    )
                    .where(
                        models.AudienceMemberRow.platform == platform,
                        models.AudienceMemberRow.audience_id == audience_id,
                    )
                )
            )

    def memberships(self, contact_id: str) -> list[tuple[str, str]]:
        """The (platform, audience id) pairs a contact is in, as last synced."""
        with self._sessions.begin() as session:
            return [
                (platform, audience)
                for platform, audience in session.execute(
                    sa.select(
                        models.AudienceMemberRow.platform,
                        models.AudienceMemberRow.audience_id,
                    )
                    .join(
                        models.Contact,
                        models.Contact.id == models.AudienceMemberRow.contact_pk,
                    )
                    .where(models.Contact.contact_id == contact_id)
                    .order_by(models.AudienceMemberRow.id)
                )
            ]

    def apply_audience(
        self,
        platform: str,
        audience_id: str,
        added: Iterable[str],
        removed: Iterable[str],
        body: Mapping[str, Any],
        now: datetime,
    ) -> int:
        """Record what the platform accepted, and the sync in the audit log.

        Idempotent, as the platforms are: adding a member already stored or
        removing one not stored is no error, whatever another sync wrote
        meanwhile (the insert skips a row the unique key already holds).
        """
        added, removed = list(added), list(removed)

        def work(writer: _Writer) -> int:
            session = writer.session
            pks = dict(
                session.execute(
                    sa.select(models.Contact.contact_id, models.Contact.id).where(
                        models.Contact.contact_id.in_([*added, *removed])
                    )
                ).all()
            )
            rows = [
                {
                    "platform": platform,
                    "audience_id": audience_id,
                    "contact_pk": pks[c],
                    "added_at": now,
                }
                for c in added
                if c in pks
            ]
            if rows:
                session.execute(_insert_new_members(session, rows))
            gone = [pks[c] for c in removed if c in pks]
            if gone:
                session.execute(
                    sa.delete(models.AudienceMemberRow).where(
                        models.AudienceMemberRow.platform == platform,
                        models.AudienceMemberRow.audience_id == audience_id,
                        models.AudienceMemberRow.contact_pk.in_(gone),
                    )
                )
            return writer.append("audience_sync", body)

        return self._write(work)

    def audience_removals(self) -> list[str]:
        """Pseudonymous ids of contacts whose revocation of advertising
        consent has not yet been carried to every ad audience."""
        with self._sessions.begin() as session:
            return list(
                session.scalars(
                    sa.select(models.Contact.contact_id).where(
                        models.Contact.audience_removal_due.is_(True)
                    )
                )
            )

    def audience_removal_done(self, contact_id: str) -> None:
        """Clear the mark `record_consent` set: the contact's audiences have
        all been decided again since its revocation."""
        with self._sessions.begin() as session:
            session.execute(
                sa.update(models.Contact)
                .where(models.Contact.contact_id == contact_id)
                .values(audience_removal_due=False)
            )

    def record_event(
        self,
        ref: ContactRef,
        entry: Mapping[str, Any],
        new_stage: Callable[[str], str],
        audit_body: Callable[[str, str], Mapping[str, Any]],
        touch: Reservation | None = None,
    ) -> tuple[str, str, int]:
        """Append an event, move the stage; return (contact_id, stage, seq).

        A `touch` (a message sent outside the gateway) is also written as a
        send, so that frequency caps count it.
        """

        def work(writer: _Writer) -> tuple[str, str, int]:
            row = _find(writer.session, ref, lock=True)
            row.stage = new_stage(row.stage)
            row.updated_at = entry["occurred_at"]
            seq = writer.append("event", audit_body(row.contact_id, row.stage))
            writer.session.add(models.Event(contact_pk=row.id, audit_seq=seq, **entry))
            _reserve(writer.session, row.id, touch, seq)
            return row.contact_id, row.stage, seq

        return self._write(work)

    # -- decisions ----------------------------------------------------------

    def replayed(self, idempotency_key: str) -> tuple[str, Mapping[str, Any]] | None:
        """The (request digest, response) stored for a key, if any."""
        with self._sessions.begin() as session:
            return _stored_decision(session, idempotency_key)

    def decide(
        self,
        ref: ContactRef,
        since: datetime,
        idempotency_key: str,
        request_digest: str,
        decide: Callable[[ContactSnapshot, int], Verdict],
    ) -> tuple[Mapping[str, Any], bool, ContactSnapshot | None]:
        """Decide one message atomically.

        In one unit of work, under the contact's lock: replay a stored answer
        for the key, or call `decide(snapshot, next_audit_seq)`, append its
        audit record, reserve its send and store its answer. Returns
        (response, replayed, snapshot). `decide` runs on whichever thread
        commits the group. A key already used for a different request raises
        `KeyReusedError`. A unit that fails on the key's unique index (a key
        stored outside the audit lock, by `remember`) is rolled back whole,
        audit record included, and tried once more.
        """
        for attempt in (1, 2):
            try:
                return self._decide_once(
                    ref, since, idempotency_key, request_digest, decide
                )
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
                log.info("idempotency key raced with another request; retrying")
        raise AssertionError("unreachable")

    def _decide_once(
        self,
        ref: ContactRef,
        since: datetime,
        idempotency_key: str,
        request_digest: str,
        decide: Callable[[ContactSnapshot, int], Verdict],
    ) -> tuple[Mapping[str, Any], bool, ContactSnapshot | None]:

        def work(
            writer: _Writer,
        ) -> tuple[Mapping[str, Any], bool, ContactSnapshot | None]:
            session = writer.session
            row = _find(session, ref, lock=True)
            stored = _stored_decision(session, idempotency_key)
            if stored is not None:
                if stored[0] != request_digest:
                    raise KeyReusedError(
                        "idempotency_key", "was already used for a different request"
                    )
                return stored[1], True, None
            snap = _snapshot(session, row, since)
            verdict = decide(snap, writer.seq + 1)
            seq = writer.append("decision", verdict.audit_body)
            _reserve(session, row.id, verdict.reservation, seq)
            session.add(_decision_row(idempotency_key, request_digest, verdict))
            return verdict.response, False, snap

        return self._write(work)

    def claim_delivery(
        self, idempotency_key: str, now: datetime, stale_after: float
    ) -> Mapping[str, Any] | None:
        """Claim a stored ALLOW whose delivery never completed, for a retry.

        Returns the stored answer, with its delivery marked as attempted now,
        when the delivery is still in flight and its last attempt is older than
        `stale_after` seconds; None otherwise. The decision row is locked, so
        two retries never both claim it.
        """
        with self._sessions.begin() as session:
            row = session.scalar(
                sa.select(models.DecisionRow)
                .where(models.DecisionRow.idempotency_key == idempotency_key)
                .with_for_update()
            )
            if row is None:
                return None
            delivery = dict(row.response.get("delivery", {}))
            attempted = datetime.fromisoformat(
                delivery.get("attempted_at") or now.isoformat()
            )
            if (
                delivery.get("status") != "IN_FLIGHT"
                or (now - attempted).total_seconds() < stale_after
            ):
                return None
            delivery["attempted_at"] = now.isoformat()
            row.response = {**row.response, "delivery": delivery}
            return row.response

    def complete(
        self,
        idempotency_key: str,
        audit_body: Mapping[str, Any],
        response_update: Callable[[int], Mapping[str, Any]],
    ) -> int:
        """Append a delivery outcome and store it with the decision's answer."""

        def work(writer: _Writer) -> int:
            seq = writer.append("delivery", audit_body)
            row = writer.session.scalar(
                sa.select(models.DecisionRow).where(
                    models.DecisionRow.idempotency_key == idempotency_key
                )
            )
            if row is not None:
                row.response = {**row.response, **response_update(seq)}
            return seq

        return self._write(work)

    # -- audit --------------------------------------------------------------

    def append_audit(self, kind: str, body: Mapping[str, Any]) -> int:
        """Append one audit record; return its seq once it is committed."""
        return self._write(lambda writer: writer.append(kind, body))

    def append_audits(self, kind: str, bodies: Sequence[Mapping[str, Any]]) -> int:
        """Append records of one kind, in order, in one transaction (one
        commit, not one per record); return the last seq (0 for none)."""
        if not bodies:
            return 0

        def append_all(writer: _Writer) -> int:
            seq = 0
            for body in bodies:
                seq = writer.append(kind, body)
            return seq

        return self._write(append_all)

    def _write(self, work: Callable[[_Writer], T]) -> T:
        """Run `work` in the next group commit; return what it returned."""
        return self.committer.submit(work)

    def _commit_group(self, group: Sequence[Unit[_Writer, Any]]) -> None:
        """Apply each unit in its own SAVEPOINT, then commit them all at once.

        Plan:
          1. begin, and lock the audit head (the one writer at a time);
          2. run each unit; one that raises is rolled back to its savepoint,
             the head moved back, and it alone fails (a unit alone in its
             group needs no savepoint: its error rolls back the transaction);
          3. point the head row at the last record appended, and commit.
        """
        # Step 1: the head, locked until the commit.
        with self._sessions.begin() as session:
            writer = _Writer(session)

            # Step 2: every unit, each in its savepoint if it has company.
            if len(group) == 1:
                group[0].succeed(group[0].work(writer))
            else:
                for unit in group:
                    _apply_in_savepoint(unit, writer)

            # Step 3: one head update and one commit for the whole group.
            writer.save()

    def audit_records(
        self, batch: int = 1000, upto: int | None = None
    ) -> Iterator[audit.AuditRecord]:
        """Every audit record in stored order (by seq), read in batches; with
        `upto`, only those up to that seq."""
        last = 0
        while True:
            query = sa.select(models.AuditRow).where(models.AuditRow.seq > last)
            if upto is not None:
                query = query.where(models.AuditRow.seq <= upto)
            with self._sessions.begin() as session:
                rows = session.scalars(
                    query.order_by(models.AuditRow.seq).limit(batch)
                ).all()
            if not rows:
                return
            for row in rows:
                yield _to_record(row)
            last = rows[-1].seq

    def records_beyond_head(self) -> int:
        """How many audit records lie after the head row's seq: none, unless
        something other than the gateway wrote them (one statement, so a
        concurrent append cannot be counted)."""
        beyond = (
            sa.select(sa.func.count())
            .select_from(models.AuditRow)
            .where(
                models.AuditRow.seq
                > sa.select(models.AuditHead.seq)
                .where(models.AuditHead.id == 1)
                .scalar_subquery()
            )
        )
        with self._sessions.begin() as session:
            return int(session.scalar(beyond) or 0)

    def audit_record(self, seq: int) -> audit.AuditRecord | None:
        """One audit record by sequence number, if it exists."""
        with self._sessions.begin() as session:
            row = session.get(models.AuditRow, seq)
            return None if row is None else _to_record(row)

    def audit_head(self) -> tuple[int, str]:
        """The (seq, hash) the store records as the chain's last record."""
        with self._sessions.begin() as session:
            head = session.get(models.AuditHead, 1)
            if head is None:
                raise StoreError(
                    "audit_head row is missing: the store was not migrated"
                )
            return head.seq, head.hash

    def leaf_hashes(self, upto: int | None = None) -> Iterator[bytes]:
        """The RFC 6962 leaf hash of each record up to seq `upto` (all if None),
        in seq order, streaming (see `audit.record_leaf`)."""
        for record in self.audit_records(upto=upto):
            yield audit.leaf_hash(audit.record_leaf(record))

    def contact_audit_records(self, contact_id: str) -> Iterator[audit.AuditRecord]:
        """The audit records about `contact_id`, by seq: those whose body's
        ``contact_id`` it is, and the audience syncs that added or removed it.

        Streams: the database narrows the rows by a text match on the
        canonical body, and each row is then checked exactly.
        """
        needle = json.dumps(contact_id)
        last = 0
        while True:
            with self._sessions.begin() as session:
                rows = session.scalars(
                    sa.select(models.AuditRow)
                    .where(
                        models.AuditRow.seq > last,
                        models.AuditRow.body.contains(needle, autoescape=True),
                    )
                    .order_by(models.AuditRow.seq)
                    .limit(1000)
                ).all()
            if not rows:
                return
            for row in rows:
                record = _to_record(row)
                if _is_about(record, contact_id):
                    yield record
            last = rows[-1].seq

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The stored checkpoint of the largest size (the newest of equals)."""
        with self._sessions.begin() as session:
            rows = session.scalars(sa.select(models.CheckpointRow)).all()
            stored = [_to_checkpoint(row) for row in rows]
        return max(stored, key=lambda c: (c.size, c.id), default=None)

    def save_checkpoint(
        self, size: int, root_hex: str, note: str, key_name: str, signed_at: datetime
    ) -> StoredCheckpoint:
        """Store one signed checkpoint and return it with its id."""
        with self._sessions.begin() as session:
            row = models.CheckpointRow(
                size=size,
                root_hex=root_hex,
                note=note,
                key_name=key_name,
                signed_at=signed_at,
            )
            session.add(row)
            session.flush()
            return _to_checkpoint(row)

    def counts(self) -> Mapping[str, int]:
        """Row counts per table, for summaries and tests."""
        tables = ("contacts", "consents", "events", "sends", "decisions")
        with self._sessions.begin() as session:
            return {
                t: session.scalar(sa.select(sa.func.count()).select_from(sa.table(t)))
                or 0
                for t in tables
            }

    def remember(self, key: str, answer: Mapping[str, Any], now: datetime) -> bool:
        """Keep an answer under an idempotency key that no decision made
        (a provider's reply id). False when the key is already taken."""
        try:
            with self._sessions.begin() as session:
                session.add(
                    models.DecisionRow(
                        idempotency_key=key,
                        request_digest="inbound",
                        response=dict(answer),
                        created_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True


def _create_engine(url: str) -> Engine:
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot open store {_redact(url)!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        _serialise_sqlite_writers(engine)
    return engine


def _redact(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _serialise_sqlite_writers(engine: Engine) -> None:
    """Make every SQLite transaction BEGIN IMMEDIATE (one writer at a time)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def new_contact_id() -> str:
    """A fresh pseudonymous id: ``ct_`` and 20 hex digits, drawn again in the
    rare case (about 1 in 11,000) that it reads like a phone number, since
    ids go to logs and the audit log, where nothing may look personal."""
    while looks_personal(contact_id := "ct_" + secrets.token_hex(10)):
        pass
    return contact_id


def _is_about(record: audit.AuditRecord, contact_id: str) -> bool:
    body = record.body
    if body.get("contact_id") == contact_id:
        return True
    return record.kind == "audience_sync" and (
        contact_id in body.get("added", ()) or contact_id in body.get("removed", ())
    )


def _new_contact(external_id: str, now: datetime) -> models.Contact:
    return models.Contact(
        contact_id=new_contact_id(),
        external_id=external_id,
        stage="new",
        do_not_contact=False,
        sms_capable=True,
        attributes={},
        created_at=now,
        updated_at=now,
    )


def _apply(row: models.Contact, fields: ContactFields, now: datetime) -> None:
    for name in (
        "phone_e164",
        "email",
        "stage",
        "time_zone",
        "region",
        "do_not_contact",
        "sms_capable",
    ):
        value = getattr(fields, name)
        if value is not None:
            setattr(row, name, value)
    if fields.attributes is not None:
        row.attributes = dict(fields.attributes)
    row.updated_at = now


def _find(session: Session, ref: ContactRef, *, lock: bool) -> models.Contact:
    column = models.Contact.contact_id if ref.contact_id else models.Contact.external_id
    query = sa.select(models.Contact).where(
        column == (ref.contact_id or ref.external_id)
    )
    if lock:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise ContactNotFoundError(f"no contact with {ref.describe()}")
    return row


def _snapshot(
    session: Session, row: models.Contact, since: datetime | None
) -> ContactSnapshot:
    consents = _consents_of(session, [row.id]).get(row.id, ())
    confirmations = _confirmations_of(session, [row.id])
    sends: tuple[PastSend, ...] = ()
    if since is not None:
        sends = tuple(
            PastSend(s.sent_at, s.channel, s.purpose)
            for s in session.scalars(
                sa.select(models.Send)
                .where(models.Send.contact_pk == row.id, models.Send.sent_at > since)
                .order_by(models.Send.sent_at)
            )
        )
    return _snapshot_of(row, consents, confirmations, sends)


def _insert_new_members(session: Session, rows: list[dict[str, Any]]) -> sa.Executable:
    """INSERT these audience members, skipping any already stored (ON
    CONFLICT DO NOTHING, which SQLite and PostgreSQL both understand)."""
    table = models.AudienceMemberRow
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).values(rows).on_conflict_do_nothing()
    return sqlite.insert(table).values(rows).on_conflict_do_nothing()


def _consents_of(
    session: Session, pks: list[int]
) -> dict[int, tuple[ConsentEntry, ...]]:
    """The consent ledgers of these contacts, each oldest first."""
    ledgers: dict[int, list[ConsentEntry]] = {}
    if pks:
        for entry in session.scalars(
            sa.select(models.Consent)
            .where(models.Consent.contact_pk.in_(pks))
            .order_by(
                models.Consent.contact_pk,
                models.Consent.recorded_at,
                models.Consent.id,
            )
        ):
            ledgers.setdefault(entry.contact_pk, []).append(_consent_entry(entry))
    return {pk: tuple(entries) for pk, entries in ledgers.items()}


def _confirmations_of(
    session: Session, pks: list[int]
) -> dict[int, dict[str, datetime]]:
    """Contact pk -> channel -> when its last opt-out confirmation was sent."""
    found: dict[int, dict[str, datetime]] = {}
    if pks:
        for pk, channel, sent_at in session.execute(
            sa.select(
                models.Send.contact_pk,
                models.Send.channel,
                sa.func.max(models.Send.sent_at),
            )
            .where(
                models.Send.contact_pk.in_(pks),
                models.Send.purpose == "opt_out_confirmation",
            )
            .group_by(models.Send.contact_pk, models.Send.channel)
        ):
            if sent_at is not None:
                found.setdefault(pk, {})[channel] = _aware(sent_at)
    return found


def _snapshot_of(
    row: models.Contact,
    consents: tuple[ConsentEntry, ...],
    confirmations: Mapping[int, Mapping[str, datetime]],
    sends: tuple[PastSend, ...],
) -> ContactSnapshot:
    return ContactSnapshot(
        pk=row.id,
        contact_id=row.contact_id,
        external_id=row.external_id,
        phone_e164=row.phone_e164,
        email=row.email,
        stage=row.stage,
        tier=row.tier,
        time_zone=row.time_zone,
        region=row.region,
        do_not_contact=row.do_not_contact,
        sms_capable=row.sms_capable,
        attributes=dict(row.attributes or {}),
        consents=consents,
        sends=sends,
        confirmations=dict(confirmations.get(row.id, {})),
        erased=row.erased_at is not None,
    )


def _aware(moment: Any) -> datetime:
    """Aggregates bypass the column type: read them back as aware UTC."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _consent_entry(row: models.Consent) -> ConsentEntry:
    return ConsentEntry(
        id=row.id,
        channel=row.channel,
        purpose=row.purpose,
        granted=row.granted,
        source=row.source,
        recorded_at=row.recorded_at,
        legal_basis=row.legal_basis,
        expires_at=row.expires_at,
        disclosure_sha256=row.disclosure_sha256,
        pending=row.pending,
        provider_confirmed=row.provider_confirmed,
    )


def _stored_decision(
    session: Session, key: str
) -> tuple[str, Mapping[str, Any]] | None:
    row = session.scalar(
        sa.select(models.DecisionRow).where(models.DecisionRow.idempotency_key == key)
    )
    return None if row is None else (row.request_digest, row.response)


def _decision_row(key: str, digest: str, verdict: Verdict) -> models.DecisionRow:
    return models.DecisionRow(
        idempotency_key=key,
        request_digest=digest,
        response=dict(verdict.response),
        created_at=_now(),
    )


def _reserve(
    session: Session, contact_pk: int, reservation: Reservation | None, seq: int
) -> None:
    if reservation is None:
        return
    session.add(
        models.Send(
            contact_pk=contact_pk,
            channel=reservation.channel,
            purpose=reservation.purpose,
            campaign=reservation.campaign,
            sent_at=reservation.at,
            audit_seq=seq,
        )
    )


def _apply_in_savepoint(unit: Unit[_Writer, Any], writer: _Writer) -> None:
    mark = writer.seq, writer.hash
    try:
        with writer.session.begin_nested():
            result = unit.work(writer)
    except Exception as exc:
        writer.seq, writer.hash = mark
        unit.fail(exc)
    else:
        unit.succeed(result)


_LOCK_HEAD: Final = (
    sa.select(models.AuditHead.seq, models.AuditHead.hash)
    .where(models.AuditHead.id == 1)
    .with_for_update()
)
_MOVE_HEAD: Final = (
    sa.update(models.AuditHead)
    .where(models.AuditHead.id == 1)
    .values(seq=sa.bindparam("head_seq"), hash=sa.bindparam("head_hash"))
)


class _Writer:
    """What a unit of work is given: the group's session, and the audit
    chain's head, locked from the first unit of the group to its commit."""

    def __init__(self, session: Session) -> None:
        head = session.execute(_LOCK_HEAD).one_or_none()
        if head is None:
            raise StoreError("audit_head row is missing: the store was not migrated")
        self.session = session
        self.seq: int = head.seq
        self.hash: str = head.hash
        self._locked = (self.seq, self.hash)

    def append(self, kind: str, body: Mapping[str, Any]) -> int:
        """Append one record after the head; return its seq."""
        prev = None
        if self.seq:
            prev = audit.AuditRecord(
                seq=self.seq,
                recorded_at="",
                kind="",
                body={},
                prev_hash="",
                hash=self.hash,
            )
        record = audit.make_record(prev, kind, dict(body), _rfc3339(_now()))
        self.session.add(
            models.AuditRow(
                seq=record.seq,
                recorded_at=record.recorded_at,
                kind=record.kind,
                body=audit.canonical_json(dict(record.body)).decode("utf-8"),
                prev_hash=record.prev_hash,
                hash=record.hash,
                salt=record.salt,
            )
        )
        self.seq, self.hash = record.seq, record.hash
        return record.seq

    def save(self) -> None:
        """Point the head row at the last record appended, if any was."""
        if (self.seq, self.hash) != self._locked:
            self.session.connection().execute(
                _MOVE_HEAD, {"head_seq": self.seq, "head_hash": self.hash}
            )


def _to_record(row: models.AuditRow) -> audit.AuditRecord:
    try:
        body = json.loads(row.body)
    except json.JSONDecodeError:
        raise audit.ChainBrokenError(
            row.seq, "its stored body is not valid JSON (record edited?)", row.seq
        ) from None
    return audit.AuditRecord(
        seq=row.seq,
        recorded_at=row.recorded_at,
        kind=row.kind,
        body=body,
        prev_hash=row.prev_hash,
        hash=row.hash,
        salt=row.salt,
    )


def _to_checkpoint(row: models.CheckpointRow) -> StoredCheckpoint:
    """Size and root come from the signed note itself, never from the
    columns beside it, which anyone with write access could change."""
    try:
        signed = audit.read_unverified(row.note)
        size, root_hex = signed.size, signed.root_hash.hex()
    except audit.AuditError:
        size, root_hex = -1, ""  # an unreadable note: verification will fail
    return StoredCheckpoint(
        id=row.id,
        size=size,
        root_hex=root_hex,
        note=row.note,
        signed_at=row.signed_at,
        key_name=row.key_name,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
