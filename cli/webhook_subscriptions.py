"""`drip webhook-subscriptions create|list|show|delete|deliveries`: the receivers of journey
events (docs/webhooks.md#journey-events-out). Registered on the main app when cli/main.py
imports this module."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.main import Json, connected, console, group, show, show_page

subscriptions_app = group(
    "webhook-subscriptions", "Journey events out: subscribed URLs and their deliveries."
)

SubscriptionId = Annotated[int, typer.Argument(help="subscription id")]
Limit = Annotated[int, typer.Option(min=1, max=1000, help="rows per page")]
Cursor = Annotated[str | None, typer.Option(help="the previous page's next cursor")]
COLUMNS = ["id", "url", "events", "description", "created_at"]


@subscriptions_app.command("create")
def create(
    url: Annotated[str, typer.Argument(help="the public http(s) URL events are POSTed to")],
    event: Annotated[
        list[str], typer.Option(help="an event type to send (repeatable), e.g. step.sent")
    ],
    description: Annotated[str | None, typer.Option(help="what it is for")] = None,
    as_json: Json = False,
) -> None:
    """Subscribe a URL to journey events; prints the signing secret, the only time it is shown.

    Not retried once sent (the API does not replay it: the answer holds the secret): after a
    dropped connection, `list` and `delete` what was made."""
    body = {"url": url, "events": event, "description": description}
    with connected() as client:
        data = client.post("/api/webhook-subscriptions", body)
    if as_json:
        return show(data, True)
    show({k: v for k, v in data.items() if k != "secret"}, False, f"subscription {data['id']}")
    console().print("signing secret (shown only now, keep it):", highlight=False)
    print(data["secret"])


@subscriptions_app.command("list")
def list_subscriptions(limit: Limit = 100, cursor: Cursor = None, as_json: Json = False) -> None:
    """Webhook subscriptions, oldest first."""
    with connected() as client:
        page = client.get("/api/webhook-subscriptions", limit=limit, cursor=cursor)
    show_page(page, as_json, "webhook subscriptions", COLUMNS)


@subscriptions_app.command("show")
def show_subscription(subscription: SubscriptionId, as_json: Json = False) -> None:
    """One subscription (its secret is never shown again)."""
    with connected() as client:
        data = client.get(f"/api/webhook-subscriptions/{subscription}")
    show(data, as_json, f"subscription {subscription}")


@subscriptions_app.command("delete")
def delete(subscription: SubscriptionId) -> None:
    """Delete a subscription and its deliveries (those being retried stop)."""
    with connected() as client:
        client.delete(f"/api/webhook-subscriptions/{subscription}")
    console().print(f"deleted subscription {subscription}")


@subscriptions_app.command("deliveries")
def deliveries(
    subscription: SubscriptionId, limit: Limit = 100, cursor: Cursor = None, as_json: Json = False
) -> None:
    """A subscription's deliveries, newest first: status, attempts, the last answer or error."""
    with connected() as client:
        page = client.get(
            f"/api/webhook-subscriptions/{subscription}/deliveries", limit=limit, cursor=cursor
        )
    columns = ["id", "type", "status", "attempts", "last_status_code", "last_error",
               "created_at", "delivered_at"]  # fmt: skip
    show_page(page, as_json, f"deliveries of subscription {subscription}", columns)
