"""`Idempotency-Key` on the create, enroll and event POSTs: a retry returns the first answer and
acts once; a reused key with another body is refused; without a key nothing changes."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from api import idempotency
from settings import Settings
from storage.models import Delivery, Enrollment, IdempotencyRecord, utcnow
from tests.conftest import serve_api, unique_domain
from tests.support.factories import make_campaign, make_template

NO_AUTH_SCOPE = hashlib.sha256(b"").hexdigest()


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def campaign_count(api: httpx.AsyncClient) -> int:
    return len((await api.get("/api/campaigns")).json())


async def test_a_retried_create_returns_the_first_answer_and_creates_once(
    api: httpx.AsyncClient,
) -> None:
    headers = key()
    body = {"name": "Welcome", "steps": []}
    first = await api.post("/api/campaigns", json=body, headers=headers)
    retry = await api.post("/api/campaigns", json=body, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["idempotent-replayed"] == "true"
    assert await campaign_count(api) == 1

    # The same JSON with its keys in another order is the same request.
    reordered = await api.post(
        "/api/campaigns", content=b'{"steps": [], "name": "Welcome"}', headers=headers
    )
    assert reordered.status_code == 201 and reordered.json() == first.json()

    # Without a key, every POST acts.
    await api.post("/api/campaigns", json=body)
    await api.post("/api/campaigns", json=body)
    assert await campaign_count(api) == 3


async def test_templates_too(api: httpx.AsyncClient) -> None:
    headers = key()
    body = {"name": "t", "html": "<p>hi</p>"}
    first = await api.post("/api/templates", json=body, headers=headers)
    retry = await api.post("/api/templates", json=body, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    assert len((await api.get("/api/templates")).json()) == 1


async def test_a_reused_key_with_another_request_is_refused(api: httpx.AsyncClient) -> None:
    headers = key()
    assert (
        await api.post("/api/campaigns", json={"name": "A"}, headers=headers)
    ).status_code == 201
    other = await api.post("/api/campaigns", json={"name": "B"}, headers=headers)
    assert other.status_code == 422
    [error] = other.json()["errors"]
    assert error["loc"] == ["header", "Idempotency-Key"]
    assert "different request" in error["msg"]
    # Another path with the same key: refused as well.
    template = await api.post("/api/templates", json={"name": "t", "html": "x"}, headers=headers)
    assert template.status_code == 422
    assert await campaign_count(api) == 1
    assert (await api.get("/api/templates")).json() == []


async def test_keys_are_scoped_to_the_caller(api: httpx.AsyncClient) -> None:
    """Two clients (credentials) choosing the same key do not see each other's answers."""
    shared = str(uuid.uuid4())
    body = {"name": "Welcome"}
    a = await api.post(
        "/api/campaigns",
        json=body,
        headers={"Idempotency-Key": shared, "Authorization": "Bearer client-a"},
    )
    b = await api.post(
        "/api/campaigns",
        json=body,
        headers={"Idempotency-Key": shared, "Authorization": "Bearer client-b"},
    )
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


async def test_the_same_key_spelled_differently_is_the_same_caller(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    """The key check reads `bearer   KEY` as `Bearer KEY`: a retry spelled so replays too."""
    keyed = settings.model_copy(update={"api_keys": ["caller-key-5e1d"]})
    async with serve_api(keyed, dev_env.client) as api:
        headers = key()
        body = {"name": "Welcome"}
        first = await api.post(
            "/api/campaigns",
            json=body,
            headers={**headers, "Authorization": "Bearer caller-key-5e1d"},
        )
        retry = await api.post(
            "/api/campaigns",
            json=body,
            headers={**headers, "Authorization": "bearer   caller-key-5e1d"},
        )
        assert first.status_code == retry.status_code == 201
        assert retry.headers.get("idempotent-replayed") == "true"
        assert retry.json()["id"] == first.json()["id"]
        listed = await api.get(
            "/api/campaigns", headers={"Authorization": "Bearer caller-key-5e1d"}
        )
        assert len(listed.json()) == 1


async def test_concurrent_duplicates_act_once(api: httpx.AsyncClient) -> None:
    headers = key()
    body = {"name": "Race"}
    answers = await asyncio.gather(
        *(api.post("/api/campaigns", json=body, headers=headers) for _ in range(6))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 5
    assert await campaign_count(api) == 1


async def test_a_retried_enrollment_returns_the_first_answer(api: httpx.AsyncClient) -> None:
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "Hi", "delay_hours": 24, "template_id": template}]
    )
    domain = unique_domain()
    body = {"recipients": [{"email": f"a@{domain}"}, {"email": f"b@{domain}"}, {"email": "bad"}]}
    path = f"/api/campaigns/{campaign['id']}/recipients"
    headers = key()
    first = await api.post(path, json=body, headers=headers)
    retry = await api.post(path, json=body, headers=headers)
    assert first.status_code == retry.status_code == 200
    assert first.json()["enrolled"] == 2
    assert retry.json() == first.json()  # not "already_enrolled: 2": the call acted once
    assert retry.headers["idempotent-replayed"] == "true"
    # Without the key the same call is a new one, and says so.
    again = await api.post(path, json=body)
    assert again.json()["enrolled"] == 0 and again.json()["already_enrolled"] == 2
    assert (await api.get(path)).json()["total"] == 2


async def test_a_refused_request_frees_its_key(api: httpx.AsyncClient) -> None:
    """Only a 2xx answer is kept: after a 4xx nothing was done, so a fixed retry with the same
    key acts (rather than replaying the refusal for 24 hours)."""
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "Hi", "delay_hours": 24, "template_id": template}], activate=False
    )
    path = f"/api/campaigns/{campaign['id']}/recipients"
    body = {"recipients": [{"email": f"a@{unique_domain()}"}]}
    headers = key()
    refused = await api.post(path, json=body, headers=headers)
    assert refused.status_code == 409  # a draft does not enroll
    activated = await api.patch(f"/api/campaigns/{campaign['id']}", json={"status": "active"})
    assert activated.status_code == 200
    retry = await api.post(path, json=body, headers=headers)
    assert retry.status_code == 200 and retry.json()["enrolled"] == 1
    assert "idempotent-replayed" not in retry.headers


def make_delivery(engine: Engine, campaign_id: int) -> str:
    with Session(engine) as session:
        enrollment = Enrollment(
            campaign_id=campaign_id,
            email=f"ev@{unique_domain()}",
            workflow_id=f"no-such-journey-{uuid.uuid4()}",
            workflow_started=True,
        )
        session.add(enrollment)
        session.flush()
        delivery = Delivery(
            id=f"d{uuid.uuid4().hex[:20]}",
            enrollment_id=enrollment.id or 0,
            campaign_id=campaign_id,
            step_id=1,
            step_order=1,
            decision="sent",
            status="sent",
        )
        session.add(delivery)
        session.commit()
        return delivery.id


async def test_a_retried_event_is_recorded_once(api: httpx.AsyncClient, engine: Engine) -> None:
    campaign = await make_campaign(api, [], activate=False)
    delivery_id = make_delivery(engine, campaign["id"])
    body = {"delivery_id": delivery_id, "type": "open"}  # no event_id: each POST is an event
    headers = key()
    first = await api.post("/api/events", json=body, headers=headers)
    retry = await api.post("/api/events", json=body, headers=headers)
    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json() == {"id": first.json()["id"], "duplicate": False}
    events = (await api.get("/api/events", params={"delivery_id": delivery_id})).json()
    assert len(events) == 1
    await api.post("/api/events", json=body)
    events = (await api.get("/api/events", params={"delivery_id": delivery_id})).json()
    assert len(events) == 2


def seed(engine: Engine, idem_key: str, age: timedelta, status_code: int | None) -> None:
    """A record as another replica left it: in progress, or answered, some time ago."""
    body_hash = hashlib.sha256(b'{"name":"Seeded"}').hexdigest()
    with Session(engine) as session:
        session.add(
            IdempotencyRecord(
                scope=NO_AUTH_SCOPE,
                key=idem_key,
                method="POST",
                path="/api/campaigns",
                body_hash=body_hash,
                status_code=status_code,
                response_body='{"replayed": "from the seed"}' if status_code else None,
                content_type="application/json",
                created_at=utcnow() - age,
            )
        )
        session.commit()


async def test_a_request_still_in_progress_elsewhere_gets_409(
    api: httpx.AsyncClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "IN_PROGRESS_WAIT_SECONDS", 0.5)
    in_progress = str(uuid.uuid4())
    seed(engine, in_progress, timedelta(seconds=1), None)
    answer = await api.post(
        "/api/campaigns", json={"name": "Seeded"}, headers={"Idempotency-Key": in_progress}
    )
    assert answer.status_code == 409
    assert "in progress" in answer.json()["detail"]
    assert await campaign_count(api) == 0


async def test_answered_records_replay_until_they_expire(
    api: httpx.AsyncClient, engine: Engine
) -> None:
    recent, expired, abandoned = (str(uuid.uuid4()) for _ in range(3))
    seed(engine, recent, timedelta(hours=23), 201)
    seed(engine, expired, timedelta(hours=25), 201)
    seed(engine, abandoned, idempotency.STALE_AFTER + timedelta(minutes=1), None)
    body = {"name": "Seeded"}

    replayed = await api.post("/api/campaigns", json=body, headers={"Idempotency-Key": recent})
    assert replayed.status_code == 201 and replayed.json() == {"replayed": "from the seed"}
    assert await campaign_count(api) == 0

    # Past 24 hours the key is free again; so is a claim a crashed replica never finished.
    for free in (expired, abandoned):
        fresh = await api.post("/api/campaigns", json=body, headers={"Idempotency-Key": free})
        assert fresh.status_code == 201 and fresh.json()["name"] == "Seeded"
    assert await campaign_count(api) == 2
    with Session(engine) as session:
        rows = session.exec(select(IdempotencyRecord)).all()
        assert {r.key for r in rows} == {recent, expired, abandoned}
        assert all(r.status_code == 201 for r in rows)
