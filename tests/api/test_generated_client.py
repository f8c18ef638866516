"""A Python client generated from the API's own OpenAPI schema (openapi-python-client, offline,
into a temporary directory) drives one campaign end to end against the real API, worker and SMTP
server: create a template and a campaign, activate it, enroll, read the stats. Proves the schema
is one a client generator can use: named operations (`create_campaign`, `enroll_recipients`,
...), typed bodies, and the problem+json errors parsed as the declared `Problem` model."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import unique_domain
from tests.support.eventually import eventually
from tools.smtp_sink import SmtpSink

GENERATOR = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
PACKAGE = "drip_generated_client"
CONFIG = f"""package_name_override: {PACKAGE}
post_hooks: []
content_type_overrides:
  image/gif: application/octet-stream
"""


@pytest.fixture
def generate(tmp_path: Path) -> Iterator[Any]:
    """Generate the client from a schema and import it; forget it afterwards."""

    def run(schema: dict[str, Any]) -> ModuleType:
        assert GENERATOR, "openapi-python-client (the dev extras) is installed"
        (tmp_path / "openapi.json").write_text(json.dumps(schema))
        (tmp_path / "config.yaml").write_text(CONFIG)
        result = subprocess.run(
            [GENERATOR, "generate", "--path", "openapi.json", "--config", "config.yaml"]
            + ["--meta", "none", "--output-path", PACKAGE],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        # Every operation of the schema generated: no warnings, nothing left out.
        assert "Warning" not in result.stdout, result.stdout
        sys.path.insert(0, str(tmp_path))
        return importlib.import_module(PACKAGE)

    yield run
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_generated_client_runs_a_campaign(
    system: httpx.AsyncClient, smtp: SmtpSink, generate: Any
) -> None:
    schema = (await system.get("/openapi.json")).json()
    generated = generate(schema)
    c = importlib.import_module
    models = c(f"{PACKAGE}.models")
    create_template = c(f"{PACKAGE}.api.templates.create_template")
    create_campaign = c(f"{PACKAGE}.api.campaigns.create_campaign")
    update_campaign = c(f"{PACKAGE}.api.campaigns.update_campaign")
    get_campaign = c(f"{PACKAGE}.api.campaigns.get_campaign")
    enroll_recipients = c(f"{PACKAGE}.api.recipients.enroll_recipients")
    get_campaign_stats = c(f"{PACKAGE}.api.campaigns.get_campaign_stats")

    client = generated.Client(base_url=str(system.base_url), raise_on_unexpected_status=True)
    async with client:
        template = await create_template.asyncio(
            client=client, body=models.TemplateCreate(name="welcome", html="<p>Hi {{ email }}</p>")
        )
        assert isinstance(template, models.TemplatePublic), template
        step = models.StepCreate(subject="Welcome", delay_hours=0, template_id=template.id)
        campaign = await create_campaign.asyncio(
            client=client,
            body=models.CampaignCreate(name="Generated", steps=[step]),
            idempotency_key="generated-client-1",
        )
        assert isinstance(campaign, models.CampaignPublic), campaign
        assert campaign.status == "draft" and campaign.steps[0].subject == "Welcome"

        active = await update_campaign.asyncio(
            campaign.id,
            client=client,
            body=models.CampaignUpdate(status=models.CampaignUpdateStatus.ACTIVE),
        )
        assert isinstance(active, models.CampaignPublic) and active.status == "active"

        email = f"maya@{unique_domain()}"
        enrolled = await enroll_recipients.asyncio(
            campaign.id,
            client=client,
            body=models.EnrollRequest(recipients=[models.RecipientIn(email=email)]),
        )
        assert isinstance(enrolled, models.EnrollResult), enrolled
        assert (enrolled.enrolled, enrolled.already_enrolled, enrolled.rejected) == (1, 0, [])

        async def completed() -> Any:
            stats = await get_campaign_stats.asyncio(client=client, campaign_id=campaign.id)
            assert isinstance(stats, models.CampaignStats), stats
            return stats if stats.completed == 1 else None

        stats = await eventually(completed, "the journey to complete")
        assert (stats.recipients, stats.completion_rate) == (1, 1.0)
        assert len(smtp.to(email)) == 1

        # An error is the declared problem+json body, parsed into its model.
        missing = await get_campaign.asyncio(999999, client=client)
        assert isinstance(missing, models.Problem), missing
        assert (missing.status, missing.code) == (404, "not_found")
        refused = await update_campaign.asyncio(
            campaign.id,
            client=client,
            body=models.CampaignUpdate(status=models.CampaignUpdateStatus.DRAFT),
        )
        assert isinstance(refused, models.Problem) and refused.code == "conflict", refused
