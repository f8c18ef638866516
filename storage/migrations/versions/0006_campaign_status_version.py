"""Campaign status versions: each status change is counted, so journeys keep the newest status
they hear of, and the outbox tells running journeys about changes they missed.

Revision ID: 0006_status_version
Revises: 0005_nonces_erased
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_status_version"
down_revision: str | Sequence[str] | None = "0005_nonces_erased"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(
            sa.Column("status_version", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("broadcast_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("broadcast_version")
        batch.drop_column("status_version")
