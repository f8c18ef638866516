"""The app's own Prometheus metrics, each defined once.

The API serves these at `/metrics` (prometheus-client's default registry), beside its request
metrics. Sends happen in the worker, so they are counted with the Temporal SDK's metric meter
instead: that puts them on the worker's one Prometheus endpoint (DRIP_WORKER_METRICS_PORT),
beside the SDK's own metrics, with the task queue and activity type as extra labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from temporalio import activity

HTTP_REQUESTS = Counter(
    "drip_http_requests", "HTTP requests answered, by route template", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "drip_http_request_duration_seconds", "Time to answer, by route template", ["method", "route"]
)
EVENTS_RECEIVED = Counter(
    "drip_events_received",
    "Engagement events received (retries included), by source and normalised type",
    ["provider", "type"],
)
ENROLLMENTS_HELP = "Addresses in enroll requests: enrolled, already_enrolled or rejected"
ENROLLMENTS = Counter("drip_enrollments", ENROLLMENTS_HELP, ["result"])
SIGNAL_FAILURES = Counter(
    "drip_signal_failures",
    "Signals to journeys that failed and are left to the outbox, by gRPC status",
    ["status"],
)

TRACKING_HITS_LIMITED = Counter(
    "drip_tracking_hits_limited",
    "Open-pixel and click hits over the per-token rate limit: answered, not stored",
    ["kind"],
)
WEBHOOK_VERIFICATION_FAILURES = Counter(
    "drip_webhook_verification_failures",
    "Provider webhook requests refused because the signature or credentials did not verify",
    ["provider"],
)
# Gauges set by the outbox round from cheap COUNTs (observability/backlog.py): every API replica
# reports the same database-wide value, so alert on max(), not sum().
OUTBOX_BACKLOG = Gauge(
    "drip_outbox_backlog",
    "Accepted work not handed to Temporal yet: unstarted enrollments and unsignalled events",
    ["kind"],
)
UNCERTAIN_DELIVERIES = Gauge(
    "drip_uncertain_deliveries",
    "Deliveries recorded uncertain: maybe accepted by the SMTP server, not resent",
)
REPUTATION_PAUSED_CAMPAIGNS = Gauge(
    "drip_reputation_paused_campaigns",
    "Campaigns paused by the reputation guard (bounce or complaint rate) and not resumed",
)

MESSAGES_SENT = "drip_messages_sent_total"
MESSAGES_SENT_HELP = (
    "Send attempts by outcome: sent, uncertain, failed, bounced, held, already_sent, capped, "
    "switched, or the end status of a journey stopped before sending (unsubscribed, "
    "complained, suppressed, ...)"
)


ENROLLMENTS_TOTAL = "drip_enrollments_total"


def count_enrollments(enrolled: int, already_enrolled: int, rejected: int) -> None:
    """Wherever addresses are enrolled: in the API (its /metrics), and inside the batch
    activity also on the worker's endpoint (the SDK's meter), where batches are enrolled."""
    counts = {"enrolled": enrolled, "already_enrolled": already_enrolled, "rejected": rejected}
    meter = activity.metric_meter() if activity.in_activity() else None
    for result, n in counts.items():
        if not n:
            continue
        ENROLLMENTS.labels(result).inc(n)
        if meter is not None:
            meter.create_counter(ENROLLMENTS_TOTAL, ENROLLMENTS_HELP).add(n, {"result": result})


def count_send(outcome: str) -> None:
    """Inside the send activity only. A no-op when the worker exports no metrics."""
    meter = activity.metric_meter()
    meter.create_counter(MESSAGES_SENT, MESSAGES_SENT_HELP).add(1, {"outcome": outcome})
