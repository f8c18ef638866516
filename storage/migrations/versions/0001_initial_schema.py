"""Initial schema: campaigns, steps, templates, enrollments, deliveries, events, suppressions.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Generated with `alembic revision --autogenerate` from storage/models.py, then checked by hand:
indexes as plain CREATE INDEX (fine on SQLite and PostgreSQL), tables in dependency order.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("html", sa.String(), nullable=False),
        sa.Column("text", sa.String(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("status_reason", sa.String(), nullable=True),
        sa.Column("from_email", sa.String(), nullable=True),
        sa.Column("from_name", sa.String(), nullable=True),
        sa.Column("reply_to", sa.String(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_campaign_status", "campaign", ["status"])

    op.create_table(
        "step",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("step_order", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("delay_hours", sa.Float(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("condition_type", sa.String(), nullable=True),
        sa.Column("condition_step_id", sa.Integer(), nullable=True),
        sa.Column("condition_url", sa.String(), nullable=True),
        sa.Column("alt_subject", sa.String(), nullable=True),
        sa.Column("alt_template_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.ForeignKeyConstraint(["template_id"], ["template.id"]),
        sa.ForeignKeyConstraint(["alt_template_id"], ["template.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_step_campaign_id", "step", ["campaign_id"])
    op.create_index("ix_step_template_id", "step", ["template_id"])
    op.create_index("ix_step_alt_template_id", "step", ["alt_template_id"])

    op.create_table(
        "enrollment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("status_reason", sa.String(), nullable=True),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("workflow_started", sa.Boolean(), nullable=False),
        sa.Column("opened_at", TZ, nullable=True),
        sa.Column("clicked_at", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "email", name="uq_enrollment_campaign_email"),
    )
    op.create_index("ix_enrollment_email", "enrollment", ["email"])
    op.create_index("ix_enrollment_campaign_status", "enrollment", ["campaign_id", "status"])
    op.create_index("ix_enrollment_unstarted", "enrollment", ["workflow_started"])

    op.create_table(
        "delivery",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("step_order", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("condition_met", sa.Boolean(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("message_id", sa.String(), nullable=True),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("decided_at", TZ, nullable=False),
        sa.Column("send_started_at", TZ, nullable=True),
        sa.Column("sent_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(["enrollment_id"], ["enrollment.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("enrollment_id", "step_id", name="uq_delivery_step"),
    )
    op.create_index("ix_delivery_enrollment_id", "delivery", ["enrollment_id"])
    op.create_index("ix_delivery_campaign_id", "delivery", ["campaign_id"])
    op.create_index("ix_delivery_message_id", "delivery", ["message_id"])

    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("dedupe_key", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=True),
        sa.Column("raw_type", sa.String(), nullable=False),
        sa.Column("delivery_id", sa.String(), nullable=True),
        sa.Column("enrollment_id", sa.Integer(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("step_id", sa.Integer(), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("url", sa.String(), nullable=True),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("machine_reason", sa.String(), nullable=True),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("signalled", sa.Boolean(), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "dedupe_key", name="uq_event_dedupe"),
    )
    op.create_index("ix_event_delivery_id", "event", ["delivery_id"])
    op.create_index("ix_event_enrollment_id", "event", ["enrollment_id"])
    op.create_index("ix_event_campaign_id", "event", ["campaign_id"])
    op.create_index("ix_event_email", "event", ["email"])
    op.create_index("ix_event_unsignalled", "event", ["signalled"])

    op.create_table(
        "suppression",
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("email"),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents.
    for table in ("suppression", "event", "delivery", "enrollment", "step", "campaign", "template"):
        op.drop_table(table)
