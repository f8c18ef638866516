"""services/variants.py's draw: the deterministic assignment the send makes, without a database
(what a rehearsal uses)."""

from __future__ import annotations

from domain.variants import pick, point
from services.variants import draw
from storage.models import Step


def test_draw_is_the_assignment_the_send_makes() -> None:
    variants = [{"name": "A", "subject": "a", "template_id": 1, "weight": 1},
                {"name": "B", "subject": "b", "template_id": 2, "weight": 3}]  # fmt: skip
    step = Step(id=5, campaign_id=9, step_order=1, subject="s", template_id=1, variants=variants)
    for n in range(50):
        email = f"p{n}@example.com"
        drawn = draw(step, email)
        assert drawn is not None
        assert drawn.name == "AB"[pick([1, 3], point(9, 5, email))]
        assert drawn.template_id == (1 if drawn.name == "A" else 2)
    assert draw(Step(id=5, campaign_id=9, step_order=1, subject="s", template_id=1), "x") is None
