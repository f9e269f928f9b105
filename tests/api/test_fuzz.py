"""Schemathesis against a live gateway with an admin token, on a private LXD daemon of its own.

At least 1,000 generated requests, valid and invalid (positive and negative generation) across every operation of
the OpenAPI document: no answer is a 5xx, and every error answer is `application/problem+json`.

A few operations act on the host beyond LXD's directory or reach out to arbitrary servers, and are not fuzzed:
creating storage pools (a `dir` pool's `source` is a host path), creating networks (host interfaces and firewall
rules), the HTTPS listener and server config (host ports), proxies, adding remotes (connects to any URL), and
image copies (fetches from any server; refused without the policy rule anyway). Everything else is.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from app.core.tokens import Scope, TokenStore
from app.harness.daemon import DaemonInfo, LocalDaemon, image_tarball
from app.harness.gateway import running_gateway

ROOT = Path(__file__).resolve().parents[2]
NOT_FUZZED = {
    "storage-pools-create", "networks-create", "server-https-listener", "server-config-patch", "server-proxies",
    "remotes-add", "images-copy",
}
PER_OPERATION = 10  # per generation mode; with ~80 operations this is well over 1,000 requests
# The same requests every run (a failure in CI is a regression, not luck); FUZZ_EXPLORE=1 draws new ones.
EXPLORE = os.environ.get("FUZZ_EXPLORE") == "1"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzz_daemon() -> Iterator[DaemonInfo]:
    daemon = LocalDaemon()
    try:
        daemon.start()
        yield daemon.prepare(image_tarball=image_tarball(), https=False)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def live_gateway(fuzz_daemon: DaemonInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("fuzz-data")
    _, secret = TokenStore(data / "tokens.json").create("fuzzer", [Scope.admin])
    with running_gateway(fuzz_daemon.socket_path, data, auth=True, ready_path="/readyz", LXDGW_RATE_LIMIT="",
                         LXDGW_LOG_LEVEL="WARNING", LXDGW_MAX_JOBS_PER_TOKEN="0", LXDGW_IMAGE_SOURCES="[]") as gw:
        yield gw.base, secret


def _fuzz(op: schemathesis.APIOperation, op_id: str, mode: GenerationMode, base: str, auth: dict[str, str],
          sent: Counter[str], failures: list[str]) -> None:
    @settings(max_examples=PER_OPERATION, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=not EXPLORE)
    @given(case=op.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        headers = {**(case.headers or {}), **auth}
        try:
            response = case.call(base_url=base, headers=headers, timeout=60)
        except Exception as exc:  # a transport error is a failure too (the gateway hung up)
            failures.append(f"{op_id}: {type(exc).__name__}: {exc}")
            return
        sent[op_id] += 1
        status = response.status_code
        raw_ctype = response.headers.get("content-type", "")
        ctype = raw_ctype[0] if isinstance(raw_ctype, list) and raw_ctype else str(raw_ctype or "")
        if status >= 500:
            failures.append(f"{op_id} {case.method} {case.formatted_path} -> {status}: {response.text[:300]}")
        elif status >= 400 and not ctype.startswith("application/problem+json"):
            failures.append(f"{op_id} -> {status} with content-type {ctype!r}: {response.text[:200]}")

    call()


def test_generated_requests_get_no_5xx_and_only_problem_errors(live_gateway: tuple[str, str]) -> None:
    base, secret = live_gateway
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    auth = {"Authorization": f"Bearer {secret}"}
    sent: Counter[str] = Counter()
    failures: list[str] = []
    fuzzed = 0
    for result in schema.get_all_operations():
        op = result.ok()
        op_id = op.definition.raw.get("operationId", op.label)
        if op_id in NOT_FUZZED:
            continue
        fuzzed += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(op, op_id, mode, base, auth, sent, failures)
            except Unsatisfiable:
                # e.g. no invalid request exists for an operation without parameters
                assert mode is GenerationMode.NEGATIVE, f"{op_id}: no valid request could be generated"
    total = sum(sent.values())
    print(f"schemathesis: {total} requests over {fuzzed} operations")
    assert not failures, f"{len(failures)} bad answers out of {total}:\n" + "\n".join(failures[:30])
    assert total >= 1000, f"only {total} requests over {fuzzed} operations"
    assert fuzzed >= 60
