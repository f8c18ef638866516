"""The CLI's tests run `drip` against the real API over HTTP, here requiring a key (so every
test also proves the CLI sends DRIP_API_KEY)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from click.testing import Result
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from cli.main import app
from settings import Settings
from tests.conftest import serve_api

KEY = "cli-test-key"


@pytest.fixture
async def api(settings: Settings, dev_env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    """The API with an API key configured; this client sends it too."""
    configured = settings.model_copy(update={"api_keys": [KEY]})
    async with serve_api(configured, dev_env.client) as http:
        http.headers["Authorization"] = f"Bearer {KEY}"
        yield http


async def drip(
    api: httpx.AsyncClient | str, *args: str, key: str | None = KEY, stdin: str | None = None
) -> Result:
    """Run `drip ARGS` in a thread (its HTTP calls are sync), so this loop keeps serving."""
    url = api if isinstance(api, str) else str(api.base_url)
    env = {"DRIP_API_URL": url, "DRIP_API_KEY": key, "COLUMNS": "200"}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), input=stdin, env=env)
