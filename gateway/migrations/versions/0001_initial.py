"""Initial schema: contacts, consent ledger, events, sends, decisions, audit.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from gateway.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("contact_id", sa.String(40), nullable=False, unique=True),
        sa.Column("external_id", sa.String(200), nullable=False, unique=True),
        sa.Column("phone_e164", sa.String(20)),
        sa.Column("email", sa.String(320)),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("tier", sa.String(60)),
        sa.Column("time_zone", sa.String(64)),
        sa.Column("region", sa.String(10)),
        sa.Column("do_not_contact", sa.Boolean, nullable=False),
        sa.Column("sms_capable", sa.Boolean, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    _ledger(
        "consents",
        [
            sa.Column("channel", sa.String(40), nullable=False),
            sa.Column("purpose", sa.String(40), nullable=False),
            sa.Column("granted", sa.Boolean, nullable=False),
            sa.Column("source", sa.String(40), nullable=False),
            sa.Column("recorded_at", UTCDateTime, nullable=False),
        ],
        "recorded_at",
    )
    _ledger(
        "events",
        [
            sa.Column("kind", sa.String(60), nullable=False),
            sa.Column("attributes", sa.JSON, nullable=False),
            sa.Column("occurred_at", UTCDateTime, nullable=False),
        ],
        "occurred_at",
    )
    _ledger(
        "sends",
        [
            sa.Column("channel", sa.String(40), nullable=False),
            sa.Column("purpose", sa.String(40), nullable=False),
            sa.Column("campaign", sa.String(200), nullable=False),
            sa.Column("sent_at", UTCDateTime, nullable=False),
        ],
        "sent_at",
        index_name="ix_sends_contact_time",
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    _audit_tables()


def _ledger(
    name: str, columns: list[sa.Column[Any]], time_column: str, index_name: str = ""
) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "contact_pk", sa.Integer, sa.ForeignKey("contacts.id"), nullable=False
        ),
        *columns,
        sa.Column("audit_seq", sa.BigInteger, nullable=False),
    )
    op.create_index(
        index_name or f"ix_{name}_contact", name, ["contact_pk", time_column]
    )


def _audit_tables() -> None:
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])


def downgrade() -> None:
    for table in ("audit_head", "audit_records", "decisions", "sends", "events"):
        op.drop_table(table)
    op.drop_table("consents")
    op.drop_table("contacts")
