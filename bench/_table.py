"""The one table `python -m bench` prints: rows from every benchmark module, in a fixed order.

A row is one figure: what is measured (`measure`), through what (`via`), its median, its ratio to the raw LXD
socket measured in the same run (when there is one), and how many rounds the median is over. `MEASURES` fixes
which rows exist and in what order; `tests/docs/test_readme_bench.py` checks the README's table against it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime

RAW = "raw LXD socket"

# (measure, via) of every row, in table order. The benchmark modules fill them in.
MEASURES: list[tuple[str, list[str]]] = [
    ("one GET of an instance, per request", ["gateway", RAW, f"{RAW}, ?recursion=1", "pylxd"]),
    ("list 30 instances with state", ["gateway", RAW, "pylxd, all() + state() each"]),
    ("20 concurrent create+start", ["gateway", RAW, "pylxd, 20 threads"]),
    ("20 concurrent force-stop+delete", ["gateway", RAW, "pylxd, 20 threads"]),
    ("job end latency, LXD operation done -> job end on websocket, p50 / p99",
     ["gateway, create job (reads the container)", "gateway, delete job (reads nothing)"]),
    ("job-event latency, progress -> websocket, p50 / p99", ["gateway"]),
    ("gateway memory (RSS)", ["idle", "peak under load"]),
    ("1,000 concurrent reads through the gateway", ["gateway"]),
    ("memory per idle websocket subscriber (1,000)", ["gateway"]),
    ("500 GETs, 16 in flight (pylxd: sequential)", ["app.lxd client", RAW, "pylxd"]),
    ("list 50 instances with state, recursion=2", ["app.lxd client", RAW, "pylxd"]),
    ("10 create+start+stop+delete cycles", ["app.lxd client", RAW, "pylxd, sequential", "pylxd, 10 threads"]),
    ("GET one container, 16 in flight, req/s", ["gateway", RAW]),
    ("list 500 stopped containers with status and addresses", ["gateway", RAW]),
    ("1,000 connections reading one container, req/s",
     ["gateway", RAW, "load generator ceiling: gateway /livez; its CPU per request"]),
    ("freshness of a change made on LXD, p50 / p99", ["gateway", RAW]),
    ("gateway memory (RSS) with 1,000 containers", ["idle, 2 containers", "1,000 containers, after a listing"]),
    ("X-Gateway-Cache of the gateway's answers, hit / miss / bypass / none",
     ["GET one container", "list 500", "1,000 connections", "freshness"]),
    ("GET one container through replicas on one PostgreSQL, 48 connections, req/s",
     ["1 replica", "3 replicas, round robin"]),
    ("list jobs (?limit=20) through replicas on one PostgreSQL, 48 connections, req/s",
     ["1 replica", "3 replicas, round robin"]),
    ("busybox create+delete jobs per minute through replicas, 12 at once", ["1 replica", "3 replicas, round robin"]),
]

HEADER = ("measure", "via", "median", "vs raw LXD socket", "rounds")


@dataclass
class Row:
    measure: str
    via: str
    value: str
    ratio: str = ""
    rounds: str = ""


def ratio(value: float, raw: float) -> str:
    return f"{value / raw:.2f}x" if raw > 0 else ""


def ms(seconds: float, digits: int = 0) -> str:
    return f"{seconds * 1000:.{digits}f} ms"


def machine() -> str:
    lxd = subprocess.run(["lxd", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
            f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, LXD {lxd or '?'}")


def render(rows: list[Row], *, strict: bool = True) -> str:
    """The markdown table: rows in `MEASURES` order, the measure named on its first row only. With `strict`,
    every row of `MEASURES` must be present (a standalone module renders only its own with strict=False)."""
    by_key = {(r.measure, r.via): r for r in rows}
    unknown = [k for k in by_key if not any(k[0] == m and k[1] in vias for m, vias in MEASURES)]
    if unknown:
        raise ValueError(f"rows not in MEASURES: {unknown}")
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---|---:|---:|---:|"]
    for measure, vias in MEASURES:
        first = True
        for via in vias:
            row = by_key.get((measure, via))
            if row is None:
                if strict:
                    row = Row(measure, via, "not measured")
                else:
                    continue
            lines.append(f"| {measure if first else ''} | {via} | {row.value} | {row.ratio} | {row.rounds} |")
            first = False
    return "\n".join(lines)


def report(rows: list[Row]) -> int:
    """A standalone module's report: the machine, then its own rows (`render` with strict=False). Returns 0."""
    print(f"Measured {machine()}.")
    print(render(rows, strict=False))
    return 0


def parse(table: str) -> list[tuple[str, str]]:
    """(measure, via) of every row of a table made by `render` (the measure filled down)."""
    out: list[tuple[str, str]] = []
    measure = ""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.strip().startswith("|") or len(cells) != len(HEADER) or cells[0] == HEADER[0]:
            continue
        if set(cells[2]) <= set("-:"):
            continue
        measure = cells[0] or measure
        out.append((measure, cells[1]))
    return out


def expected() -> list[tuple[str, str]]:
    return [(m, v) for m, vias in MEASURES for v in vias]
