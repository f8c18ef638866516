"""Per-message processor time of the send activity's database work, phase by phase, on a fresh
SQLite file: the reads (`_load`), the lease (`_lease`), the point of no return
(`_mark_handing_over`) and the `sent` record (`_mark_sent`), as one attempt runs them (the
message composed between the reads and the lease, timed apart). No Temporal, no SMTP.

    .venv/bin/python -m tools.send_db_bench                 # 2,000 messages, best of 3 rounds
    .venv/bin/python -m tools.send_db_bench --messages 500 --runs 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlmodel import Session

from activities.sending import Loaded, PreparedSend, SendingActivities
from domain.journey import Decision, StepInput
from mail.transport import SmtpTransport
from settings import Settings
from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import Campaign, Enrollment, Step, Template

HTML = '<p>Hi {{ email }}</p><a href="https://example.com/a">a</a>'  # the bench's template
PHASES = ("load", "compose", "lease", "handing_over", "sent")


def world(directory: Path, messages: int) -> tuple[SendingActivities, list[StepInput]]:
    url = f"sqlite:///{directory / 'drip.db'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        template = Template(name="t", html=HTML)
        campaign = Campaign(name="bench", status="active", from_email="news@bench.example")
        session.add_all([template, campaign])
        session.flush()
        step = Step(campaign_id=campaign.id or 0, step_order=1, subject="Hello {{ email }}",
                    template_id=template.id or 0)  # fmt: skip
        people = [
            Enrollment(
                campaign_id=campaign.id or 0, email=f"p{i}@bench.example", workflow_id=f"w{i}"
            )  # fmt: skip
            for i in range(messages)
        ]
        session.add(step)
        session.add_all(people)
        session.commit()
        inputs = [StepInput(p.id or 0, step.id or 0, 1, Decision.SENT) for p in people]
    settings = Settings(database_url=url, public_url="https://drip.example.com",
                        secret_key="bench-secret-long-enough-0123456789abcdef")  # fmt: skip
    return SendingActivities(settings, engine, SmtpTransport("smtp://127.0.0.1:9")), inputs


def one_round(acts: SendingActivities, inputs: list[StepInput]) -> dict[str, float]:
    spent = dict.fromkeys(PHASES, 0.0)

    def timed(phase: str, call: Callable[..., Any], *args: Any) -> Any:
        begun = time.process_time()
        result = call(*args)
        spent[phase] += time.process_time() - begun
        return result

    for step in inputs:
        loaded = timed("load", acts._load, step)
        assert isinstance(loaded, Loaded), loaded
        message, envelope, links = timed(
            "compose", acts._compose, loaded.delivery_id, loaded.enrollment, loaded.campaign,
            loaded.step, loaded.subject, loaded.template, loaded.trigger,
        )  # fmt: skip
        prepared = timed("lease", acts._lease, step, loaded, message, envelope, links)
        assert isinstance(prepared, PreparedSend), prepared
        timed("handing_over", acts._mark_handing_over, prepared.delivery_id, prepared.lease)
        timed("sent", acts._mark_sent, prepared.delivery_id)
    return {phase: seconds / len(inputs) * 1000 for phase, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    best = dict.fromkeys(PHASES, float("inf"))
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as directory:
            acts, inputs = world(Path(directory), args.messages)
            for phase, ms in one_round(acts, inputs).items():
                best[phase] = min(best[phase], ms)
            acts.close()
            acts.engine.dispose()
    database = sum(ms for phase, ms in best.items() if phase != "compose")
    print(f"processor time per message, best of {args.runs} rounds of {args.messages:,}:")
    for phase in PHASES:
        print(f"  {phase:<13} {best[phase]:6.2f} ms")
    print(f"  {'database':<13} {database:6.2f} ms (all but compose)")


if __name__ == "__main__":
    main()
