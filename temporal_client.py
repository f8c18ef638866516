"""One way to connect to Temporal, for the API, the worker and the tools."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from settings import Settings


async def connect_temporal(
    settings: Settings, runtime: Runtime | None = None, lazy: bool = False
) -> Client:
    # envconfig honours the standard TEMPORAL_* variables (API key, TLS, profiles);
    # address and namespace come from our settings so tests and tools can override them.
    config = ClientConfig.load_client_connect_config()
    config["target_host"] = settings.temporal_address
    config["namespace"] = settings.temporal_namespace
    return await Client.connect(**config, runtime=runtime, lazy=lazy)
