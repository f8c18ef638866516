"""Small measuring tools: percentiles, process memory and CPU, waiting for quiet, the table."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) in MB, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        parts = stat.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLOCK_TICKS  # utime + stime


async def wait_quiet(pids: list[int], busy: float = 0.08, limit: float = 600) -> float:
    """Wait until these processes together use under `busy` of a core over a second: the
    previous scenario's work (first workflow tasks, timers, signals) is done. Returns seconds."""
    start = time.monotonic()
    last = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() - start < limit:
        await asyncio.sleep(1.0)
        now = sum(cpu_seconds(p) for p in pids)
        if now - last < busy:
            return time.monotonic() - start
        last = now
    return time.monotonic() - start


async def until(
    check: Callable[[], Awaitable[bool]], limit: float, what: str, every: float = 0.1
) -> float:
    """Poll until `check` is true; returns the monotonic time it first was."""
    deadline = time.monotonic() + limit
    while True:
        if await check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {limit:.0f} s waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class Row:
    measure: str
    drip: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args, **kwargs) -> Row:  # type: ignore[no-untyped-def]
        row = Row(*args, **kwargs)
        self.rows.append(row)
        print(f"  {row.measure}: {row.drip}  |  {row.baseline}  {row.ratio}", flush=True)
        return row

    def render(self) -> str:
        head = ("measure", "drip", "raw Temporal baseline", "ratio", "target", "")
        body = [
            (
                r.measure,
                r.drip,
                r.baseline,
                r.ratio,
                r.target,
                "" if r.met is None else ("ok" if r.met else "MISSED"),
            )
            for r in self.rows
        ]
        widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
        lines = [" | ".join(str(x[i]).ljust(widths[i]) for i in range(len(head))) for x in [head]]
        lines.append("-|-".join("-" * w for w in widths))
        lines += [" | ".join(str(x[i]).ljust(widths[i]) for i in range(len(head))) for x in body]
        return "\n".join(["| " + line + " |" for line in lines] + [""] + self.notes)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"
