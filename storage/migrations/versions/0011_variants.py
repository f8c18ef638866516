"""A/B variants of a step, holdouts and the chosen winner.

Revision ID: 0011_variants
Revises: 0010_versions
Create Date: 2026-12-01

A step's variants and winner rule, the variant a delivery was given, and each step's A/B test
under way (first send, winner due, winner chosen).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_variants"
down_revision: str | Sequence[str] | None = "0010_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("step") as batch:
        batch.add_column(sa.Column("variants", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("winner", sa.JSON(), nullable=True))
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("variant", sa.String(), nullable=True))
    op.create_table(
        "variant_test",
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("winner", sa.String(), nullable=True),
        sa.Column("chosen_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("step_id"),
    )
    op.create_index("ix_variant_test_campaign_id", "variant_test", ["campaign_id"])
    op.create_index("ix_variant_test_due_at", "variant_test", ["due_at"])


def downgrade() -> None:
    op.drop_index("ix_variant_test_due_at", table_name="variant_test")
    op.drop_index("ix_variant_test_campaign_id", table_name="variant_test")
    op.drop_table("variant_test")
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("variant")
    with op.batch_alter_table("step") as batch:
        batch.drop_column("winner")
        batch.drop_column("variants")
