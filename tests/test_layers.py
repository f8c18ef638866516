"""Dependencies point down (README, Layout): api/ and activities/ stand on services/, which
never imports either; nothing below them imports them; nothing in the product imports tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["api", "activities", "services", "workflows", "domain", "storage", "mail",
           "webhooks", "observability", "cli", "tools", "bench"]  # fmt: skip
MODULES = ["worker.py", "settings.py", "devstack.py", "temporal_client.py"]
# room -> the rooms it must never import
FORBIDDEN = {
    "services": {"api", "activities"},
    "activities": {"api"},
    "api": {"activities"},
    "workflows": {"api", "activities", "services", "storage", "mail", "settings"},
    "domain": {"api", "activities", "services", "workflows", "storage", "mail", "settings"},
    "storage": {"api", "activities", "services", "workflows"},
    "mail": {"api", "activities", "services", "workflows"},
    "worker.py": {"api"},
    "settings.py": {"api", "activities", "services", "storage"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def files() -> list[tuple[str, Path]]:
    found = [(room, p) for room in PRODUCT for p in sorted((ROOT / room).rglob("*.py"))]
    return found + [(name, ROOT / name) for name in MODULES]


@pytest.mark.parametrize("room,path", files(), ids=lambda v: str(v).replace(str(ROOT), ""))
def test_imports_point_down(room: str, path: Path) -> None:
    roots = imported_roots(path)
    assert "tests" not in roots, f"{path.relative_to(ROOT)} imports tests"
    wrong = roots & {r.removesuffix(".py") for r in FORBIDDEN.get(room, set())}
    assert not wrong, f"{path.relative_to(ROOT)} ({room}) imports {sorted(wrong)}"
