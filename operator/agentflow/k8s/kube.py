"""The one module that calls the Kubernetes API.

The official client is synchronous; every call runs in a worker thread so it
never blocks kopf's event loop. ApiException is translated here, and only
here, into :class:`KubeError` subclasses that say what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

GROUP = "agentflow.dev"
VERSION = "v1alpha1"


class KubeError(Exception):
    """A Kubernetes API call failed; ``retryable`` says whether trying again may help."""

    retryable = True

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    retryable = False


class Conflict(KubeError):
    pass


class Forbidden(KubeError):
    retryable = False


class Invalid(KubeError):
    retryable = False


def _translate(exc: Exception, what: str) -> KubeError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or type(exc).__name__
    body = getattr(exc, "body", "") or ""
    message = f"{what}: {status or ''} {reason} {body[:300]}".strip()
    if status == 404:
        return NotFound(message, status)
    if status == 409:
        return Conflict(message, status)
    if status in (401, 403):
        return Forbidden(f"{message} (check the operator's RBAC)", status)
    if status in (400, 422):
        return Invalid(message, status)
    return KubeError(message, status)


@dataclasses.dataclass
class Kube:
    """Typed, async access to the few API calls the operator makes."""

    api_client: Any  # kubernetes.client.ApiClient, built at startup

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> Kube:
        """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        return cls(client.ApiClient())

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None) -> tuple[Kube, str]:
        """For a person at a terminal: the kubeconfig (``KUBECONFIG`` or ~/.kube/config), never a pod's
        service account, and the namespace of its current context (``default`` when it names none).

        KubeError when there is no usable kubeconfig.
        """
        from kubernetes import config

        try:
            api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            _, current = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as exc:
            raise KubeError(f"cannot use the kubeconfig {kubeconfig or '(default)'}: {exc}") from None
        namespace = ((current or {}).get("context") or {}).get("namespace") or "default"
        return cls(api_client), str(namespace)

    def close(self) -> None:
        self.api_client.close()

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            raise _translate(exc, what) from None
        except (HTTPError, OSError) as exc:
            raise KubeError(f"{what}: cannot reach the API server: {exc}") from None

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def _networking(self) -> Any:
        from kubernetes import client

        return client.NetworkingV1Api(self.api_client)

    # -- pods

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create a pod; False when a pod of that name already exists (deterministic names: never twice)."""
        try:
            await self._call(f"create pod {namespace}/{body['metadata']['name']}",
                             self._core().create_namespaced_pod, namespace, body)
        except Conflict:
            return False
        return True

    async def delete_pod(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call(f"delete pod {namespace}/{name}", self._core().delete_namespaced_pod, name, namespace,
                             grace_period_seconds=5)

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = await self._call(f"list pods in {namespace}", self._core().list_namespaced_pod, namespace,
                                  label_selector=label_selector, _preload_content=False)
        data = json.loads(result.data)
        items: list[dict[str, Any]] = data.get("items", [])
        return items

    # -- network policies

    async def apply_network_policy(self, namespace: str, body: Mapping[str, Any]) -> None:
        with contextlib.suppress(Conflict):
            await self._call("create networkpolicy", self._networking().create_namespaced_network_policy,
                             namespace, body)

    # -- events

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._call("create event", self._core().create_namespaced_event, namespace, body)

    # -- AgentFlow resources

    async def get_resource(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = await self._call(f"get {plural}/{name}", self._custom().get_namespaced_custom_object,
                                               GROUP, VERSION, namespace, plural, name)
        return obj

    async def list_resources(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        data = await self._call(f"list {plural}", self._custom().list_namespaced_custom_object,
                                GROUP, VERSION, namespace, plural)
        items: list[dict[str, Any]] = data.get("items", [])
        return items

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._call(f"patch {plural}/{name} status", self._custom().patch_namespaced_custom_object_status,
                         GROUP, VERSION, namespace, plural, name, {"status": status})

    async def patch_resource(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self._call(f"patch {plural}/{name}", self._custom().patch_namespaced_custom_object,
                         GROUP, VERSION, namespace, plural, name, patch)

    # -- Budgets (agentflow.services.budgets)

    async def list_resources_all(self, plural: str) -> list[dict[str, Any]]:
        """Every resource of this kind in every namespace (needs cluster-wide list RBAC)."""
        data = await self._call(f"list {plural} in all namespaces", self._custom().list_cluster_custom_object,
                                GROUP, VERSION, plural)
        items: list[dict[str, Any]] = data.get("items", [])
        return items

    async def patch_status_at(self, plural: str, namespace: str, name: str, status: Mapping[str, Any],
                              resource_version: str) -> bool:
        """Patch the status only if the object is still at ``resource_version``; False when another writer
        changed it first (409 Conflict), so that of two replicas only one acts on what it saw."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            await self._call(f"patch {plural}/{name} status", self._custom().patch_namespaced_custom_object_status,
                             GROUP, VERSION, namespace, plural, name, body)
        except Conflict:
            return False
        return True

    # -- NetworkPolicies of step pods (agentflow.services.reconcile)

    async def delete_network_policy(self, namespace: str, name: str) -> None:
        """Delete a NetworkPolicy; one already gone is fine."""
        with contextlib.suppress(NotFound):
            await self._call(f"delete networkpolicy {namespace}/{name}",
                             self._networking().delete_namespaced_network_policy, name, namespace)

    # -- Secrets (agentflow.services.gateway: the provider keys Agents reference)

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of ``key`` in Secret ``namespace/name``; NotFound when the Secret or the key is
        missing (the message says which), Forbidden without RBAC to get Secrets there."""
        import base64

        result = await self._call(f"get secret {namespace}/{name}", self._core().read_namespaced_secret, name,
                                  namespace, _preload_content=False)
        data = (json.loads(result.data).get("data") or {})
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise NotFound(f"Secret {namespace}/{name} has no key {key!r} (its keys: {keys})", 404)
        return base64.b64decode(data[key]).decode("utf-8").strip()
