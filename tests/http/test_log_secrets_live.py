"""A real gateway process: its JSON logs carry request and job ids, never tokens or tickets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from app.locallxd.daemon import DaemonInfo
from app.store.tokens import Scope, TokenStore
from tests.support.gateway import ROOT, running_gateway


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_access_and_app_logs_hold_no_secret(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    _, secret = TokenStore(tmp_path / "tokens.json").create("ops", [Scope.admin])
    with running_gateway(lxd_daemon.socket_path, tmp_path, auth=True) as gw:
        auth = {"Authorization": f"Bearer {secret}", "X-Request-ID": "leakcheck-1"}
        ticket = httpx.post(f"{gw.base}/v1/tickets", headers=auth).json()["ticket"]
        assert httpx.get(f"{gw.base}/v1/jobs/nosuchjob/events", params={"ticket": ticket}).status_code == 404
        created = httpx.post(f"{gw.base}/v1/tokens", headers=auth, json={"name": "ci", "scopes": ["read"]}).json()
        wrong = {"Authorization": "Bearer wrong-" + secret}
        assert httpx.get(f"{gw.base}/v1/whoami", headers=wrong).status_code == 401
    text = gw.output()
    lines = _json_lines(text)
    assert any(line.get("request_id") == "leakcheck-1" for line in lines), text[-2000:]
    assert any("whoami" in str(line.get("event", "")) for line in lines), "the access log goes through the pipeline"
    for value in (secret, ticket, created["token"]):
        assert value not in text


def test_job_log_lines_carry_the_job_id(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    from tests.jobs.test_router_live import EXTENSION

    with running_gateway(lxd_daemon.socket_path, tmp_path, LXDGW_EXTENSIONS=json.dumps([EXTENSION]),
                         PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}") as gw:
        r = httpx.post(f"{gw.base}/v1/test-jobs", params={"wait": 30}, headers={"X-Request-ID": "job-log-1"},
                       json={"steps": 1, "interval": 0.01, "fail": True}, timeout=40)
        job_id = r.json()["id"]
    lines = _json_lines(gw.output())
    job_lines = [x for x in lines if str(x.get("logger", "")).startswith("app.jobs") and job_id in str(x["event"])]
    assert len(job_lines) >= 2, lines[-10:]  # started, failed
    for line in job_lines:
        assert line["job_id"] == job_id and line["request_id"] == "job-log-1", line
