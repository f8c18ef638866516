"""The determinism lint (workflows/ruff.toml, which domain/ruff.toml extends): the production
worker runs journeys outside the SDK's sandbox, so this lint is what refuses clocks, randomness
and I/O in workflow and domain code before any test runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

WORKFLOW_CODE = """\
import os
import random
import threading
import time
from datetime import datetime

from sqlmodel import Session

print(os.environ, random.random(), threading, time.time(), datetime.now(), Session)
"""


def banned(path: str, source: str) -> list[str]:
    """The TID251 findings ruff reports for `source` as if it lived at `path`."""
    found = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "TID251", "--output-format",
         "concise", "--stdin-filename", path, "-"],
        input=source, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return [line for line in found.stdout.splitlines() if "TID251" in line]


@pytest.mark.parametrize("path", ["workflows/new_flow.py", "domain/new_rule.py"])
def test_workflow_and_domain_code_may_not_use_clocks_randomness_or_io(path: str) -> None:
    findings = banned(path, WORKFLOW_CODE)
    for name in ("`os`", "`random`", "`threading`", "`time`", "`datetime.datetime.now`",
                 "`sqlmodel`"):  # fmt: skip
        assert any(name in line for line in findings), (name, findings)


def test_other_code_may() -> None:
    assert banned("services/new_service.py", WORKFLOW_CODE) == []
