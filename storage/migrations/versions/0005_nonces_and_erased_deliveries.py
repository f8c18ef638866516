"""Webhook nonces: single-use values of provider signatures (Mailgun's token); erased
deliveries: the ids of deliveries an erasure deleted, so a late provider event about one is
stored without the address it names.

Revision ID: 0005_nonces_erased
Revises: 0004_lease
Create Date: 2026-12-01

Read by storage/webhook_nonces.py; rows older than the replay window are pruned lazily.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_nonces_erased"
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
    op.create_table(
        "erased_delivery",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("erased_delivery")
    op.drop_index("ix_webhook_nonce_seen_at", table_name="webhook_nonce")
    op.drop_table("webhook_nonce")
