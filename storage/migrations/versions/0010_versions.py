"""Campaign versions: drafts, publishing with an in-flight policy.

Revision ID: 0010_versions
Revises: 0009_timing
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0010_versions"
down_revision: str | Sequence[str] | None = "0009_timing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # filled in by the change that needs it


def downgrade() -> None:
    pass
