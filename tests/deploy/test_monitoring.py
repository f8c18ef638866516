"""deploy/'s monitoring: the Prometheus scrape config, the alert rules and the Grafana dashboard.

Checked the way promtool and Grafana would: the YAML's shape, every `expr` parsed as PromQL
(promql-parser, the Rust parser's Python binding), the dashboard validated against a schema of
what Grafana requires (grafana-dashboard.schema.json, next to this file). Every metric an alert
or a panel reads must really be exported: by drip's API (a scrape of the real /metrics), its
worker (the real SDK endpoint, after a failed and a successful send) or the Temporal server (the
dev server's /metrics), so a renamed metric breaks the test, not the on-call's night."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from devstack import DEV_SERVER_TUNING
from domain import search
from observability import backlog
from observability.metrics import (
    OUTBOX_BACKLOG,
    REPUTATION_PAUSED_CAMPAIGNS,
    UNCERTAIN_DELIVERIES,
)
from settings import Settings
from storage.db import session_scope
from storage.models import Campaign, Delivery, Enrollment, Event, Step, Template
from storage.reputation import AUTO_PAUSE
from temporal_client import LOCAL_SERVER_STARTUP, connect_temporal
from tests.api.webhooks.webhooks_support import serve_hooks
from tests.conftest import BIN, free_port, run_worker, serve_api, unique_domain
from tests.support.eventually import eventually
from tests.support.factories import make_campaign, make_template
from tools.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "drip-dashboard.json"
DASHBOARD_SCHEMA = Path(__file__).resolve().parent / "grafana-dashboard.schema.json"

# Series Prometheus makes itself for every target, not exported by anyone.
SYNTHETIC = {"up"}
# Grafana's built-in interval variables, replaced as Grafana does before the query is sent.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def parse_promql(expr: str) -> promql_parser.Expr:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)  # ValueError with the parser's message when invalid


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects; a selector without a name is an error here:
    it cannot be checked against what is exported."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(parse_promql(expr), visit)
    return names


# --- the files, offline ---------------------------------------------------------------------


def test_alert_rules_parse_as_prometheus_rule_files() -> None:
    """What `promtool check rules` checks: groups with unique names, each rule an alert with a
    valid name, a PromQL `expr`, a duration `for`, string labels and annotations."""
    document = load_yaml(ALERTS)
    assert set(document) == {"groups"}
    groups = document["groups"]
    assert [g["name"] for g in groups] == list(dict.fromkeys(g["name"] for g in groups))
    seen: set[str] = set()
    for group in groups:
        assert set(group) <= {"name", "interval", "limit", "rules"}, group.keys()
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels",
                                 "annotations"}, rule  # fmt: skip
            name = rule["alert"]
            assert NAME.match(name) and name not in seen, name
            seen.add(name)
            assert isinstance(rule["expr"], str)
            parse_promql(rule["expr"])
            if "for" in rule:
                assert promql_parser.parse_duration(rule["for"]) > timedelta(0)
            assert rule["labels"]["severity"] in ("warning", "critical"), name
            assert all(isinstance(v, str) for v in rule["labels"].values())
            assert {"summary", "description"} <= rule["annotations"].keys(), name
            for text in rule["annotations"].values():  # Go templates: balanced actions
                assert text.count("{{") == text.count("}}"), text
    # One alert for each thing issue 17 asks operators be told about.
    for wanted in ("DripSendFailures", "DripWebhookVerificationFailures", "DripOutboxBacklog",
                   "DripUncertainDeliveries", "DripCampaignPausedByReputation",
                   "DripWorkerDown"):  # fmt: skip
        assert wanted in seen


def test_a_broken_expr_is_caught() -> None:
    with pytest.raises(ValueError):
        parse_promql("sum(rate(drip_messages_sent_total[5m])")
    with pytest.raises(AssertionError):
        metric_names('{__name__=~"drip_.*"}')


def test_scrape_config_names_every_drip_process_and_the_rule_file() -> None:
    config = load_yaml(PROMETHEUS)
    assert set(config) <= {"global", "rule_files", "scrape_configs", "alerting"}
    for duration in config["global"].values():
        assert promql_parser.parse_duration(duration) > timedelta(0)
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).is_file(), rule_file
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert len(jobs) == len(config["scrape_configs"]), "job names must be unique"
    assert {"drip-api", "drip-worker", "temporal"} <= jobs.keys()

    def ports(job: dict[str, Any]) -> set[int]:
        found = {d["port"] for d in job.get("dns_sd_configs", [])}
        for static in job.get("static_configs", []):
            found |= {int(target.rsplit(":", 1)[1]) for target in static["targets"]}
        return found

    # The same ports docker-compose gives the API and DRIP_WORKER_METRICS_PORT.
    compose = load_yaml(ROOT / "docker-compose.yml")["services"]
    worker_port = int(compose["worker"]["environment"]["DRIP_WORKER_METRICS_PORT"])
    assert ports(jobs["drip-worker"]) == {worker_port}
    assert ports(jobs["drip-api"]) == {8000}
    # Alert expressions select by these job names.
    used_jobs = set(re.findall(r'job="([^"]+)"', ALERTS.read_text() + DASHBOARD.read_text()))
    assert used_jobs <= jobs.keys()


def test_dashboard_is_a_grafana_dashboard() -> None:
    model = dashboard()
    jsonschema.validate(model, json.loads(DASHBOARD_SCHEMA.read_text()))
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    # No two panels on the same grid cell (Grafana would push one down, silently).
    cells: set[tuple[int, int]] = set()
    for panel in model["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    variables = {v["name"] for v in model["templating"]["list"]}
    for panel in model["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"].strip("${}") in variables
            assert [t["refId"] for t in panel["targets"]] == ["ABCDEFGH"[i] for i in
                                                            range(len(panel["targets"]))]  # fmt: skip
    for expr in dashboard_exprs():
        parse_promql(expr)


def test_the_schema_refuses_what_grafana_would() -> None:
    schema = json.loads(DASHBOARD_SCHEMA.read_text())
    broken = dashboard()
    del broken["panels"][1]["gridPos"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = dashboard()
    broken["panels"][1]["targets"][0].pop("expr")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# --- the gauges the alerts need --------------------------------------------------------------


def insert_backlog(engine: Engine) -> None:
    """One of each: an unstarted enrollment, an unsignalled event, an uncertain delivery and a
    campaign paused by the reputation guard (beside one paused by hand)."""
    with session_scope(engine) as session:
        template = Template(name="t", html="<p>x</p>")
        guarded = Campaign(name="g", status="paused", status_reason=f"{AUTO_PAUSE}: bounce_hard")
        by_hand = Campaign(name="h", status="paused")
        session.add_all([template, guarded, by_hand])
        session.flush()
        step = Step(campaign_id=guarded.id or 0, step_order=1, subject="s",
                    template_id=template.id or 0)  # fmt: skip
        email = f"x@{unique_domain()}"
        enrollment = Enrollment(campaign_id=guarded.id or 0, email=email,
                                workflow_id=f"drip-campaign-{guarded.id}-{email}")  # fmt: skip
        session.add_all([step, enrollment])
        session.flush()
        delivery = Delivery(id="snd_uncertain", enrollment_id=enrollment.id or 0,
                            campaign_id=guarded.id or 0, step_id=step.id or 0, step_order=1,
                            decision="sent", status="uncertain")  # fmt: skip
        session.add(delivery)
        session.flush()
        session.add(Event(provider="api", dedupe_key="e1", type="open", raw_type="open",
                          delivery_id=delivery.id,
                          enrollment_id=enrollment.id or 0, campaign_id=guarded.id or 0,
                          email=email))  # fmt: skip


def test_backlog_gauges_count_what_is_waiting(engine: Engine) -> None:
    backlog.measure(engine)
    assert OUTBOX_BACKLOG.labels("enrollments")._value.get() == 0
    assert UNCERTAIN_DELIVERIES._value.get() == 0
    insert_backlog(engine)
    backlog.measure(engine)
    assert OUTBOX_BACKLOG.labels("enrollments")._value.get() == 1
    assert OUTBOX_BACKLOG.labels("events")._value.get() == 1
    assert UNCERTAIN_DELIVERIES._value.get() == 1
    assert REPUTATION_PAUSED_CAMPAIGNS._value.get() == 1  # not the one paused by hand


async def test_the_outbox_round_reports_them_on_metrics(
    settings: Settings, dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    await asyncio.to_thread(insert_backlog, engine)
    async with serve_api(settings, dev_env.client) as api:

        async def reported() -> str | None:
            text = (await api.get("/metrics")).text
            return text if sample(text, "drip_uncertain_deliveries") == 1 else None

        text = await eventually(reported, timeout=30, what="the outbox round's gauges")
    assert sample(text, "drip_reputation_paused_campaigns") == 1
    # Its values depend on what the round itself just started and signalled: present is enough.
    assert 'drip_outbox_backlog{kind="enrollments"}' in text
    assert 'drip_outbox_backlog{kind="events"}' in text


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_webhook_verification_failures_are_counted_by_provider(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    name = "drip_webhook_verification_failures_total"
    async with serve_hooks(settings, dev_env, worker=False) as hooks:
        before = (await hooks.api.get("/metrics")).text
        forged = await hooks.postmark({"RecordType": "Open"}, password="guess")
        assert forged.status_code == 401
        unknown = await hooks.api.post("/api/webhooks/nobody", content=b"{}")
        assert unknown.status_code == 404  # not a verification failure
        after = (await hooks.api.get("/metrics")).text
    assert sample(after, name, provider="postmark") - sample(before, name, provider="postmark") == 1
    assert sample(after, name, provider="nobody") == 0


# --- every metric used is exported ----------------------------------------------------------


@pytest.fixture(scope="module")
def server_metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
async def dev_env(server_metrics_port: int) -> AsyncIterator[WorkflowEnvironment]:
    """This module's own dev server, serving its metrics as the production server does."""
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=LOCAL_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=list(search.ALL_KEYS),
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=[*DEV_SERVER_TUNING, "--metrics-port", str(server_metrics_port)],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink(port=free_port())
    sink.start()
    yield sink
    sink.stop()


def get_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def exported(text: str) -> set[str]:
    """The series names a scrape offers, as written (prometheus_client's parser would rename a
    counter's samples to `_total`, which the Temporal SDK and server do not write). A family
    declared but without samples yet (a labelled counter nothing has counted) offers the names
    its type gives it."""
    names: set[str] = set()
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            declared[name] = kind
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    for name, kind in declared.items():
        if any(n == name or n.startswith(f"{name}_") for n in names):
            continue
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif kind == "counter" and not name.endswith("_total"):
            names.add(f"{name}_total")
        else:
            names.add(name)
    return names


@pytest.mark.slow
async def test_every_metric_in_alerts_and_dashboard_is_exported(
    settings: Settings, dev_env: WorkflowEnvironment, smtp: SmtpSink, server_metrics_port: int
) -> None:
    """One journey through the real API, a worker on a Prometheus runtime and the SMTP sink;
    the sink answers the first attempt 451 so the SDK's failure metrics exist too."""
    worker_port = free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{worker_port}"))
    )
    configured = settings.model_copy(
        update={"smtp_url": smtp.url, "from_email": "hello@drip.example.com"}
    )
    email = f"metrics@{unique_domain()}"
    smtp.rcpt_replies[email] = "451 4.3.0 try again later"
    worker_client = await connect_temporal(configured, runtime=runtime)
    async with serve_api(configured, dev_env.client) as api, run_worker(configured, worker_client):
        template = await make_template(api)
        steps = [{"subject": "Hi", "delay_hours": 0, "template_id": template}]
        campaign = await make_campaign(api, steps, from_email="hello@drip.example.com")
        enrolled = await api.post(
            f"/api/campaigns/{campaign['id']}/recipients", json={"recipients": [{"email": email}]}
        )
        assert enrolled.json()["enrolled"] == 1

        async def failed_once() -> bool:
            text = await asyncio.to_thread(get_text, worker_port)
            return "temporal_activity_execution_failed{" in text

        await eventually(failed_once, timeout=60, what="a failed send attempt")
        smtp.rcpt_replies.clear()

        async def received() -> bool:
            return bool(smtp.to(email))

        await eventually(received, timeout=60, what="the mail")
        await eventually(
            lambda: _has(worker_port, "drip_messages_sent_total"), timeout=30, what="send counter"
        )
        # The mail arrives before the journey has finished; the SDK counts its completion then.
        await eventually(
            lambda: _has(worker_port, "temporal_workflow_completed"),
            timeout=30,
            what="the journey to complete",
        )
        offered = (
            exported((await api.get("/metrics")).text)
            | exported(await asyncio.to_thread(get_text, worker_port))
            | exported(await asyncio.to_thread(get_text, server_metrics_port))
        )
    used: dict[str, set[str]] = {}
    for where, expr in [(r["alert"], r["expr"]) for r in alert_rules()] + [
        ("dashboard", e) for e in dashboard_exprs()
    ]:
        for name in metric_names(expr) - SYNTHETIC:
            used.setdefault(name, set()).add(where)
    missing = {name: sorted(where) for name, where in used.items() if name not in offered}
    assert not missing, f"used but not exported: {missing}"
    # drip's own metrics are all in use somewhere (a metric nobody watches is a stale one).
    drip_metrics = {n for n in offered if n.startswith("drip_") and not n.endswith("_created")}
    drip_metrics -= {n for n in drip_metrics if n.endswith(("_count", "_sum"))}
    assert drip_metrics <= used.keys(), sorted(drip_metrics - used.keys())


async def _has(port: int, name: str) -> bool:
    return name in await asyncio.to_thread(get_text, port)
