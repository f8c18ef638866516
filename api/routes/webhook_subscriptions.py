"""Journey events out: `POST/GET /api/webhook-subscriptions`, `GET/DELETE .../{id}`, and
`GET .../{id}/deliveries` (each event's attempts). What is sent and how it is signed:
docs/webhooks.md#journey-events-out."""

from __future__ import annotations

from fastapi import APIRouter, status
from starlette.concurrency import run_in_threadpool

from api import pagination
from api.deps import SessionDep, SettingsDep
from api.errors import problems
from api.schemas import (
    CursorPage,
    WebhookDeliveryPage,
    WebhookDeliveryPublic,
    WebhookSubscriptionCreate,
    WebhookSubscriptionCreated,
    WebhookSubscriptionPage,
    WebhookSubscriptionPublic,
)
from services import webhook_subscriptions as subscriptions
from services.webhook_subscriptions import SecretBox
from storage.models import WebhookDelivery, WebhookSubscription

router = APIRouter(prefix="/api/webhook-subscriptions", tags=["webhook subscriptions"])


def _public(s: WebhookSubscription) -> WebhookSubscriptionPublic:
    return WebhookSubscriptionPublic(
        id=s.id or 0, url=s.url, events=s.events, description=s.description,
        created_at=s.created_at,
    )  # fmt: skip


def _delivery(d: WebhookDelivery) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic.model_validate(d, from_attributes=True)


@router.post(
    "",
    operation_id="createWebhookSubscription",
    summary="Subscribe a URL to journey events",
    status_code=status.HTTP_201_CREATED,
    responses=problems(422),
    response_model=WebhookSubscriptionCreated,
)
async def create_subscription(
    body: WebhookSubscriptionCreate, session: SessionDep, settings: SettingsDep
) -> WebhookSubscriptionCreated:
    """Answers with the signing secret, the only time it is shown. No `Idempotency-Key`: the
    answer holds the secret, which is never stored in clear (retry by listing, or delete)."""
    box = SecretBox(settings.secret_key, settings.old_secret_keys)
    created = await run_in_threadpool(
        subscriptions.create, session, box, body.url, body.events, body.description,
        settings.webhook_allow_private,
    )  # fmt: skip
    public = _public(created.subscription)
    return WebhookSubscriptionCreated(**public.model_dump(), secret=created.secret)


@router.get(
    "",
    operation_id="listWebhookSubscriptions",
    summary="List webhook subscriptions",
    responses=problems(422),
    response_model=WebhookSubscriptionPage,
)
async def list_subscriptions(
    session: SessionDep,
    limit: pagination.LimitQuery = 100,
    cursor: pagination.CursorQuery = None,
) -> CursorPage[WebhookSubscriptionPublic]:
    """Oldest first."""
    key = pagination.decode(cursor, 1)
    after = int(key[0]) if key else None
    rows = await run_in_threadpool(subscriptions.page, session, after, limit)
    return pagination.page(rows, limit, lambda s: (s.id or 0,), _public)


@router.get(
    "/{subscription_id}",
    operation_id="getWebhookSubscription",
    summary="Get a webhook subscription",
    responses=problems(404),
    response_model=WebhookSubscriptionPublic,
)
async def get_subscription(subscription_id: int, session: SessionDep) -> WebhookSubscriptionPublic:
    return _public(await run_in_threadpool(subscriptions.one, session, subscription_id))


@router.delete(
    "/{subscription_id}",
    operation_id="deleteWebhookSubscription",
    summary="Delete a webhook subscription",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(404),
)
async def delete_subscription(subscription_id: int, session: SessionDep) -> None:
    """Its deliveries go with it; those still being retried stop at their next attempt."""
    await run_in_threadpool(subscriptions.remove, session, subscription_id)


@router.get(
    "/{subscription_id}/deliveries",
    operation_id="listWebhookDeliveries",
    summary="List a subscription's deliveries and their attempts",
    responses=problems(404, 422),
    response_model=WebhookDeliveryPage,
)
async def list_deliveries(
    subscription_id: int,
    session: SessionDep,
    limit: pagination.LimitQuery = 100,
    cursor: pagination.CursorQuery = None,
) -> CursorPage[WebhookDeliveryPublic]:
    """Newest first: status, attempts so far, the last attempt's status code or error."""
    key = pagination.decode(cursor, 1)
    before = str(key[0]) if key else None
    rows = await run_in_threadpool(
        subscriptions.deliveries, session, subscription_id, before, limit
    )
    return pagination.page(rows, limit, lambda d: (d.id,), _delivery)
