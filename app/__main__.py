"""`python -m app`: serve the gateway with uvicorn on LXDGW_BIND (one worker: jobs live in this process).

The server's modules are imported once `app.footprint` has left out what the process never uses (see there).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from app import footprint

if TYPE_CHECKING:
    from app.settings import Settings


def main(argv: list[str]) -> int:
    footprint.leave_out_unused()
    from app.settings import SettingsError

    if argv[:1] == ["tokens"]:
        from app.cli import tokens_main

        try:
            return tokens_main(argv[1:])
        except SettingsError as exc:
            print(f"lxd-gateway: {exc}", file=sys.stderr)
            return 2
    if argv[:1] == ["db"]:
        from app.cli import db_main

        try:
            return db_main(argv[1:])
        except SettingsError as exc:
            print(f"lxd-gateway: {exc}", file=sys.stderr)
            return 2
    from app.logs import configure_logging
    from app.settings import load_settings
    from app.startup import StartupError, check_data_dir

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"lxd-gateway: {exc}", file=sys.stderr)
        return 2
    workers = os.environ.get("WEB_CONCURRENCY", "1").strip() or "1"
    if workers != "1":
        print(f"lxd-gateway: refusing to start {workers} worker processes (WEB_CONCURRENCY): jobs run inside the "
              "gateway process and its job database admits one process; run one worker per data directory",
              file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        check_data_dir(settings)
    except StartupError as exc:
        print(f"lxd-gateway: {exc}", file=sys.stderr)
        return 1
    try:
        serve(settings)
    except SettingsError as exc:
        print(f"lxd-gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def serve(settings: Settings, parser: str = "httptools", guarded: bool = True) -> None:
    """Serve the gateway until SIGTERM/SIGINT. `parser` (`httptools` or `h11`) and `guarded=False` (uvicorn's
    protocol as it is, without the connection limits) exist for the benchmark that compares them."""
    import uvicorn

    from app.http.listener import READ_SIZE, ConnectionLimits, ensure_fd_room, guarded_protocol
    from app.main import create_app

    limits = ensure_fd_room(ConnectionLimits(settings.max_header_bytes, settings.header_timeout_seconds,
                                             settings.max_connections))
    http: Any = guarded_protocol(limits, parser) if guarded else parser
    app = create_app(settings)
    footprint.settle_after_startup(app)
    config = uvicorn.Config(app, host=settings.bind_host, port=settings.bind_port,
                            log_level=settings.log_level.lower(), proxy_headers=True, log_config=None, workers=1,
                            ws="websockets-sansio", http=http,
                            h11_max_incomplete_event_size=limits.max_header_bytes + READ_SIZE,
                            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None)
    server = stopping_server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # as uvicorn.run: the start-up failed
        sys.exit(3)


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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
