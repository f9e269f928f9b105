"""The `container.exec` job: run a command, stream its output as job messages, capture it up to a cap.

An exit code other than 0 is still a `succeeded` job (the code is in the result); a command past its `timeout` is
killed and the job `failed` with problem type `exec-timeout`, keeping the partial output. Cancelling the job kills
the process (LXD cannot cancel an exec operation).

The output kept with the job is capped twice: per stream by the request's `max_output_bytes`, and for the whole job
(both streams together) by the `job_output_max_bytes` setting, whatever the request asks. `truncated` is true as soon
as a byte was not kept. The job's progress does not name the command (params belong to the token that started it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from app.containers.job_types import ContainerExecParams, ExecResult
from app.jobs import CancelPolicy, Job, JobContext, JobFailure, JobKind, RecoveryOutcome
from app.jobs.env import workflow_env
from app.lxd.errors import ExecTimeout
from app.lxd.exec import OutputStream

DEFAULT_MAX_OUTPUT = 1 << 20


class _Budget:
    """Bytes of output the job may still keep (shared by its streams)."""

    def __init__(self, left: int) -> None:
        self.left = left


class _Capture:
    """Output of one stream: kept up to `limit` bytes and within the job's budget, every chunk also sent as an
    `output` job message."""

    def __init__(self, ctx: JobContext, name: str, limit: int, budget: _Budget) -> None:
        self.ctx, self.name, self.limit, self.budget = ctx, name, limit, budget
        self.buf = bytearray()
        self.truncated = False

    async def pump(self, stream: OutputStream) -> None:
        async for chunk in stream:
            await self.ctx.output(self.name, chunk)
            room = min(self.limit - len(self.buf), self.budget.left)
            if len(chunk) > room:
                self.truncated = True
            if room > 0:
                kept = chunk[:room]
                self.buf += kept
                self.budget.left -= len(kept)

    @property
    def text(self) -> str:
        return self.buf.decode(errors="replace")


async def _recover_exec(job: Job, ctx: JobContext) -> RecoveryOutcome:
    return RecoveryOutcome.failed("gateway-restarted", "the gateway stopped while the command ran; its output and "
                                  "exit code are lost")


async def exec_command(ctx: JobContext) -> dict[str, Any]:
    """Run a command in the container; result `{exit_code, stdout, stderr, truncated}`."""
    p = ctx.params
    env = workflow_env(ctx)
    client = env.client(ctx.remote, ctx.project)
    asked = p.get("max_output_bytes")
    limit = int(DEFAULT_MAX_OUTPUT if asked is None else asked)
    budget = _Budget(env.settings.job_output_max_bytes)
    timeout = p.get("timeout")
    await ctx.progress("running", None, None)
    proc = await client.exec.start(p["name"], p["command"], environment=p.get("environment") or {},
                                   cwd=p.get("cwd"), user=p.get("user"), group=p.get("group"))
    workflow_env(ctx).owners.record(ctx.remote or "", proc.id)  # its command line is its starter's to see
    await ctx.record_operation(ctx.remote or "", proc.id, "Running")
    out, err = _Capture(ctx, "stdout", limit, budget), _Capture(ctx, "stderr", limit, budget)

    def result(code: int | None) -> dict[str, Any]:
        return {"exit_code": code, "stdout": out.text, "stderr": err.text,
                "truncated": out.truncated or err.truncated}

    async with proc:
        unregister = ctx.on_cancel(proc.kill)
        assert proc.stderr is not None
        pumps = [asyncio.ensure_future(out.pump(proc.stdout)), asyncio.ensure_future(err.pump(proc.stderr))]

        async def feed() -> None:
            stdin = p.get("stdin")
            if stdin:
                await proc.write(stdin.encode())
            await proc.close_stdin()

        feeder = asyncio.ensure_future(feed())
        try:
            code = await proc.wait(float(timeout) if timeout else None)
            await asyncio.wait(pumps, timeout=5)
        except ExecTimeout as exc:
            await asyncio.wait(pumps, timeout=2)
            raise JobFailure("exec-timeout", f"the command ran longer than {timeout}s and was killed",
                             status=504, title="Exec timed out", result=result(None)) from exc
        finally:
            unregister()
            for t in [*pumps, feeder]:
                if not t.done():
                    t.cancel()
            for t in [*pumps, feeder]:
                with contextlib.suppress(BaseException):
                    await t
    await ctx.record_operation(ctx.remote or "", proc.id, "Success")
    return result(code)


EXEC = JobKind.of("container.exec", exec_command, cancel=CancelPolicy.KILL_PROCESS, recover=_recover_exec,
                  params=ContainerExecParams, result=ExecResult)
