"""The dashboard's doors without a browser: keyless, the API's loopback-only rules cover it (no
DNS rebinding, no cross-site form); with keys, a page needs a signed session that only a key
opens, that dies with its key, and that a forged or tampered cookie cannot imitate."""

from __future__ import annotations

import re

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.conftest import serve_api

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
KEYS = ["first-key-7f3a", "second-key-92c1"]


def token_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found[1]


async def test_keyless_the_dashboard_is_for_this_machine_only(api: httpx.AsyncClient) -> None:
    page = await api.get("/ui/")
    assert page.status_code == 200
    assert (
        "HttpOnly" in page.headers["set-cookie"] and "SameSite=strict" in page.headers["set-cookie"]
    )
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # DNS rebinding: another name pointed at 127.0.0.1 reads nothing.
    port = api.base_url.port
    rebound = await api.get("/ui/suppressions", headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 421
    # A form posted by a page of another site: refused before the dashboard sees it.
    token = token_of(page)
    cross = await api.post(
        "/ui/suppressions",
        data={"csrf_token": token, "email": "a@example.com"},
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    # The same form from the page itself goes through; without its token it does not.
    assert (await api.post("/ui/suppressions", data={"email": "b@example.com"})).status_code == 403
    done = await api.post("/ui/suppressions", data={"csrf_token": token, "email": "c@example.com"})
    assert (done.status_code, done.headers["location"]) == (303, "/ui/suppressions")
    listed = (await api.get("/api/suppressions")).json()["items"]
    assert [s["email"] for s in listed] == ["c@example.com"]


async def test_with_keys_only_a_key_opens_a_session_and_it_ends_with_the_key(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    keyed = settings.model_copy(update={"api_keys": KEYS})
    async with serve_api(keyed, dev_env.client) as http:
        for path in ("/ui/", "/ui/events/rows", "/ui/campaigns/1/recipients/a@example.com",
                     "/ui/settings/webhooks"):  # fmt: skip
            answer = await http.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/ui/login?next=/ui/")
        # A poll of a page whose session ended sends the whole page to the sign-in (htmx).
        poll = await http.get(
            "/ui/campaigns/1/numbers",
            headers={
                "HX-Request": "true",
                "Referer": str(http.base_url).rstrip("/") + "/ui/campaigns/1",
            },
        )
        assert poll.status_code == 401
        assert poll.headers["hx-redirect"] == "/ui/login?next=/ui/campaigns/1"
        login = await http.get("/ui/login")
        token = token_of(login)
        assert 'type="password"' in login.text
        wrong = await http.post("/ui/login", data={"csrf_token": token, "key": "nope"})
        assert wrong.status_code == 401 and "not one of the API keys" in wrong.text
        assert (await http.post("/ui/login", data={"key": KEYS[0]})).status_code == 403  # no token
        # A form posted without a session is not signed in, whatever it carries.
        assert (
            await http.post("/ui/suppressions", data={"email": "x@example.com"})
        ).status_code == 403

        signed = await http.post(
            "/ui/login", data={"csrf_token": token, "key": KEYS[1], "next": "//evil.example/"}
        )
        assert (signed.status_code, signed.headers["location"]) == (303, "/ui/")  # no open redirect
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
        assert (await http.get("/ui/")).status_code == 200
        old_token = token
        page = await http.get("/ui/suppressions")
        assert token_of(page) != old_token  # a new session at sign-in: a new token
        # A tampered cookie is no session at all.
        value = http.cookies["drip_session"]
        http.cookies.set("drip_session", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
        assert (await http.get("/ui/")).status_code == 303
        http.cookies.set("drip_session", value)
        assert (await http.get("/ui/")).status_code == 200

    # Key rotation: the key signed in with is gone from DRIP_API_KEYS; so is its session.
    rotated = keyed.model_copy(update={"api_keys": [KEYS[0]]})
    async with serve_api(rotated, dev_env.client) as http:
        http.cookies.set("drip_session", value)
        assert (await http.get("/ui/")).status_code == 303
