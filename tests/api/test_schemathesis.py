"""The API fuzzed from its own OpenAPI schema (Schemathesis): on every operation, generated
requests — valid ones and deliberately invalid ones — never get a 5xx, and every documented
answer matches its documented schema.

One database (SQLite) is enough here: the fuzzing exercises request handling, not SQL dialects.
The run is bounded (examples per operation below) and derandomized, so it takes the same
couple of minutes on every run and a failure reproduces."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.api.helpers import make_campaign, make_template
from tests.conftest import unique_domain

# Examples per operation and mode: enough to reach every validation branch of this API's small
# bodies; more mostly repeats them.
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 8}
CHECKS = [not_a_server_error, response_schema_conformance]


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


def fuzz(schema: Any, base_url: str) -> tuple[int, list[str]]:
    """Run every operation's generated cases; return (operations run, failure reports)."""
    failures: list[str] = []
    operations = 0
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode, examples in EXAMPLES.items():

            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: report, move on
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=base_url, session=session, timeout=60)
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                pass  # negative mode, and nothing in this operation can be made invalid
            except (Exception, BaseExceptionGroup) as exc:  # report them all at the end
                failures.append(f"{operation.label} ({mode.value}): {_describe(exc)}")
    return operations, failures


def _describe(exc: BaseException) -> str:
    # A FailureGroup's str() is only its title; the failures (with a curl line) are its parts.
    parts = getattr(exc, "exceptions", None)
    if parts:
        return "\n".join(f"{type(e).__name__}: {e}" for e in parts) + f"\n{exc}"
    return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_no_server_errors_and_no_schema_violations(api: httpx.AsyncClient) -> None:
    await seed(api)
    base_url = str(api.base_url).rstrip("/")
    schema = await asyncio.to_thread(schemathesis.openapi.from_url, f"{base_url}/openapi.json")
    # Requests are sync (requests): in a thread, so this loop keeps serving the API.
    operations, failures = await asyncio.to_thread(fuzz, schema, base_url)
    print(f"fuzzed {operations} operations, {len(failures)} failing")
    assert operations >= 20, "the schema lists every endpoint"
    assert not failures, "\n\n".join(failures)
