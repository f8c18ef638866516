"""Journey events out: webhook subscriptions and their deliveries.

Revision ID: 0008_webhooks_out
Revises: 0007_journeys
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0008_webhooks_out"
down_revision: str | Sequence[str] | None = "0007_journeys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # filled in by the change that needs it


def downgrade() -> None:
    pass
