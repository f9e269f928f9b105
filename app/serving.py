"""`lxd-gateway serve` (`python -m app serve`): serve the gateway with uvicorn on LXDGW_BIND.

One worker process by default. `WEB_CONCURRENCY=N` (N > 1) starts N worker processes on the one listening socket,
on a PostgreSQL job database only: each is a replica (its own owner id for job leases, its own read model, its
own connection guard), as separate gateway processes on one database would be; a worker that dies is started
again. The embedded (SQLite) database admits one process, so there more than one worker is refused.

The server's modules are imported once `app.footprint` has left out what the process never uses (see there).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from app import footprint

if TYPE_CHECKING:
    from app.settings import Settings


def serve_main() -> int:
    """`serve`: load the settings, check the data directory, serve (one process, or WEB_CONCURRENCY workers)."""
    footprint.leave_out_unused()
    from app.logs import configure_logging
    from app.settings import SettingsError, load_settings
    from app.startup import StartupError, check_data_dir

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"lxd-gateway: {exc}", file=sys.stderr)
        return 2
    workers_text = os.environ.get("WEB_CONCURRENCY", "1").strip() or "1"
    workers = int(workers_text) if workers_text.isdigit() else 0
    if workers < 1:
        print(f"lxd-gateway: WEB_CONCURRENCY must be a whole number of worker processes, 1 or more (not "
              f"{workers_text!r})", file=sys.stderr)
        return 2
    if workers > 1 and settings.job_database[0] != "postgresql":
        print(f"lxd-gateway: refusing to start {workers} worker processes (WEB_CONCURRENCY): the embedded job "
              "database (SQLite) admits one gateway process; set LXDGW_DATABASE_URL=postgresql://... to run several "
              "(each worker is then a replica), or run one worker per data directory", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        check_data_dir(settings)
    except StartupError as exc:
        print(f"lxd-gateway: {exc}", file=sys.stderr)
        return 1
    try:
        if workers > 1:
            return serve_workers(settings, workers)
        serve(settings)
    except SettingsError as exc:
        print(f"lxd-gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def serve(settings: Settings, parser: str = "httptools", guarded: bool = True,
          sockets: list[socket.socket] | None = None) -> None:
    """Serve the gateway until SIGTERM/SIGINT. `parser` (`httptools` or `h11`) and `guarded=False` (uvicorn's
    protocol as it is, without the connection limits) exist for the benchmark that compares them; `sockets` are
    listening sockets already bound (a worker of `serve_workers`)."""
    import uvicorn

    from app.http.listener import READ_SIZE, ConnectionLimits, ensure_fd_room, guarded_protocol
    from app.main import create_app

    limits = ensure_fd_room(ConnectionLimits(settings.max_header_bytes, settings.header_timeout_seconds,
                                             settings.max_connections))
    http: Any = guarded_protocol(limits, parser) if guarded else parser
    app = create_app(settings)
    footprint.settle_after_startup(app)
    # proxy_headers=False: the client's address is taken from X-Forwarded-For by the gateway itself, and only from
    # the proxies LXDGW_TRUSTED_PROXIES names (app.http.proxies).
    config = uvicorn.Config(app, host=settings.bind_host, port=settings.bind_port,
                            log_level=settings.log_level.lower(), proxy_headers=False, log_config=None, workers=1,
                            ws="websockets-sansio", http=http,
                            h11_max_incomplete_event_size=limits.max_header_bytes + READ_SIZE,
                            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None)
    server = stopping_server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def stopping_server(config: Any) -> Any:
    """uvicorn's server for `config`, which also tells the job runner when a stop begins (SIGTERM/SIGINT): requests
    waiting for jobs (`?wait=`) then answer at once with the job as it is, instead of being cut off (a 500) when
    the server's grace for open requests runs out."""
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            jobs = getattr(getattr(config.app, "state", None), "jobs", None)
            if jobs is not None:
                with contextlib.suppress(RuntimeError):  # no loop runs (yet): nothing waits
                    asyncio.get_running_loop().call_soon_threadsafe(jobs.runner.stop_waiting)

    return Server(config)


STARTUP_FAILURE = 3
"""The exit status when the gateway could not start serving (as uvicorn's)."""
WORKER_RESTART_DELAY = 1.0
"""Seconds before a worker process that died is started again."""


def serve_workers(settings: Settings, workers: int) -> int:
    """Serve with `workers` processes (a PostgreSQL job database): the listening socket is bound here, then each
    worker is forked and serves it as a replica of its own (`serve`). SIGTERM/SIGINT is passed on to every worker
    (each stops gracefully); a worker that dies meanwhile is started again. Returns once all have ended."""
    import logging
    import signal
    import time

    import uvicorn

    log = logging.getLogger("app")
    listening = uvicorn.Config("app.main:create_app", host=settings.bind_host, port=settings.bind_port).bind_socket()
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                serve(settings, sockets=[listening])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for index in range(workers):
        spawn(index)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving with %d worker processes (each a replica on the shared job database)", workers)
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if code == STARTUP_FAILURE and not stopping:  # it would fail again: stop them all
            log.error("worker %d could not start; stopping", index)
            stop(signal.SIGTERM, None)
            status = code
            continue
        if stopping:
            status = status or (code if code > 0 else 0)
            continue
        log.warning("worker %d (pid %d) ended (%d); starting it again", index, pid, code)
        time.sleep(WORKER_RESTART_DELAY)
        if not stopping:
            spawn(index)
    listening.close()
    return status


