"""`make bench` (or `python -m bench.run`): start a fresh dev server, worker, API and SMTP sink,
measure drip beside raw Temporal on that same server, and print one table.

    make bench                                  # everything, full sizes (about 15-20 minutes)
    make bench BENCH_ARGS="--quick"             # a tenth of the sizes, no 100k stats
    make bench BENCH_ARGS="--only stats,history --no-postgres"

Run it on a quiet machine: the figures are ratios to a baseline measured in the same run, but
other load still moves them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import journeys, scenarios, simulation, versions
from bench.measure import Table
from bench.scenarios import Sizes, State
from bench.stack import cleanup, start_stack

ORDER = [
    "enroll",
    "first-send",
    "sending",
    "sending-variants",
    "events",
    "fanout",
    "history",
    "stats",
    "journeys",
    "simulation",
    "versions",
]
NEEDS_ENROLL = {"events", "fanout"}
OPT_IN = {"versions"}  # 100,000 journeys: run it by name (--only versions)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ORDER)}")
    parser.add_argument("--no-postgres", action="store_true", help="stats on SQLite only")
    parser.add_argument("--enroll", type=int, help="recipients enrolled in one call (10,000)")
    parser.add_argument("--send", type=int, help="recipients x 3 steps sent (1,000)")
    parser.add_argument("--events", type=int, help="events ingested (10,000)")
    parser.add_argument("--versions", type=int, help="journeys one publish switches (100,000)")
    parser.add_argument("--stats-sizes", help="comma-separated campaign sizes (1000,10000,100000)")
    parser.add_argument("--workers", type=int, default=1, help="drip worker processes (1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    parser.add_argument(
        "--profile", type=Path, help="record py-spy flame graphs of the worker and API here"
    )
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.enroll:
        sizes.enroll = args.enroll
    if args.send:
        sizes.send = args.send
    if args.events:
        sizes.events = args.events
    if args.versions:
        sizes.versions = args.versions
    if args.stats_sizes:
        sizes.stats_sizes = tuple(int(s) for s in args.stats_sizes.split(","))
    sizes.events = min(sizes.events, sizes.enroll)  # one event per sleeping journey
    sizes.fanout = min(sizes.fanout, sizes.enroll)
    return sizes


async def run(args: argparse.Namespace) -> int:
    wanted = {s.strip() for s in args.only.split(",") if s.strip()} or set(ORDER) - OPT_IN
    unknown = wanted - set(ORDER)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from {ORDER}")
        return 2
    if NEEDS_ENROLL & wanted:
        wanted.add("enroll")  # they use its sleeping journeys
    sizes = sizes_from(args)
    load = os.getloadavg()
    header = (
        f"drip bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `python -m bench.run "
        f"{' '.join(sys.argv[1:])}`\n{os.cpu_count()} cores, {platform.python_version()}, "
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(header, flush=True)
    started = time.monotonic()
    stack = await start_stack()
    table, state = Table(), State()
    failed = False
    try:
        await stack.start_worker()
        for n in range(2, args.workers + 1):
            await stack.start_worker(f"worker-{n}")
        await stack.start_raw_worker()
        await stack.start_api("sqlite", stack.sqlite_url)
        if args.profile:
            stack.profile(args.profile, ["worker", "api-sqlite"])
        for name in ORDER:
            if name not in wanted:
                continue
            try:
                if name == "enroll":
                    await scenarios.enrollment(stack, table, sizes, state)
                elif name == "first-send":
                    await scenarios.first_send(stack, table, sizes, state)
                elif name == "sending":
                    await scenarios.sending(stack, table, sizes, state)
                elif name == "sending-variants":
                    await scenarios.sending_variants(stack, table, sizes, state)
                elif name == "events":
                    await scenarios.events(stack, table, sizes, state)
                elif name == "fanout":
                    await scenarios.fanout(stack, table, sizes, state)
                elif name == "history":
                    await scenarios.history(stack, table, sizes, state)
                elif name == "stats":
                    await scenarios.stats(stack, table, sizes, state, not args.no_postgres)
                elif name == "journeys":
                    await journeys.run(stack, table, sizes, state)
                elif name == "simulation":
                    await simulation.run(stack, table, sizes, state)
                elif name == "versions":
                    await versions.run(stack, table, sizes, state)
            except Exception as exc:  # report it and go on with the others
                failed = True
                traceback.print_exc()
                table.add(f"{name}: FAILED", f"{type(exc).__name__}: {exc}"[:200])
    finally:
        cleanup(stack, args.keep)
    minutes = (time.monotonic() - started) / 60
    output = f"{header}\n\n{table.render()}\n\nwall time {minutes:.1f} min"
    print("\n" + output)
    if args.keep:
        print(f"logs and databases kept in {stack.tmp}")
    if args.out:
        args.out.write_text(output + "\n")
    return 1 if failed else 0


def main() -> None:
    sys.exit(asyncio.run(run(parse(sys.argv[1:]))))


if __name__ == "__main__":
    main()
