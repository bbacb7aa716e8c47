"""Signed checkpoints of the audit log: the Merkle tree head at a size.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root_hex", sa.String(64), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("signed_at", UTCDateTime, nullable=False),
        sa.Column("key_name", sa.String(200), nullable=False),
    )
    op.create_index("ix_checkpoints_size", "checkpoints", ["size"])


def downgrade() -> None:
    op.drop_index("ix_checkpoints_size", "checkpoints")
    op.drop_table("checkpoints")
