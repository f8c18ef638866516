"""The docs describe what exists: every `DRIP_*` setting is documented and every documented one
is read somewhere, and every curl example in the README runs against the real API (with a worker,
so the example's delivery id exists), keyless and with a bearer key as under docker compose; and
the signed test request of each provider in docs/webhooks.md passes its verification."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic_settings import BaseSettings
from temporalio.testing import WorkflowEnvironment

from cli.settings import ClientSettings
from devstack import SupervisorSettings
from settings import Settings
from tests.conftest import free_port, run_worker, serve_api, unique_domain
from tools.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VARIABLE = re.compile(r"\bDRIP_[A-Z0-9_]*[A-Z0-9]\b")


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads: its prefix plus the field's name, or
    the field's own alias (`TEMPORAL_ADDRESS`)."""
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        names.add((alias if isinstance(alias, str) else prefix + name).upper())
    return names


def settings_variables() -> set[str]:
    read = env_names(Settings) | env_names(ClientSettings) | env_names(SupervisorSettings)
    return {name for name in read if name.startswith("DRIP_")}


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def documented_variables() -> dict[str, list[str]]:
    """Each `DRIP_*` name the docs mention, with the files that mention it."""
    found: dict[str, list[str]] = {}
    for path in doc_files():
        for name in set(VARIABLE.findall(path.read_text())):
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def variables_read_from_environ() -> set[str]:
    """`DRIP_*` variables the code reads directly rather than through a settings class (the test
    suite's `DRIP_TEST_POSTGRES_URL`, ...)."""
    pattern = re.compile(r"""(?:environ(?:\.get)?\(?\[?|getenv\()\s*["'](DRIP_[A-Z0-9_]+)["']""")
    names = set()
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or "var" in path.parts:
            continue
        names.update(pattern.findall(path.read_text()))
    return names


def test_every_setting_is_documented() -> None:
    missing = settings_variables() - documented_variables().keys()
    assert not missing, f"settings read but documented nowhere in README.md or docs/: {missing}"


def test_every_documented_variable_exists() -> None:
    known = settings_variables() | variables_read_from_environ()
    unknown = {n: f for n, f in documented_variables().items() if n not in known}
    assert not unknown, f"documented but read by nothing (a typo, or a removed setting): {unknown}"


def test_the_docs_check_sees_fields_and_aliases() -> None:
    """The check would pass vacuously if it read no names: it reads both kinds."""
    names = settings_variables()
    assert {"DRIP_SECRET_KEY", "DRIP_API_URL", "DRIP_TEMPORAL_DEV_PORT"} <= names
    assert "TEMPORAL_ADDRESS" in env_names(Settings)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_docs_resolve() -> None:
    """Every relative link of the README and docs/ names a file that exists, and a heading of it
    when it has an anchor."""
    link = re.compile(r"\]\(([^)\s]+)\)")
    broken = []
    for path in doc_files():
        for target in link.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check
            name, _, anchor = target.partition("#")
            linked = (path.parent / name).resolve() if name else path
            if not linked.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, broken


# --- the README's curl examples ------------------------------------------------------------------


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", markdown, flags=re.M | re.S)


def commands(block: str) -> Iterator[list[str]]:
    """The block's commands as argv lists: continuation lines and quoted strings spanning lines
    joined, comments dropped."""
    pending = ""
    for line in block.splitlines():
        if line.endswith("\\"):  # a continuation: the shell drops the backslash-newline
            pending += line[:-1] + " "
            continue
        pending += line + "\n"
        try:
            argv = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        pending = ""
        if argv:
            yield argv


def curl_examples() -> list[list[str]]:
    found = []
    for block in shell_blocks(README.read_text()):
        found.extend(argv for argv in commands(block) if argv[0] == "curl")
    return found


def test_the_readme_has_curl_examples_to_run() -> None:
    examples = curl_examples()
    assert len(examples) >= 9, examples
    assert any("-d" in argv for argv in examples)


class Curl:
    """One curl command line, as httpx arguments."""

    def __init__(self, argv: list[str]) -> None:
        self.method: str | None = None
        self.headers: dict[str, str] = {}
        self.data: str | None = None
        self.url = ""
        args = iter(argv[1:])
        for arg in args:
            if arg in ("-s", "-sS", "-S", "--silent", "-i", "-f", "--fail"):
                continue
            if arg in ("-X", "--request"):
                self.method = next(args)
            elif arg in ("-H", "--header"):
                name, _, value = next(args).partition(":")
                self.headers[name.strip().lower()] = value.strip()
            elif arg in ("-d", "--data", "--data-raw"):
                self.data = next(args)
            elif arg.startswith("-"):
                raise AssertionError(f"the docs check does not know curl option {arg}: {argv}")
            else:
                self.url = arg
        if self.method is None:
            self.method = "POST" if self.data is not None else "GET"


class Ids:
    """Ids the README writes literally (`1`, `snd_...`), replaced by those the API returned."""

    def __init__(self, api: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.api = api
        self.headers = headers
        self.template: int | None = None
        self.campaign: int | None = None
        self.journey_url: str | None = None
        self.domain = unique_domain()  # journeys share the dev server: addresses of our own

    def url(self, url: str) -> str:
        if self.campaign is not None:
            url = re.sub(r"/api/campaigns/1\b", f"/api/campaigns/{self.campaign}", url)
            url = re.sub(r"campaign_id=1\b", f"campaign_id={self.campaign}", url)
        return url.replace("@example.com", f"@{self.domain}")

    async def body(self, data: str) -> str:
        if self.template is not None:
            data = re.sub(r'"template_id":\s*1\b', f'"template_id": {self.template}', data)
        if "snd_..." in data:
            data = data.replace("snd_...", await self.delivery_id())
        return data.replace("@example.com", f"@{self.domain}")

    def answered(self, method: str, path: str, answer: Any) -> None:
        if method == "POST" and path == "/api/templates":
            self.template = answer["id"]
        elif method == "POST" and path == "/api/campaigns":
            self.campaign = answer["id"]
        elif method == "GET" and re.fullmatch(r"/api/campaigns/\d+/recipients/[^/]+", path):
            self.journey_url = path

    async def delivery_id(self) -> str:
        """The first delivery of the journey the README looked at last, once the worker sent it."""
        assert self.journey_url, "the README uses a delivery id before showing a journey"
        for _ in range(300):
            journey = (await self.api.get(self.journey_url, headers=self.headers)).json()
            sent = [s["delivery_id"] for s in journey["steps"] if s["delivery_id"]]
            if sent:
                return sent[0]
            await asyncio.sleep(0.2)
        raise AssertionError(f"no delivery in {journey}")


KEY = "docs-check-" + uuid.uuid4().hex


@pytest.fixture(params=["keyless", "bearer"])
async def readme_api(
    request: pytest.FixtureRequest, settings: Settings, dev_env: WorkflowEnvironment
) -> AsyncIterator[tuple[httpx.AsyncClient, bool]]:
    """The API and a worker sending to an SMTP sink: as `make run` (no key), or as docker
    compose runs it (DRIP_API_KEYS set, so every call needs the bearer key)."""
    keyed = request.param == "bearer"
    update: dict[str, Any] = {"from_email": "hello@drip.example.com"}
    if keyed:
        update |= {"api_keys": [KEY], "secret_key": uuid.uuid4().hex * 2}
    sink = SmtpSink(port=free_port())
    sink.start()
    try:
        configured = settings.model_copy(update={**update, "smtp_url": sink.url})
        async with (
            serve_api(configured, dev_env.client) as http,
            run_worker(configured, dev_env.client),
        ):
            yield http, keyed
    finally:
        sink.stop()


async def test_every_readme_curl_example_runs(
    readme_api: tuple[httpx.AsyncClient, bool],
) -> None:
    api, keyed = readme_api
    # Under compose the same commands run with the key added (README, "Under docker compose").
    auth = {"authorization": f"Bearer {KEY}"} if keyed else {}
    ids = Ids(api, auth)
    for argv in curl_examples():
        curl = Curl(argv)
        url = ids.url(curl.url.replace("$API", ""))
        assert url.startswith("/"), f"an example not against $API: {argv}"
        headers = {**curl.headers, **auth} if keyed else dict(curl.headers)
        if headers.get("authorization") == "Bearer $KEY":
            headers["authorization"] = f"Bearer {KEY}"
        data = await ids.body(curl.data) if curl.data is not None else None
        if data is not None:
            json.loads(data)  # the example's body is valid JSON as written
        response = await api.request(
            curl.method or "GET", url, content=data, headers=headers or None
        )
        assert response.is_success, f"{shlex.join(argv)}\n→ {response.status_code} {response.text}"
        if response.content:
            ids.answered(curl.method or "GET", httpx.URL(url).path, response.json())
    if keyed:  # and the key was needed: the check is not vacuous
        response = await api.get("/api/campaigns")
        assert response.status_code == 401


# --- the signed test requests of docs/webhooks.md -----------------------------------------------


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.M | re.S)


@pytest.fixture
async def hooks_api(
    settings: Settings, dev_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    from tests.api.webhooks.webhooks_support import serve_hooks

    async with serve_hooks(settings, dev_env, worker=False) as hooks:
        yield hooks.api


async def test_the_webhook_test_requests_in_the_docs_verify(
    hooks_api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each sample in docs/webhooks.md, run as written (its address replaced by the test API's),
    passes the provider's verification and is stored."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.api.webhooks import webhooks_support as secrets

    path = ROOT / "docs" / "webhooks.md"
    base = str(hooks_api.base_url).rstrip("/")
    monkeypatch.setenv("DRIP_MAILGUN_WEBHOOK_SIGNING_KEY", secrets.MAILGUN_KEY)
    monkeypatch.setenv("DRIP_RESEND_WEBHOOK_SECRET", secrets.RESEND_SECRET)
    monkeypatch.setenv("DRIP_POSTMARK_WEBHOOK_PASSWORD", secrets.POSTMARK_PASSWORD)
    # The SendGrid sample makes its own key pair and asks for the API to be started with it:
    # here the API already runs with the test's key, so that is the pair it gets.
    monkeypatch.setattr(ec, "generate_private_key", lambda curve: secrets.SENDGRID.private_key)

    # The providers' signed samples (the journey-events-out verifier is run by its own test).
    samples = [s for s in code_blocks(path, "python") if "verify_drip_signature" not in s]
    assert len(samples) == 3, "SendGrid, Mailgun and Resend each have a signed sample"
    for sample in samples:
        printed: list[str] = []
        namespace = {
            "print": lambda *a, out=printed: out.append(" ".join(map(str, a))),
            "input": str,
        }
        code = sample.replace("http://127.0.0.1:8000", base)
        await asyncio.to_thread(exec, compile(code, str(path), "exec"), namespace)
        answer = json.loads(printed[-1])
        assert answer == {"received": 1, "stored": 1, "duplicates": 0}, (sample, printed)

    [postmark] = [argv for b in code_blocks(path, "sh") for argv in commands(b)]
    user, _, password = postmark[postmark.index("-u") + 1].partition(":")
    assert user == secrets.POSTMARK_USER and password == "$DRIP_POSTMARK_WEBHOOK_PASSWORD"
    del postmark[postmark.index("-u") : postmark.index("-u") + 2]
    curl = Curl(postmark)
    response = await hooks_api.post(
        curl.url.replace("http://127.0.0.1:8000", ""),
        content=curl.data,
        headers=curl.headers,
        auth=(user, secrets.POSTMARK_PASSWORD),
    )
    assert response.json() == {"received": 1, "stored": 1, "duplicates": 0}, response.text
