"""Errors of the job database that are not about one row: the API answers them without knowing which store it is."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The job database cannot be reached (its server is down, unreachable, or refuses connections).

    The API answers 503 `store-unavailable`; the job engine retries its writes until the database is back."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the job database is unreachable ({reason}); retry later")
        self.reason = reason
