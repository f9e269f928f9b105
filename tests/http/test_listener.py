"""The connection limits' start-up: the open-file limit is raised so the connection cap binds first, or the cap is
lowered to what the hard limit admits; refusals are complete problem+json answers."""

from __future__ import annotations

import json
import resource

import pytest

from app.http.listener import FD_RESERVE, ConnectionLimits, ensure_fd_room, refusal


def fake_rlimit(monkeypatch: pytest.MonkeyPatch, soft: int, hard: int) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, hard))
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: calls.append(value))
    return calls


def test_the_soft_open_file_limit_is_raised_to_fit_the_connection_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_rlimit(monkeypatch, 1024, 524288)
    assert ensure_fd_room(ConnectionLimits(max_connections=2048)).max_connections == 2048
    assert calls == [(2048 + FD_RESERVE, 524288)]


def test_a_hard_open_file_limit_too_low_lowers_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_rlimit(monkeypatch, 512, 1024)
    assert ensure_fd_room(ConnectionLimits(max_connections=2048)).max_connections == 1024 - FD_RESERVE
    assert calls == [(1024, 1024)]


def test_enough_room_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_rlimit(monkeypatch, 20000, 20000)
    assert ensure_fd_room(ConnectionLimits()) == ConnectionLimits()
    assert calls == []


def test_a_refusal_is_a_complete_problem_answer() -> None:
    head, _, body = refusal(431, "too large", slug="header-too-large").partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert "connection: close" in lines and "content-type: application/problem+json" in lines
    assert f"content-length: {len(body)}" in lines
    problem = json.loads(body)
    assert problem["status"] == 431 and problem["type"].endswith("/header-too-large")
