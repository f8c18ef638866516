"""When a message may go out: send windows, delay until a date, frequency caps.

Revision ID: 0009_timing
Revises: 0008_webhooks_out
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0009_timing"
down_revision: str | Sequence[str] | None = "0008_webhooks_out"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # filled in by the change that needs it


def downgrade() -> None:
    pass
