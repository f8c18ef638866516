"""Journeys that react to the product: tracked events, event conditions, goals, triggers, re-entry.

Revision ID: 0007_journeys
Revises: 0006_status_version
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0007_journeys"
down_revision: str | Sequence[str] | None = "0006_status_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # filled in by the change that needs it


def downgrade() -> None:
    pass
