"""Journeys that react to the product: tracked events, event conditions, goals, triggers, re-entry.

Revision ID: 0007_journeys
Revises: 0006_status_version
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_journeys"
down_revision: str | Sequence[str] | None = "0006_status_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tracked_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signalled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("tracked_event") as batch:
        batch.create_index("ix_tracked_event_email_name", ["email", "name", "occurred_at"])
        batch.create_index("ix_tracked_event_email_occurred", ["email", "occurred_at"])
        batch.create_index("ix_tracked_event_unsignalled", ["signalled"])

    op.create_table(
        "conversion",
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("step_order", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id"),
    )
    with op.batch_alter_table("conversion") as batch:
        batch.create_index("ix_conversion_campaign_id", ["campaign_id"])

    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("trigger_event", sa.String(), nullable=True))
        batch.add_column(sa.Column("trigger_where", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("goal_event", sa.String(), nullable=True))
        batch.add_column(sa.Column("goal_where", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("goal_window_hours", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("goal_exit", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(
            sa.Column("reentry_allowed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("reentry_cooldown_hours", sa.Float(), nullable=False, server_default="0")
        )
        batch.create_index("ix_campaign_goal_event", ["goal_event"])
        batch.create_index("ix_campaign_trigger_event", ["trigger_event"])

    with op.batch_alter_table("enrollment") as batch:
        batch.add_column(sa.Column("entry", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("trigger_event_id", sa.String(), nullable=True))
        batch.drop_constraint("uq_enrollment_campaign_email", type_="unique")
        batch.create_unique_constraint(
            "uq_enrollment_campaign_email_entry", ["campaign_id", "email", "entry"]
        )

    with op.batch_alter_table("step") as batch:
        batch.add_column(sa.Column("condition_event", sa.String(), nullable=True))
        batch.add_column(sa.Column("condition_where", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("condition_match", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("condition_wait_hours", sa.Float(), nullable=True))
        batch.create_index("ix_step_condition_event", ["condition_event"])


def downgrade() -> None:
    with op.batch_alter_table("step") as batch:
        batch.drop_index("ix_step_condition_event")
        for column in ("condition_wait_hours", "condition_match", "condition_where"):
            batch.drop_column(column)
        batch.drop_column("condition_event")

    with op.batch_alter_table("enrollment") as batch:
        batch.drop_constraint("uq_enrollment_campaign_email_entry", type_="unique")
        batch.create_unique_constraint("uq_enrollment_campaign_email", ["campaign_id", "email"])
        batch.drop_column("trigger_event_id")
        batch.drop_column("entry")

    with op.batch_alter_table("campaign") as batch:
        batch.drop_index("ix_campaign_trigger_event")
        batch.drop_index("ix_campaign_goal_event")
        for column in (
            "reentry_cooldown_hours",
            "reentry_allowed",
            "goal_exit",
            "goal_window_hours",
            "goal_where",
            "goal_event",
            "trigger_where",
            "trigger_event",
        ):
            batch.drop_column(column)

    op.drop_table("conversion")
    op.drop_table("tracked_event")
