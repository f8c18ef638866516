"""Values that end up in message headers are checked where they come in: sender fields at the
API (422 naming the field), recipient fields at enrollment (the row rejected with its reason).
Before, a bad sender made every send of the campaign fail and retry forever."""

from __future__ import annotations

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.api.test_bulk_enrollment import batch_worker, csv_upload, finished_batch
from tests.conftest import unique_domain
from tests.support.factories import error_locs, make_campaign, make_template

ATTACK = "=?utf-8?q?=0D=0ABcc:_attacker@evil.example?="


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from_email", "not-an-address"),
        ("from_email", "news@sender.example\r\nBcc: attacker@evil.example"),
        ("from_email", "Acme <news@sender.example>"),
        ("reply_to", "help@@sender.example"),
        ("reply_to", "help@sender.example\nBcc: attacker@evil.example"),
        ("from_name", "Acme\r\nBcc: attacker@evil.example"),
        ("from_name", f"Acme {ATTACK}"),
    ],
)
async def test_bad_sender_fields_are_refused_naming_the_field(
    api: httpx.AsyncClient, field: str, value: str
) -> None:
    created = await api.post("/api/campaigns", json={"name": "c", field: value})
    assert created.status_code == 422, created.text
    assert error_locs(created) == [["body", field]]
    campaign = await make_campaign(api, [], activate=False)
    patched = await api.patch(f"/api/campaigns/{campaign['id']}", json={field: value})
    assert patched.status_code == 422, patched.text
    assert error_locs(patched) == [["body", field]]


async def test_good_sender_fields_are_kept(api: httpx.AsyncClient) -> None:
    created = await api.post(
        "/api/campaigns",
        json={
            "name": "c",
            "from_email": "news@sender.example",
            "from_name": "Acme — News ✓",
            "reply_to": "help@münchen.example",
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["from_email"], body["from_name"], body["reply_to"]) == (
        "news@sender.example",
        "Acme — News ✓",
        "help@münchen.example",
    )


async def test_control_characters_in_fields_reject_the_recipient(api: httpx.AsyncClient) -> None:
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "Hi {{ first_name }}", "delay_hours": 0, "template_id": template}]
    )
    domain = unique_domain()
    response = await api.post(
        f"/api/campaigns/{campaign['id']}/recipients",
        json={
            "recipients": [
                {"email": f"bad@{domain}", "fields": {"first_name": "Jane\r\nBcc: x@evil.example"}},
                {"email": f"nul@{domain}", "fields": {"city": "Paris\x00"}},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["enrolled"] == 0
    assert body["rejected"] == [
        {"email": f"bad@{domain}", "reason": "field 'first_name' contains a control character"},
        {"email": f"nul@{domain}", "reason": "field 'city' contains a control character"},
    ]


async def test_control_characters_in_a_csv_row_reject_that_row(
    api: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "Hi {{ first_name }}", "delay_hours": 0, "template_id": template}]
    )
    domain = unique_domain()
    text = f'email,first_name\nok@{domain},Ana\nbad@{domain},"Jane\rBcc: x@evil.example"\n'
    async with batch_worker(settings, dev_env.client):
        accepted = await api.post(
            f"/api/campaigns/{campaign['id']}/recipients/import", files=csv_upload(text)
        )
        assert accepted.status_code == 202, accepted.text
        batch = await finished_batch(api, accepted.json()["batch_id"], timeout=60)
    assert batch["enrolled"] == 1
    assert [(r["email"], r["reason"]) for r in batch["rejected_rows"]] == [
        (f"bad@{domain}", "field 'first_name' contains a control character")
    ]
