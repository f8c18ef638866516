"""Bulk-load a campaign's history straight into the tables (the same schema the app writes), for
reading stats and the funnel at sizes no run here could reach; the counters are then computed
by `storage.counters.rebuild`, the backfill path."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from storage import counters
from storage.db import session_scope
from storage.models import Campaign, Delivery, Enrollment, Event, Step, Template

CHUNK = 5000


def load_campaign(engine: Engine, recipients: int, seed: int = 1) -> int:
    """A finished 3-step campaign: step 2 reaches 80%, step 3 60%; every message delivered,
    30% opened (a fifth of those by machines), 10% clicked. Returns the campaign id."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        template = Template(name="bench", html="<p>bench</p>")
        campaign = Campaign(name=f"bench {recipients}", status="active")
        session.add_all([template, campaign])
        session.flush()
        steps = [
            Step(
                campaign_id=campaign.id, step_order=n, subject=f"step {n}", template_id=template.id
            )
            for n in (1, 2, 3)
        ]
        session.add_all(steps)
        session.flush()
        cid, step_ids = campaign.id or 0, [s.id or 0 for s in steps]

    with engine.begin() as conn:
        rows = [
            dict(
                campaign_id=cid,
                email=f"r{i}@c{cid}.bench.example",
                fields={},
                current_step=3,
                status="completed" if rng.random() < 0.9 else "unsubscribed",
                workflow_id=f"drip-campaign-{cid}-r{i}@c{cid}.bench.example",
                workflow_started=True,
                created_at=now,
                opened_at=now if rng.random() < 0.3 else None,
                clicked_at=now if rng.random() < 0.1 else None,
            )
            for i in range(recipients)
        ]
        for start in range(0, len(rows), CHUNK):
            conn.execute(insert(Enrollment), rows[start : start + CHUNK])
        ids = [
            i for (i,) in conn.execute(select(Enrollment.id).where(Enrollment.campaign_id == cid))
        ]
        deliveries, events = [], []
        for enrollment_id in ids:
            for order, step_id in enumerate(step_ids, start=1):
                if order > 1 and rng.random() > (0.8 if order == 2 else 0.75):
                    break  # the journey ended before this step
                delivery_id = f"snd_b{cid}_{enrollment_id}_{order}"
                decision = "sent" if rng.random() < 0.85 else "alternative"
                deliveries.append(
                    dict(
                        id=delivery_id,
                        enrollment_id=enrollment_id,
                        campaign_id=cid,
                        step_id=step_id,
                        step_order=order,
                        decision=decision,
                        status="sent",
                        links=[],
                        decided_at=now,
                        sent_at=now,
                    )
                )
                kinds = ["delivered"]
                if rng.random() < 0.3:
                    kinds.append("open")
                    if rng.random() < 0.33:
                        kinds.append("click")
                for kind in kinds:
                    events.append(
                        dict(
                            provider="bench",
                            dedupe_key=f"{delivery_id}:{kind}",
                            type=kind,
                            raw_type=kind,
                            delivery_id=delivery_id,
                            enrollment_id=enrollment_id,
                            campaign_id=cid,
                            step_id=step_id,
                            machine=kind == "open" and rng.random() < 0.2,
                            occurred_at=now,
                            received_at=now,
                            signalled=True,
                        )
                    )
        for start in range(0, len(deliveries), CHUNK):
            conn.execute(insert(Delivery), deliveries[start : start + CHUNK])
        for start in range(0, len(events), CHUNK):
            conn.execute(insert(Event), events[start : start + CHUNK])
    with session_scope(engine) as session:
        counters.rebuild(session, cid)
    return cid
