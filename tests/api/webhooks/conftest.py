"""The webhook HTTP tests' fixtures, once: the API with every provider configured (`hooks`), and
with an in-process worker too (`system`: journeys run and send)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.api.webhooks.webhooks_support import Hooks, serve_hooks


@pytest.fixture
async def hooks(settings: Settings, dev_env: WorkflowEnvironment) -> AsyncIterator[Hooks]:
    async with serve_hooks(settings, dev_env, worker=False) as hooks:
        yield hooks


@pytest.fixture
async def system(settings: Settings, dev_env: WorkflowEnvironment) -> AsyncIterator[Hooks]:
    async with serve_hooks(settings, dev_env, worker=True) as hooks:
        yield hooks
