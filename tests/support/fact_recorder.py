"""Another process recording facts, as the worker does beside the API: `python -m
tests.support.fact_recorder DATABASE_URL` records a `step.sent` fact every 0.1 s through
services/webhooks_out.py, prints `ready` once its subscription cache is warm, then one line
`{n} {unix time before recording}` per fact, until its stdin closes."""

from __future__ import annotations

import sys
import threading
import time

from sqlmodel import Session

from domain.webhooks_out import JourneyEventType
from services import webhooks_out
from storage.db import make_engine


def main(url: str) -> None:
    engine = make_engine(url)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    n = 0
    while not stop.is_set():
        at = time.time()
        with Session(engine) as session:
            webhooks_out.emit(session, JourneyEventType.STEP_SENT, {"n": n}, key=f"fact-{n}")
            session.commit()
        sys.stdout.write("ready\n" if n == 0 else f"{n} {at}\n")
        sys.stdout.flush()
        n += 1
        stop.wait(0.1)
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1])
