"""Reading the gateway's Server-Sent Events streams in tests."""

from __future__ import annotations

import json
from typing import Any

import httpx


async def read_sse(response: httpx.Response, stop_after: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Parse events (and count heartbeats) until the stream ends or `stop_after` events."""
    events: list[dict[str, Any]] = []
    heartbeats = 0
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line.startswith(": heartbeat"):
            heartbeats += 1
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            events.append(current)
            current = {}
            if stop_after is not None and len(events) >= stop_after:
                break
    return events, heartbeats
