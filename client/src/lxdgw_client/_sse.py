"""Server-Sent Events, read line by line (the gateway's job streams: `event:` type, `id:` seq, `data:` JSON)."""

from __future__ import annotations

from dataclasses import dataclass

# Read timeout of a stream: the gateway sends a heartbeat comment every 15 s, so 60 s of silence means it is gone.
STREAM_READ_TIMEOUT = 60.0
# How many times in a row a stream may drop without a new message before the client gives up.
STREAM_RETRIES = 5


@dataclass(frozen=True)
class ServerEvent:
    event: str
    id: str | None
    data: str


class SSEParser:
    """Feed it the lines of the stream (without their line ending); it returns an event at each blank line."""

    def __init__(self) -> None:
        self._event = ""
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> ServerEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerEvent(self._event or "message", self._id, "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):  # a comment: the heartbeat
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def backoff(failures: int) -> float:
    return float(min(0.25 * 2 ** max(failures - 1, 0), 5.0))
