"""Consent evidence and erasure: legal basis, expiry, disclosure hash,
pending double opt-in, provider-confirmed opt-outs; erased and
audience-removal flags on contacts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consents") as table:
        table.add_column(
            sa.Column(
                "legal_basis", sa.String(40), nullable=False, server_default="express"
            )
        )
        table.add_column(sa.Column("expires_at", UTCDateTime, nullable=True))
        table.add_column(sa.Column("disclosure_sha256", sa.String(64), nullable=True))
        table.add_column(
            sa.Column("pending", sa.Boolean, nullable=False, server_default=sa.false())
        )
        table.add_column(
            sa.Column(
                "provider_confirmed",
                sa.Boolean,
                nullable=False,
                server_default=sa.false(),
            )
        )
    with op.batch_alter_table("contacts") as table:
        table.add_column(sa.Column("erased_at", UTCDateTime, nullable=True))
        table.add_column(
            sa.Column(
                "audience_removal_due",
                sa.Boolean,
                nullable=False,
                server_default=sa.false(),
            )
        )
    op.create_index("ix_contacts_phone", "contacts", ["phone_e164"])
    op.create_index("ix_contacts_email", "contacts", ["email"])


def downgrade() -> None:
    op.drop_index("ix_contacts_email", "contacts")
    op.drop_index("ix_contacts_phone", "contacts")
    with op.batch_alter_table("contacts") as table:
        table.drop_column("audience_removal_due")
        table.drop_column("erased_at")
    with op.batch_alter_table("consents") as table:
        for column in (
            "provider_confirmed",
            "pending",
            "disclosure_sha256",
            "expires_at",
            "legal_basis",
        ):
            table.drop_column(column)
