"""What job steps reach: the LXD clients of the remotes, the image sources and the settings, bound to the runner.

A job step finds the LXD clients and the settings through its context:

    env = workflow_env(ctx)
    client = env.client(ctx.remote, ctx.project)

`bind(runner, remotes=..., settings=...)` makes them available; the application calls it at start-up, before the
runner starts (recovery of jobs a dead gateway left needs them too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.http.owners import OperationOwners
from app.jobs import JobContext, JobRunner
from app.lxd.client import Client
from app.lxd.registry import RemoteRegistry
from app.lxd.servers import ConnectionArgs, ServerSpec
from app.mirror import Mirror
from app.settings import Settings, searched_sources

SERVICE_KEY = "workflows"


@dataclass
class WorkflowEnv:
    """The process-wide objects a job step uses."""

    remotes: RemoteRegistry
    settings: Settings
    owners: OperationOwners = field(default_factory=OperationOwners)
    """Which token started which LXD operation (exec jobs record theirs)."""
    mirror: Mirror | None = None
    """The read model: job results are read through it, so that they and later reads agree."""

    def client(self, remote: str | None, project: str | None) -> Client:
        """The LXD client of `remote` (default remote when None) bound to `project`."""
        client = self.remotes.get(remote)
        if project and project != client.project:
            client = client.with_project(project)
        return client

    def image_sources(self, names: list[str] | None = None, backend: str = "lxd") -> list[ServerSpec]:
        """The configured image servers (those named, in the order given; when None, all that serve `backend`,
        "lxd" or "incus", in search order)."""
        chosen = searched_sources(self.settings.image_sources, names, backend)
        return [ServerSpec(host=s.url, name=s.name, protocol=s.protocol,
                           connection=ConnectionArgs(server_cert=s.certificate.read_text()) if s.certificate
                           else None)
                for s in chosen]


def bind(runner: JobRunner, *, remotes: RemoteRegistry, settings: Settings,
         owners: OperationOwners | None = None, mirror: Mirror | None = None) -> WorkflowEnv:
    """Make the LXD clients and settings available to the jobs of `runner`."""
    env = WorkflowEnv(remotes=remotes, settings=settings, owners=owners or OperationOwners(), mirror=mirror)
    runner.services[SERVICE_KEY] = env
    return env


def workflow_env(ctx: JobContext) -> WorkflowEnv:
    env = ctx.services.get(SERVICE_KEY)
    if not isinstance(env, WorkflowEnv):
        raise RuntimeError("the workflows are not bound to this job runner (call app.jobs.env.bind at start-up)")
    return env
