"""Recipients from a CSV file for `drip enroll`: an `email` column, every other column a field.

Rows without an address are rejected here, with their line number; the API judges the rest
(invalid or suppressed addresses) and the summary maps its answers back to lines."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_FIELD_NAME = 100  # the API's limit (api/schemas.py RecipientIn)


class RecipientsFileError(ValueError):
    pass


@dataclass
class Row:
    line: int  # in the file, the header being line 1
    recipient: dict[str, Any]  # the API's RecipientIn: email and fields


@dataclass
class LocalReject:
    line: int
    email: str
    reason: str


def read(path: Path) -> tuple[list[Row], list[LocalReject]]:
    rows: list[Row] = []
    rejected: list[LocalReject] = []
    for line, record in _records(path):
        email = (record.pop("email", "") or "").strip()
        if not email:
            rejected.append(LocalReject(line, "", "no email address"))
            continue
        # Empty cells are left out, so a template's `default(...)` applies.
        fields = {k: v for k, v in record.items() if k and v not in (None, "")}
        rows.append(Row(line, {"email": email, "fields": fields}))
    return rows, rejected


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")  # -sig: Excel's byte-order mark
    except OSError as exc:
        raise RecipientsFileError(f"{path}: {exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "email" not in [c.lower() for c in columns]:
            raise RecipientsFileError(f"{path}: no `email` column (columns: {columns})")
        too_long = [c for c in columns if len(c) > MAX_FIELD_NAME]
        if too_long:
            raise RecipientsFileError(f"{path}: column names over {MAX_FIELD_NAME} characters")
        reader.fieldnames = ["email" if c.lower() == "email" else c for c in columns]
        for record in reader:
            record.pop(None, None)  # cells beyond the header: no column to name them
            yield reader.line_num, record
