"""Reading the gateway's Server-Sent Events streams in tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx


class SseParser:
    """Server-Sent Events fed one line at a time: `feed` gives back each event a blank line ends, and counts the
    heartbeat comments."""

    def __init__(self) -> None:
        self.heartbeats = 0
        self._current: dict[str, Any] = {}

    def feed(self, line: str) -> dict[str, Any] | None:
        """The event (`event`, `id`, `data` parsed) that `line` ends, else None."""
        if line.startswith(": heartbeat"):
            self.heartbeats += 1
        elif line.startswith("event: "):
            self._current["event"] = line[7:]
        elif line.startswith("id: "):
            self._current["id"] = int(line[4:])
        elif line.startswith("data: "):
            self._current["data"] = json.loads(line[6:])
        elif line == "" and self._current:
            event, self._current = self._current, {}
            return event
        return None


async def read_sse(response: httpx.Response, stop_after: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Parse events (and count heartbeats) until the stream ends or `stop_after` events."""
    events: list[dict[str, Any]] = []
    parser = SseParser()
    async for line in response.aiter_lines():
        event = parser.feed(line)
        if event is not None:
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break
    return events, parser.heartbeats


def iter_sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a stream read without asyncio, each as soon as it is whole, until the stream ends."""
    parser = SseParser()
    for line in response.iter_lines():
        event = parser.feed(line)
        if event is not None:
            yield event
