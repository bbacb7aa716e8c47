"""Audience membership as last synced to each ad platform.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audience_members",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform", sa.String(40), nullable=False),
        sa.Column("audience_id", sa.String(200), nullable=False),
        sa.Column(
            "contact_pk", sa.Integer, sa.ForeignKey("contacts.id"), nullable=False
        ),
        sa.Column("added_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint(
            "platform", "audience_id", "contact_pk", name="uq_audience_member"
        ),
    )
    op.create_index("ix_audience_members_contact", "audience_members", ["contact_pk"])


def downgrade() -> None:
    op.drop_index("ix_audience_members_contact", "audience_members")
    op.drop_table("audience_members")
