"""Request bodies are limited while they stream in: a declared Content-Length over the limit is
refused before the body is read, and a chunked body (no Content-Length at all) is cut off as soon
as it passes the limit, with a 413. Before, the only check read Content-Length after the whole
upload was spooled, and a chunked upload skipped it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.conftest import serve_api
from tests.support.factories import make_campaign, make_template

BODY_LIMIT = 64 * 1024
UPLOAD_LIMIT = 256 * 1024
BOUNDARY = "drip-test-boundary"


@pytest.fixture
async def limited(
    settings: Settings, dev_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={"max_body_bytes": BODY_LIMIT, "max_upload_bytes": UPLOAD_LIMIT}
    )
    async with serve_api(configured, dev_env.client) as http:
        yield http


def csv_multipart(rows: int) -> bytes:
    lines = "".join(f"person{n}@example.com,Name {n}\n" for n in range(rows))
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="l.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\nemail,first_name\n{lines}\r\n--{BOUNDARY}--\r\n"
    ).encode()


def chunks(body: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def chunked(body: bytes) -> AsyncIterator[bytes]:
    """As a client streams it: no Content-Length, `Transfer-Encoding: chunked`."""
    for chunk in chunks(body):
        yield chunk


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.json()["detail"].startswith("request body larger than")


async def active_campaign(api: httpx.AsyncClient) -> int:
    template = await make_template(api)
    campaign = await make_campaign(
        api, [{"subject": "Hi", "delay_hours": 0, "template_id": template}]
    )
    return campaign["id"]


async def test_json_bodies_over_the_limit_are_refused_declared_or_chunked(
    limited: httpx.AsyncClient,
) -> None:
    big = b'{"name": "t", "html": "' + b"x" * (2 * BODY_LIMIT) + b'"}'
    headers = {"Content-Type": "application/json"}
    assert_too_large(await limited.post("/api/templates", content=big, headers=headers))
    assert_too_large(await limited.post("/api/templates", content=chunked(big), headers=headers))
    assert (await limited.get("/api/templates")).json() == []
    small = b'{"name": "t", "html": "' + b"x" * (BODY_LIMIT // 2) + b'"}'
    created = await limited.post("/api/templates", content=chunked(small), headers=headers)
    assert created.status_code == 201, created.text


async def test_csv_uploads_over_their_limit_are_refused_and_stage_nothing(
    limited: httpx.AsyncClient,
) -> None:
    campaign = await active_campaign(limited)
    url = f"/api/campaigns/{campaign}/recipients/import"
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    big = csv_multipart(20_000)  # ~700 KiB
    assert len(big) > 2 * UPLOAD_LIMIT
    assert_too_large(await limited.post(url, content=big, headers=headers))
    assert_too_large(await limited.post(url, content=chunked(big), headers=headers))
    assert (await limited.get("/api/enrollment-batches/1")).status_code == 404
    # The upload limit is the import's own: larger than the JSON one, and enforced by itself.
    fits = csv_multipart(3_000)  # ~100 KiB: over the JSON limit, under the upload limit
    assert BODY_LIMIT < len(fits) < UPLOAD_LIMIT
    accepted = await limited.post(url, content=chunked(fits), headers=headers)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["accepted"] == 3_000


async def test_a_chunked_upload_is_cut_off_while_it_streams(limited: httpx.AsyncClient) -> None:
    # A client that keeps sending: the 413 arrives while the body is still coming, so the
    # server never holds more than the limit (the old check waited for the whole body).
    campaign = await active_campaign(limited)
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.base_url.port)
    writer.write(
        f"POST /api/campaigns/{campaign}/recipients/import HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{limited.base_url.port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    endless = csv_multipart(1_000_000)[:-50]  # never finished: no closing boundary, no 0 chunk

    async def send() -> None:
        for chunk in chunks(endless):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()

    sending = asyncio.create_task(send())
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=30)
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert not sending.done() or sending.cancelled()  # refused long before the end
