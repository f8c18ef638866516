"""The dashboard's forms without a browser, where a form does more than the pages show: a
campaign file with `activate: true` starts the campaign it creates, through the PATCH's own
function, refusing in words what the PATCH refuses."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

ACTIVE = """\
name: Started at once
activate: true
templates:
  hello:
    html: "<p>Hello</p>"
steps:
  - subject: Hello
    delay_hours: 0
    template: hello
"""


def token_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found[1]


async def test_a_definition_that_activates_creates_an_active_campaign(
    api: httpx.AsyncClient,
) -> None:
    token = token_of(await api.get("/ui/"))
    made = await api.post("/ui/campaigns", data={"csrf_token": token, "definition": ACTIVE})
    assert made.status_code == 303, made.text
    found = re.fullmatch(r"/ui/campaigns/(\d+)", made.headers["location"])
    assert found, made.headers["location"]
    campaign = (await api.get(f"/api/campaigns/{found[1]}")).json()
    assert (campaign["name"], campaign["status"], campaign["steps_count"]) == (
        "Started at once",
        "active",
        1,
    )
    # Its first version is live, as after a PATCH to active.
    versions = (await api.get(f"/api/campaigns/{found[1]}/versions")).json()
    assert [v["status"] for v in versions["items"]] == ["live"]


async def test_a_definition_that_cannot_activate_is_refused_in_words(
    api: httpx.AsyncClient,
) -> None:
    token = token_of(await api.get("/ui/"))
    source = "name: Nothing to send\nactivate: true\n"
    refused = await api.post("/ui/campaigns", data={"csrf_token": token, "definition": source})
    assert refused.status_code == 422
    assert "has no steps to run" in refused.text
