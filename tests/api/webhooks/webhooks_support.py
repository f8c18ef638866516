"""Shared by the webhook HTTP tests (tests/api/webhooks/): secrets the tests generate,
the API (and worker) with every provider configured, payloads shaped like each provider's
(reference/email-events.md and the providers' docs), and bounded waits on journeys.

Payloads are signed with tests/webhooks/signing.py, written from the providers' documentation
rather than from `webhooks.*`, so a bug in the verifiers cannot hide itself here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from storage.db import make_engine
from storage.models import Delivery, Event
from tests.conftest import run_worker, serve_api, unique_domain
from tests.support.factories import make_campaign, make_template
from tests.webhooks.signing import (
    SNS_CERT_URL,
    basic_auth,
    mailgun_body,
    make_sns_certificate,
    resend_secret,
    sendgrid_keypair,
    sign_resend,
    sign_sendgrid,
    sign_sns,
    sns_envelope,
    sns_headers,
    sns_time,
)
from webhooks import build_providers

# --- secrets, generated once per test run ------------------------------------------------------

SENDGRID = sendgrid_keypair()
POSTMARK_USER, POSTMARK_PASSWORD = "drip-hook", secrets.token_urlsafe(18)
MAILGUN_KEY = secrets.token_hex(32)
SES_TOPIC = "arn:aws:sns:eu-west-1:123456789012:drip-ses-events"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:999999999999:someone-elses-topic"
SNS_KEY, SNS_CERT = make_sns_certificate()
RESEND_SECRET = resend_secret()

PROVIDERS = ("sendgrid", "postmark", "mailgun", "ses", "resend")
WAIT = 90.0  # upper bound of every wait: the dev server is shared with other test runs


def with_webhook_secrets(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "sendgrid_webhook_public_key": SENDGRID.public_b64,
            "postmark_webhook_user": POSTMARK_USER,
            "postmark_webhook_password": POSTMARK_PASSWORD,
            "mailgun_webhook_signing_key": MAILGUN_KEY,
            "ses_topic_arns": [SES_TOPIC],
            "resend_webhook_secret": RESEND_SECRET,
        }
    )


class FakeSns:
    """Stands in for the network: serves our self-made certificate and records confirmations."""

    def __init__(self) -> None:
        self.cert_fetches: list[str] = []
        self.confirmed: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.cert_fetches.append(url)
        if url != SNS_CERT_URL:  # any other SNS region: as if the network were down
            raise httpx.ConnectError(f"cannot reach {url}")
        return SNS_CERT

    async def confirm(self, url: str) -> None:
        self.confirmed.append(url)


@dataclass
class Sent:
    """A real delivery the worker made: what a provider's event refers back to."""

    campaign_id: int
    email: str
    delivery_id: str
    message_id: str  # our Message-ID, without angle brackets


def now_unix() -> int:
    return int(time.time())


def now_iso() -> str:
    return sns_time(datetime.now(UTC))


# --- the system under test ---------------------------------------------------------------------


@dataclass
class Hooks:
    api: httpx.AsyncClient
    settings: Settings
    engine: Engine
    sns: FakeSns
    env: WorkflowEnvironment
    templates: list[int] = field(default_factory=list)
    enrolled: list[tuple[int, str]] = field(default_factory=list)

    # -- posting, signed as each provider signs --

    async def post(self, provider: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.api.post(f"/api/webhooks/{provider}", content=body, headers=headers)

    async def sendgrid(
        self, events: list[dict[str, Any]], *, timestamp: int | None = None, private_key=None
    ) -> httpx.Response:
        body = json.dumps(events).encode()
        key = private_key or SENDGRID.private_key
        return await self.post("sendgrid", body, sign_sendgrid(key, timestamp or now_unix(), body))

    async def postmark(
        self, record: dict[str, Any], *, user: str = POSTMARK_USER, password: str | None = None
    ) -> httpx.Response:
        headers = basic_auth(user, POSTMARK_PASSWORD if password is None else password)
        return await self.post("postmark", json.dumps(record).encode(), headers)

    async def mailgun(
        self,
        event_data: dict[str, Any],
        *,
        token: str | None = None,
        timestamp: int | None = None,
        key: str = MAILGUN_KEY,
    ) -> httpx.Response:
        body = mailgun_body(key, event_data, timestamp=timestamp, token=token)
        return await self.post("mailgun", body, {"content-type": "application/json"})

    async def ses(
        self,
        message: dict[str, Any] | str,
        *,
        kind: str = "Notification",
        topic: str = SES_TOPIC,
        version: str = "2",
        message_id: str | None = None,
        timestamp: datetime | None = None,
        key=None,
        cert_url: str = SNS_CERT_URL,
    ) -> httpx.Response:
        envelope = sns_envelope(
            message,
            topic_arn=topic,
            kind=kind,
            timestamp=timestamp,
            cert_url=cert_url,
            message_id=message_id,
        )
        signed = sign_sns(envelope, key or SNS_KEY, version)
        # SNS posts JSON as text/plain: the route must not depend on the content type.
        return await self.post("ses", json.dumps(signed).encode(), sns_headers(signed))

    async def resend(
        self,
        payload: dict[str, Any],
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
        secret: str = RESEND_SECRET,
        rotated_out: str | None = None,
    ) -> httpx.Response:
        body = json.dumps(payload).encode()
        msg_id = msg_id or f"msg_{uuid.uuid4().hex[:27]}"
        headers = sign_resend(secret, msg_id, timestamp or now_unix(), body)
        if rotated_out is not None:  # during a rotation Svix sends one signature per secret
            old = sign_resend(rotated_out, msg_id, timestamp or now_unix(), body)
            headers["svix-signature"] = f"{old['svix-signature']} {headers['svix-signature']}"
        return await self.post("resend", body, headers)

    # -- campaigns, journeys, what was stored --

    async def campaign(self, steps: list[dict[str, Any]]) -> int:
        """An active campaign; its steps share one template unless they name their own."""
        if not self.templates:
            self.templates.append(await make_template(self.api))
        steps = [{"template_id": self.templates[0], **s} for s in steps]
        return (await make_campaign(self.api, steps))["id"]

    async def enroll(self, campaign_id: int, *emails: str) -> dict[str, Any]:
        response = await self.api.post(
            f"/api/campaigns/{campaign_id}/recipients",
            json={"recipients": [{"email": e} for e in emails]},
        )
        assert response.status_code == 200, response.text
        self.enrolled.extend((campaign_id, e) for e in emails)
        return response.json()

    async def end_journeys(self) -> None:
        """Terminate this test's journeys that still run. Journeys outlive the test on the shared
        dev server; left running, the next test's worker would run their activities against the
        next test's database, where the same enrollment ids mean other people."""
        from domain.journey import workflow_id

        for campaign_id, email in self.enrolled:
            handle = self.env.client.get_workflow_handle(workflow_id(campaign_id, email))
            with contextlib.suppress(RPCError):  # already finished
                await handle.terminate("webhook test over")

    async def journey(self, campaign_id: int, email: str) -> dict[str, Any]:
        response = await self.api.get(f"/api/campaigns/{campaign_id}/recipients/{email}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_journey(
        self,
        campaign_id: int,
        email: str,
        until: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = WAIT,
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            journey = await self.journey(campaign_id, email)
            if until(journey):
                return journey
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {journey}")
            await asyncio.sleep(0.2)

    async def wait_sent(self, campaign_id: int, email: str, step_order: int = 1) -> Sent:
        """Wait until the worker has sent this step; return the delivery it made."""
        journey = await self.wait_journey(
            campaign_id,
            email,
            lambda j: any(
                s["step_order"] == step_order and s["delivery_status"] == "sent" for s in j["steps"]
            ),
            f"step {step_order} sent to {email}",
        )
        [step] = [s for s in journey["steps"] if s["step_order"] == step_order]
        message_id = await asyncio.to_thread(self._message_id, step["delivery_id"])
        return Sent(campaign_id, email, step["delivery_id"], message_id)

    async def events_in_db(self, email: str) -> list[Event]:
        """Read straight from the database (for when no API is up to ask)."""

        def read() -> list[Event]:
            with Session(self.engine) as session:
                return list(session.exec(select(Event).where(Event.email == email)))

        return await asyncio.to_thread(read)

    def _message_id(self, delivery_id: str) -> str:
        with Session(self.engine) as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None and delivery.message_id
            return delivery.message_id

    async def wait_finished(self, campaign_id: int, email: str, status: str) -> dict[str, Any]:
        journey = await self.wait_journey(
            campaign_id, email, lambda j: j["finished_at"] is not None, f"{email} to finish"
        )
        assert journey["status"] == status, journey
        return journey

    async def events(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.api.get("/api/events", params={"limit": 1000, **params})
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_signalled(self, **params: Any) -> list[dict[str, Any]]:
        """Wait until every stored event matching `params` has been signalled."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            events = await self.events(**params)
            if events and all(e["signalled"] for e in events):
                return events
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"events not signalled: {events}")
            await asyncio.sleep(0.2)

    async def stats(self, campaign_id: int) -> dict[str, Any]:
        response = await self.api.get("/api/campaigns/stats", params={"campaign_id": campaign_id})
        assert response.status_code == 200, response.text
        return response.json()

    async def live_events_counted(self, campaign_id: int, email: str) -> int:
        """How many distinct events the running journey itself has seen (its own dedupe)."""
        from domain.journey import workflow_id
        from workflows.recipient import RecipientWorkflow

        handle = self.env.client.get_workflow_handle_for(
            RecipientWorkflow.run, workflow_id(campaign_id, email)
        )
        return (await handle.query(RecipientWorkflow.progress)).events_counted


@contextlib.asynccontextmanager
async def serve_hooks(
    settings: Settings,
    env: WorkflowEnvironment,
    *,
    worker: bool,
    temporal: Client | None = None,
    outbox: bool = False,
) -> AsyncIterator[Hooks]:
    """The API over real HTTP with every provider configured (SNS's network faked), and with
    `worker`, an in-process worker too: journeys run and send (to .eml files).

    Without `outbox` the API's outbox looks an hour back, so a journey reacting proves that the
    webhook request signalled it itself rather than the outbox a second later."""
    configured = with_webhook_secrets(settings)
    if not outbox:
        configured = configured.model_copy(update={"outbox_interval_seconds": 3600.0})
    sns = FakeSns()
    providers = build_providers(configured, sns_cert_fetcher=sns.fetch, sns_confirmer=sns.confirm)
    engine = make_engine(configured.database_url)
    try:
        client = temporal or env.client
        async with serve_api(configured, client, webhook_providers=providers) as http:
            hooks = Hooks(http, configured, engine, sns, env)
            if not worker:
                yield hooks
                return
            async with run_worker(configured, env.client):
                try:
                    yield hooks
                finally:
                    await hooks.end_journeys()
    finally:
        engine.dispose()


def addresses(*names: str) -> list[str]:
    domain = unique_domain()
    return [f"{name}@{domain}" for name in names]


# --- a campaign whose second step shows whether step 1 was opened -------------------------------

# Step 2 comes this long after step 1 (about 11 s): time to post a provider's event in between.
STEP2_DELAY_HOURS = 0.003


async def open_test_campaign(hooks: Hooks) -> int:
    """Step 1 now; step 2 (`not_opened` on step 1) shortly after: skipped once step 1 is opened."""
    return await hooks.campaign(
        [
            {"subject": "Welcome", "delay_hours": 0},
            {
                "subject": "Did you see our welcome?",
                "delay_hours": STEP2_DELAY_HOURS,
                "condition": {"type": "not_opened", "step_order": 1},
            },
        ]
    )


async def long_campaign(hooks: Hooks) -> int:
    """Step 1 now, step 2 in a day: the journey stays running unless an exit ends it."""
    return await hooks.campaign(
        [{"subject": "Hello", "delay_hours": 0}, {"subject": "Tomorrow", "delay_hours": 24}]
    )


def step(journey: dict[str, Any], order: int) -> dict[str, Any]:
    [found] = [s for s in journey["steps"] if s["step_order"] == order]
    return found


async def assert_journey_reactions(
    hooks: Hooks,
    post_open: Callable[[Sent], Any],
    post_hard_bounce: Callable[[Sent], Any],
) -> None:
    """The journey reactions every provider must produce: a provider open skips a `not_opened`
    step; a provider hard bounce ends the journey, suppresses the address, and so ends that
    address's journey in another campaign too."""
    opener, bouncer, control = addresses("opener", "bouncer", "control")
    campaign = await open_test_campaign(hooks)
    other = await long_campaign(hooks)
    await hooks.enroll(campaign, opener, bouncer, control)
    await hooks.enroll(other, bouncer)
    opened = await hooks.wait_sent(campaign, opener)
    bounced = await hooks.wait_sent(campaign, bouncer)
    await hooks.wait_sent(other, bouncer)

    response = await post_open(opened)
    assert response.status_code == 200, response.text
    assert response.json()["stored"] >= 1
    response = await post_hard_bounce(bounced)
    assert response.status_code == 200, response.text
    assert response.json()["stored"] >= 1

    done = await hooks.wait_finished(campaign, opener, "completed")
    assert step(done, 1)["opened"] is True
    assert step(done, 2)["decision"] == "skipped" and step(done, 2)["condition_met"] is False
    untouched = await hooks.wait_finished(campaign, control, "completed")
    assert step(untouched, 2)["decision"] == "sent", "no open: the not_opened step is sent"

    ended = await hooks.wait_finished(campaign, bouncer, "bounced")
    assert [s["step_order"] for s in ended["steps"]] == [1], "a bounced journey sends no more"
    await hooks.wait_finished(other, bouncer, "bounced")
    third = await hooks.campaign([{"subject": "x", "delay_hours": 0}])
    result = await hooks.enroll(third, bouncer)
    assert result["enrolled"] == 0
    assert result["rejected"] == [{"email": bouncer, "reason": "suppressed: bounce_hard"}]

    stats = await hooks.stats(campaign)
    assert stats["recipients"] == 3 and stats["open_rate"] == round(1 / 3, 3)
    assert stats["completed"] == 2


def at(delta: timedelta = timedelta()) -> datetime:
    return datetime.now(UTC) + delta
