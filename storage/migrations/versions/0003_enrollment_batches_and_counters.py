"""Enrollment batches (staged rows of large enrollments and CSV imports), and the running counters
behind stats and the funnel, backfilled from the rows already there.

Revision ID: 0003_batches_counters
Revises: 0002_idempotency
Create Date: 2026-11-26

Written by hand from storage/models.py (EnrollmentBatch, EnrollmentBatchRow, StatCounter,
DeliveryMilestone). The backfill computes what storage/counters.py would have counted had the
counters always existed (`python -m storage.counters` does the same for one campaign).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_batches_counters"
down_revision: str | Sequence[str] | None = "0002_idempotency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)

# milestone -> which events reach it (storage/counters.py EVENT_MILESTONES, as SQL)
EVENT_MILESTONES = {
    "delivered": "e.type = 'delivered'",
    "opened": "e.type IN ('open', 'click') AND e.machine = false",
    "clicked": "e.type = 'click' AND e.machine = false",
    "opened_any": "e.type IN ('open', 'click')",
    "clicked_any": "e.type = 'click'",
    "bounced": "e.type = 'bounce_hard'",
    "unsubscribed": "e.type = 'unsubscribe'",
    "complained": "e.type = 'complaint'",
}


def upgrade() -> None:
    op.create_table(
        "enrollment_batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("filename", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("status_reason", sa.String(), nullable=True),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("enrolled", sa.Integer(), nullable=False),
        sa.Column("started", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_enrollment_batch_campaign_id", "enrollment_batch", ["campaign_id"])
    op.create_index("ix_enrollment_batch_status", "enrollment_batch", ["status"])
    op.create_table(
        "enrollment_batch_row",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("enrollment_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["enrollment_batch.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_enrollment_batch_row_batch_id", "enrollment_batch_row", ["batch_id", "id"])
    op.create_index(
        "ix_enrollment_batch_row_batch_state", "enrollment_batch_row", ["batch_id", "state"]
    )
    op.create_index(
        "ix_enrollment_batch_row_enrollment_id", "enrollment_batch_row", ["enrollment_id"]
    )
    op.create_table(
        "stat_counter",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "step_id", "metric"),
    )
    op.create_table(
        "delivery_milestone",
        sa.Column("delivery_id", sa.String(), nullable=False),
        sa.Column("milestone", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", "milestone"),
    )
    _backfill()


def _backfill() -> None:
    counter = "INSERT INTO stat_counter (campaign_id, step_id, metric, value) "
    for metric, where in [
        ("recipients", "1 = 1"),
        ("completed", "status = 'completed'"),
        ("opened", "opened_at IS NOT NULL"),
        ("clicked", "clicked_at IS NOT NULL"),
    ]:
        op.execute(
            counter + f"SELECT campaign_id, 0, '{metric}', count(*) FROM enrollment "
            f"WHERE {where} GROUP BY campaign_id"
        )
    for metric, where in [
        ("reached", "1 = 1"),
        ("skipped", "decision = 'skipped'"),
        ("sent", "decision = 'sent' AND status = 'sent'"),
        ("alternative_sent", "decision = 'alternative' AND status = 'sent'"),
    ]:
        op.execute(
            counter + f"SELECT campaign_id, step_id, '{metric}', count(*) FROM delivery "
            f"WHERE {where} GROUP BY campaign_id, step_id"
        )
    milestone = "INSERT INTO delivery_milestone (delivery_id, milestone) "
    for name, where in EVENT_MILESTONES.items():
        bounced = (
            " UNION SELECT id FROM delivery WHERE status = 'bounced'" if name == "bounced" else ""
        )
        op.execute(
            milestone + f"SELECT reached.id, '{name}' FROM ("
            f"SELECT d.id FROM event e JOIN delivery d ON d.id = e.delivery_id WHERE {where}"
            f"{bounced}) AS reached GROUP BY reached.id"
        )
    op.execute(
        counter + "SELECT d.campaign_id, d.step_id, m.milestone, count(*) "
        "FROM delivery_milestone m JOIN delivery d ON d.id = m.delivery_id "
        "GROUP BY d.campaign_id, d.step_id, m.milestone"
    )


def downgrade() -> None:
    op.drop_table("delivery_milestone")
    op.drop_table("stat_counter")
    op.drop_table("enrollment_batch_row")
    op.drop_table("enrollment_batch")
