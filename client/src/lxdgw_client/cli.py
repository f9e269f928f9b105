"""`lxd-gateway-client`: the gateway from a shell or a CI job.

Progress goes to stderr (a live bar on a terminal, plain lines otherwise), results to stdout (a table on a terminal,
tab-separated lines otherwise, JSON with `-o json`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from lxdgw_client._config import version
from lxdgw_client._sync import Client
from lxdgw_client.errors import GatewayError, GatewayUnreachable, JobWaitTimeout
from lxdgw_client.models import Container, Job, Problem

# Exit codes (also in the README and `--help`); `exec` exits with the command's own code when it ran.
EXIT_OK = 0
EXIT_FAILED = 1  # the job failed, or the gateway refused the request (the problem is printed on stderr)
EXIT_USAGE = 2  # the command line is wrong
EXIT_CANCELLED = 3  # the job was cancelled
EXIT_UNREACHABLE = 4  # no answer from the gateway, or the token is missing, unknown or not allowed (401, 403)
EXIT_TIMEOUT = 5  # `jobs wait --timeout` ran out before the job ended
EXIT_INTERRUPTED = 130  # Ctrl-C (an `exec` job is cancelled; a followed job goes on)

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 the job failed or the gateway refused the request (its problem is printed on "
    "stderr); 2 usage error; 3 the job was cancelled; 4 the gateway is unreachable, or the token is missing, "
    "invalid or not allowed (401/403); 5 a wait timed out; 130 interrupted (Ctrl-C). `exec` exits with the "
    "command's own exit code."
)

app = typer.Typer(name="lxd-gateway-client", no_args_is_help=True, add_completion=False,
                  help="Containers, jobs and images of an lxd-gateway, from a shell or a CI job.\n\n"
                       + EXIT_CODES_HELP)
jobs_app = typer.Typer(no_args_is_help=True, help="List, watch, wait for and cancel jobs.")
images_app = typer.Typer(no_args_is_help=True, help="Find and copy images.")
file_app = typer.Typer(no_args_is_help=True, help="Copy files into and out of a container.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(images_app, name="images")
app.add_typer(file_app, name="file")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Output(StrEnum):
    text = "text"
    json = "json"


class State:
    url: str | None = None
    token: str | None = None
    remote: str | None = None
    project: str | None = None
    timeout: float = 30.0


state = State()

OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text (a table on a terminal), or json")]
KeyOpt = Annotated[str | None, typer.Option("--idempotency-key",
                                            help="retrying with the same key answers the same job (default: new)")]
WaitOpt = Annotated[bool, typer.Option("--wait", "-w", help="follow the job (progress on stderr) until it ends")]


def _print_version(value: bool) -> None:
    if value:
        out.print(version(), markup=False)
        raise typer.Exit(EXIT_OK)


@app.callback()
def options(
    url: Annotated[str | None, typer.Option("--url", envvar="LXDGW_URL",
                                            help="the gateway [default: http://127.0.0.1:8080]")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="LXDGW_TOKEN", show_envvar=True,
                                              help="API token (Bearer)")] = None,
    remote: Annotated[str | None, typer.Option("--remote", envvar="LXDGW_REMOTE",
                                               help="LXD remote (default: the gateway's)")] = None,
    project: Annotated[str | None, typer.Option("--project", envvar="LXDGW_PROJECT",
                                                help="LXD project (default: default)")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds for one HTTP request")] = 30.0,
    show_version: Annotated[bool, typer.Option("--version", help="print the version and exit", is_eager=True,
                                               callback=_print_version)] = False,
) -> None:
    state.url, state.token, state.remote, state.project, state.timeout = url, token, remote, project, timeout


@contextmanager
def gateway() -> Iterator[Client]:
    """A client of the gateway; every error of the block ends the command with its exit code."""
    try:
        with Client(state.url, state.token, remote=state.remote, project=state.project,
                    timeout=state.timeout) as client:
            yield client
    except GatewayError as exc:
        fail(exc)


def fail(exc: GatewayError) -> NoReturn:
    if isinstance(exc, GatewayUnreachable):
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_UNREACHABLE)
    if isinstance(exc, JobWaitTimeout):
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_TIMEOUT)
    err.print(f"error: {exc.problem.describe() if exc.problem else exc}", markup=False)
    raise typer.Exit(EXIT_UNREACHABLE if exc.status in (401, 403) else EXIT_FAILED)


def usage(message: str) -> NoReturn:
    err.print(f"usage error: {message}", markup=False)
    raise typer.Exit(EXIT_USAGE)


def pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out_: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            usage(f"{what} must be KEY=VALUE, not {item!r}")
        out_[key] = value
    return out_


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table on a terminal; else tab-separated lines, the headers first."""
    if out.is_terminal:
        table = Table(*headers)
        for row in rows:
            table.add_row(*row)
        out.print(table)
    else:
        for row in (headers, *rows):
            sys.stdout.write("\t".join(row) + "\n")


def job_line(job: Job) -> str:
    text = f"job {job.id} {job.kind} {job.status}"
    if job.resource:
        text += f" {job.resource}"
    return text


def job_exit(job: Job) -> int:
    """The exit code of an ended job; its problem goes to stderr when it failed."""
    if job.status == "failed":
        problem = job.error or Problem(title="Job failed")
        err.print(f"error: job {job.id} ({job.kind}) failed: {problem.describe()}", markup=False)
        return EXIT_FAILED
    if job.status == "cancelled":
        err.print(f"job {job.id} ({job.kind}) was cancelled", markup=False)
        return EXIT_CANCELLED
    return EXIT_OK


def show_job(job: Job, output: Output) -> None:
    if output is Output.json:
        print_json(job.model_dump(mode="json"))
    else:
        out.print(job_line(job), markup=False)


def follow(client: Client, job: Job) -> Job:
    """Follow `job` on its stream until it ends, showing its progress on stderr; the ended job."""
    if job.ended:
        return job
    try:
        return _follow_bar(client, job) if err.is_terminal else _follow_lines(client, job)
    except KeyboardInterrupt:  # Ctrl-C stops following; the job goes on
        err.print(f"\nstill {job.status}: follow it with `lxd-gateway-client jobs watch {job.id}`", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _follow_lines(client: Client, job: Job) -> Job:
    last = ""
    err.print(job_line(job), markup=False)
    for message in client.jobs.stream(job, after=None):
        job = message.job
        if message.type in ("progress", "snapshot", "status"):
            p = job.progress
            text = " ".join(x for x in (p.message or p.stage or "", f"{p.percent}%" if p.percent is not None
                                        else "") if x)
            line = f"{job.status}: {text}" if text else job.status
            if line != last:
                err.print(f"progress: {line}", markup=False)
                last = line
    return job if job.ended else client.jobs.wait(job)


def _follow_bar(client: Client, job: Job) -> Job:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        task: TaskID = progress.add_task(f"{job.kind} {job.status}", total=100)
        for message in client.jobs.stream(job, after=None):
            job = message.job
            p = job.progress
            label = p.message or p.stage or job.status
            if job.ended:
                progress.update(task, description=f"{job.kind} {job.status}",
                                completed=100 if job.status == "succeeded" else progress.tasks[0].completed)
            elif p.percent is not None:
                progress.update(task, description=label, completed=p.percent)
            else:
                progress.update(task, description=label)
    return job if job.ended else client.jobs.wait(job)


def run_job(start: Callable[[Client], Job], wait: bool, output: Output) -> None:
    """Start a job; with `wait`, follow it and exit with its outcome; print it (or its id)."""
    with gateway() as client:
        job = start(client)
        if wait:
            job = follow(client, job)
        show_job(job, output)
        code = job_exit(job) if job.ended else EXIT_OK
    raise typer.Exit(code)


def split_target(target: str) -> tuple[str, str]:
    """`web1/etc/hostname` -> (`web1`, `/etc/hostname`), as `lxc file` writes it."""
    name, sep, path = target.partition("/")
    if not sep or not name or not path:
        usage(f"expected NAME/PATH (e.g. web1/etc/hostname), not {target!r}")
    return name, "/" + path


# -- containers --------------------------------------------------------------------------------------------------

def _ipv4(c: Container) -> str:
    return ",".join(a.address for a in c.addresses if a.family == "inet") or "-"


@app.command("ls")
def list_containers(
    prefix: Annotated[str | None, typer.Argument(help="only names starting with it")] = None,
    status: Annotated[list[str] | None, typer.Option("--status", help="Running, Stopped... (repeatable)")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """List containers."""
    with gateway() as client:
        items = client.containers.list_all(prefix=prefix, status=status)
    if output is Output.json:
        print_json([c.model_dump(mode="json") for c in items])
        return
    rows: list[tuple[str, ...]] = [(c.name, c.status, _ipv4(c), ",".join(c.profiles), c.remote or "") for c in items]
    print_table(("NAME", "STATUS", "IPV4", "PROFILES", "REMOTE"), rows)


@app.command()
def launch(
    name: Annotated[str, typer.Argument(help="the new container's name")],
    image: Annotated[str, typer.Option("--image", "-i", help="image alias (local or on the image sources)")],
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help="KEY=VALUE (repeatable)")] = None,
    profile: Annotated[list[str] | None, typer.Option("--profile", "-p", help="profile (repeatable; default: "
                                                                                  "default)")] = None,
    no_start: Annotated[bool, typer.Option("--no-start", help="create it stopped")] = False,
    wait: WaitOpt = False,
    idempotency_key: KeyOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Create and start a container (job container.create)."""
    cfg = pairs(config, "--config")
    run_job(lambda c: c.containers.create(name, image, profiles=profile or None, config=cfg, start=not no_start,
                                          idempotency_key=idempotency_key), wait, output)


@app.command()
def start(name: str, wait: WaitOpt = False, idempotency_key: KeyOpt = None, output: OutputOpt = Output.text) -> None:
    """Start a container."""
    run_job(lambda c: c.containers.start(name, idempotency_key=idempotency_key), wait, output)


@app.command()
def stop(
    name: str,
    force: Annotated[bool, typer.Option("--force", "-f", help="kill instead of a clean shutdown")] = False,
    stop_timeout: Annotated[int | None, typer.Option("--stop-timeout", help="seconds a clean stop may take")] = None,
    wait: WaitOpt = False, idempotency_key: KeyOpt = None, output: OutputOpt = Output.text,
) -> None:
    """Stop a container."""
    run_job(lambda c: c.containers.stop(name, force=force or None, timeout=stop_timeout,
                                        idempotency_key=idempotency_key), wait, output)


@app.command()
def delete(
    name: str,
    missing_ok: Annotated[bool, typer.Option("--missing-ok", help="a container that does not exist is no error "
                                                                   "(for clean-up steps)")] = False,
    wait: WaitOpt = False, idempotency_key: KeyOpt = None, output: OutputOpt = Output.text,
) -> None:
    """Delete a container (stopped first when it runs)."""
    if missing_ok:
        with gateway() as client:
            try:
                client.containers.get(name)
            except GatewayError as exc:
                if exc.status != 404:
                    raise
                err.print(f"{name}: no such container, nothing to delete", markup=False)
                raise typer.Exit(EXIT_OK) from None
    run_job(lambda c: c.containers.delete(name, idempotency_key=idempotency_key), wait, output)


@app.command("exec")
def exec_(
    name: Annotated[str, typer.Argument(help="the container")],
    command: Annotated[list[str], typer.Argument(help="the command and its arguments, after --")],
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE (repeatable)")] = None,
    cwd: Annotated[str | None, typer.Option("--cwd", help="working directory")] = None,
    user: Annotated[int | None, typer.Option("--user", help="uid")] = None,
    group: Annotated[int | None, typer.Option("--group", help="gid")] = None,
    exec_timeout: Annotated[float | None, typer.Option("--exec-timeout", help="seconds; then it is killed and "
                                                                                 "the job fails")] = None,
    no_stdin: Annotated[bool, typer.Option("--no-stdin", "-n", help="do not pass standard input (it is passed, "
                                                                      "as text, when it is not a terminal)")] = False,
    idempotency_key: KeyOpt = None,
) -> None:
    """Run a command in a container (`exec web1 -- sh -c 'make test'`), its output streamed; exit with its code."""
    stdin: str | None = None
    if not no_stdin and not sys.stdin.isatty():
        try:
            stdin = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            usage("standard input must be UTF-8 text (the gateway passes it as text); use `file push` for bytes")
        stdin = stdin or None
    environment = pairs(env, "--env")
    with gateway() as client:
        job = client.containers.exec(name, command, environment=environment or None, cwd=cwd, user=user,
                                     group=group, stdin=stdin, timeout=exec_timeout,
                                     idempotency_key=idempotency_key)
        streamed = False
        try:
            for message in client.jobs.stream(job, after=0):
                job = message.job
                if (chunk := message.output) is not None:
                    streamed = True
                    target = sys.stderr if chunk[0] == "stderr" else sys.stdout
                    target.buffer.write(chunk[1])
                    target.flush()
        except KeyboardInterrupt:  # Ctrl-C stops the command, as it would a local one
            with suppress(GatewayError):
                client.jobs.cancel(job)
            err.print(f"\ninterrupted: job {job.id} cancelled", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if not job.ended:
            job = client.jobs.wait(job)
        if job.status != "succeeded":
            raise typer.Exit(job_exit(job))
        result = job.exec_result()
        if not streamed:  # the job had ended before its stream was read: the output is in its result
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
        if result.truncated:
            err.print("(the job kept only part of the output)", markup=False)
    raise typer.Exit(result.exit_code)


# -- files ---------------------------------------------------------------------------------------------------------

@file_app.command("push")
def file_push(
    source: Annotated[Path, typer.Argument(help="local file ('-' for stdin)", allow_dash=True)],
    target: Annotated[str, typer.Argument(help="NAME/PATH, e.g. web1/root/app.tar.gz")],
    mode: Annotated[str | None, typer.Option("--mode", help="octal, e.g. 0644")] = None,
    uid: Annotated[int | None, typer.Option("--uid")] = None,
    gid: Annotated[int | None, typer.Option("--gid")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Upload a file into a container (streamed)."""
    name, path = split_target(target)
    with gateway() as client:
        if str(source) == "-":
            written = client.containers.push(name, path, sys.stdin.buffer, mode=mode, uid=uid, gid=gid)
        else:
            if not source.is_file():
                usage(f"{source} is not a file")
            written = client.containers.push(name, path, source, mode=mode, uid=uid, gid=gid)
    if output is Output.json:
        print_json(written.model_dump(mode="json"))
    else:
        out.print(f"{written.path}\t{written.size}\t{written.sha256}", markup=False)


@file_app.command("pull")
def file_pull(
    source: Annotated[str, typer.Argument(help="NAME/PATH, e.g. web1/etc/hostname")],
    target: Annotated[str, typer.Argument(help="local file ('-' for stdout)")],
) -> None:
    """Download a file from a container (streamed)."""
    name, path = split_target(source)
    with gateway() as client:
        try:
            if target == "-":
                client.containers.pull(name, path, sys.stdout.buffer)
            else:
                client.containers.pull(name, path, target)
        except IsADirectoryError as exc:
            usage(str(exc))


# -- jobs ----------------------------------------------------------------------------------------------------------

@jobs_app.command("ls")
def jobs_ls(
    status: Annotated[str | None, typer.Option("--status", help="queued, running, succeeded, failed, cancelled")]
    = None,
    kind: Annotated[str | None, typer.Option("--kind", help="e.g. container.create")] = None,
    limit: Annotated[int, typer.Option("--limit", help="at most this many, newest first")] = 50,
    output: OutputOpt = Output.text,
) -> None:
    """List jobs, newest first."""
    with gateway() as client:
        page = client.jobs.list(status=status, kind=kind, limit=limit, remote=state.remote, project=state.project)
    if output is Output.json:
        print_json([j.model_dump(mode="json") for j in page.items])
        return
    rows: list[tuple[str, ...]] = [(j.id, j.kind, j.status, j.resource or "", j.created_at or "") for j in page.items]
    print_table(("ID", "KIND", "STATUS", "RESOURCE", "CREATED"), rows)


@jobs_app.command("watch")
def jobs_watch(job_id: str, output: OutputOpt = Output.text) -> None:
    """Follow a job's progress until it ends; exit with its outcome."""
    with gateway() as client:
        job = follow(client, client.jobs.get(job_id))
        show_job(job, output)
    raise typer.Exit(job_exit(job))


@jobs_app.command("wait")
def jobs_wait(
    job_id: str,
    wait_timeout: Annotated[float | None, typer.Option("--timeout", "-t", help="give up after this many seconds "
                                                                               "(exit 5)")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Wait until a job ends; exit with its outcome."""
    with gateway() as client:
        job = client.jobs.wait(job_id, wait_timeout)
        show_job(job, output)
    raise typer.Exit(job_exit(job))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, wait: WaitOpt = False, output: OutputOpt = Output.text) -> None:
    """Cancel a job (an exec is killed, a create rolls back, a download stops)."""
    with gateway() as client:
        job = client.jobs.cancel(job_id)
        if wait:
            job = follow(client, job)
        show_job(job, output)


# -- images --------------------------------------------------------------------------------------------------------

@images_app.command("find")
def images_find(
    alias: Annotated[str | None, typer.Argument(help="an alias on the image sources")] = None,
    series: Annotated[str | None, typer.Option("--series", help="an OS series instead (e.g. jammy)")] = None,
    arch: Annotated[str | None, typer.Option("--arch")] = None,
    source: Annotated[list[str] | None, typer.Option("--source", help="image source to search (repeatable)")] = None,
    copy_local: Annotated[bool, typer.Option("--copy-local", help="pull it into the local store")] = False,
    wait: WaitOpt = False, idempotency_key: KeyOpt = None, output: OutputOpt = Output.text,
) -> None:
    """Find an image (job image.find): the local alias cache first, then each image source."""
    if (alias is None) == (series is None):
        usage("give an ALIAS or --series")
    run_job(lambda c: c.images.find(alias=alias, series=series, arch=arch, sources=source, copy_local=copy_local,
                                    idempotency_key=idempotency_key), wait, output)


@images_app.command("copy")
def images_copy(
    image: Annotated[str, typer.Argument(help="the image's alias (or fingerprint, with --fingerprint) there")],
    source: Annotated[str, typer.Option("--from", help="a configured image source")],
    fingerprint: Annotated[bool, typer.Option("--fingerprint", help="IMAGE is a fingerprint")] = False,
    alias: Annotated[list[str] | None, typer.Option("--alias", "-a", help="local alias (repeatable)")] = None,
    auto_update: Annotated[bool, typer.Option("--auto-update")] = False,
    wait: WaitOpt = False, idempotency_key: KeyOpt = None, output: OutputOpt = Output.text,
) -> None:
    """Copy an image from a configured image source into the local store (job image.copy)."""
    run_job(lambda c: c.images.copy(image_source=source, alias=None if fingerprint else image,
                                    fingerprint=image if fingerprint else None, aliases=alias,
                                    auto_update=auto_update, idempotency_key=idempotency_key), wait, output)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
