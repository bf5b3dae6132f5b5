"""The one module that calls the Kubernetes API.

:class:`Kube` is the seam: the few API calls the operator, the gateway and the CLI make, as a Protocol.
:class:`KubeClient` is the real one over the official client; agentflow.testing.FakeKube keeps objects in
memory for tests. The official client is synchronous; every call runs in a worker thread so it never
blocks kopf's event loop: a pool of the client's own (:data:`API_THREADS`, as many pooled connections), not
asyncio's default executor, whose few threads (CPUs + 4) queued a burst's calls behind each other.
ApiException is translated here, and only here, into :class:`KubeError` subclasses that say what happened::

    KubeError          an API call failed; ``retryable`` says whether trying again may help
    ├── NotFound       404 (not retryable)
    ├── Conflict       409: it exists, or another writer changed it first
    ├── Forbidden      403: RBAC refuses it (not retryable)
    └── Invalid        400/422: the API server refuses the object (not retryable)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

GROUP = "agentflow.dev"
VERSION = "v1alpha1"
API_THREADS = 16
"""Kubernetes API calls of one KubeClient in flight at once (worker threads, and pooled connections)."""
REQUEST_TIMEOUT = (10.0, 60.0)
"""Seconds to connect, and to wait for each read, of a call that gives no timeout of its own. The official client
sends none by default, so a connection the network dropped without a reset held a worker thread (and the
reconcile waiting on it) until TCP gave up, many minutes later; now the call fails with KubeError (retryable:
the next reconcile tries again, and a create that went through answers 409, which the callers handle)."""


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


RBAC_HINT = " (check the operator's RBAC)"
"""Appended to a 401/403: the operator's own calls are refused by its RBAC; :func:`user_words` drops it."""
_STATUS_MESSAGE_CHARS = 1000


def status_message(body: str) -> str:
    """What the API server said: the ``message`` of its Status body (a webhook's refusal, RBAC's verdict in
    full), else the start of the body."""
    try:
        said = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        said = None
    return str(said)[:_STATUS_MESSAGE_CHARS] if said else body[:300]


def user_words(exc: KubeError) -> str:
    """An error as shown to a person acting with their own credentials (the CLI, the console): the API
    server's words, without the hint meant for the operator's RBAC."""
    return str(exc).removesuffix(RBAC_HINT)


def _translate(exc: Exception, what: str) -> KubeError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or type(exc).__name__
    body = getattr(exc, "body", "") or ""
    message = f"{what}: {status or ''} {reason}: {status_message(body)}".strip().removesuffix(":")
    if status == 404:
        return NotFound(message, status)
    if status == 409:
        return Conflict(message, status)
    if status in (401, 403):
        return Forbidden(f"{message}{RBAC_HINT}", status)
    if status in (400, 422):
        return Invalid(message, status)
    return KubeError(message, status)


@dataclasses.dataclass(frozen=True, slots=True)
class TokenReview:
    """What the API server says of a bearer token (a TokenReview): who it is, and the pod it is bound to."""

    authenticated: bool
    username: str = ""
    namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    error: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class AccessDecision:
    """What the API server's authorizers say of a SubjectAccessReview: allowed or not, and their words."""

    allowed: bool
    reason: str = ""
    error: str = ""


class Kube(Protocol):
    """The Kubernetes API calls AgentFlow makes (KubeClient; agentflow.testing.FakeKube in tests)."""

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> str | None: ...
    async def delete_pod(self, namespace: str, name: str) -> None: ...
    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    async def apply_network_policy(self, namespace: str, body: Mapping[str, Any]) -> None: ...
    async def get_network_policy(self, namespace: str, name: str) -> dict[str, Any]: ...
    async def replace_network_policy(self, namespace: str, body: Mapping[str, Any]) -> None: ...
    async def delete_network_policy(self, namespace: str, name: str) -> None: ...
    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None: ...
    async def get_resource(self, plural: str, namespace: str, name: str) -> dict[str, Any]: ...
    async def get_cluster_resource(self, plural: str, name: str) -> dict[str, Any]: ...
    async def list_resources(self, plural: str, namespace: str) -> list[dict[str, Any]]: ...
    async def list_resources_all(self, plural: str) -> list[dict[str, Any]]: ...
    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...
    async def patch_status_at(self, plural: str, namespace: str, name: str, status: Mapping[str, Any],
                              resource_version: str) -> bool: ...
    async def patch_resource(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None: ...
    async def create_resource(self, plural: str, namespace: str, body: Mapping[str, Any]) -> bool: ...
    async def delete_resource(self, plural: str, namespace: str, name: str, *, uid: str | None = None) -> None: ...
    async def read_secret(self, namespace: str, name: str) -> dict[str, Any]: ...
    async def read_secret_key(self, namespace: str, name: str, key: str) -> str: ...
    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> bool: ...
    async def delete_secret(self, namespace: str, name: str) -> None: ...
    async def review_token(self, token: str, audiences: Sequence[str]) -> TokenReview: ...
    async def review_access(self, review: Mapping[str, Any]) -> AccessDecision: ...
    def close(self) -> None: ...


class Leases(Protocol):
    """The Lease calls of shard membership (agentflow.services.shards): KubeClient, and FakeKube in tests."""

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> bool: ...
    async def patch_lease(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None: ...
    async def list_leases(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    async def delete_lease(self, namespace: str, name: str) -> None: ...
    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class ApiServer:
    """Where the API server is and how to trust it; no credentials (agentflow.console acts with each caller's)."""

    host: str
    ca_file: str | None = None
    ca_data: str | None = None
    verify: bool = True
    tls_server_name: str | None = None

    @classmethod
    def discover(cls, kubeconfig: str | None = None, ca_file: str | None = None) -> ApiServer:
        """In a pod: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT with ``ca_file`` (the
        kube-root-ca.crt ConfigMap mounted, or the service account's ca.crt); elsewhere the kubeconfig's server
        and CA. Its user credentials are never used. KubeError when neither is there."""
        import os

        service_host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if service_host:
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            host = f"[{service_host}]" if ":" in service_host else service_host
            ca = ca_file or "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
            if not os.path.isfile(ca):
                raise KubeError(f"no CA certificate of the API server at {ca}: mount the kube-root-ca.crt "
                                "ConfigMap there (the chart does) or pass its path")
            return cls(f"https://{host}:{port}", ca_file=ca)
        from kubernetes import client, config

        base = client.Configuration()
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=base)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as exc:
            raise KubeError(f"cannot find the API server: not in a pod, and the kubeconfig "
                            f"{kubeconfig or '(default)'} is not usable: {exc}") from None
        return cls(str(base.host), ca_file=ca_file or base.ssl_ca_cert, verify=bool(base.verify_ssl),
                   tls_server_name=getattr(base, "tls_server_name", None))


@dataclasses.dataclass
class KubeClient:
    """The real :class:`Kube`, over the official client (built at startup, closed at cleanup)."""

    api_client: Any  # kubernetes.client.ApiClient, built at startup
    _executor: ThreadPoolExecutor | None = dataclasses.field(default=None, repr=False)
    request_timeout: tuple[float, float] = REQUEST_TIMEOUT

    def __post_init__(self) -> None:
        rest = getattr(self.api_client, "rest_client", None)
        if rest is None or getattr(rest, "_agentflow_timeout", None) is not None:
            return
        send = rest.request
        timeout = self.request_timeout

        def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
            return send(*args, _request_timeout=_request_timeout or timeout, **kwargs)

        rest.request = request  # the client's GET, POST, PATCH ... all go through it
        rest._agentflow_timeout = timeout

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> KubeClient:
        """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        settings = client.Configuration.get_default_copy()
        settings.connection_pool_maxsize = API_THREADS  # one pooled connection per worker thread
        return cls(client.ApiClient(settings))

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None) -> tuple[KubeClient, str]:
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

    @classmethod
    def for_bearer_token(cls, server: ApiServer, token: str) -> KubeClient:
        """A client that acts as whoever ``token`` belongs to (a ServiceAccount token, an OIDC id token):
        the API server authenticates it and RBAC decides. Nothing else is sent: no client certificate, no
        other token."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = server.host
        cfg.verify_ssl = server.verify
        cfg.ssl_ca_cert = server.ca_file
        if server.tls_server_name:
            cfg.tls_server_name = server.tls_server_name
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return cls(client.ApiClient(cfg))

    async def whoami(self) -> str:
        """The user name the API server sees for this client's credential (a SelfSubjectReview, which every
        authenticated user may make); Forbidden when the credential is not accepted."""
        from kubernetes import client

        body = client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        review = await self._call("who am I (SelfSubjectReview)",
                                  client.AuthenticationV1Api(self.api_client).create_self_subject_review, body)
        info = review.status.user_info if review.status is not None else None
        return str(getattr(info, "username", None) or "unknown")

    def close(self) -> None:
        self.api_client.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if self._executor is None:
            self._executor = ThreadPoolExecutor(API_THREADS, thread_name_prefix="kube")
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)  # as asyncio.to_thread does
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except ApiException as exc:
            raise _translate(exc, what) from None
        except (HTTPError, OSError) as exc:
            raise KubeError(f"{what}: cannot reach the API server: {exc}") from None
        except UnicodeError as exc:  # a header value (a caller's bearer token) that HTTP cannot carry
            raise KubeError(f"{what}: the request cannot be sent: {exc}", 400) from None

    async def _send(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """A call whose answer is not needed: not decoded into the client's models (CPU under the GIL in a burst);
        its body is read in the worker thread, which gives the connection back to the pool."""
        def call() -> None:
            response = fn(*args, _preload_content=False, **kwargs)
            response.read()
            response.release_conn()

        await self._call(what, call)

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

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> str | None:
        """Create a pod: its uid; None when a pod of that name already exists (deterministic names: never twice)."""
        try:
            result = await self._call(f"create pod {namespace}/{body['metadata']['name']}",
                                      self._core().create_namespaced_pod, namespace, body, _preload_content=False)
        except Conflict:
            return None
        uid = (json.loads(result.data).get("metadata") or {}).get("uid")
        return str(uid) if uid else ""

    async def delete_pod(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._send(f"delete pod {namespace}/{name}", self._core().delete_namespaced_pod, name, namespace,
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
            await self._send("create networkpolicy", self._networking().create_namespaced_network_policy,
                             namespace, body)

    async def get_network_policy(self, namespace: str, name: str) -> dict[str, Any]:
        """A NetworkPolicy as a dict; NotFound when there is none."""
        result = await self._call(f"get networkpolicy {namespace}/{name}",
                                  self._networking().read_namespaced_network_policy, name, namespace,
                                  _preload_content=False)
        policy: dict[str, Any] = json.loads(result.data)
        return policy

    async def replace_network_policy(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Replace a NetworkPolicy (``metadata.resourceVersion`` set: Conflict when it changed since it was read)."""
        name = body["metadata"]["name"]
        await self._send(f"replace networkpolicy {namespace}/{name}",
                         self._networking().replace_namespaced_network_policy, name, namespace, body)

    # -- events

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._send("create event", self._core().create_namespaced_event, namespace, body)

    # -- AgentFlow resources

    async def get_resource(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = await self._call(f"get {plural}/{name}", self._custom().get_namespaced_custom_object,
                                               GROUP, VERSION, namespace, plural, name)
        return obj

    async def get_cluster_resource(self, plural: str, name: str) -> dict[str, Any]:
        """A cluster-scoped one (ClusterWorkflowTemplates)."""
        obj: dict[str, Any] = await self._call(f"get {plural}/{name}", self._custom().get_cluster_custom_object,
                                               GROUP, VERSION, plural, name)
        return obj

    async def list_resources(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        data = await self._call(f"list {plural}", self._custom().list_namespaced_custom_object,
                                GROUP, VERSION, namespace, plural)
        items: list[dict[str, Any]] = data.get("items", [])
        return items

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._send(f"patch {plural}/{name} status", self._custom().patch_namespaced_custom_object_status,
                         GROUP, VERSION, namespace, plural, name, {"status": status})

    async def patch_resource(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self._send(f"patch {plural}/{name}", self._custom().patch_namespaced_custom_object,
                         GROUP, VERSION, namespace, plural, name, patch)

    async def create_resource(self, plural: str, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create one: False when one of that name exists already (deterministic names: never twice)."""
        try:
            await self._send(f"create {plural}/{body['metadata']['name']}",
                             self._custom().create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body)
        except Conflict:
            return False
        return True

    async def delete_resource(self, plural: str, namespace: str, name: str, *, uid: str | None = None) -> None:
        """Delete one (gone already: nothing to do). ``uid``: only that object (a precondition): one of the same
        name created since is another object and stays (the API server answers Conflict; nothing to do either)."""
        if uid is None:
            with contextlib.suppress(NotFound):
                await self._send(f"delete {plural}/{name}", self._custom().delete_namespaced_custom_object,
                                 GROUP, VERSION, namespace, plural, name)
            return
        from kubernetes import client

        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
        with contextlib.suppress(NotFound, Conflict):
            await self._send(f"delete {plural}/{name}", self._custom().delete_namespaced_custom_object,
                             GROUP, VERSION, namespace, plural, name, body=options)

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
            await self._send(f"patch {plural}/{name} status", self._custom().patch_namespaced_custom_object_status,
                             GROUP, VERSION, namespace, plural, name, body)
        except Conflict:
            return False
        return True

    # -- NetworkPolicies of step pods (agentflow.services.reconcile)

    async def delete_network_policy(self, namespace: str, name: str) -> None:
        """Delete a NetworkPolicy; one already gone is fine."""
        with contextlib.suppress(NotFound):
            await self._send(f"delete networkpolicy {namespace}/{name}",
                             self._networking().delete_namespaced_network_policy, name, namespace)

    # -- Secrets (agentflow.services.gateway: the provider keys Agents reference)

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any]:
        """Secret ``namespace/name`` with its ``data`` decoded to strings; NotFound, Forbidden without RBAC."""
        import base64

        result = await self._call(f"get secret {namespace}/{name}", self._core().read_namespaced_secret, name,
                                  namespace, _preload_content=False)
        secret: dict[str, Any] = json.loads(result.data)
        data = secret.get("data") or {}
        secret["data"] = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}
        return secret

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of ``key`` in Secret ``namespace/name``; NotFound when the Secret or the key is
        missing (the message says which), Forbidden without RBAC to get Secrets there."""
        data = (await self.read_secret(namespace, name)).get("data") or {}
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise NotFound(f"Secret {namespace}/{name} has no key {key!r} (its keys: {keys})", 404)
        return str(data[key]).strip()

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create a Secret; False when one of that name exists."""
        try:
            await self._send(f"create secret {namespace}/{body['metadata']['name']}",
                             self._core().create_namespaced_secret, namespace, body)
        except Conflict:
            return False
        return True

    async def delete_secret(self, namespace: str, name: str) -> None:
        """Delete a Secret; one already gone is fine."""
        with contextlib.suppress(NotFound):
            await self._send(f"delete secret {namespace}/{name}", self._core().delete_namespaced_secret, name,
                             namespace)

    # -- Leases (agentflow.services.shards: the replicas of a sharded operator)

    def _coordination(self) -> Any:
        from kubernetes import client

        return client.CoordinationV1Api(self.api_client)

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create a Lease: False when one of that name exists."""
        try:
            await self._call(f"create lease {namespace}/{body['metadata']['name']}",
                             self._coordination().create_namespaced_lease, namespace, body, _preload_content=False)
        except Conflict:
            return False
        return True

    async def patch_lease(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch a Lease (NotFound when it is gone)."""
        await self._call(f"patch lease {namespace}/{name}", self._coordination().patch_namespaced_lease, name,
                         namespace, patch, _preload_content=False)

    async def list_leases(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = await self._call(f"list leases in {namespace}", self._coordination().list_namespaced_lease,
                                  namespace, label_selector=label_selector, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(result.data).get("items", [])
        return items

    async def delete_lease(self, namespace: str, name: str) -> None:
        """Delete a Lease; one already gone is fine."""
        with contextlib.suppress(NotFound):
            await self._call(f"delete lease {namespace}/{name}", self._coordination().delete_namespaced_lease, name,
                             namespace)

    # -- authentication (agentflow.services.identity: a step pod's bound service-account token)

    async def review_token(self, token: str, audiences: Sequence[str]) -> TokenReview:
        """Ask the API server who ``token`` is (TokenReview, for these audiences) and which pod it is bound to."""
        from kubernetes import client

        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": list(audiences)}}
        api = client.AuthenticationV1Api(self.api_client)
        result: Any = await self._call("create tokenreview", api.create_token_review, body, _preload_content=False)
        status = json.loads(result.data).get("status") or {}
        user = status.get("user") or {}
        extra = user.get("extra") or {}
        username = str(user.get("username", ""))
        namespace = username.split(":")[2] if username.startswith("system:serviceaccount:") else ""

        def first(key: str) -> str:
            values = extra.get(f"authentication.kubernetes.io/{key}") or [""]
            return str(values[0])

        return TokenReview(bool(status.get("authenticated")), username, namespace, first("pod-name"),
                           first("pod-uid"), str(status.get("error", "")))

    # -- authorization (agentflow.services.approvals: may this user approve, a custom RBAC verb)

    async def review_access(self, review: Mapping[str, Any]) -> AccessDecision:
        """Ask the API server's authorizers (RBAC) a SubjectAccessReview: may that user do that?"""
        from kubernetes import client

        api = client.AuthorizationV1Api(self.api_client)
        result: Any = await self._call("create subjectaccessreview", api.create_subject_access_review, dict(review),
                                       _preload_content=False)
        status = json.loads(result.data).get("status") or {}
        return AccessDecision(bool(status.get("allowed")) and not status.get("denied"),
                              str(status.get("reason", "")), str(status.get("evaluationError", "")))
