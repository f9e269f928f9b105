"""The test session's private daemons, per backend (LXD, Incus): a prepared main daemon and a second one serving
the busybox image publicly (over the backend's own image protocol, `lxd` or `incus`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from app.locallxd.daemon import (
    LXD,
    Backend,
    DaemonInfo,
    LocalDaemon,
    cleanup_stale,
    ensure_backend_installed,
    image_tarball,
    log,
)


@dataclass
class HarnessEnvironment:
    """A prepared main daemon and a second one serving the busybox image publicly, both of one backend."""

    main: DaemonInfo
    image_server: DaemonInfo
    daemons: list[LocalDaemon] = field(default_factory=list)
    revived: list[str] = field(default_factory=list)

    @property
    def image_server_url(self) -> str:
        return self.image_server.https_url

    def revive(self) -> list[str]:
        """Restart a daemon that died on its own, as an init system would, keeping its log; what was restarted.

        LXD 5.0.2 can panic ("concurrent write to websocket connection" in its console mirror) after interactive
        sessions: one such crash must not take every later test down with it."""
        out = []
        for d in self.daemons:
            if d.proc is not None and d.proc.poll() is not None:
                d._keep_log(f"died with exit code {d.proc.returncode} and was restarted")
                d.start()
                out.append(str(d.dir))
        self.revived += out
        return out


@contextlib.contextmanager
def harness_environment(backend: Backend = LXD, *, clean: bool = True) -> Iterator[HarnessEnvironment]:
    """Install, clean up after killed runs (unless `clean` is false: a second environment of one session must not
    take bridges the first one's tests made for stale ones), start both daemons; tear everything down on exit."""
    ensure_backend_installed(backend)
    if clean:
        cleanup_stale()
    tarball = image_tarball()
    main, server = LocalDaemon(backend=backend), LocalDaemon(backend=backend)
    try:
        main.start()
        server.start()
        main_info = main.prepare(image_tarball=tarball)
        server_info = server.prepare(image_tarball=tarball, bridge=False, public_image=True)
        yield HarnessEnvironment(main=main_info, image_server=server_info, daemons=[main, server])
    finally:
        for d in (main, server):
            try:
                d.stop()
            except Exception as exc:  # teardown must go on for the other daemon
                log(f"teardown of {d.dir} failed: {exc}")
