"""Instances: list, get with ETag, create, update with If-Match, state actions, rename, delete, snapshots, console."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from app.lxd.envelope import decode
from app.lxd.errors import LXDTimeout, OperationFailed
from app.lxd.models import Instance, InstanceCreate, InstanceState, Snapshot
from app.lxd.operations import Operation
from app.lxd.resource import SubAPI, found, if_match, list_params, object_path, with_target


def _p(name: str) -> str:
    return object_path("instances", name)


class Instances(SubAPI):
    """`client.instances`. Methods that run an LXD operation wait for it unless `wait=False`."""

    # ------------------------------------------------------------------------------------------ read

    async def list(self, *, recursion: int = 1, filter: str | None = None, all_projects: bool = False,
                   instance_type: str | None = None, project: str | None = None) -> list[Instance]:
        """Instances as objects (`recursion=2` adds the typed `state`, and snapshots kept as an extra field)."""
        params = list_params(filter=filter, all_projects=all_projects, recursion=max(1, recursion),
                             **{"instance-type": instance_type})
        env = await self._client.request("GET", "/1.0/instances", params=params, project=project)
        return [Instance.model_validate(i) for i in env.metadata or []]

    async def names(self, *, project: str | None = None) -> list[str]:
        env = await self._client.request("GET", "/1.0/instances", project=project)
        return [u.rsplit("/", 1)[-1].split("?", 1)[0] for u in env.metadata or []]

    async def get(self, name: str, *, recursion: int = 0, project: str | None = None) -> Instance:
        """The instance, with its ETag in `.etag`; `recursion=1` asks for its live `state` too (servers that do not
        send it leave `state` None)."""
        params = {"recursion": recursion} if recursion else None
        env = await self._client.request("GET", _p(name), params=params, project=project)
        return Instance.from_envelope(env)

    async def exists(self, name: str, *, project: str | None = None) -> bool:
        return await found(self.get(name, project=project))

    async def state(self, name: str, *, project: str | None = None) -> InstanceState:
        """The live state, with its ETag in `.etag` (for `set_state(etag=)`)."""
        env = await self._client.request("GET", f"{_p(name)}/state", project=project)
        return InstanceState.from_envelope(env)

    # ------------------------------------------------------------------------------------------ create

    async def create(self, name: str | None, *, image: str | None = None, fingerprint: str | None = None,
                     server: str | None = None, protocol: str | None = None, certificate: str | None = None,
                     copy_from: str | None = None, instance_only: bool = False, source: dict[str, Any] | None = None,
                     type: str = "container", profiles: list[str] | None = None,
                     config: dict[str, str] | None = None, devices: dict[str, dict[str, str]] | None = None,
                     ephemeral: bool = False, description: str = "", start: bool = False,
                     project: str | None = None, wait: bool = True, timeout: float | None = None) -> Operation:
        """Create from an image (alias or fingerprint, local or on `server`), a copy (`copy_from`), or empty.

        `start=True` starts it too (in the same operation when the server has `instance_create_start`).
        """
        if source is None:
            if copy_from:
                source = {"type": "copy", "source": copy_from, "instance_only": instance_only}
            elif image or fingerprint:
                source = {"type": "image"}
                if image:
                    source["alias"] = image
                if fingerprint:
                    source["fingerprint"] = fingerprint
                if server:
                    source.update(server=server, mode="pull", protocol=protocol)
                    if certificate:
                        source["certificate"] = certificate
            else:
                source = {"type": "none"}
        source = await self._client.server.pull_source(source)
        body: dict[str, Any] = {"type": type, "source": source, "ephemeral": ephemeral, "description": description}
        if name:
            body["name"] = name
        if profiles is None and copy_from and source.get("type") == "copy":
            # LXD 5.0 gives a copy no profiles (so no root disk) unless told: keep the source's
            src = await self.get(copy_from.split("/", 1)[0], project=project)
            profiles = src.profiles
        if profiles is not None:
            body["profiles"] = profiles
        if config:
            body["config"] = config
        if devices:
            body["devices"] = devices
        one_step = start and await self._client.server.has_extension("instance_create_start")
        if one_step:
            body["start"] = True
        op = await self._client.mutate("POST", "/1.0/instances", json=body, project=project,
                                       wait=wait or (start and not one_step), timeout=timeout)
        if start and not one_step:
            created = name or self.created_name(op)
            return await self.start(created, project=project, wait=wait, wait_timeout=timeout)
        return op

    async def create_from(self, body: InstanceCreate, *, target: str | None = None, project: str | None = None,
                          wait: bool = True, timeout: float | None = None) -> Operation:
        """Create the instance `body` describes, as it is (`target` places it on a cluster member)."""
        json = body.body()
        json["source"] = await self._client.server.pull_source(json["source"])
        return await self._client.mutate("POST", "/1.0/instances", json=json, params=with_target(target),
                                         project=project, wait=wait, timeout=timeout)

    @staticmethod
    def created_name(op: Operation) -> str:
        """The name of the instance an operation created (`entity_url` on new servers, else `resources`)."""
        url = op.metadata.get("entity_url") or next(iter(op.resources.get("instances") or []), "")
        return str(url).split("?", 1)[0].rsplit("/", 1)[-1]

    # ------------------------------------------------------------------------------------------ update

    async def update(self, name: str, body: dict[str, Any], *, etag: str | None = None, project: str | None = None,
                     wait: bool = True, timeout: float | None = None) -> Operation:
        """PUT (replace). With `etag`, LXD refuses with `PreconditionFailed` if the instance changed since."""
        return await self._client.mutate("PUT", _p(name), json=body, headers=if_match(etag), project=project, wait=wait,
                                         timeout=timeout)

    async def patch(self, name: str, body: dict[str, Any], *, etag: str | None = None,
                    project: str | None = None, timeout: float | None = None) -> Operation:
        """PATCH (merge); a key set to "" is unset."""
        return await self._client.mutate("PATCH", _p(name), json=body, headers=if_match(etag), project=project,
                                         timeout=timeout)

    async def rename(self, name: str, new_name: str, *, project: str | None = None, wait: bool = True,
                     timeout: float | None = None) -> Operation:
        return await self._client.mutate("POST", _p(name), json={"name": new_name}, project=project, wait=wait,
                                         timeout=timeout)

    async def delete(self, name: str, *, project: str | None = None, wait: bool = True,
                     timeout: float | None = None) -> Operation:
        """Delete a stopped instance."""
        return await self._client.mutate("DELETE", _p(name), project=project, wait=wait, timeout=timeout)

    # ------------------------------------------------------------------------------------------ state

    async def set_state(self, name: str, action: str, *, timeout: int | None = None, force: bool = False,
                        stateful: bool = False, etag: str | None = None, project: str | None = None,
                        wait: bool = True, wait_timeout: float | None = None) -> Operation:
        """`PUT .../state`: start, stop, restart, freeze, unfreeze. Note: stop with `timeout=0` kills.

        With `etag` (of `state()`), LXD refuses with `PreconditionFailed` if the state changed since."""
        body: dict[str, Any] = {"action": action, "force": force, "stateful": stateful}
        if timeout is not None:
            body["timeout"] = timeout
        return await self._client.mutate("PUT", f"{_p(name)}/state", json=body, headers=if_match(etag),
                                         project=project, wait=wait, timeout=wait_timeout)

    async def start(self, name: str, *, timeout: int | None = None, project: str | None = None, wait: bool = True,
                    wait_timeout: float | None = None) -> Operation:
        """Start it; `timeout` is LXD's own (sent only when given, `-1` = none), `wait_timeout` ours."""
        return await self.set_state(name, "start", timeout=timeout, project=project, wait=wait,
                                    wait_timeout=wait_timeout)

    async def stop(self, name: str, *, timeout: int = 30, force: bool = False, then_force: bool = True,
                   project: str | None = None) -> Operation:
        """Stop gracefully within `timeout` seconds; when that fails and `then_force`, kill it."""
        if force or timeout <= 0:
            return await self.set_state(name, "stop", force=True, project=project)
        try:
            return await self.set_state(name, "stop", timeout=timeout, project=project, wait_timeout=timeout + 15)
        except (OperationFailed, LXDTimeout):
            if not then_force:
                raise
            if (await self.state(name, project=project)).status == "Stopped":
                return Operation.completed(self._client, {})
            return await self.set_state(name, "stop", force=True, project=project)

    async def restart(self, name: str, *, timeout: int = 30, force: bool = False,
                      project: str | None = None) -> Operation:
        return await self.set_state(name, "restart", timeout=timeout, force=force, project=project)

    async def freeze(self, name: str, *, project: str | None = None) -> Operation:
        return await self.set_state(name, "freeze", project=project)

    async def unfreeze(self, name: str, *, project: str | None = None) -> Operation:
        return await self.set_state(name, "unfreeze", project=project)

    # ------------------------------------------------------------------------------------------ snapshots

    async def snapshots(self, name: str, *, project: str | None = None) -> list[Snapshot]:
        env = await self._client.request("GET", f"{_p(name)}/snapshots", params={"recursion": 1}, project=project)
        return [Snapshot.model_validate(s) for s in env.metadata or []]

    async def snapshot(self, name: str, snapshot: str, *, project: str | None = None) -> Snapshot:
        """One snapshot: its config, devices and profiles as they were when it was taken."""
        env = await self._client.request("GET", f"{_p(name)}/snapshots/{quote(snapshot, safe='')}", project=project)
        return Snapshot.model_validate(env.metadata)

    async def create_snapshot(self, name: str, snapshot: str, *, stateful: bool = False,
                              project: str | None = None, wait: bool = True) -> Operation:
        return await self._client.mutate("POST", f"{_p(name)}/snapshots",
                                         json={"name": snapshot, "stateful": stateful}, project=project, wait=wait)

    async def delete_snapshot(self, name: str, snapshot: str, *, project: str | None = None,
                              wait: bool = True) -> Operation:
        return await self._client.mutate("DELETE", f"{_p(name)}/snapshots/{quote(snapshot, safe='')}",
                                         project=project, wait=wait)

    async def restore_snapshot(self, name: str, snapshot: str, *, stateful: bool = False,
                               project: str | None = None, wait: bool = True) -> Operation:
        return await self._client.mutate("PUT", _p(name), json={"restore": snapshot, "stateful": stateful},
                                         project=project, wait=wait)

    # ------------------------------------------------------------------------------------------ console log

    async def console_log(self, name: str, *, project: str | None = None) -> str:
        """The console log buffer (text). Empty on Incus when nothing was written; LXD 5.0 answers 500 "no such
        file or directory" then instead (raised as `LXDError`)."""
        resp = await self._client.transport.request("GET", f"{_p(name)}/console",
                                                    params=self._client._params(None, project, True))
        if resp.headers.get("content-type", "").startswith("application/json"):
            if not resp.content.strip():
                return ""  # Incus 6: an empty console log is a 200 JSON answer with an empty body
            decode(resp)
        return resp.text

    async def clear_console_log(self, name: str, *, project: str | None = None) -> None:
        await self._client.request("DELETE", f"{_p(name)}/console", project=project)
