"""Structured logs: one JSON object per line on stderr, for the API, the worker and the tools.

Every line has time, level, logger and message; lines about a journey also carry workflow_id,
campaign_id and recipient. They come from `extra={...}` on the call, or, inside an activity or
workflow, from Temporal's own context (so `activity.logger`, `workflow.logger` and plain
`logging` calls made while an activity runs all name their journey)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace
from temporalio import activity, workflow
from temporalio.runtime import LogForwardingConfig, LoggingConfig

from domain.journey import parse_workflow_id
from observability.request_ids import REQUEST_ID

# Record attributes (set with `extra=`) copied into the JSON object when present.
FIELDS = ("workflow_id", "run_id", "campaign_id", "recipient", "delivery_id", "outcome")


def temporal_fields(record: logging.LogRecord) -> dict[str, Any]:
    info = getattr(record, "temporal_activity", None) or getattr(record, "temporal_workflow", None)
    if isinstance(info, dict):
        return {
            "workflow_id": info.get("workflow_id"),
            "run_id": info.get("workflow_run_id") or info.get("run_id"),
            "activity": info.get("activity_type"),
            "workflow_type": info.get("workflow_type"),
        }
    if activity.in_activity():
        current = activity.info()
        return {
            "workflow_id": current.workflow_id,
            "run_id": current.workflow_run_id,
            "activity": current.activity_type,
        }
    return {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(temporal_fields(record))
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        entry.setdefault("request_id", REQUEST_ID.get())  # the API request, or the one that
        # started this activity's journey (observability/request_ids.py)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # tracing on: the line joins its trace
            entry["trace_id"] = format(span.trace_id, "032x")
        journey = parse_workflow_id(entry["workflow_id"]) if entry.get("workflow_id") else None
        if journey is not None:  # the id names its campaign and recipient
            entry.setdefault("campaign_id", journey[0])
            entry.setdefault("recipient", journey[1])
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps({k: v for k, v in entry.items() if v is not None}, default=str)


class JsonStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """JSON lines to whatever sys.stderr is when the line is written (test runners swap it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)
        self.setFormatter(JsonFormatter())

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def configure_logging(level: str = "INFO") -> None:
    """Route every logger, uvicorn's included, through one JSON handler on the root logger.
    Safe to call more than once."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, JsonStderrHandler)]:
        root.removeHandler(handler)
    root.addHandler(JsonStderrHandler())
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The JSON carries the ids as fields: no need to append them to every message too.
    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False


def temporal_core_logging() -> LoggingConfig:
    """For a Temporal Runtime: the SDK core's lines (its default levels) forwarded to Python
    logging as `temporalio.core.*`, instead of written to stderr in its own format."""
    return LoggingConfig(
        filter=LoggingConfig.default.filter,
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
