"""The store's tables, as SQLAlchemy 2 declarative models.

The schema itself is created and changed only by the Alembic migrations in
`gateway/migrations`; these models must match them (a test compares both).
Every timestamp is stored as UTC and read back as an aware UTC datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: expected an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        Index("ix_contacts_phone", "phone_e164"),
        Index("ix_contacts_email", "email"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(40), unique=True)
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    phone_e164: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(320))
    stage: Mapped[str] = mapped_column(String(20), default="new")
    tier: Mapped[str | None] = mapped_column(String(60))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(10))
    do_not_contact: Mapped[bool] = mapped_column(Boolean, default=False)
    sms_capable: Mapped[bool] = mapped_column(Boolean, default=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # set by an opt-out: the contact must leave every ad audience
    audience_removal_due: Mapped[bool] = mapped_column(Boolean, default=False)


class Consent(Base):
    """One entry of the append-only consent ledger."""

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_contact", "contact_pk", "recorded_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_pk: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    channel: Mapped[str] = mapped_column(String(40))
    purpose: Mapped[str] = mapped_column(String(40))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(40))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    audit_seq: Mapped[int] = mapped_column(BigInteger)
    legal_basis: Mapped[str] = mapped_column(String(40), default="express")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disclosure_sha256: Mapped[str | None] = mapped_column(String(64))
    # a double opt-in not yet confirmed by the contact
    pending: Mapped[bool] = mapped_column(Boolean, default=False)
    # an opt-out the provider already confirmed to the contact (no second text)
    provider_confirmed: Mapped[bool] = mapped_column(Boolean, default=False)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_contact", "contact_pk", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_pk: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    kind: Mapped[str] = mapped_column(String(60))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    audit_seq: Mapped[int] = mapped_column(BigInteger)


class Send(Base):
    """A message the gateway allowed: what frequency caps count."""

    __tablename__ = "sends"
    __table_args__ = (Index("ix_sends_contact_time", "contact_pk", "sent_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_pk: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    channel: Mapped[str] = mapped_column(String(40))
    purpose: Mapped[str] = mapped_column(String(40))
    campaign: Mapped[str] = mapped_column(String(200))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    audit_seq: Mapped[int] = mapped_column(BigInteger)


class DecisionRow(Base):
    """The answer given to an idempotency key, replayed on a retry."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRow(Base):
    """One record of the hash-chained audit log (see the `audit` package)."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    recorded_at: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    salt: Mapped[str] = mapped_column(String(64), default="")


class AuditHead(Base):
    """The single row naming the chain's last record; locked to append."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class CheckpointRow(Base):
    """One signed checkpoint of the audit log (a C2SP signed note)."""

    __tablename__ = "checkpoints"
    __table_args__ = (Index("ix_checkpoints_size", "size"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root_hex: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_name: Mapped[str] = mapped_column(String(200))


class AudienceMemberRow(Base):
    """A contact in a platform audience, as last synced (see SyncAudience)."""

    __tablename__ = "audience_members"
    __table_args__ = (
        UniqueConstraint(
            "platform", "audience_id", "contact_pk", name="uq_audience_member"
        ),
        Index("ix_audience_members_contact", "contact_pk"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(40))
    audience_id: Mapped[str] = mapped_column(String(200))
    contact_pk: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
