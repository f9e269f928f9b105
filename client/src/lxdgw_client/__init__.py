"""A typed client of lxd-gateway: `Client` (blocking) and `AsyncClient` (asyncio), and the `lxd-gateway-client`
command (`lxdgw_client.cli`).

    from lxdgw_client import Client

    with Client("http://127.0.0.1:8080", token="...") as gw:
        job = gw.jobs.wait(gw.containers.create("web1", "busybox"), timeout=300, check=True)
        result = gw.jobs.wait(gw.containers.exec("web1", ["uname", "-a"]), check=True).exec_result()
"""

from lxdgw_client._async import AsyncClient
from lxdgw_client._config import version
from lxdgw_client._sync import Client
from lxdgw_client.errors import (
    GatewayError,
    GatewayUnreachable,
    JobCancelled,
    JobError,
    JobFailed,
    JobWaitTimeout,
    Unauthorized,
)
from lxdgw_client.models import (
    Container,
    ExecResult,
    Image,
    Job,
    JobMessage,
    JobProgress,
    Page,
    Problem,
    Written,
)

__version__ = version()

__all__ = [
    "AsyncClient",
    "Client",
    "Container",
    "ExecResult",
    "GatewayError",
    "GatewayUnreachable",
    "Image",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobMessage",
    "JobProgress",
    "JobWaitTimeout",
    "Page",
    "Problem",
    "Unauthorized",
    "Written",
    "__version__",
]
