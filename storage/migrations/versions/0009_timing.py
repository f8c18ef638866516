"""When a message may go out: send windows, delay until a date, frequency caps.

Revision ID: 0009_timing
Revises: 0008_webhooks_out
Create Date: 2026-12-01

Campaign and step columns for windows and delay_until; the frequency cap, its per-address lock
rows, the messages it counts and the steps it held (services/frequency.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_timing"
down_revision: str | Sequence[str] | None = "0008_webhooks_out"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("send_window", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("frequency_cap", sa.String(), nullable=False, server_default="apply")
        )
        batch.add_column(sa.Column("on_cap", sa.String(), nullable=False, server_default="defer"))
    with op.batch_alter_table("step") as batch:
        batch.add_column(sa.Column("send_window", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("ignore_send_window", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("delay_until_field", sa.String(), nullable=True))
        batch.add_column(
            sa.Column("delay_until_offset_hours", sa.Float(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("skip_reason", sa.String(), nullable=True))
    op.create_table(
        "frequency_cap",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("max_messages", sa.Integer(), nullable=False),
        sa.Column("per_hours", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "cap_address",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("email"),
    )
    op.create_table(
        "cap_slot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("enrollment_id", "step_id", name="uq_cap_slot_step"),
    )
    op.create_index("ix_cap_slot_email_reserved_at", "cap_slot", ["email", "reserved_at"])
    op.create_table(
        "cap_hold",
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id", "step_id"),
    )
    op.create_index("ix_cap_hold_campaign_id", "cap_hold", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_cap_hold_campaign_id", table_name="cap_hold")
    op.drop_table("cap_hold")
    op.drop_index("ix_cap_slot_email_reserved_at", table_name="cap_slot")
    op.drop_table("cap_slot")
    op.drop_table("cap_address")
    op.drop_table("frequency_cap")
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("skip_reason")
    with op.batch_alter_table("step") as batch:
        batch.drop_column("delay_until_offset_hours")
        batch.drop_column("delay_until_field")
        batch.drop_column("ignore_send_window")
        batch.drop_column("send_window")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("on_cap")
        batch.drop_column("frequency_cap")
        batch.drop_column("send_window")
