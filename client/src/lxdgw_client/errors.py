"""The one exception of the client, and its kinds.

    GatewayError                  the gateway refused (its problem document) or could not be asked
    ├── GatewayUnreachable        no answer: connection refused, DNS, TLS, a read that timed out
    ├── Unauthorized              401: no token, or one the gateway does not know
    ├── JobFailed                 a job the caller waited for ended `failed` (the problem is the job's `error`)
    ├── JobCancelled              ... ended `cancelled`
    └── JobWaitTimeout            ... had not ended when the wait ran out (also a TimeoutError)

`problem` is the parsed RFC 9457 document; `status`, `type`, `title` and `detail` read from it. Errors raised
without an answer (`GatewayUnreachable`, `JobWaitTimeout`) have no status."""

from __future__ import annotations

import httpx

from lxdgw_client.models import Job, Problem


class GatewayError(Exception):
    def __init__(self, problem: Problem | None = None, message: str | None = None, *,
                 response: httpx.Response | None = None) -> None:
        self.problem = problem
        self.response = response
        text = message or (problem.describe() if problem is not None else "gateway error")
        super().__init__(text)

    @property
    def status(self) -> int | None:
        return self.problem.status if self.problem is not None else None

    @property
    def type(self) -> str | None:
        return self.problem.type if self.problem is not None else None

    @property
    def title(self) -> str | None:
        return self.problem.title if self.problem is not None else None

    @property
    def detail(self) -> str | None:
        return self.problem.detail if self.problem is not None else None

    @property
    def request_id(self) -> str | None:
        return self.problem.request_id if self.problem is not None else None


class GatewayUnreachable(GatewayError):
    """The request got no answer (the cause is chained)."""


class Unauthorized(GatewayError):
    """401: the token is missing, unknown, expired or revoked."""


class JobError(GatewayError):
    """A job ended other than `succeeded` (or not in time); `job` is the job as last read."""

    def __init__(self, job: Job, problem: Problem | None = None, message: str | None = None) -> None:
        self.job = job
        super().__init__(problem, message)


class JobFailed(JobError):
    def __init__(self, job: Job) -> None:
        problem = job.error or Problem(title="Job failed", detail=f"job {job.id} ({job.kind}) failed")
        super().__init__(job, problem, f"job {job.id} ({job.kind}) failed: {problem.describe()}")


class JobCancelled(JobError):
    def __init__(self, job: Job) -> None:
        super().__init__(job, job.error, f"job {job.id} ({job.kind}) was cancelled")


class JobWaitTimeout(JobError, TimeoutError):
    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(job, None, f"job {job.id} ({job.kind}) is still {job.status} after {timeout:g}s")


def raise_for_job(job: Job) -> Job:
    """`job` when it succeeded; JobFailed or JobCancelled when it ended otherwise (a running job is returned)."""
    if job.status == "failed":
        raise JobFailed(job)
    if job.status == "cancelled":
        raise JobCancelled(job)
    return job


def error_from_response(response: httpx.Response) -> GatewayError:
    """The error for an answer of 400 or more: its problem document, or one made from the status line when the
    body is not one (a proxy in front of the gateway, say)."""
    problem: Problem | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("title" in body or "type" in body):
        problem = Problem.model_validate(body)
        if problem.status is None:
            problem.status = response.status_code
    if problem is None:
        text = response.text.strip()[:500] if response.text else None
        problem = Problem(title=response.reason_phrase or f"HTTP {response.status_code}",
                          status=response.status_code, detail=text or None,
                          request_id=response.headers.get("x-request-id"))
    cls = Unauthorized if response.status_code == 401 else GatewayError
    return cls(problem, response=response)
