"""Schemathesis against a live gateway with an admin token, on a private LXD daemon of its own.

Two phases over every operation of the OpenAPI document: requests generated per operation, valid and invalid
(positive and negative generation), then the stateful phase: scenarios that chain operations along the links
schemathesis infers (a create's `Location` and the names in its body feed the next read, patch or delete), so
requests reach objects that exist. At least 3,000 requests in all (`FUZZ_REQUESTS`). Every answer is checked: no
5xx, the status code is one the operation documents, the body and headers conform to the documented schema and
content type, and every error is `application/problem+json`.

The same draws every run (fixed seeds: a failure in CI is a regression, not luck; the stateful scenarios follow
what the gateway answers, so their request count varies a little); `FUZZ_EXPLORE=1` draws new ones (`make fuzz`:
10,000 requests, new draws).

A few operations act on the host beyond LXD's directory or reach out to arbitrary servers, and are not fuzzed:
creating storage pools (a `dir` pool's `source` is a host path), creating networks (host interfaces and firewall
rules; verifying a profile's network creates its bridge when missing, so it is not fuzzed either), the HTTPS
listener and server config (host ports), proxies, adding remotes (connects to any URL), and image copies (fetches
from any server; refused without the policy rule anyway). Everything else is.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Flaky, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.locallxd.daemon import DaemonInfo, LocalDaemon, image_tarball
from app.store.tokens import Scope, TokenStore
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.lxd

ROOT = Path(__file__).resolve().parents[2]
NOT_FUZZED = [
    "storage-pools-create", "networks-create", "profiles-verify-network", "server-https-listener",
    "server-config-patch", "server-proxies", "remotes-add", "images-copy",
]
# The same requests every run (a failure in CI is a regression, not luck); FUZZ_EXPLORE=1 draws new ones.
EXPLORE = os.environ.get("FUZZ_EXPLORE") == "1"
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "3000"))
# Requests per operation and generation mode in the first phase (about 80 operations); the stateful phase runs
# scenarios until REQUESTS have been sent in all.
PER_OPERATION = int(os.environ.get("FUZZ_PER_OPERATION", "10"))
SCENARIOS_PER_ROUND = 50
STEPS = 8


def errors_are_problems(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Every error answer is `application/problem+json`."""
    ctype = response.headers.get("content-type") or [""]
    if response.status_code >= 400 and not ctype[0].startswith("application/problem+json"):
        raise Failure(operation=case.operation.label, title="Error that is not a problem",
                      message=f"{response.status_code} with content-type {ctype[0]!r}")
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, errors_are_problems]


def _redacted(headers: dict[str, Any] | None) -> dict[str, Any]:
    return {k: "(the token)" if k.lower() == "authorization" else v for k, v in (headers or {}).items()}


class Findings:
    """Requests sent per operation, and every distinct failing check (with one example of each)."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.linked = 0
        """Stateful steps whose request was filled in from an earlier answer along a link."""
        self.failures: dict[tuple[str, str], str] = {}

    def check(self, case: schemathesis.Case, response: Any) -> None:
        self.sent[case.operation.label] += 1
        self.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                self._add(case, response, failure)
        except Failure as failure:
            self._add(case, response, failure)

    def _add(self, case: schemathesis.Case, response: Any, failure: Failure) -> None:
        key = (case.operation.label, failure.title or type(failure).__name__)
        self.failures.setdefault(key, f"{case.method} {case.formatted_path} -> {failure.message[:400]}\n"
                                      f"    sent {_redacted(case.headers)!r} {str(case.body)[:200]!r}\n"
                                      f"    answered {response.status_code} {response.text[:300]!r}")

    def transport_error(self, case: schemathesis.Case, exc: Exception) -> None:
        self.failures.setdefault((case.operation.label, "transport"), f"{type(exc).__name__}: {exc}")

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def report(self) -> str:
        return "\n".join(f"{op} [{title}]: {example}" for (op, title), example in sorted(self.failures.items()))


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


def _with_auth(case: schemathesis.Case, auth: dict[str, str]) -> dict[str, Any]:
    """The case's headers with the admin token instead of any `Authorization` drawn (in whatever case)."""
    return {**{k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}, **auth}


def _no_watch(case: schemathesis.Case) -> None:
    """`watch=true` answers a stream that does not end (tests/mirror/test_watch_lxd.py tests it): fuzz the page."""
    if isinstance(case.query, dict) and "watch" in case.query:
        case.query["watch"] = False


def _per_operation(op: schemathesis.APIOperation, mode: GenerationMode, base: str, auth: dict[str, str],
                   findings: Findings) -> None:
    @settings(max_examples=PER_OPERATION, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=not EXPLORE)
    @given(case=op.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        case.headers = _with_auth(case, auth)
        _no_watch(case)
        try:
            response = case.call(base_url=base, timeout=60)
        except Exception as exc:  # a transport error is a failure too (the gateway hung up)
            findings.transport_error(case, exc)
            return
        findings.check(case, response)

    call()


def _stateful(schema: Any, base: str, auth: dict[str, str], findings: Findings, round_: int) -> None:
    class Scenario(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": base, "timeout": 60}

        def step(self, input: Any) -> Any:
            if input.transition is not None and input.is_applied:
                findings.linked += 1
            return super().step(input)

        def call(self, case: schemathesis.Case, **kwargs: Any) -> Any:
            case.headers = _with_auth(case, auth)
            _no_watch(case)
            try:
                return super().call(case, **kwargs)
            except Exception as exc:
                findings.transport_error(case, exc)
                raise

        def validate_response(self, response: Any, case: schemathesis.Case, *args: Any, **kwargs: Any) -> None:
            findings.check(case, response)

    seed(random.randrange(1 << 32) if EXPLORE else round_)(Scenario)
    # Which rules can run depends on what the live gateway answered, so Hypothesis may find a replayed prefix
    # going another way and stop the round (Flaky); schemathesis' own runner ends a round there too. The requests
    # it sent were checked.
    with contextlib.suppress(Flaky):
        Scenario.run(settings=settings(max_examples=SCENARIOS_PER_ROUND, stateful_step_count=STEPS, deadline=None,
                                       database=None, phases=[Phase.generate],
                                       suppress_health_check=list(HealthCheck)))


def test_generated_requests_and_scenarios_conform_to_the_document(live_gateway: tuple[str, str]) -> None:
    base, secret = live_gateway
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json").exclude(operation_id=NOT_FUZZED)
    auth = {"Authorization": f"Bearer {secret}"}
    findings = Findings()
    started = time.monotonic()
    fuzzed = 0
    for result in schema.get_all_operations():
        op = result.ok()
        fuzzed += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _per_operation(op, mode, base, auth, findings)
            except Unsatisfiable:
                # e.g. no invalid request exists for an operation without parameters
                assert mode is GenerationMode.NEGATIVE, f"{op.label}: no valid request could be generated"
    per_operation, first_phase = findings.total, time.monotonic() - started
    round_ = 0
    while findings.total < REQUESTS:
        before = findings.total
        _stateful(schema, base, auth, findings, round_)
        round_ += 1
        assert findings.total > before, "a round of stateful scenarios sent no request"
    took = time.monotonic() - started
    print(f"schemathesis: {findings.total} requests over {fuzzed} operations in {took:.0f} s "
          f"({per_operation} per operation in {first_phase:.0f} s, {findings.total - per_operation} in {round_} "
          f"rounds of stateful scenarios, {findings.linked} of them along links); {len(findings.failures)} "
          f"distinct findings; statuses "
          f"{dict(sorted(findings.statuses.items()))}")
    assert not findings.failures, f"{len(findings.failures)} distinct findings in {findings.total} requests:\n" + \
        findings.report()
    assert fuzzed >= 60
