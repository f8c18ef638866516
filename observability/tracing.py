"""OpenTelemetry tracing, API → Temporal → worker → SMTP, configured only by the standard
OTEL_* variables and off unless OTEL_TRACES_EXPORTER names an exporter.

Off (the default, or OTEL_SDK_DISABLED=true) nothing is installed: no interceptor, no middleware,
no wrapper, so tracing costs nothing. On, one trace follows an enrollment: the API's request span
(FastAPI instrumentation), the journey's start, its workflow and activity spans (the Temporal
SDK's TracingInterceptor, on the client and every worker built from it) and the SMTP hand-off
(`smtp.send`, around the transport the send activity calls). Also holds the one place Temporal
clients get their interceptors (`with_interceptors`), request ids included."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.client import Client, Interceptor

from observability.request_ids import RequestIdInterceptor

_provider: TracerProvider | None = None


def configure_tracing(service_name: str) -> None:
    """At process start; a no-op once configured. OTEL_TRACES_EXPORTER is a comma-separated
    list of installed span exporters (`otlp`, `console`); each reads its own variables
    (OTEL_EXPORTER_OTLP_ENDPOINT, ...). OTEL_SERVICE_NAME, when set, names the service."""
    global _provider
    if _provider is not None or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    if not names:
        return
    default = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(default))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)()))
    trace.set_tracer_provider(provider)
    _provider = provider


def _exporter(name: str) -> Any:
    if name == "otlp":  # the spec's name; the installed exporter for the chosen protocol
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        )
        name = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise RuntimeError(f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed")
    return next(iter(found)).load()


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace to this provider from now on (tests: an in-memory exporter); None turns it off."""
    global _provider
    _provider = provider


def tracer() -> trace.Tracer | None:
    return _provider.get_tracer("drip") if _provider is not None else None


def interceptors() -> list[Interceptor]:
    from temporalio.contrib.opentelemetry import TracingInterceptor

    found: list[Interceptor] = [RequestIdInterceptor()]
    current = tracer()
    if current is not None:
        found.append(TracingInterceptor(current))
    return found


def with_interceptors(client: Client) -> Client:
    """The client, with our interceptors (request ids, and tracing when on); workers built on
    it get them too. The same connection: a client is cheap, its service client is not."""
    config = client.config()
    have = {type(i) for i in config["interceptors"]}
    missing = [i for i in interceptors() if type(i) not in have]
    if not missing:
        return client
    config["interceptors"] = [*config["interceptors"], *missing]
    return Client(**config)


def instrument_app(app: Any) -> None:
    """FastAPI request spans, when tracing is on (health checks and scrapes left out)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=_provider, excluded_urls="/healthz,/readyz,/metrics"
    )


class TracedTransport:
    """A span around each hand-off to the mail transport (SMTP or the outbox folder). Wraps
    whatever the send activity is given, so the activity itself needs no tracing code."""

    def __init__(self, inner: Any, tracer: trace.Tracer) -> None:
        self.inner = inner
        self.tracer = tracer

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        attributes = {"drip.transport": type(self.inner).__name__}
        host = getattr(self.inner, "hostname", None)
        if host:
            attributes |= {"server.address": host, "server.port": self.inner.port}
        with self.tracer.start_as_current_span(
            "smtp.send", kind=trace.SpanKind.CLIENT, attributes=attributes
        ):
            return await self.inner.send(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # the rest of the transport, unchanged
        return getattr(self.inner, name)


def traced_transport(transport: Any) -> Any:
    current = tracer()
    return transport if current is None else TracedTransport(transport, current)
