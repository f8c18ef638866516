"""The dashboard in a real browser (Debian's chromium, tests/api/ui/conftest.py) against the real
dev server, a worker and the API: every page loads clean (no console error, no failed request,
the favicon included) at 1280 and 390 px; a campaign created, activated, fed a CSV file, paused
and resumed from the pages behaves as the API says; the funnel shown is the API's; a journey
explains its not_opened alternative; a form without its CSRF token is refused; with keys set,
pages need a sign-in and its cookie works. Once per run, on SQLite (the pages read the same
routes the API tests cover on both databases)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.api.ui.conftest import VIEWER_ZONE, watched_page
from tests.conftest import serve_api, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tools.smtp_sink import SmtpSink

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
SECOND = 1 / 3600


def base_url(api: httpx.AsyncClient) -> str:
    return str(api.base_url).rstrip("/")


async def funnel_on_page(page: Any) -> dict[str, int]:
    cells = await page.locator("[data-funnel]").all()
    return {await c.get_attribute("data-funnel"): int(await c.inner_text()) for c in cells}


def funnel_of_api(funnel: dict[str, Any], stages: list[str]) -> dict[str, int]:
    return {f"{s['step_order']}:{stage}": s[stage] for s in funnel["steps"] for stage in stages}


STAGES = [
    "reached",
    "sent",
    "alternative_sent",
    "skipped",
    "delivered",
    "opened",
    "clicked",
    "converted",
]


async def test_every_page_loads_clean_and_shows_what_the_api_says(
    browser: Any, system: httpx.AsyncClient, smtp: SmtpSink
) -> None:
    api = system
    template = await make_template(api, "<p>Hi {{ first_name | default('there') }}</p>")
    campaign = await make_campaign(
        api,
        [
            {"subject": "Welcome", "delay_hours": 0, "template_id": template},
            {
                "subject": "Did you see it?",
                "delay_hours": 2 * SECOND,
                "template_id": template,
                "condition": {"type": "not_opened", "step_order": 1},
                "alternative": {"subject": "A second look", "template_id": template},
            },
        ],
        goal={"event": "order.completed", "window_hours": 72},
    )
    cid, domain = campaign["id"], unique_domain()
    ana, ben = f"ana@{domain}", f"ben@{domain}"
    enrolled = await api.post(
        f"/api/campaigns/{cid}/recipients",
        json={"recipients": [{"email": ana, "fields": {"first_name": "Ana"}}, {"email": ben}]},
    )
    assert enrolled.json()["enrolled"] == 2

    # Ben opens step 1, so step 2's condition (not opened) fails for him: the alternative.
    async def first_delivery() -> str | None:
        steps = (await api.get(f"/api/campaigns/{cid}/recipients/{ben}")).json()["steps"]
        return steps[0]["delivery_id"] if steps else None

    delivery = await eventually(first_delivery, what="ben's first message")
    opened = await api.post(
        "/api/events", json={"delivery_id": delivery, "type": "open", "event_id": f"o-{domain}"}
    )
    assert opened.status_code == 202

    async def completed() -> bool:
        stats = (await api.get("/api/campaigns/stats", params={"campaign_id": cid})).json()
        return stats["completed"] == 2

    await eventually(completed, what="both journeys to complete")
    tracked = await api.post(
        "/api/track", json={"email": ben, "event": "trial.started", "properties": {"plan": "pro"}}
    )
    assert tracked.status_code == 202, tracked.text
    await api.post("/api/suppressions", json={"email": f"gone@{domain}", "reason": "manual"})

    context, watched = await watched_page(browser, base_url(api))
    page = watched.page
    try:
        await page.goto("/")
        assert page.url.endswith("/ui/")
        await page.get_by_role("link", name="Onboarding").wait_for()
        rows = page.locator("tbody tr")
        assert await rows.count() == 1
        assert "100.0 %" in await rows.first.inner_text()  # completion, as the API says
        # Dates in the viewer's own time, the UTC value on hover.
        created = rows.first.locator("time")
        moment = datetime.fromisoformat(await created.get_attribute("datetime"))
        assert await created.get_attribute("title") == moment.strftime("%Y-%m-%d %H:%M:%S UTC")
        local = moment.astimezone(ZoneInfo(VIEWER_ZONE))
        assert local.strftime("%-I:%M:%S %p") in await created.inner_text()
        await watched.shot("campaigns")

        await page.get_by_role("link", name="Onboarding").click()
        await page.get_by_role("heading", name="Plan").wait_for()
        api_funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
        assert await funnel_on_page(page) == funnel_of_api(api_funnel, STAGES)
        assert api_funnel["steps"][1]["alternative_sent"] == 1  # Ben's (and the page shows it)
        assert "Otherwise: send “A second look”" in await page.locator("#step-2").inner_text()
        plan = await page.locator(".flow").inner_text()
        assert "goal: order.completed within 3 days of a message" in plan, plan
        await watched.shot("campaign")

        # The numbers follow the campaign without a reload: a third recipient arrives.
        url = page.url
        more = await api.post(
            f"/api/campaigns/{cid}/recipients", json={"recipients": [{"email": f"cy@{domain}"}]}
        )
        assert more.json()["enrolled"] == 1
        await page.locator('[data-stat="recipients"]', has_text="3").wait_for(timeout=15_000)
        assert page.url == url

        # Cy's journey page follows it: step 2 (due two seconds after step 1) appears unasked.
        await page.goto(f"/ui/campaigns/{cid}/recipients/cy@{domain}")
        await page.locator('[data-step="2"]').wait_for(timeout=20_000)
        assert page.url.endswith(f"/recipients/cy@{domain}")
        watched.clean()
        await page.goto(url)

        await page.get_by_role("link", name="Recipients (3)").click()
        await page.get_by_role("link", name=ben).wait_for()
        await watched.shot("recipients")
        await page.get_by_label("Email starts with").fill("ana@")
        await page.get_by_role("button", name="Search").click()
        await page.get_by_role("link", name=ana).wait_for()
        assert await page.get_by_role("link", name=ben).count() == 0
        watched.clean()

        await page.goto(f"/ui/campaigns/{cid}/recipients/{ben}")
        step2 = page.locator('[data-step="2"] .explanation')
        explanation = await step2.inner_text()
        api_step2 = (await api.get(f"/api/campaigns/{cid}/recipients/{ben}")).json()["steps"][1]
        assert api_step2["decision"] == "alternative"
        assert explanation == api_step2["reason"]  # the API's sentence, exactly
        assert "open" in explanation, explanation  # it names what failed: the open of step 1
        events = page.get_by_role("heading", name="Events")
        await events.wait_for()
        assert "open" in await page.locator("#events-heading + div").inner_text()
        href = await page.get_by_role("link", name=f"drip-campaign-{cid}-{ben}").get_attribute(
            "href"
        )
        assert href and href.startswith("http://127.0.0.1:8233/namespaces/default/workflows/")
        product = await page.get_by_role("table", name="What they did in the product").inner_text()
        assert "trial.started" in product and "plan = pro" in product
        await watched.shot("journey")

        # A draft with timing: its plan says when each step may go.
        timed = await make_campaign(
            api,
            [
                {"subject": "Hi", "delay_hours": 0, "template_id": template},
                {
                    "subject": "Trial ends",
                    "delay_hours": 0,
                    "template_id": template,
                    "delay_until": {"field": "trial_ends_at", "offset_hours": -24},
                    "ignore_send_window": True,
                },
            ],
            activate=False,
            name="Timed",
            send_window={
                "days": ["mon", "tue"],
                "start": "09:00",
                "end": "17:00",
                "timezone": "recipient",
                "fallback_timezone": "Europe/Paris",
            },
            on_cap="skip",
        )
        await page.goto(f"/ui/campaigns/{timed['id']}")
        meta = await page.locator("p.meta").nth(1).inner_text()
        assert (
            "Sends only mon, tue 09:00–17:00 in the recipient's time zone (else Europe/Paris)"
            in meta
        )
        assert "over the cap: skip" in meta
        step2_plan = await page.locator("#step-2").inner_text()
        assert "on the recipient's trial_ends_at minus 1 day, at any hour" in step2_plan, step2_plan
        await watched.shot("campaign-timed")

        await page.get_by_role("link", name="Suppressions").click()
        await page.get_by_role("cell", name=f"gone@{domain}").wait_for()
        await watched.shot("suppressions")
        # Add one by hand, then lift it, both behind the form's token.
        await page.get_by_label("Email", exact=True).fill(f"later@{domain}")
        await page.get_by_role("button", name="Suppress").click()
        await page.get_by_role("cell", name=f"later@{domain}").wait_for()

        async def suppressed() -> list[str]:
            listed = (await api.get("/api/suppressions")).json()["items"]
            return sorted(s["email"] for s in listed)

        assert await suppressed() == [f"gone@{domain}", f"later@{domain}"]
        row = page.get_by_role("row", name=f"later@{domain}")
        await row.get_by_text("Remove…").click()
        await row.get_by_role("button", name=f"Yes, mail later@{domain} again").click()
        await page.get_by_role("cell", name=f"gone@{domain}").wait_for()
        assert await page.get_by_role("cell", name=f"later@{domain}").count() == 0
        assert await suppressed() == [f"gone@{domain}"]
        watched.clean()

        await page.get_by_role("link", name="Recent events").click()
        await page.get_by_role("link", name=ben).first.wait_for()
        await watched.shot("events")
    finally:
        await context.close()


DEFINITION = """\
name: Spring launch
templates:
  hello:
    html: "<p>Hello {{ first_name | default('there') }}</p>"
steps:
  - subject: Hello
    delay_hours: 0
    template: hello
  - subject: One more thing
    delay_hours: 24
    template: hello
"""


async def test_a_campaign_run_from_the_pages_is_what_the_api_says(
    browser: Any, system: httpx.AsyncClient, smtp: SmtpSink, tmp_path: Any
) -> None:
    api = system
    context, watched = await watched_page(browser, base_url(api))
    page = watched.page

    async def status(cid: int) -> str:
        return (await api.get(f"/api/campaigns/{cid}")).json()["status"]

    try:
        await page.goto("/ui/")
        await page.get_by_text("No campaign yet").wait_for()  # the empty state says what to do
        await page.get_by_label("Definition (YAML or JSON)").fill("name: x\nsteps: [{}]")
        watched.expected.add("/ui/campaigns")  # the refusal below is a 422, on purpose
        await page.get_by_role("button", name="Create campaign").click()
        alert = page.get_by_role("alert")
        assert "steps.0" in await alert.inner_text()  # next to the control, in words
        watched.expected.clear()
        watched.problems.clear()

        await page.get_by_label("Definition (YAML or JSON)").fill(DEFINITION)
        await page.get_by_role("button", name="Create campaign").click()
        await page.get_by_role("heading", name="Spring launch").wait_for()
        cid = int(re.search(r"/ui/campaigns/(\d+)$", page.url).group(1))
        assert await status(cid) == "draft"
        await watched.shot("campaign-draft")

        tester = f"tester@{unique_domain()}"
        await page.get_by_label("Send every step now to").fill(tester)
        await page.get_by_role("button", name="Send test messages").click()
        assert "Sent 2 test messages" in await page.get_by_role("status").inner_text()
        received = smtp.raw_to(tester)  # the bytes on the wire, as sent at once
        assert sorted(
            re.findall(rb"\r\nSubject: ([^\r]*)", b"".join(m.content for m in received))
        ) == [
            b"[Test] Hello",
            b"[Test] One more thing",
        ]

        await page.get_by_text("Activate…").click()
        await page.get_by_role("button", name="Yes, activate “Spring launch”").click()
        await page.get_by_text("Pause…").wait_for()
        assert await status(cid) == "active"

        domain = unique_domain()
        csv = tmp_path / "people.csv"
        lines = ["email,first_name", *(f"p{i}@{domain},P{i}" for i in range(40)), "nobody,X"]
        csv.write_text("\n".join(lines) + "\n")
        await page.get_by_label("CSV file", exact=True).set_input_files(str(csv))
        await page.get_by_role("button", name="Upload and enroll").click()
        await page.locator('[data-batch="percent"]', has_text="100 %").wait_for(timeout=60_000)
        batch_id = int(re.search(r"batch=(\d+)", page.url).group(1))
        batch = (await api.get(f"/api/enrollment-batches/{batch_id}")).json()
        assert (batch["enrolled"], batch["rejected"]) == (40, 1)
        assert await page.locator("#batch-progress").get_attribute("value") == "100"
        assert "nobody" in await page.get_by_role("table", name="Rejected rows").inner_text()
        await watched.shot("campaign-enrolled")

        # By keyboard alone: to the disclosure, open it, on to its button, press it.
        await page.get_by_text("Pause…").focus()
        await page.keyboard.press("Enter")
        await page.keyboard.press("Tab")
        confirm = page.get_by_role("button", name="Yes, pause “Spring launch”")
        assert await confirm.evaluate("b => b === document.activeElement")
        outline = await confirm.evaluate("b => getComputedStyle(b).outlineStyle")
        assert outline == "solid", "the focused control shows its focus"
        await page.keyboard.press("Enter")
        await page.get_by_text("Resume…").wait_for()
        assert await status(cid) == "paused"
        await page.get_by_text("Resume…").click()
        await page.get_by_role("button", name="Yes, resume “Spring launch”").click()
        await page.get_by_text("Pause…").wait_for()
        assert await status(cid) == "active"

        async def sent_all() -> bool:
            funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
            return funnel["steps"][0]["sent"] == 40

        await eventually(sent_all, what="step 1 to all 40")
        await page.locator('[data-funnel="1:sent"]', has_text="40").wait_for(timeout=15_000)
        api_funnel = (await api.get(f"/api/campaigns/{cid}/funnel")).json()
        assert await funnel_on_page(page) == funnel_of_api(api_funnel, STAGES)
        watched.clean()

        # The same form without its CSRF token, from this signed-in browser: refused.
        refused = await page.request.post(
            f"/ui/campaigns/{cid}/status", form={"action": "archive"}, max_redirects=0
        )
        assert refused.status == 403
        assert "CSRF" in await refused.text()
        token = await page.locator('input[name="csrf_token"]').first.get_attribute("value")
        forged = await page.request.post(
            f"/ui/campaigns/{cid}/status",
            form={"action": "archive", "csrf_token": "0" * len(token)},
            max_redirects=0,
        )
        assert forged.status == 403
        assert await status(cid) == "active"

        # A next version: drafted, its publish previewed as the API's dry run, published.
        await page.get_by_role("button", name="Draft the next version").click()
        await page.get_by_role("heading", name="Draft version 2").wait_for()
        await page.get_by_label("Journeys in flight", exact=True).first.select_option("migrate")
        await page.get_by_role("button", name="Preview the publish").click()
        dry_run = await api.post(
            f"/api/campaigns/{cid}/versions/2/publish", json={"policy": "migrate", "dry_run": True}
        )
        expected = dry_run.json()
        shown = await page.locator('[data-impact="in_flight"]').inner_text()
        assert int(shown) == expected["in_flight"] > 0
        await page.get_by_text("Publish version 2…").click()
        await page.locator("#publish-policy").select_option("migrate")
        await page.get_by_role("button", name="Yes, publish version 2").click()
        await page.get_by_role("button", name="Draft the next version").wait_for()
        listed = (await api.get(f"/api/campaigns/{cid}/versions")).json()["items"]
        assert [(v["version"], v["status"]) for v in listed] == [(1, "retired"), (2, "live")]
        await watched.shot("campaign-versions")

        # One journey removed from its page, behind a confirmation.
        leaving = f"p7@{domain}"
        await page.goto(f"/ui/campaigns/{cid}/recipients/{leaving}")
        await page.get_by_text("Remove…").click()
        await page.get_by_role("button", name=f"Yes, remove {leaving}").click()
        await page.get_by_text("removed by API").wait_for()
        journey = (await api.get(f"/api/campaigns/{cid}/recipients/{leaving}")).json()
        assert journey["status"] == "removed"
        watched.clean()
    finally:
        await context.close()


async def test_with_keys_the_pages_need_a_sign_in(
    browser: Any, settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    keyed = settings.model_copy(update={"api_keys": ["first-key", "second-key"]})
    async with serve_api(keyed, dev_env.client) as api:
        context, watched = await watched_page(browser, base_url(api))
        page = watched.page
        try:
            for path in ("/ui/", "/ui/suppressions", "/ui/events", "/ui/campaigns/1"):
                answer = await page.request.get(path, max_redirects=0)
                assert answer.status == 303, path
                assert answer.headers["location"].startswith("/ui/login?next=")
            # Nothing to read without the key either (the API keeps its bearer check).
            assert (await page.request.get("/api/campaigns")).status == 401

            await page.goto("/ui/suppressions")
            assert "/ui/login" in page.url
            await watched.shot("login")
            watched.expected.add("/ui/login")  # the wrong key is a 401, on purpose
            await page.get_by_label("API key").fill("not-a-key")
            await page.get_by_role("button", name="Sign in").click()
            assert "not one of the API keys" in await page.get_by_role("alert").inner_text()
            watched.expected.clear()
            watched.problems.clear()

            await page.get_by_label("API key").fill("second-key")
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_role("heading", name="Suppressions").wait_for()
            assert page.url.endswith("/ui/suppressions")  # back where it was asked for
            [cookie] = [c for c in await context.cookies() if c["name"] == "drip_session"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert not cookie["secure"]  # plain http here; behind HTTPS it is Secure
            assert (await page.request.get("/ui/events", max_redirects=0)).status == 200
            # The session opens the dashboard, never the API: that still wants the bearer key.
            assert (await page.request.get("/api/campaigns")).status == 401
            watched.clean()

            # A page left open when its session ends goes, whole, to the sign-in.
            made = await api.post(
                "/api/campaigns",
                json={"name": "Keyed", "steps": []},
                headers={"Authorization": "Bearer first-key"},
            )
            kid = made.json()["id"]
            await page.goto(f"/ui/campaigns/{kid}")
            await page.get_by_role("heading", name="How it is doing").wait_for()
            watched.clean()
            watched.expected.add("/numbers")  # the poll answered 401, on purpose
            await context.clear_cookies()
            await page.wait_for_url(f"**/ui/login?next=/ui/campaigns/{kid}", timeout=15_000)
            watched.expected.clear()
            watched.problems.clear()
            await page.get_by_label("API key").fill("first-key")
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_role("heading", name="Keyed").wait_for()  # back where it was

            await page.get_by_role("button", name="Sign out").click()
            await page.get_by_label("API key").wait_for()
            assert (await page.request.get("/ui/", max_redirects=0)).status == 303
        finally:
            await context.close()

        # Without JavaScript: the sign-in and the forms are plain HTML, and work.
        plain = await browser.new_context(base_url=base_url(api), java_script_enabled=False)
        try:
            page = await plain.new_page()
            await page.goto("/ui/suppressions")
            await page.get_by_label("API key").fill("first-key")
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_label("Email", exact=True).fill("no-js@example.com")
            await page.get_by_role("button", name="Suppress").click()
            await page.get_by_role("cell", name="no-js@example.com").wait_for()
            await page.get_by_text("Remove…").click()  # a <details> disclosure: no script
            await page.get_by_role("button", name="Yes, mail no-js@example.com again").click()
            await page.get_by_text("Nobody is suppressed").wait_for()
        finally:
            await plain.close()
