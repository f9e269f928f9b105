"""The request rate notation of the settings, and the moving window that enforces it (no LXD, a fake clock)."""

from __future__ import annotations

import pytest

from app.http.limits import PRUNE_EVERY, MovingWindow
from app.rates import parse_rate
from app.settings import Settings


@pytest.mark.parametrize(("spec", "amount", "seconds", "text"), [
    ("1200/minute", 1200, 60, "1200 per minute"),
    ("10 per second", 10, 1, "10 per second"),
    ("100/5 minutes", 100, 300, "100 per 5 minutes"),
    (" 3/Hours ", 3, 3600, "3 per hour"),
    ("1/day", 1, 86400, "1 per day"),
])
def test_rates_are_read_in_the_notation_the_settings_document(spec: str, amount: int, seconds: int,
                                                              text: str) -> None:
    rate = parse_rate(spec)
    assert (rate.amount, rate.seconds, str(rate)) == (amount, seconds, text)


@pytest.mark.parametrize("spec", ["fast", "0/minute", "10/0 minutes", "10/fortnight", "10", "-1/second",
                                  "10/second;20/minute"])
def test_anything_else_is_refused_with_the_notation_named(spec: str) -> None:
    with pytest.raises(ValueError, match="is not a rate such as 100/second"):
        parse_rate(spec)


def test_a_bad_rate_stops_the_settings_and_an_empty_one_means_no_limit() -> None:
    with pytest.raises(ValueError, match="'ten a minute' is not a rate"):
        Settings(rate_limit="ten a minute")
    with pytest.raises(ValueError, match="'x' is not a rate"):
        Settings(auth_failure_rate_limit="x")
    assert Settings(rate_limit="").rate_limit == ""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_moves_a_hit_at_a_time_and_says_how_long_to_wait() -> None:
    clock = Clock()
    window = MovingWindow(parse_rate("3/minute"), clock)
    assert [window.hit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert window.hit("a") == pytest.approx(60.0)
    assert window.hit("b") == 0.0  # each key has its own window
    clock.now += 20
    assert window.hit("a") == pytest.approx(40.0)  # the first hit leaves the window 60 s after it was made
    clock.now += 40
    assert window.hit("a") == 0.0  # it left: one more is allowed, not three (the other two are 0 s from leaving)
    clock.now += 0.001
    assert window.hit("a") == 0.0
    assert window.hit("a") == 0.0
    assert window.hit("a") > 59  # refused hits are not counted: the window holds the three allowed


def test_keys_whose_window_emptied_are_forgotten() -> None:
    clock = Clock()
    window = MovingWindow(parse_rate("5/second"), clock)
    for i in range(PRUNE_EVERY - 1):
        window.hit(f"once-{i}")
    clock.now += 2
    window.hit("later")  # the sweep runs on this hit
    assert len(window) == 1
