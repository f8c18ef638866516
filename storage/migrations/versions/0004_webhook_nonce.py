"""Webhook nonces: single-use values of provider signatures (Mailgun's token).

Revision ID: 0004_webhook_nonce
Revises: 0004_lease
Create Date: 2026-12-01

Read by storage/webhook_nonces.py; rows older than the replay window are pruned lazily.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_webhook_nonce"
down_revision: str | Sequence[str] | None = "0004_lease"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_nonce",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("nonce", sa.String(length=255), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "nonce"),
    )
    op.create_index("ix_webhook_nonce_seen_at", "webhook_nonce", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_nonce_seen_at", table_name="webhook_nonce")
    op.drop_table("webhook_nonce")
