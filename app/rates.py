"""Request rates as settings write them: `1200/minute`, `10 per second`, `100/5 minutes` (the notation of the
`limits` library, which earlier versions of the gateway used)."""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 30 * 86400, "year": 365 * 86400}
_SPEC = re.compile(r"^\s*(\d+)\s*(?:/|\s+per\s+)\s*(\d+)?\s*(second|minute|hour|day|month|year)s?\s*$", re.I)


@dataclass(frozen=True)
class Rate:
    """`amount` requests per `seconds`, as written (`1200/minute`, `10 per second`, `100/5 minutes`)."""

    amount: int
    seconds: int
    text: str

    def __str__(self) -> str:
        return self.text


def parse_rate(spec: str) -> Rate:
    """A rate in the `N/unit`, `N per unit` or `N/M units` notation; `ValueError` names what is wrong."""
    m = _SPEC.match(spec)
    if m is None or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise ValueError(f"{spec!r} is not a rate such as 100/second, 1200/minute, 10 per second or 100/5 minutes")
    multiple = int(m.group(2) or 1)
    unit = m.group(3).lower()
    every = f"{multiple} {unit}s" if multiple > 1 else unit
    return Rate(int(m.group(1)), multiple * UNITS[unit], f"{int(m.group(1))} per {every}")
