"""Workflows in a cluster, for the console (`agentflow ui --cluster`, the chart's console Deployment).

Every call builds a Kubernetes client from the caller's own bearer token (``KubeClient.for_bearer_token``):
the API server authenticates the person and RBAC decides what they see and do. The console holds no
credential of its own for runs; a 403 comes back to the page with the API server's words.

    list / snapshot / watch   Workflows (get/list with the caller's token); the graph from the compiled
                              spec, node states from the PostgreSQL journal of the run (its uid) when the
                              console has the DSN and the caller could read the Workflow, else from status
    decide / cancel           agentflow.services.approvals (what `agentflow approve/cancel -n NS` does): the
                              annotation the reconciler journals, spec.cancel
    resume                    spec.suspend = false
    replay / diff             over the PostgreSQL journals (the caller must be able to read both Workflows)

A run is named ``NAMESPACE:NAME`` in the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from ..client import AsyncClient, ClientError, InputError, RunExists, RunRefused, TemplateNotFound
from ..client.runs import result_of_status
from ..engine.history import diff, history
from ..engine.journal import Record
from ..engine.plan import Plan, PlanError, compile_plan
from ..engine.run import Run
from ..engine.values import Event
from ..k8s import subworkflow
from ..k8s.kube import ApiServer, Kube, KubeClient, KubeError, NotFound, user_words
from ..k8s.kube import Forbidden as KubeForbidden
from ..models import ManifestError, Workflow
from ..models.manifests import parse_resource
from ..runner.replay import ReplayError, replay_exact
from ..services import approvals
from ..storage.errors import StorageError
from ..storage.postgres import PostgresStore
from .details import NodeNotFound, node_detail
from .errors import BadRequest, Conflict, Forbidden, Unauthorized, Unavailable, Unprocessable
from .errors import NotFound as NotFoundError
from .graph import changed, layout, node_views, run_summary
from .source import Caller, RunFilter, RunSnapshot

__all__ = ["ClusterRunSource", "UserKube", "status_views"]

log = logging.getLogger(__name__)

PLURAL = "workflows"
POLL_SECONDS = 1.0
_WHOAMI_TTL = 60.0


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _ref(ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition(":")
    if not sep or not namespace or not name:
        raise BadRequest(f"run {ref!r}: in the cluster a run is NAMESPACE:NAME (e.g. default:customer-support)")
    return namespace, name


def _kube_error(exc: KubeError, user: str, what: str) -> Exception:
    """The console's error for a refused or failed API call, in the API server's own words."""
    words = user_words(exc)  # KubeClient keeps the Status message of the API server (k8s.kube.status_message)
    if isinstance(exc, KubeForbidden) or exc.status in (401, 403):
        if exc.status == 401:
            return Unauthorized(f"the API server does not accept your token ({words}): sign in again")
        return Forbidden(f"RBAC refused {what} for {user or 'you'}: {words}. Ask a cluster admin for a Role "
                         "that allows it")
    if isinstance(exc, NotFound):
        return NotFoundError(f"{what}: not found ({words})")
    if exc.status is None:  # not an answer of the API server: the client's own words name its address
        log.warning("console: %s: %s", what, exc)
        return Unavailable(f"{what}: the API server cannot be reached; the console's log has the details")
    return Unavailable(f"{what}: the API server failed: {words}")


def status_views(plan: Plan, status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Graph node views from a Workflow's status.nodes (when there is no journal to read)."""
    nodes = status.get("nodes") or {}
    views: dict[str, dict[str, Any]] = {}

    def one(n: dict[str, Any]) -> dict[str, Any]:
        return {"phase": n.get("phase", "Pending"), "attempts": int(n.get("attempts") or 0),
                "startedAt": n.get("startedAt"), "finishedAt": n.get("finishedAt"),
                "costUsd": float(n.get("costUsd") or 0.0), "tokens": 0, "message": n.get("message")}

    names = list(plan.units())
    for name in names:
        entry = nodes.get(name)
        items = {k: v for k, v in nodes.items() if isinstance(v, dict) and (
            k.startswith(f"{name}[") or k.startswith(f"{name}#"))}
        if isinstance(entry, dict) and not items:
            views[name] = one(entry)
        elif items:
            counts: dict[str, int] = {}
            for v in items.values():
                counts[v.get("phase", "Pending")] = counts.get(v.get("phase", "Pending"), 0) + 1
            last = one(items[sorted(items)[-1]]) if plan.mode != "dag" else None
            view = last or {"phase": (entry or {}).get("phase") or next(iter(counts)), "attempts": 0,
                            "startedAt": None, "finishedAt": None, "tokens": 0, "message": None,
                            "costUsd": round(sum(float(v.get("costUsd") or 0) for v in items.values()), 6)}
            if plan.mode == "dag":
                view["counts"], view["items"] = dict(sorted(counts.items())), len(items)
            else:
                view["visits"] = len(items)
            views[name] = view
        else:
            views[name] = {"phase": "Pending", "attempts": 0, "startedAt": None, "finishedAt": None,
                           "costUsd": 0.0, "tokens": 0, "message": None}
    return views


class UserKube(Kube, Protocol):
    """The Kubernetes calls made as one caller, and who the API server says that caller is."""

    async def whoami(self) -> str: ...


class ClusterRunSource:
    """:class:`~agentflow.console.source.RunSource` over the API server, as each caller.

    ``connect(token)`` builds the caller's client (default: ``KubeClient.for_bearer_token``; tests pass a fake).
    """

    mode = "cluster"

    def __init__(self, server: ApiServer, store: PostgresStore | None = None,
                 connect: Callable[[str], UserKube] | None = None) -> None:
        self.server = server
        self.store = store
        self.connect: Callable[[str], UserKube] = connect or (lambda token: KubeClient.for_bearer_token(server, token))
        self._names: dict[str, tuple[float, str]] = {}

    @classmethod
    async def create(cls, *, kubeconfig: str | None = None, dsn: str | None = None,
                     ca_file: str | None = None) -> ClusterRunSource:
        try:
            server = ApiServer.discover(kubeconfig, ca_file)
        except KubeError as exc:
            raise Unavailable(str(exc)) from None
        store = None
        if dsn:
            try:
                store = await PostgresStore.connect(dsn, min_size=1, max_size=4)
            except StorageError as exc:
                raise Unavailable(f"--postgres-dsn: {exc}") from None
        return cls(server, store)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()

    # ------------------------------------------------------------------ the caller's client

    @contextlib.asynccontextmanager
    async def _kube(self, caller: Caller) -> AsyncIterator[UserKube]:
        if not caller.token:
            raise Unauthorized("sign in: the cluster console acts with your own bearer token")
        kube = self.connect(caller.token)
        try:
            yield kube
        finally:
            kube.close()

    async def _user(self, kube: UserKube, caller: Caller) -> str:
        assert caller.token is not None
        key = hashlib.sha256(caller.token.encode()).hexdigest()
        hit = self._names.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            name = await kube.whoami()
        except KubeError as exc:
            raise _kube_error(exc, "", "who am I (SelfSubjectReview)") from None
        self._names[key] = (time.monotonic() + _WHOAMI_TTL, name)
        return name

    async def _get(self, kube: UserKube, user: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            return await kube.get_resource(PLURAL, namespace, name)
        except KubeError as exc:
            raise _kube_error(exc, user, f"get workflow {namespace}/{name}") from None

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _plan(body: dict[str, Any]) -> tuple[Workflow, Plan]:
        try:
            workflow = parse_resource(body)
            assert isinstance(workflow, Workflow)
            return workflow, compile_plan(workflow)
        except (ManifestError, PlanError) as exc:
            raise Conflict(f"workflow {body.get('metadata', {}).get('name')}: its spec does not compile: {exc}") \
                from None

    async def _journal(self, body: dict[str, Any], after: int = -1) -> list[Record] | None:
        uid = (body.get("metadata") or {}).get("uid")
        if self.store is None or not uid:
            return None
        try:
            return await self.store.load_journal(str(uid), after)
        except StorageError as exc:
            raise Unavailable(f"the journal of {uid}: {exc}") from None

    def _meta(self, body: dict[str, Any]) -> dict[str, Any]:
        md = body.get("metadata") or {}
        status = body.get("status") or {}
        return {"namespace": md.get("namespace"), "labels": md.get("labels") or {},
                "created": md.get("creationTimestamp"), "uid": md.get("uid"), "traceId": status.get("traceId"),
                "resourceVersion": md.get("resourceVersion"), "journal": self.store is not None}

    async def _state(self, body: dict[str, Any]) -> tuple[Plan, Run | None, list[Event], dict[str, Any], int]:
        """Plan, engine state (None without a journal), events, run summary and seq of one Workflow."""
        workflow, plan = self._plan(body)
        md, status = body.get("metadata") or {}, body.get("status") or {}
        ref = f"{md.get('namespace')}:{md.get('name')}"
        records = await self._journal(body)
        if records:
            events = [r.event for r in records]
            run = Run.resume(plan, ref, events)
            return plan, run, events, run_summary(run, self._meta(body)), records[-1].seq
        progress = str(status.get("progress") or "0/0").partition("/")
        summary = {**self._meta(body), "runId": ref, "workflow": workflow.metadata.name, "mode": plan.mode,
                   "phase": status.get("phase") or "Pending",
                   "finished": status.get("phase") in ("Succeeded", "Failed", "Cancelled"),
                   "reason": status.get("message"),
                   "progress": {"done": int(progress[0] or 0) if progress[0].isdigit() else 0,
                                "total": int(progress[2] or 0) if progress[2].isdigit() else plan.total_steps},
                   "costUsd": float(status.get("costUsd") or 0.0), "tokens": int(status.get("tokens") or 0),
                   "startedAt": status.get("startedAt"), "finishedAt": status.get("finishedAt"),
                   "waiting": sorted(k for k, v in (status.get("nodes") or {}).items()
                                     if isinstance(v, dict) and v.get("phase") == "Waiting"),
                   "failed": sorted(k for k, v in (status.get("nodes") or {}).items()
                                    if isinstance(v, dict) and v.get("phase") == "Failed"),
                   "outputs": status.get("outputs"), "path": []}
        seq = int(md["resourceVersion"]) if str(md.get("resourceVersion", "")).isdigit() else 0
        return plan, None, [], summary, seq

    async def list_runs(self, caller: Caller, where: RunFilter) -> list[dict[str, Any]]:
        async with self._kube(caller) as kube:
            try:
                if where.namespace:
                    items = await kube.list_resources(PLURAL, where.namespace)
                else:
                    items = await kube.list_resources_all(PLURAL)
            except KubeError as exc:
                scope = f"in namespace {where.namespace}" if where.namespace else "in all namespaces (pick one)"
                raise _kube_error(exc, "", f"list workflows {scope}") from None
        rows = []
        for body in sorted(items, key=lambda b: str((b.get("metadata") or {}).get("creationTimestamp")),
                           reverse=True):
            md, status = body.get("metadata") or {}, body.get("status") or {}
            if where.phase and status.get("phase") != where.phase:
                continue
            if not where.matches_labels(md.get("labels") or {}):
                continue
            progress = str(status.get("progress") or "").partition("/")
            rows.append({**self._meta(body), "runId": f"{md.get('namespace')}:{md.get('name')}",
                         "workflow": md.get("name"), "phase": status.get("phase") or "Pending",
                         "progress": {"done": int(progress[0]) if progress[0].isdigit() else 0,
                                      "total": int(progress[2]) if progress[2].isdigit() else 0},
                         "costUsd": float(status.get("costUsd") or 0.0), "tokens": int(status.get("tokens") or 0),
                         "startedAt": status.get("startedAt"), "finishedAt": status.get("finishedAt"),
                         "reason": status.get("message")})
        return rows

    async def snapshot(self, caller: Caller, ref: str) -> RunSnapshot:
        namespace, name = _ref(ref)
        async with self._kube(caller) as kube:
            body = await self._get(kube, "", namespace, name)
        plan, run, _, summary, seq = await self._state(body)
        views = node_views(plan, run) if run is not None else status_views(plan, body.get("status") or {})
        shape = layout(plan)
        return RunSnapshot({"run": summary, "nodes": [{**n, "state": views.get(n["id"], {})} for n in shape.nodes],
                            "edges": list(shape.edges)}, seq)

    async def node(self, caller: Caller, ref: str, node: str) -> dict[str, Any]:
        namespace, name = _ref(ref)
        async with self._kube(caller) as kube:
            body = await self._get(kube, "", namespace, name)
        plan, run, events, _, _ = await self._state(body)
        if run is not None:
            try:
                return node_detail(plan, run, events, node,
                                   lambda child, attempt: f"{namespace}:{subworkflow.child_name(name, child, attempt)}")
            except NodeNotFound:
                raise NotFoundError(f"workflow {namespace}/{name} has no node {node!r}") from None
        entry = ((body.get("status") or {}).get("nodes") or {}).get(node)
        if entry is None and node not in plan.units():
            raise NotFoundError(f"workflow {namespace}/{name} has no node {node!r}")
        entry = entry or {"phase": "Pending"}
        step = plan.step_plan(node)
        spec = step.spec.dump() if step is not None else None
        return {"id": node, "step": node, "phase": entry.get("phase"), "attempts": [], "inputs": None,
                "output": entry.get("outputPreview"), "error": None, "message": entry.get("message"),
                "costUsd": entry.get("costUsd") or 0.0, "tokens": 0, "startedAt": entry.get("startedAt"),
                "finishedAt": entry.get("finishedAt"), "approval": None, "events": [], "eventsOmitted": 0,
                "spec": spec, "note": "from the Workflow's status: give the console --postgres-dsn for attempts, "
                                      "calls and events"}

    async def watch(self, caller: Caller, ref: str, after: int) -> AsyncIterator[dict[str, Any]]:
        namespace, name = _ref(ref)
        async with self._kube(caller) as kube:
            await self._get(kube, "", namespace, name)  # may the caller read it at all? (raises here)
        return self._updates(caller, namespace, name, after)

    async def _updates(self, caller: Caller, namespace: str, name: str, after: int) -> AsyncIterator[dict[str, Any]]:
        sent: dict[str, Any] = {}
        seq = after
        first = True
        while True:
            async with self._kube(caller) as kube:  # re-checked each time: a revoked Role stops the stream
                body = await self._get(kube, "", namespace, name)
            plan, run, _, summary, new_seq = await self._state(body)
            views = node_views(plan, run) if run is not None else status_views(plan, body.get("status") or {})
            if new_seq != seq or first:
                nodes = changed(sent, views)
                if nodes or new_seq != seq:
                    yield {"seq": new_seq, "run": summary, "nodes": nodes}
                sent, seq, first = views, new_seq, False
            if summary.get("finished"):
                return
            await asyncio.sleep(POLL_SECONDS)

    # ------------------------------------------------------------------ actions

    async def decide(self, caller: Caller, ref: str, node: str, approved: bool, reason: str) -> dict[str, Any]:
        namespace, name = _ref(ref)
        async with self._kube(caller) as kube:
            user = await self._user(kube, caller)
            try:
                patch = await approvals.decide(kube, namespace, name, node, approved=approved, reason=reason)
            except approvals.ApprovalError as exc:
                raise Conflict(str(exc)) from None
            except KubeError as exc:
                verb = "approving" if approved else "rejecting"
                raise _kube_error(exc, user, f"{verb} {node} of workflow {namespace}/{name}") from None
        return {"run": ref, "node": node, "decision": "approved" if approved else "rejected", "by": user,
                "patch": patch, "driving": True}

    async def cancel(self, caller: Caller, ref: str, reason: str) -> dict[str, Any]:
        namespace, name = _ref(ref)
        async with self._kube(caller) as kube:
            user = await self._user(kube, caller)
            try:
                patch = await approvals.cancel(kube, namespace, name)
            except approvals.ApprovalError as exc:
                raise Conflict(str(exc)) from None
            except KubeError as exc:
                raise _kube_error(exc, user, f"cancelling workflow {namespace}/{name}") from None
        return {"run": ref, "cancel": "requested", "by": user, "patch": patch}

    async def resume(self, caller: Caller, ref: str) -> dict[str, Any]:
        namespace, name = _ref(ref)
        async with self._kube(caller) as kube:
            user = await self._user(kube, caller)
            body = await self._get(kube, user, namespace, name)
            if not (body.get("spec") or {}).get("suspend"):
                raise Conflict(f"workflow {namespace}/{name} is not suspended; the operator drives it already")
            try:
                await kube.patch_resource(PLURAL, namespace, name, {"spec": {"suspend": False}})
            except KubeError as exc:
                raise _kube_error(exc, user, f"resuming workflow {namespace}/{name}") from None
        return {"run": ref, "resumed": True, "by": user}

    async def retry(self, caller: Caller, ref: str) -> dict[str, Any]:
        raise Conflict("in the cluster a run is a Workflow: apply it again under a new name to retry it "
                       "(the designer's Export gives the manifest)")

    async def _events(self, caller: Caller, ref: str) -> tuple[Plan, list[Event]]:
        namespace, name = _ref(ref)
        if self.store is None:
            raise Conflict("replay and diff read the runs' journals: start the console with --postgres-dsn")
        async with self._kube(caller) as kube:
            body = await self._get(kube, "", namespace, name)
        _, plan = self._plan(body)
        return plan, [r.event for r in await self._journal(body) or []]

    async def replay(self, caller: Caller, ref: str) -> dict[str, Any]:
        plan, events = await self._events(caller, ref)
        try:
            run, _, result = replay_exact(plan, ref, events)
        except ReplayError as exc:
            raise Conflict(f"{ref}: {exc}") from None
        return {"run": ref, "mode": "exact", "phase": run.phase, **result.to_dict()}

    async def diff(self, caller: Caller, a: str, b: str) -> dict[str, Any]:
        (_, left), (_, right) = await self._events(caller, a), await self._events(caller, b)
        return {"a": a, "b": b, **diff(history(left), history(right)).to_dict()}

    async def start(self, caller: Caller, manifests_yaml: str, workflow: str | None) -> dict[str, Any]:
        raise Conflict("the cluster console does not apply manifests: copy the manifest from the designer and "
                       "`kubectl apply -f` it, so your own RBAC and the admission webhook judge it (a run of a "
                       "template: POST /api/template-runs)")

    async def start_template(self, caller: Caller, namespace: str, template: str, kind: str,
                             inputs: dict[str, Any], name: str | None, labels: dict[str, str]) -> dict[str, Any]:
        """A run of a template, made by the application client with the caller's own identity (so RBAC and the
        admission webhook judge it as they judge `kubectl apply`)."""
        if not namespace:
            raise BadRequest("namespace: required (where the run is created)")
        if not _NAMESPACE.fullmatch(namespace):
            raise BadRequest(f"namespace: {namespace[:80]!r} is not a namespace name (a DNS label: lowercase letters, "
                             "digits and '-', at most 63 characters)")
        async with self._kube(caller) as kube:
            client = AsyncClient(namespace, kube=kube)
            try:
                handle = await client.start(template, inputs, name=name, kind=kind,  # type: ignore[arg-type]
                                            labels=labels)
            except ValueError as exc:  # a name or labels the Workflow cannot have (InputError is handled below)
                if isinstance(exc, InputError):
                    raise Unprocessable(str(exc), {"problems": exc.problems}) from None
                raise BadRequest(str(exc)) from None
            except TemplateNotFound as exc:
                raise NotFoundError(str(exc), {"template": exc.template, "kind": exc.kind}) from None
            except RunExists as exc:
                raise Conflict(str(exc), {"refused": True, "field": "name", "name": exc.name}) from None
            except RunRefused as exc:
                raise Forbidden(str(exc), {"refused": True}) from None
            except ClientError as exc:
                raise Unavailable(str(exc)) from None
        return {"runId": f"{namespace}:{handle.name}", "name": handle.name, "namespace": namespace}

    async def result(self, caller: Caller, ref: str) -> dict[str, Any]:
        namespace, name = _ref(ref)
        async with self._kube(caller) as kube:
            body = await self._get(kube, "", namespace, name)
        return result_of_status(name, body.get("status")).to_dict()

    async def audit(self, caller: Caller) -> dict[str, Any]:
        return {"source": "cluster", "rows": [], "report": None,
                "note": "the cluster's audit chain spans every namespace: verify it with `agentflow audit verify "
                        "--postgres-dsn DSN` (it is not shown per user)"}
