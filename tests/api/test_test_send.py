"""Test sends: every step now, to a real SMTP server, marked as a test, outside stats."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.conftest import serve_api, unique_domain
from tests.support.factories import make_campaign, make_template
from tools.smtp_sink import SmtpSink


async def test_test_send_delivers_every_step_marked_as_test(
    settings: Settings, dev_env: WorkflowEnvironment, smtp: SmtpSink
) -> None:
    configured = settings.model_copy(update={"smtp_url": smtp.url})
    async with serve_api(configured, dev_env.client) as api:
        main = await make_template(
            api, "<p>Hi {{ first_name }} from {{ campaign.name }}, step {{ step.order }}</p>"
        )
        alt = await make_template(api, "<p>Alternative for {{ email }}</p>")
        campaign = await make_campaign(
            api,
            [
                {"subject": "Welcome {{ first_name }}", "delay_hours": 0, "template_id": main},
                {
                    "subject": "Second",
                    "delay_hours": 24,
                    "template_id": main,
                    "condition": {"type": "opened", "step_order": 1},
                    "alternative": {"subject": "Other", "template_id": alt},
                },
            ],
            activate=False,
        )
        cid, email = campaign["id"], f"me@{unique_domain()}"
        response = await api.post(
            f"/api/campaigns/{cid}/test-send",
            json={"email": email, "fields": {"first_name": "Ana"}},
        )
        assert response.status_code == 200, response.text
        assert [s["subject"] for s in response.json()["sent"]] == [
            "[Test] Welcome Ana",
            "[Test] Second",
        ]
        received = smtp.to(email)
        assert [str(m["Subject"]) for m in received] == ["[Test] Welcome Ana", "[Test] Second"]
        assert all(m["X-Drip-Test"] == "true" for m in received)
        html = received[0].get_body(("html",)).get_content()
        assert "Hi Ana from Onboarding, step 1" in html and "/t/o/" not in html, (
            "test sends are not tracked"
        )

        second = campaign["steps"][1]["id"]
        one = await api.post(
            f"/api/campaigns/{cid}/test-send",
            json={"email": email, "step_id": second, "alternative": True},
        )
        assert [s["subject"] for s in one.json()["sent"]] == ["[Test] Other"]
        bad = await api.post(f"/api/campaigns/{cid}/test-send", json={"email": "nope"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "email"]
        unknown_step = await api.post(
            f"/api/campaigns/{cid}/test-send", json={"email": email, "step_id": 999999}
        )
        assert unknown_step.status_code == 422
        assert (
            await api.post("/api/campaigns/999999/test-send", json={"email": email})
        ).status_code == 404
        stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
        assert stats["recipients"] == 0, "test sends are outside stats"
