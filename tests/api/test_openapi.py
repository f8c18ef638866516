"""The OpenAPI schema is usable by a client generator: every operation has an explicit, stable
lowerCamelCase operationId and a summary, every schema a description and an example, and every
error it declares is the RFC 9457 problem+json the API answers (checked here on real answers:
the route handlers', FastAPI's validation, and the middlewares' that answer before routing)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from settings import Settings
from tests.conftest import serve_api

LOWER_CAMEL = re.compile(r"[a-z]+(?:[A-Z][a-z0-9]*)*")
PROBLEMS = {"#/components/schemas/Problem", "#/components/schemas/ValidationProblem"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return create_app().openapi()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_operation_has_a_lower_camel_case_id_and_a_summary(schema: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(schema)]
    assert len(ids) == len(set(ids)), "unique"
    assert [i for i in ids if not LOWER_CAMEL.fullmatch(i)] == []
    assert all(operation.get("summary") for _, _, operation in operations(schema))
    by_route = {(m, p): o["operationId"] for m, p, o in operations(schema)}
    # Stable names: generated clients and the docs call these.
    assert by_route[("get", "/api/campaigns")] == "listCampaigns"
    assert by_route[("post", "/api/campaigns")] == "createCampaign"
    assert by_route[("get", "/api/campaigns/{campaign_id}")] == "getCampaign"
    assert by_route[("get", "/api/campaigns/steps")] == "listSteps"
    assert by_route[("get", "/api/campaigns/stats")] == "getCampaignStats"
    assert by_route[("post", "/api/campaigns/{campaign_id}/recipients")] == "enrollRecipients"


def test_every_error_is_declared_as_problem_json(schema: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for method, path, operation in operations(schema):
        responses = operation["responses"]
        for status, response in responses.items():
            if int(status) < 400 or "text/html" in response.get("content", {}):
                continue
            where = f"{method} {path} {status}"
            (media, body), *others = response["content"].items()
            if path == "/readyz":
                continue  # its 503 is the readiness report
            assert not others and media == "application/problem+json", where
            expected = "ValidationProblem" if status == "422" else "Problem"
            assert body["schema"]["$ref"] == f"#/components/schemas/{expected}", where
        if path.startswith("/api/") and not path.startswith("/api/webhooks/"):
            assert {"401", "403", "421"} <= responses.keys(), f"{method} {path}"
        if "requestBody" in operation:
            assert "413" in responses, f"{method} {path}"
        if "{campaign_id}" in path or "{template_id}" in path or "{step_id}" in path:
            assert "404" in responses, f"{method} {path}"


def test_the_click_redirect_is_documented_as_a_307(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/t/c/{token}"]["get"]["responses"]
    assert "Location" in responses["307"]["headers"]
    assert "200" not in responses


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"urn:drip:problem:{code}" and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_errors_are_problem_json(api: httpx.AsyncClient) -> None:
    body = assert_problem(await api.get("/api/campaigns/999999"), 404, "not_found")
    assert body["detail"] == "campaign 999999 not found"
    assert_problem(await api.get("/api/no-such-thing"), 404, "not_found")  # Starlette's own
    # FastAPI's validation: the field list moved from `detail` to `errors`.
    body = assert_problem(await api.get("/api/campaigns/stats"), 422, "validation_failed")
    assert [e["loc"] for e in body["errors"]] == [["query", "campaign_id"]]
    assert set(body["errors"][0]) == {"loc", "msg", "type"}
    assert body["detail"].startswith("query.campaign_id: ")
    # A service's Invalid.
    bad_step = {"name": "x", "steps": [{"subject": "s", "delay_hours": 0, "template_id": 424242}]}
    body = assert_problem(await api.post("/api/campaigns", json=bad_step), 422, "validation_failed")
    assert body["errors"][0]["loc"] == ["body", "steps", 0, "template_id"]
    # A service's Conflict: a draft without steps cannot be activated.
    draft = (await api.post("/api/campaigns", json={"name": "empty"})).json()
    patched = await api.patch(f"/api/campaigns/{draft['id']}", json={"status": "active"})
    assert_problem(patched, 409, "conflict")
    # Out-of-range integers (api/out_of_range.py).
    assert_problem(await api.get(f"/api/campaigns/{2**64}"), 422, "validation_failed")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_middleware_refusals_are_problem_json(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    small = settings.model_copy(update={"max_body_bytes": 100})
    async with serve_api(small, dev_env.client) as api:
        # Keyless local mode: a non-loopback Host (DNS rebinding) and a cross-site POST.
        wrong_host = await api.get("/api/campaigns", headers={"Host": "evil.example"})
        assert_problem(wrong_host, 421, "not_a_loopback_host")
        cross = await api.post(
            "/api/templates", json={"name": "t", "html": "x"}, headers={"Origin": "http://evil"}
        )
        assert_problem(cross, 403, "cross_site_request")
        too_big = await api.post("/api/templates", content=b"x" * 200)
        assert_problem(too_big, 413, "body_too_large")
    async with serve_api(
        settings.model_copy(update={"api_keys": ["k" * 16]}), dev_env.client
    ) as api:
        assert_problem(await api.get("/api/campaigns"), 401, "unauthorized")


def test_every_schema_is_described_and_its_examples_are_valid(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    # FastAPI names a multipart form's schema itself (Body_importRecipients): its field is.
    described = {n: d for n, d in schemas.items() if not n.startswith("Body_")}
    assert [name for name, d in described.items() if not d.get("description")] == []
    # An example on every one too (issue 17), each valid against its schema.
    assert [name for name, d in described.items() if not d.get("examples")] == []
    examples = {n: d["examples"] for n, d in schemas.items() if "examples" in d}
    for name, listed in examples.items():
        for example in listed:
            wrapped = {"$ref": f"#/components/schemas/{name}", "components": schema["components"]}
            jsonschema.validate(example, wrapped, cls=jsonschema.Draft202012Validator)
