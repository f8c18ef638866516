"""Rotating DRIP_SECRET_KEY: the links of messages already sent keep working while their key is
listed in DRIP_OLD_SECRET_KEYS, and stop once it is dropped. A real message over real SMTP."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.conftest import run_worker, serve_api, unique_domain
from tests.support.enroll import enroll
from tests.support.factories import make_campaign, make_template
from tests.support.mailbox import LINKS_HTML, html_of, path_of, pixel_url, received, unsubscribe_url
from tools.smtp_sink import SmtpSink

OLD, NEW = "o" * 40, "n" * 40


async def test_links_sent_before_a_rotation_still_work(
    settings: Settings, dev_env: WorkflowEnvironment, smtp: SmtpSink
) -> None:
    before = settings.model_copy(update={"smtp_url": smtp.url, "secret_key": OLD})
    address = f"jo@{unique_domain()}"
    async with serve_api(before, dev_env.client) as api, run_worker(before, dev_env.client):
        template = await make_template(api, html=LINKS_HTML)
        campaign = await make_campaign(
            api, [{"subject": "Hi", "delay_hours": 0, "template_id": template}]
        )
        await enroll(api, campaign["id"], address)
        [message] = await received(smtp, address, 1)
    unsubscribe = path_of(unsubscribe_url(message), settings.public_url)
    pixel = path_of(pixel_url(html_of(message)), settings.public_url)

    rotated = before.model_copy(update={"secret_key": NEW, "old_secret_keys": [OLD]})
    async with serve_api(rotated, dev_env.client) as api:
        page = await api.get(unsubscribe)
        assert page.status_code == 200 and "Stop receiving" in page.text
        assert (await api.get(pixel)).status_code == 200
    dropped = before.model_copy(update={"secret_key": NEW, "old_secret_keys": []})
    async with serve_api(dropped, dev_env.client) as api:
        assert (await api.get(unsubscribe)).status_code == 404
