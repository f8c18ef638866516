"""Campaign versions: drafts, publishing with an in-flight policy.

Revision ID: 0010_versions
Revises: 0009_timing
Create Date: 2026-12-01

The campaign's live version number, each version's snapshot (services/versions.py), and the
version each journey runs (0: the live one). The publish preview counts enrollments by
(campaign_id, status, campaign_version, current_step): one index serves it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_versions"
down_revision: str | Sequence[str] | None = "0009_timing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(
            sa.Column("live_version", sa.Integer(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("enrollment") as batch:
        batch.add_column(
            sa.Column("campaign_version", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_index(
        "ix_enrollment_campaign_version_step",
        "enrollment",
        ["campaign_id", "status", "campaign_version", "current_step"],
    )
    op.create_table(
        "campaign_version",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("policy", sa.String(), nullable=True),
        sa.Column("broadcast", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("campaign_id", "number"),
    )


def downgrade() -> None:
    op.drop_table("campaign_version")
    op.drop_index("ix_enrollment_campaign_version_step", table_name="enrollment")
    with op.batch_alter_table("enrollment") as batch:
        batch.drop_column("campaign_version")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("live_version")
