"""One request id from the API request to the worker's log lines for the journeys it started.

The API takes the caller's `X-Request-ID` (or makes one), echoes it in the response and keeps it
in a context variable that every log line of the request reads (observability/logs.py). A
journey started during the request carries it in a Temporal header; the workflow passes it on to
each activity it schedules, and the activity puts it back in the context variable, so the
worker's lines for that journey (`send sent`, ...) name the request that enrolled it.

Headers are not part of a workflow's commands: adding them changes no recorded history."""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import temporalio.api.common.v1
import temporalio.client
import temporalio.converter
import temporalio.worker
import temporalio.workflow

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

HTTP_HEADER = b"x-request-id"
TEMPORAL_HEADER = "drip-request-id"
# What we accept from a caller: enough for UUIDs and tracing ids, nothing that breaks a log line.
ACCEPTED = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class RequestIdMiddleware:
    """ASGI: outermost, so refused requests (401, 413) have an id too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(HTTP_HEADER, b"").decode("latin-1")
        request_id = incoming if ACCEPTED.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (HTTP_HEADER, request_id.encode())]  # fmt: skip
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


# --- through Temporal ------------------------------------------------------------------------

_converter = temporalio.converter.PayloadConverter.default
Headers = MutableMapping[str, temporalio.api.common.v1.Payload]


class RequestIdInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """On the client: a journey started while a request id is current carries it. On the
    worker: the workflow hands it to its activities, which make it current while they run."""

    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        return _ClientOutbound(next)

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _ActivityInbound(next)

    def workflow_interceptor_class(
        self,
        input: temporalio.worker.WorkflowInterceptorClassInput,  # noqa: ARG002 (the SDK's signature)
    ) -> type[temporalio.worker.WorkflowInboundInterceptor]:
        return _WorkflowInbound


class _ClientOutbound(temporalio.client.OutboundInterceptor):
    async def start_workflow(
        self, input: temporalio.client.StartWorkflowInput
    ) -> temporalio.client.WorkflowHandle[Any, Any]:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            input.headers = {**input.headers, TEMPORAL_HEADER: _converter.to_payload(request_id)}
        return await super().start_workflow(input)


class _ActivityInbound(temporalio.worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        payload = input.headers.get(TEMPORAL_HEADER)
        if payload is None:
            return await super().execute_activity(input)
        token = REQUEST_ID.set(_converter.from_payload(payload, str))
        try:
            return await super().execute_activity(input)
        finally:
            REQUEST_ID.reset(token)


class _WorkflowInbound(temporalio.worker.WorkflowInboundInterceptor):
    """Deterministic: it only copies a header from the start to each scheduled activity."""

    request_id: temporalio.api.common.v1.Payload | None = None

    def init(self, outbound: temporalio.worker.WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOutbound(outbound, self))

    async def execute_workflow(self, input: temporalio.worker.ExecuteWorkflowInput) -> Any:
        self.request_id = input.headers.get(TEMPORAL_HEADER)
        return await super().execute_workflow(input)


class _WorkflowOutbound(temporalio.worker.WorkflowOutboundInterceptor):
    def __init__(
        self, next: temporalio.worker.WorkflowOutboundInterceptor, inbound: _WorkflowInbound
    ) -> None:
        super().__init__(next)
        self.inbound = inbound

    def _with_request_id(self, headers: Mapping[str, temporalio.api.common.v1.Payload]) -> Headers:
        if self.inbound.request_id is None:
            return dict(headers)
        return {**headers, TEMPORAL_HEADER: self.inbound.request_id}

    def start_activity(
        self, input: temporalio.worker.StartActivityInput
    ) -> temporalio.workflow.ActivityHandle[Any]:
        input.headers = self._with_request_id(input.headers)
        return super().start_activity(input)

    def start_local_activity(
        self, input: temporalio.worker.StartLocalActivityInput
    ) -> temporalio.workflow.ActivityHandle[Any]:
        input.headers = self._with_request_id(input.headers)
        return super().start_local_activity(input)
