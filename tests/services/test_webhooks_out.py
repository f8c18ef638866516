"""Journey events out, below the API: signatures as the docs define them (checked by an
implementation written here and by the docs' own snippet), targets refused by address, secrets
sealed under the app key, delivery rows written in the caller's transaction only, once per
fact, handed to Temporal right after the commit, and who subscribes read from the rows only
when the per-process cache is stale or says someone does."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from domain.webhooks_out import JourneyEventType, webhook_workflow_id
from services import webhook_subscriptions, webhooks_out
from services.errors import Invalid
from services.webhook_subscriptions import SecretBox, check_target, create
from storage.models import WebhookDelivery, WebhookSubscription
from tests.support.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
KEY = "k" * 40


def docs_verifier() -> Any:
    """`verify_drip_signature` exactly as docs/webhooks.md prints it."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    [snippet] = [
        b for b in re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)
        if "verify_drip_signature" in b
    ]  # fmt: skip
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "docs/webhooks.md", "exec"), namespace)
    return namespace["verify_drip_signature"]


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    secret, body, t = "whsec_abc€", b'{"id":"evt_1","type":"step.sent"}', 1_700_000_000
    header = webhooks_out.signature(secret, t, body)
    # Written from the words, not from the code: key = the secret's UTF-8 bytes,
    # message = "{t}." + raw body, lowercase hex.
    mac = hmac.new("whsec_abc€".encode(), b"1700000000." + body, hashlib.sha256)
    assert header == f"t=1700000000,v1={mac.hexdigest()}"
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)


def test_the_docs_snippet_verifies_drip_signatures_and_refuses_forgeries() -> None:
    verify = docs_verifier()
    secret, body, now = "whsec_" + uuid.uuid4().hex, b'{"id":"evt_2"}', int(time.time())
    good = webhooks_out.signature(secret, now, body)
    assert verify(secret, good, body)
    assert not verify(secret, good, body + b" ")  # the body changed
    assert not verify("whsec_other", good, body)  # another secret
    assert not verify(secret, webhooks_out.signature(secret, now - 3600, body), body)  # stale
    assert not verify(secret, "v1=" + good.split("v1=")[1], body)  # no timestamp


def test_event_ids_are_stable_per_fact_and_differ_between_facts() -> None:
    a = webhooks_out.event_id("step.sent", "snd_1")
    assert a == webhooks_out.event_id("step.sent", "snd_1")
    assert a != webhooks_out.event_id("step.sent", "snd_2")
    assert a != webhooks_out.event_id("step.skipped", "snd_1")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://172.16.5.5/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata: link-local
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT: not public either
    ],
)
def test_private_loopback_and_link_local_targets_are_refused(url: str) -> None:
    with pytest.raises(Invalid) as refused:
        check_target(url, allow_private=False)
    assert refused.value.loc == ["body", "url"]
    assert "DRIP_WEBHOOK_ALLOW_PRIVATE" in refused.value.msg
    check_target(url, allow_private=True)  # tests and local development


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "https:///nohost", "https://user:pw@93.184.215.14/"]
)
def test_urls_that_are_not_plain_http_targets_are_refused(url: str) -> None:
    with pytest.raises(Invalid):
        check_target(url, allow_private=True)


def test_a_public_address_is_accepted() -> None:
    check_target("https://93.184.215.14/hooks", allow_private=False)  # no DNS needed


def test_secrets_are_sealed_and_open_after_a_key_rotation() -> None:
    old = SecretBox("o" * 40)
    sealed = old.seal("whsec_x")
    assert "whsec_x" not in sealed
    assert SecretBox("n" * 40, ["o" * 40]).open(sealed) == "whsec_x"
    with pytest.raises(ValueError):
        SecretBox("n" * 40).open(sealed)


def subscribe(engine: Engine, *events: JourneyEventType) -> tuple[int, str]:
    with Session(engine) as session:
        made = create(
            session, SecretBox(KEY), "http://127.0.0.1:9/h", list(events), None, allow_private=True
        )
        return made.subscription.id or 0, made.secret


def rows(engine: Engine) -> list[WebhookDelivery]:
    with Session(engine) as session:
        return list(session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))))


def test_the_secret_is_stored_sealed_not_in_clear(engine: Engine) -> None:
    sub, secret = subscribe(engine, JourneyEventType.STEP_SENT)
    with Session(engine) as session:
        stored = session.get(WebhookSubscription, sub)
        assert stored is not None
        assert secret not in stored.secret_encrypted
        assert SecretBox(KEY).open(stored.secret_encrypted) == secret


def test_emit_writes_in_the_callers_transaction_once_per_fact_and_subscriber(
    engine: Engine,
) -> None:
    wants_sent, _ = subscribe(engine, JourneyEventType.STEP_SENT, JourneyEventType.STEP_SKIPPED)
    also_sent, _ = subscribe(engine, JourneyEventType.STEP_SENT)
    subscribe(engine, JourneyEventType.JOURNEY_STARTED)  # wants none of these
    data = {"campaign_id": 1, "email": "maya@example.com"}

    with Session(engine) as session:  # rolled back: the fact did not happen, nor its events
        webhooks_out.emit(session, JourneyEventType.STEP_SENT, data, key="snd_1")
        session.rollback()
    assert rows(engine) == []

    for _ in range(2):  # a retried activity records the same fact again: nothing new
        with Session(engine) as session:
            webhooks_out.emit(session, JourneyEventType.STEP_SENT, data, key="snd_1")
            session.commit()
    written = rows(engine)
    assert sorted(r.subscription_id for r in written) == sorted([wants_sent, also_sent])
    assert {r.event_id for r in written} == {webhooks_out.event_id("step.sent", "snd_1")}
    body = json.loads(written[0].body)
    assert body.keys() == {"id", "type", "occurred_at", "data"}
    assert (body["type"], body["data"]) == ("step.sent", data)
    assert body["occurred_at"].endswith("Z")
    assert all(r.status == "pending" and r.attempts == 0 and not r.handed_over for r in written)

    with Session(engine) as session:  # an erasure of the address takes its deliveries too
        webhooks_out.emit(session, JourneyEventType.STEP_SENT, {"email": "li@x.io"}, key="snd_2")
        webhooks_out.forget(session, "maya@example.com")
        session.commit()
    assert {json.loads(r.body)["data"]["email"] for r in rows(engine)} == {"li@x.io"}


async def test_committed_rows_are_handed_to_temporal_after_the_commit(
    engine: Engine, dev_env: WorkflowEnvironment
) -> None:
    subscribe(engine, JourneyEventType.JOURNEY_COMPLETED)
    queue = f"hooks-{uuid.uuid4().hex[:8]}"  # no worker: the workflow just waits there
    before = webhooks_out.install(webhooks_out.HandOver(dev_env.client, engine, queue))
    try:
        with Session(engine) as session:
            webhooks_out.emit(
                session, JourneyEventType.JOURNEY_COMPLETED, {"x": 1}, key=uuid.uuid4().hex
            )
            assert rows(engine) == []  # not before the commit
            session.commit()

        async def handed() -> bool:
            return all(r.handed_over for r in rows(engine))

        await eventually(handed, "the row to be marked handed over", 20)
    finally:
        webhooks_out.install(before)
    [row] = rows(engine)
    handle = dev_env.client.get_workflow_handle(webhook_workflow_id(row.id))
    description = await handle.describe()
    assert description.task_queue == queue
    await handle.terminate("test over")


def subscription_reads(engine: Engine) -> list[str]:
    """The SELECTs on webhook_subscription this engine runs from now on."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "webhook_subscription" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    return seen


def record_sent(engine: Engine, key: str) -> None:
    with Session(engine) as session:
        webhooks_out.emit(session, JourneyEventType.STEP_SENT, {"k": key}, key=key)
        session.commit()


def test_nobody_subscribing_costs_no_query_per_fact_and_an_unseen_one_counts_by_the_bound(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_subscriptions, "WANTED_TTL_SECONDS", 1.0)
    reads = subscription_reads(engine)
    for n in range(20):
        record_sent(engine, f"before-{n}")
    assert len(reads) == 1  # the first fact asked; the others were answered from the cache

    # Made by another process: this one's cache is not told, and says "nobody" until it expires.
    with Session(engine) as session:
        session.add(WebhookSubscription(url="http://127.0.0.1:9/h", events=["step.sent"],
                                        secret_encrypted=SecretBox(KEY).seal("whsec_x")))  # fmt: skip
        session.commit()
    made_at = time.monotonic()
    record_sent(engine, "within")
    while time.monotonic() < made_at + 1.0:
        time.sleep(0.05)
    record_sent(engine, "past")
    assert [json.loads(r.body)["data"]["k"] for r in rows(engine)] == ["past"]


def test_a_subscription_made_or_deleted_in_this_process_counts_at_once_a_deletion_anywhere(
    engine: Engine,
) -> None:
    record_sent(engine, "nobody")  # the cache says nobody
    sub, _ = subscribe(engine, JourneyEventType.STEP_SENT)
    record_sent(engine, "made")
    assert [r.subscription_id for r in rows(engine)] == [sub]

    # Deleted by another process: the cached "someone" is checked against the rows.
    with Session(engine) as session:
        session.execute(delete(WebhookSubscription))
        session.commit()
    record_sent(engine, "gone")
    assert [json.loads(r.body)["data"]["k"] for r in rows(engine)] == ["made"]

    other, _ = subscribe(engine, JourneyEventType.STEP_SENT)
    record_sent(engine, "again")
    assert [r.subscription_id for r in rows(engine) if "again" in r.body] == [other]
    with Session(engine) as session:
        webhook_subscriptions.remove(session, other)
    record_sent(engine, "removed")
    assert not [r for r in rows(engine) if "removed" in r.body]
