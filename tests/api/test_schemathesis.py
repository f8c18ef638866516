"""The API fuzzed from its own OpenAPI schema by Schemathesis' own engine (what `schemathesis
run` does), with its coverage phase and its fuzzing phase, on every operation: the coverage
phase sends what the schema's edges allow and forbid (nulls, boundary values, missing and extra
fields, wrong types), the fuzzing phase generated valid and invalid requests. No answer may be a
5xx, and every documented answer must match its documented schema.

One database (SQLite) is enough here: the fuzzing exercises request handling, not SQL dialects.
The run is bounded (examples per operation below), derandomized (a fixed seed), and unshrunk, so
it takes the same time on every run and a failure reproduces (its curl line is in the report)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from tests.conftest import unique_domain
from tests.support.factories import make_campaign, make_template

# Fuzzing examples per operation: enough to reach every validation branch of this API's small
# bodies; more mostly repeats them. The coverage phase generates what it generates (no bound).
FUZZ_EXAMPLES = 30
SEED = 20261201
CHECKS = ("not_a_server_error", "response_schema_conformance")


async def seed(api: httpx.AsyncClient) -> None:
    """Rows for small ids to point at, so generated requests reach past the 404s: template 1,
    an active campaign 1 with a conditional step, a draft campaign 2, an enrolled recipient."""
    template = await make_template(api)
    campaign = await make_campaign(
        api,
        [
            {"subject": "Welcome", "delay_hours": 0, "template_id": template},
            {
                "subject": "Again",
                "delay_hours": 24,
                "template_id": template,
                "condition": {"type": "not_opened", "step_order": 1},
            },
        ],
    )
    await make_campaign(
        api, [{"subject": "Draft", "delay_hours": 1, "template_id": template}], activate=False
    )
    enrolled = await api.post(
        f"/api/campaigns/{campaign['id']}/recipients",
        json={"recipients": [{"email": f"fuzz@{unique_domain()}"}]},
    )
    assert enrolled.status_code == 200, enrolled.text


def config(base_url: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "workers": 1,
            "request-timeout": 60,
            "suppress-health-check": ["all"],
            "generation": {
                "mode": "all",  # valid and invalid requests
                "max-examples": FUZZ_EXAMPLES,
                "no-shrink": True,  # report, move on
                "database": "none",
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "phases": {
                "examples": {"enabled": False},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
        }
    )


def fuzz(base_url: str) -> tuple[int, dict[str, set[str]], list[str]]:
    """Run the engine; return (operations in the schema, operations run per phase, failures)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config(base_url))
    operations = sum(1 for _ in schema.get_all_operations())
    phases: dict[str, set[str]] = {}
    failures: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            phases.setdefault(event.phase.value, set()).add(event.recorder.label)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{event.recorder.label} ({event.phase.value}): {failure.title}: "
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return operations, phases, failures


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_no_server_errors_and_no_schema_violations(api: httpx.AsyncClient) -> None:
    await seed(api)
    base_url = str(api.base_url).rstrip("/")
    # Requests are sync (requests): in a thread, so this loop keeps serving the API.
    operations, phases, failures = await asyncio.to_thread(fuzz, base_url)
    runs = {phase: len(labels) for phase, labels in phases.items()}
    print(f"fuzzed {operations} operations (per phase: {runs}), {len(failures)} failing")  # noqa: T201 (the figures measured)
    assert operations >= 20, "the schema lists every endpoint"
    assert runs == {"coverage": operations, "fuzzing": operations}, "every operation, both phases"
    assert not failures, "\n\n".join(sorted(set(failures)))
