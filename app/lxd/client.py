"""The LXD client facade: one transport, one request path, and the sub-APIs hung off it.

    async with Client.unix() as lxd:                      # discovery: LXD_SOCKET, LXD_DIR, snap, Debian, Incus
        await lxd.instances.create("c1", image="busybox")
        await lxd.instances.start("c1")
        result = await lxd.exec.run("c1", ["echo", "hi"])

    Client.https(url, client_cert=..., client_key=..., server_cert=PEM path | server_fingerprint=sha256)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from app.lxd.certificates import Certificates
from app.lxd.cluster import Cluster
from app.lxd.config import Config
from app.lxd.discovery import discover_socket
from app.lxd.envelope import Envelope, decode
from app.lxd.events import Events
from app.lxd.exec import Exec
from app.lxd.files import Files
from app.lxd.images import Images
from app.lxd.instances import Instances
from app.lxd.models import OperationState, ServerInfo
from app.lxd.networks import Networks
from app.lxd.operations import Operation, Operations
from app.lxd.profiles import Profiles
from app.lxd.projects import Projects
from app.lxd.server import Server
from app.lxd.storage import Storage
from app.lxd.transport import Transport


class Client:
    """An asyncio LXD (or Incus) client for one endpoint and default project. No I/O until the first call.

    `project=None` makes an unscoped client: no `?project=` at all (public image servers)."""

    def __init__(self, transport: Transport, *, project: str | None = "default") -> None:
        self.transport = transport
        self.project = project
        self.target: str | None = None
        self.server = Server(self)
        self.operations = Operations(self)
        self.events = Events(self)
        self.instances = Instances(self)
        self.exec = Exec(self)
        self.files = Files(self)
        self.images = Images(self)
        self.profiles = Profiles(self)
        self.certificates = Certificates(self)
        self.storage = Storage(self)
        self.networks = Networks(self)
        self.projects = Projects(self)
        self.cluster = Cluster(self)
        self.config = Config(self)
        self._parent: Client | None = None

    def with_project(self, project: str) -> Client:
        """A client whose calls default to `project`, sharing this one's connections, server facts and events
        streams. Closing it does nothing; closing this client closes both."""
        child = self._child(project)
        child.target = self.target
        child.server = (self._parent or self).server if self.target is None else self.server
        return child

    def with_target(self, member: str) -> Client:
        """A client bound to cluster member `member`: every request carries `?target=<member>`. It shares this
        one's connections and events streams, has server facts of its own (those of `member`); closing it does
        nothing."""
        child = self._child(self.project)
        child.target = member
        return child

    def _child(self, project: str | None) -> Client:
        child = Client(self.transport, project=project)
        root = self._parent or self
        child._parent = root
        child.events._buses = root.events._buses
        return child

    @classmethod
    def unix(cls, path: str | None = None, *, project: str | None = "default", timeout: float = 30.0,
             **transport_kw: Any) -> Client:
        """A client on a unix socket; `path=None` discovers it (see `app.lxd.discovery`)."""
        sock = discover_socket(path)
        return cls(Transport("http://lxd", uds=sock, timeout=timeout, **transport_kw), project=project)

    @classmethod
    def https(cls, url: str, *, client_cert: str, client_key: str, server_cert: str | None = None,
              server_fingerprint: str | None = None, insecure: bool = False, proxy: str | None = None,
              project: str | None = "default", timeout: float = 30.0, **transport_kw: Any) -> Client:
        """A client over HTTPS with a client certificate; pin the server by `server_cert` or `server_fingerprint`."""
        return cls(Transport(url, client_cert=client_cert, client_key=client_key, server_cert=server_cert,
                             server_fingerprint=server_fingerprint, insecure=insecure, proxy=proxy,
                             timeout=timeout, **transport_kw), project=project)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._parent is not None:
            return
        await self.events.aclose()
        await self.transport.aclose()

    async def server_info(self, refresh: bool = False) -> ServerInfo:
        """`GET /1.0` (cached); raises `LXDUnavailable` when LXD cannot be reached."""
        return await self.server.info(refresh=refresh)

    # ------------------------------------------------------------------------------------------ requests

    def _params(self, params: Mapping[str, Any] | None, project: str | None, scoped: bool) -> dict[str, Any]:
        out = dict(params or {})
        scope = project or self.project
        if scoped and scope and "all-projects" not in out:
            out.setdefault("project", scope)
        if self.target:
            out.setdefault("target", self.target)
        return out

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
                      content: Any = None, headers: Mapping[str, str] | None = None, project: str | None = None,
                      scoped: bool = True, long: bool = False, timeout: float | None = None) -> Envelope:
        """One request, decoded; raises the `LXDError` subclass for an error. `scoped` adds `?project=`."""
        resp = await self.transport.request(method, path, params=self._params(params, project, scoped), json=json,
                                            content=content, headers=headers, long=long, timeout=timeout)
        return decode(resp, method, path)

    async def mutate(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                     headers: Mapping[str, str] | None = None, content: Any = None, project: str | None = None,
                     wait: bool = True, timeout: float | None = None, long: bool = False) -> Operation:
        """A call that may answer sync or async; async ones are followed from before the request is sent.

        `long=True` sends it on the long-call pool (streamed uploads)."""
        bus = self.events.bus(project or self.project)
        with bus.hold():  # the stream stays up until the operation is followed
            await bus.ensure_connected(0.5 if bus.last_error is not None else 5.0)
            seen_from = bus.settled_connection()
            env = await self.request(method, path, params=params, json=json, headers=headers, content=content,
                                     project=project, long=long)
            if not env.is_async:
                return Operation.completed(self, env.metadata)
            op = Operation(self, OperationState.model_validate(env.metadata), bus=bus, seen_from=seen_from)
        if wait:
            await op.wait(timeout)
        return op
