"""One way to connect to Temporal, for the API, the worker and the tools."""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from domain import search
from settings import Settings

log = logging.getLogger("drip.temporal")

# How long a server this process starts (the dev server, the rehearsals' time-skipping server)
# may take to listen. The SDK's 5 s default was missed on a busy 2-core machine.
LOCAL_SERVER_STARTUP = timedelta(seconds=60)


async def connect_temporal(
    settings: Settings, runtime: Runtime | None = None, lazy: bool = False
) -> Client:
    # envconfig honours the standard TEMPORAL_* variables (API key, TLS, profiles);
    # address and namespace come from our settings so tests and tools can override them.
    config = ClientConfig.load_client_connect_config()
    config["target_host"] = settings.temporal_address
    config["namespace"] = settings.temporal_namespace
    return await Client.connect(**config, runtime=runtime, lazy=lazy)


async def register_search_attributes(client: Client) -> None:
    """Make sure our custom search attributes exist (a no-op when they do). Without them every
    workflow task fails forever, which looks like a hang."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    types = {
        "INT": IndexedValueType.INDEXED_VALUE_TYPE_INT,
        "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    }
    wanted = {key.name: types[key.indexed_value_type.name] for key in search.ALL_KEYS}
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = {k: v for k, v in wanted.items() if k not in existing.custom_attributes}
    except RPCError as exc:
        if exc.status != RPCStatusCode.UNIMPLEMENTED:  # e.g. Temporal Cloud: use tcld instead
            log.warning("cannot list search attributes (%s); check %s exist", exc, sorted(wanted))
            return
        missing = wanted  # the time-skipping test server can add but not list
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
        log.info("registered search attributes %s", sorted(missing))
    except RPCError as exc:
        if exc.status != RPCStatusCode.ALREADY_EXISTS:
            log.warning("could not add search attributes %s: %s", sorted(missing), exc)
