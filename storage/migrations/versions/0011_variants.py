"""A/B variants of a step, holdouts and the chosen winner.

Revision ID: 0011_variants
Revises: 0010_versions
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0011_variants"
down_revision: str | Sequence[str] | None = "0010_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # filled in by the change that needs it


def downgrade() -> None:
    pass
