"""Fakes of AgentFlow's seams, shipped for tests (ours and yours), like httpx's MockTransport.

    FakeKube          the Kube protocol (agentflow.k8s.kube) in memory: pods, NetworkPolicies, Events, Secrets and
                      AgentFlow resources, with the API server's create/conflict and resourceVersion rules
    MemoryStore       the run store (journal, attempt payloads, step results) of the reconciler, the callback
                      server and the gateway's authenticator, in memory, with fencing like PostgresStore's
    MemoryAuditSink   an AuditSink that keeps the events
    MemoryOutbox      the events outbox (agentflow.storage.outbox) in memory: rows, the lease, the lag
    MemoryStream      an EventSink (agentflow.events.publisher) that keeps messages and drops a repeated
                      Nats-Msg-Id, like a JetStream stream within its duplicate window
    waiting_run       a large local run (thousands of approval steps and fan-out items, all waiting), written
                      to a state directory without any model call: the console's tests and benchmark
    RbacKube          a FakeKube as one user (agentflow.console.cluster.UserKube): whoami, and calls refused the
                      way the API server refuses them (403 with its message) unless a grant allows the verb

Every FakeKube call yields to the event loop once, as a real API call does, so concurrent callers
interleave. Each fake records what it was asked (``created``, ``deleted``, ``statuses``, ``patches``,
``events`` ...) and can be told to fail (``fail_creates`` with ``create_error``, ``fail``), so tests check
behaviour, not calls into a mock library. Nothing in the product imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .audit.records import AuditEvent
from .engine.journal import Record
from .engine.run import Run
from .engine.values import Event, EventType
from .k8s.kube import RBAC_HINT, AccessDecision, Conflict, Forbidden, KubeError, NotFound, TokenReview
from .services import approvals
from .storage.attempts import AttemptPod
from .storage.errors import JournalConflict
from .storage.retention import Collected, RunRef
from .telemetry import TraceSettings, Tracing

if TYPE_CHECKING:
    from .events.settings import StreamSettings
    from .events.wire import EventMessage
    from .prompts.suite import SuiteResult
    from .storage.outbox import Claim, EventSource, OutboxRow, OutboxStats

__all__ = ["SIGNING_KEY", "FakeKube", "MemoryAuditSink", "MemoryOutbox", "MemoryStore", "MemoryStream", "RbacKube",
           "RecordedSpans", "decided_by", "recording_tracing", "waiting_run"]


def _selected(labels: Mapping[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        if sep and labels.get(key) != value:
            return False
        if not sep and key not in labels:
            return False
    return True


class FakeKube:
    """In-memory Kubernetes for tests. Objects are kept by (namespace, name); reads return copies."""

    def __init__(self, *resources: Mapping[str, Any], secrets: Sequence[Mapping[str, Any]] = ()) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.netpols: dict[str, dict[str, Any]] = {}
        self.resources: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.netpols_deleted: list[str] = []
        self.netpols_created: list[str] = []
        self.netpols_replaced: list[str] = []
        self.resources_created: list[str] = []  # "PLURAL/NAME" of AgentFlow resources (Workflows of schedules)
        self.resources_deleted: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.patches: list[dict[str, Any]] = []
        self.secret_reads: list[tuple[str, str]] = []
        self.tokens: dict[str, TokenReview] = {}
        """What ``review_token`` answers for each token (see :meth:`pod_token`); any other is refused."""
        self.reviews = 0
        self.grants: set[tuple[str, str, str, str]] = set()
        """What ``review_access`` allows: (user or group, namespace, verb, "resource/subresource"); :meth:`grant`."""
        self.access_reviews: list[dict[str, Any]] = []  # the SubjectAccessReviews asked, in order
        self.access_error: KubeError | None = None  # what review_access raises, when set
        self.fail_creates = 0
        self.create_error: KubeError | None = None  # what the next fail_creates pod creations raise
        self.list_error: KubeError | None = None  # what listing AgentFlow resources raises while set
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.lease_error: KubeError | None = None  # what every Lease call raises while set (the API away)
        self.closed = False
        for body in resources:
            self.add_resource(body)
        for secret in secrets:
            self.add_secret(secret)

    # -- set-up helpers

    @staticmethod
    def plural(kind: str) -> str:
        return {"Workflow": "workflows", "Agent": "agents", "PromptVersion": "promptversions",
                "ToolPolicy": "toolpolicies", "Budget": "budgets", "WorkflowTemplate": "workflowtemplates",
                "WorkflowSchedule": "workflowschedules", "WorkflowTrigger": "workflowtriggers",
                "PromptRollout": "promptrollouts", "ClusterWorkflowTemplate": "clusterworkflowtemplates"}[kind]

    CLUSTER_SCOPED = frozenset({"clusterworkflowtemplates"})
    """Plurals kept under namespace "" (cluster-scoped kinds)."""

    def add_resource(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        obj = copy.deepcopy(dict(body))
        obj["metadata"].setdefault("resourceVersion", "1")
        plural = self.plural(body["kind"])
        namespace = "" if plural in self.CLUSTER_SCOPED else meta.get("namespace", "default")
        self.resources[(plural, namespace, meta["name"])] = obj

    def add_secret(self, body: Mapping[str, Any]) -> None:
        """A Secret with ``stringData`` or decoded ``data``."""
        meta = body["metadata"]
        secret = copy.deepcopy(dict(body))
        secret["data"] = {**dict(secret.pop("stringData", {}) or {}), **dict(secret.get("data") or {})}
        self.secrets[(meta.get("namespace", "default"), meta["name"])] = secret

    # -- pods

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> str | None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        if self.fail_creates:
            self.fail_creates -= 1
            raise self.create_error or KubeError("create pod: connection reset")
        name = body["metadata"]["name"]
        if name in self.pods:
            return None
        pod = copy.deepcopy(dict(body))
        pod["metadata"]["uid"] = f"uid-{name}-{len(self.created)}"
        pod["status"] = {"phase": "Pending"}
        self.pods[name] = pod
        self.created.append(name)
        return str(pod["metadata"]["uid"])

    def pod_token(self, name: str, namespace: str = "team", *, uid: str | None = None) -> str:
        """A token the fake API server says belongs to pod ``namespace/name`` (its uid, or ``uid``)."""
        pod = self.pods.get(name)
        token = f"pod-token-{namespace}-{name}-{len(self.tokens)}"
        self.tokens[token] = TokenReview(True, f"system:serviceaccount:{namespace}:default", namespace, name,
                                         uid or (str(pod["metadata"]["uid"]) if pod else "uid-unknown"))
        return token

    async def delete_pod(self, namespace: str, name: str) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        if self.pods.pop(name, None) is not None:
            self.deleted.append(name)

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        return [copy.deepcopy(p) for p in self.pods.values()
                if _selected(p["metadata"].get("labels") or {}, label_selector)]

    def set_pod_phase(self, name: str, phase: str, **status: Any) -> None:
        self.pods[name]["status"] = {"phase": phase, **status}

    # -- network policies

    async def apply_network_policy(self, namespace: str, body: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        name = body["metadata"]["name"]
        if name not in self.netpols:
            self.netpols[name] = copy.deepcopy(dict(body))
            self.netpols[name]["metadata"].setdefault("resourceVersion", "1")
            self.netpols_created.append(name)

    async def get_network_policy(self, namespace: str, name: str) -> dict[str, Any]:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        policy = self.netpols.get(name)
        if policy is None:
            raise NotFound(f"get networkpolicy {namespace}/{name}: 404", 404)
        return copy.deepcopy(policy)

    async def replace_network_policy(self, namespace: str, body: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        name = body["metadata"]["name"]
        current = self.netpols.get(name)
        if current is None:
            raise NotFound(f"replace networkpolicy {namespace}/{name}: 404", 404)
        version = str(current["metadata"].get("resourceVersion", "1"))
        if body["metadata"].get("resourceVersion") not in (None, version):
            raise Conflict(f"replace networkpolicy {namespace}/{name}: the object has been modified", 409)
        replaced = copy.deepcopy(dict(body))
        replaced["metadata"]["resourceVersion"] = str(int(version) + 1)
        self.netpols[name] = replaced
        self.netpols_replaced.append(name)

    async def delete_network_policy(self, namespace: str, name: str) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        if self.netpols.pop(name, None) is not None:
            self.netpols_deleted.append(name)

    # -- events

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        if any(e["metadata"]["name"] == body["metadata"]["name"] for e in self.events):
            raise Conflict(f"event {body['metadata']['name']} exists", 409)
        self.events.append(copy.deepcopy(dict(body)))

    # -- AgentFlow resources

    async def get_resource(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        obj = self.resources.get((plural, namespace, name))
        if obj is None:
            raise NotFound(f"get {plural}/{name}: 404", 404)
        return copy.deepcopy(obj)

    async def get_cluster_resource(self, plural: str, name: str) -> dict[str, Any]:
        return await self.get_resource(plural, "", name)

    async def list_resources(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        if self.list_error is not None:
            raise self.list_error
        return [copy.deepcopy(o) for (p, ns, _), o in sorted(self.resources.items()) if p == plural
                and ns == namespace]

    async def list_resources_all(self, plural: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        if self.list_error is not None:
            raise self.list_error
        return [copy.deepcopy(o) for (p, _, _), o in sorted(self.resources.items()) if p == plural]

    def _bump(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"].get("resourceVersion", "1")) + 1)

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        self._patch_status(plural, namespace, name, status)

    def _patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.statuses.append(copy.deepcopy(dict(status)))
        obj = self.resources.get((plural, namespace, name))
        if obj is not None:
            obj["status"] = {**(obj.get("status") or {}), **copy.deepcopy(dict(status))}
            self._bump(obj)

    async def patch_status_at(self, plural: str, namespace: str, name: str, status: Mapping[str, Any],
                              resource_version: str) -> bool:
        """Like the API server: the check and the write are one step (no other call comes between)."""
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        obj = self.resources[(plural, namespace, name)]
        if obj["metadata"].get("resourceVersion") != resource_version:
            return False
        self._patch_status(plural, namespace, name, status)
        return True

    async def patch_resource(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        self.patches.append(copy.deepcopy(dict(patch)))
        obj = self.resources.get((plural, namespace, name))
        if obj is not None:
            _merge(obj, patch)
            self._bump(obj)

    async def create_resource(self, plural: str, namespace: str, body: Mapping[str, Any]) -> bool:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        key = (plural, namespace, body["metadata"]["name"])
        if key in self.resources:
            return False
        obj = copy.deepcopy(dict(body))
        obj["metadata"].setdefault("namespace", namespace)
        obj["metadata"].setdefault("uid", f"uid-{plural}-{namespace}-{key[2]}")
        obj["metadata"].setdefault("resourceVersion", "1")
        self.resources[key] = obj
        self.resources_created.append(f"{plural}/{key[2]}")
        return True

    async def delete_resource(self, plural: str, namespace: str, name: str, *, uid: str | None = None) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        found = self.resources.get((plural, namespace, name))
        if found is not None and uid is not None and (found.get("metadata") or {}).get("uid") != uid:
            return  # the precondition fails: another object of that name
        if self.resources.pop((plural, namespace, name), None) is not None:
            self.resources_deleted.append(f"{plural}/{name}")

    # -- secrets

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any]:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        self.secret_reads.append((namespace, name))
        secret = self.secrets.get((namespace, name))
        if secret is None:
            raise NotFound(f"Secret {namespace}/{name} not found", 404)
        return copy.deepcopy(secret)

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        data = (await self.read_secret(namespace, name)).get("data") or {}
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise NotFound(f"Secret {namespace}/{name} has no key {key!r} (its keys: {keys})", 404)
        return str(data[key]).strip()

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> bool:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        if (namespace, body["metadata"]["name"]) in self.secrets:
            return False
        self.add_secret({**body, "metadata": {**body["metadata"], "namespace": namespace}})
        return True

    async def delete_secret(self, namespace: str, name: str) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        self.secrets.pop((namespace, name), None)

    # -- Leases (agentflow.services.shards)

    async def _lease_call(self) -> None:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        if self.lease_error is not None:
            raise self.lease_error

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> bool:
        await self._lease_call()
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            return False
        self.leases[key] = copy.deepcopy(dict(body))
        return True

    async def patch_lease(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self._lease_call()
        lease = self.leases.get((namespace, name))
        if lease is None:
            raise NotFound(f"patch lease {namespace}/{name}: leases.coordination.k8s.io {name!r} not found", 404)
        lease.setdefault("spec", {}).update(copy.deepcopy(dict(patch.get("spec") or {})))

    async def list_leases(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        await self._lease_call()
        key, _, value = label_selector.partition("=")
        return [copy.deepcopy(body) for (ns, _name), body in sorted(self.leases.items())
                if ns == namespace and (body.get("metadata", {}).get("labels") or {}).get(key) == value]

    async def delete_lease(self, namespace: str, name: str) -> None:
        await self._lease_call()
        self.leases.pop((namespace, name), None)

    # -- authentication

    async def review_token(self, token: str, audiences: Sequence[str]) -> TokenReview:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        self.reviews += 1
        review = self.tokens.get(token)
        if review is None or (review.pod_name and review.pod_name not in self.pods):
            return TokenReview(False, error="invalid bearer token")
        return review

    # -- authorization

    def grant(self, subject: str, namespace: str, verb: str, resource: str) -> None:
        """Let a user (or every member of a group) do ``verb`` on ``resource`` ("workflows/approval") there."""
        self.grants.add((subject, namespace, verb, resource))

    async def review_access(self, review: Mapping[str, Any]) -> AccessDecision:
        await asyncio.sleep(0)  # an API call yields to other tasks, as real I/O does
        self.access_reviews.append(copy.deepcopy(dict(review)))
        if self.access_error is not None:
            raise self.access_error
        spec = review.get("spec") or {}
        attrs = spec.get("resourceAttributes") or {}
        resource = "/".join(p for p in (attrs.get("resource"), attrs.get("subresource")) if p)
        for subject in (spec.get("user"), *(spec.get("groups") or [])):
            if (subject, attrs.get("namespace"), attrs.get("verb"), resource) in self.grants:
                return AccessDecision(True, f"granted to {subject}")
        return AccessDecision(False)

    def close(self) -> None:
        self.closed = True


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """A JSON merge patch (RFC 7386): None deletes."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class MemoryStore:
    """The run store in memory: journals (fenced: a batch must continue the stored head), attempts, results."""

    def __init__(self) -> None:
        self.journals: dict[str, list[Record]] = {}
        self.evaluations: dict[str, dict[str, Any]] = {}  # by run uid: where, and SuiteResult.to_dict()
        self.attempts: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.results: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], tuple[str, str, int, str, str | None]] = {}
        self.pod_uids: dict[tuple[str, str, int], str] = {}
        self.sources: dict[str, list[EventSource | None]] = {}
        """The EventSource given with each append, per run."""
        self.notifications: dict[tuple[str, str, str], tuple[str, str]] = {}
        """(run uid, node, key) -> (outcome, detail) of approval notifications."""
        self.fail: Exception | None = None

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def load_journal(self, run_uid: str, after_seq: int = -1) -> list[Record]:
        self._check()
        return [r for r in self.journals.get(run_uid, []) if r.seq > after_seq]

    async def append(self, run_uid: str, records: Sequence[Record], source: EventSource | None = None) -> None:
        self._check()
        journal = self.journals.setdefault(run_uid, [])
        if records and records[0].seq != len(journal):
            raise JournalConflict(run_uid, records[0].seq, f"the stored journal has {len(journal)} records")
        journal.extend(records)
        if records:
            self.sources.setdefault(run_uid, []).append(source)

    async def family_runs(self, namespace: str, family: str, *, since: float, types: Sequence[str],
                          limit: int) -> list[tuple[str, list[Record]]]:
        """PostgresStore.family_runs over the journals kept here (a run's namespace: its appends' EventSource)."""
        self._check()
        found: list[tuple[float, str]] = []
        for uid, records in self.journals.items():
            first = records[0] if records else None
            if first is None or first.event.type.value != "RunStarted" or first.event.at < since:
                continue
            if not any(s is not None and s.namespace == namespace for s in self.sources.get(uid, [])):
                continue
            prompts = first.event.data.get("prompts") or {}
            if any(isinstance(c, Mapping) and c.get("family") == family for c in prompts.values()):
                found.append((first.event.at, uid))
        chosen = sorted(sorted(found, reverse=True)[:limit])
        return [(uid, [r for r in self.journals[uid] if r.seq == 0 or r.event.type.value in types])
                for _, uid in chosen]

    async def put_attempt(self, run_uid: str, node: str, attempt: int, payload: Mapping[str, Any], *,
                          pod: AttemptPod | None = None) -> None:
        self._check()
        self.attempts.setdefault((run_uid, node, attempt), copy.deepcopy(dict(payload)))
        if pod is not None:
            self.pods.setdefault((pod.namespace, pod.name), (run_uid, node, attempt, pod.workflow, pod.fingerprint))

    async def set_pod_uid(self, run_uid: str, node: str, attempt: int, pod_uid: str) -> None:
        self._check()
        self.pod_uids.setdefault((run_uid, node, attempt), pod_uid)

    async def attempt_of_pod(self, namespace: str, pod: str) -> AttemptPod | None:
        self._check()
        found = self.pods.get((namespace, pod))
        if found is None:
            return None
        run_uid, node, attempt, workflow, digest = found
        return AttemptPod(namespace, workflow, pod, run_uid, node, attempt,
                          self.pod_uids.get((run_uid, node, attempt)), (run_uid, node, attempt) in self.results,
                          digest)

    async def attempt_ended(self, run_uid: str, node: str, attempt: int) -> bool:
        self._check()
        return (run_uid, node, attempt) in self.results

    async def get_attempt(self, run_uid: str, node: str, attempt: int) -> dict[str, Any] | None:
        self._check()
        payload = self.attempts.get((run_uid, node, attempt))
        return copy.deepcopy(payload) if payload is not None else None

    async def put_result(self, run_uid: str, node: str, attempt: int, result: Mapping[str, Any]) -> bool:
        self._check()
        key = (run_uid, node, attempt)
        if key in self.results:
            return False
        self.results[key] = copy.deepcopy(dict(result))
        return True

    async def has_result(self, run_uid: str, node: str, attempt: int) -> bool:
        self._check()
        return (run_uid, node, attempt) in self.results

    async def get_results(self, run_uid: str) -> dict[tuple[str, int], dict[str, Any]]:
        self._check()
        return {(n, a): copy.deepcopy(r) for (u, n, a), r in self.results.items() if u == run_uid}

    async def notifications_done(self, run_uid: str) -> set[tuple[str, str]]:
        self._check()
        return {(n, k) for (u, n, k) in self.notifications if u == run_uid}

    async def record_notification(self, run_uid: str, node: str, key: str, outcome: str, detail: str = "") -> bool:
        self._check()
        if (run_uid, node, key) in self.notifications:
            return False
        self.notifications[(run_uid, node, key)] = (outcome, detail)
        return True

    async def delete_run(self, run_uid: str) -> Collected:
        return await self.collect([run_uid])

    async def collect(self, run_uids: Sequence[str]) -> Collected:
        """Forget the runs (PostgresStore.collect's twin: rows deleted, by table)."""
        self._check()
        out = Collected({"agentflow_journal": 0, "agentflow_attempts": 0, "agentflow_step_results": 0})
        for run_uid in run_uids:
            out.rows["agentflow_journal"] += len(self.journals.pop(run_uid, []))
            self.sources.pop(run_uid, None)
            self.evaluations.pop(run_uid, None)
            for sent in [k for k in self.notifications if k[0] == run_uid]:
                del self.notifications[sent]
            for name, table in (("agentflow_attempts", self.attempts), ("agentflow_step_results", self.results)):
                for key in [k for k in table if k[0] == run_uid]:
                    del table[key]
                    out.rows[name] += 1
            for pod in [p for p, found in self.pods.items() if found[0] == run_uid]:
                del self.pods[pod]
        return out

    async def runs(self) -> list[RunRef]:
        """Every run with rows, with its namespace when known (from its appends or its pods)."""
        self._check()
        uids = set(self.journals) | {k[0] for k in self.attempts} | {k[0] for k in self.results}
        namespaces = {found[0]: ns for (ns, _), found in self.pods.items()}
        for uid, sources in self.sources.items():
            first = next((s for s in sources if s is not None), None)
            if first is not None:
                namespaces[uid] = first.namespace
        return [RunRef(uid, namespaces.get(uid)) for uid in sorted(uids)]

    async def put_evaluation(self, run_uid: str, namespace: str, workflow: str, trigger: str,
                             result: SuiteResult) -> None:
        self._check()
        self.evaluations.setdefault(run_uid, {"namespace": namespace, "workflow": workflow, "trigger": trigger,
                                              **result.to_dict()})


@dataclasses.dataclass
class MemoryAuditSink:
    """An AuditSink that keeps the events (``fail``: raise it instead)."""

    events: list[AuditEvent] = dataclasses.field(default_factory=list)
    fail: Exception | None = None

    async def append(self, events: Sequence[AuditEvent]) -> None:
        if self.fail is not None:
            raise self.fail
        self.events.extend(events)


SIGNING_KEY = b"agentflow-testing-signing-key-32"
"""The operator's approval signing key in tests (32 bytes)."""


def decided_by(body: Mapping[str, Any], annotation: str, value: str, username: str,
               groups: Sequence[str] = (), *, key: bytes = SIGNING_KEY) -> dict[str, str]:
    """The annotations a request by ``username`` setting ``annotation: value`` on ``body`` leaves once the
    operator's admission webhook stamped them (agentflow.services.approvals.stamp); ApprovalError if it
    refuses."""
    asked = copy.deepcopy(dict(body))
    asked["metadata"] = {**asked.get("metadata", {}), "annotations": {annotation: value}}
    return approvals.stamp(key, asked, body, username, list(groups))


class MemoryOutbox:
    """The events outbox in memory: ``rows`` in id order; one claim at a time (the lease: a second concurrent
    claim gets None); ``fail``: raise it from claim and stats."""

    def __init__(self, rows: Sequence[OutboxRow] = ()) -> None:
        self.rows: list[OutboxRow] = list(rows)
        self.fail: Exception | None = None
        self.claims = 0
        self._lease = asyncio.Lock()

    def add(self, *rows: OutboxRow) -> None:
        self.rows.extend(rows)

    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[Claim | None]:
        from .storage.outbox import Claim

        if self.fail is not None:
            raise self.fail
        if self._lease.locked():
            yield None
            return
        async with self._lease:
            self.claims += 1
            claim = Claim(sorted(self.rows, key=lambda r: r.id)[:limit])
            yield claim
            done = set(claim.published)
            self.rows = [r for r in self.rows if r.id not in done]

    async def stats(self) -> OutboxStats:
        from .storage.outbox import OutboxStats

        if self.fail is not None:
            raise self.fail
        return OutboxStats(len(self.rows), 0.0)


class MemoryStream:
    """An EventSink keeping ``messages`` in arrival order; a repeated Nats-Msg-Id is dropped (publish returns
    False). ``fail``: raise it from every publish; ``fail_after``: publish that many more, then raise ``fail``."""

    def __init__(self) -> None:
        self.messages: list[EventMessage] = []
        self.ids: set[str] = set()
        self.streams: list[StreamSettings] = []
        self.fail: Exception | None = None
        self.fail_after: int | None = None
        self.closed = False

    async def ensure_stream(self, stream: StreamSettings) -> list[str]:
        self.streams.append(stream)
        return []

    async def publish(self, message: EventMessage, stream: str) -> bool:
        await asyncio.sleep(0)
        if self.fail is not None:
            if self.fail_after is None or self.fail_after <= 0:
                raise self.fail
            self.fail_after -= 1
        if message.msg_id in self.ids:
            return False
        self.ids.add(message.msg_id)
        self.messages.append(message)
        return True

    async def close(self) -> None:
        self.closed = True
class RbacKube:
    """One user's view of a FakeKube: ``grants`` holds ``(verb, plural)`` pairs (``get``, ``list``, ``patch``);
    anything else is refused with a 403 worded like the API server's. Shares the FakeKube's objects."""

    def __init__(self, kube: FakeKube, user: str, grants: set[tuple[str, str]]) -> None:
        self.kube, self.user, self.grants = kube, user, grants
        self.closed = False

    def _check(self, verb: str, plural: str, namespace: str, name: str = "") -> None:
        if (verb, plural) not in self.grants:
            what = f'{plural}.agentflow.dev "{name}"' if name else f"{plural}.agentflow.dev"
            said = (f'{what} is forbidden: User "{self.user}" cannot {verb} resource "{plural}" in API group '
                    f'"agentflow.dev" in the namespace "{namespace}"')  # as KubeClient words a 403 (status_message)
            raise Forbidden(f"{verb} {plural}/{name}: 403 Forbidden: {said}{RBAC_HINT}", 403)

    async def whoami(self) -> str:
        await asyncio.sleep(0)
        return self.user

    async def get_resource(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self._check("get", plural, namespace, name)
        return await self.kube.get_resource(plural, namespace, name)

    async def list_resources(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        self._check("list", plural, namespace)
        return await self.kube.list_resources(plural, namespace)

    async def list_resources_all(self, plural: str) -> list[dict[str, Any]]:
        self._check("list-all", plural, "")
        return await self.kube.list_resources_all(plural)

    async def patch_resource(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._check("patch", plural, namespace, name)
        await self.kube.patch_resource(plural, namespace, name, patch)

    async def create_resource(self, plural: str, namespace: str, body: Mapping[str, Any]) -> bool:
        self._check("create", plural, namespace, str(body["metadata"]["name"]))
        return await self.kube.create_resource(plural, namespace, body)

    async def get_cluster_resource(self, plural: str, name: str) -> dict[str, Any]:
        self._check("get", plural, "", name)
        return await self.kube.get_cluster_resource(plural, name)

    def __getattr__(self, name: str) -> Any:  # every other call: refused, this user has no business there
        async def refused(*args: Any, **kwargs: Any) -> Any:
            raise Forbidden(f"{name}: 403 Forbidden (RbacKube grants only {sorted(self.grants)})", 403)
        return refused

    def close(self) -> None:
        self.closed = True


def waiting_run(state_dir: str | Path, steps: int, items: int = 0, name: str = "big") -> str:
    """Write a local run of ``steps`` approval steps (no dependencies) and, with ``items``, one fan-out of that many
    approvals, decided once by the engine so every one of them waits: a large run for the console's tests and
    benchmark, with no model or tool call. Returns the run id."""
    import yaml as _yaml

    from .engine.journal import Journal
    from .runner import session
    from .runner.store import RunStore

    step_list: list[dict[str, Any]] = [{"name": f"s{i:05d}", "kind": "approval"} for i in range(steps)]
    if items:
        step_list.append({"name": "fan", "kind": "approval", "forEach": "inputs.xs"})
    manifest = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
                "spec": {"inputs": {"xs": list(range(items))}, "steps": step_list}}
    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(_yaml.safe_dump(manifest, sort_keys=False))
    bundle = session.load_bundle([path])
    run_dir = session.create_run(RunStore(folder), bundle, [path])
    run = Run(session.plan_of(bundle), run_dir.run_id, int(run_dir.meta["seed"]))
    decision = run.decide(float(run_dir.meta["created"]))
    with run_dir.lock():
        run_dir.append(Journal().extend(decision.events))
    return run_dir.run_id


class RecordedSpans:
    """The spans a :func:`recording_tracing` exported, by name and as a tree (the SDK's InMemorySpanExporter)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()

    @property
    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[Any]:
        return [s for s in self.spans if s.name == prefix or s.name.startswith(prefix + " ")]

    def one(self, name: str) -> Any:
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r}; have {sorted(s.name for s in self.spans)}"
        return found[0]

    def parent_of(self, span: Any) -> Any | None:
        if span.parent is None:
            return None
        return next((s for s in self.spans if s.context.span_id == span.parent.span_id), None)


def recording_tracing(*, content: bool = False, redact: Any = None,
                      url_template: str | None = None) -> tuple[Tracing, RecordedSpans]:
    """A Tracing that exports each span as it ends into memory, and what it recorded."""
    recorded = RecordedSpans()
    settings = TraceSettings(content=content, url_template=url_template)
    return Tracing(settings, exporter=recorded.exporter, redact=redact, batch=False), recorded


def prompt_run_events(version: str, *, at: float = 100.0, family: str = "t", schema_failure: bool = False,
               cost: float = 0.01, score: float | None = None, finished: bool = True,
               reason: str = "candidate") -> list[Event]:
    """The journal events of a run whose llm step ``a`` followed prompt ``family``'s rollout and got ``version``:
    one attempt, answered (or its answer broke the outputSchema), and a step ``b`` of another kind (PromptRollout
    tests: agentflow.quality.versions, agentflow.services.canary)."""
    choice = {"family": family, "name": version, "version": "1", "reason": reason, "bucket": 3}
    end = (Event(EventType.step_failed, "a", {"attempt": 1, "error": {"type": "InvalidModelOutput", "message": "x"}},
                 at + 2.0) if schema_failure else
           Event(EventType.step_succeeded, "a", {"attempt": 1, "output": {}, **({"score": score} if score is not None
                                                                       else {})}, at + 2.0))
    events = [Event(EventType.run_started, None, {"workflow": "w", "prompts": {"a": choice}}, at),
              Event(EventType.step_scheduled, "a", {"step": "a", "kind": "llm", "attempt": 1}, at + 0.5),
              Event(EventType.cost_recorded, "a", {"call": {"kind": "llm", "cost_usd": cost}}, at + 1.0),
              Event(EventType.step_scheduled, "b", {"step": "b", "kind": "tool", "attempt": 1}, at + 0.5),
              Event(EventType.cost_recorded, "b", {"call": {"kind": "llm", "cost_usd": 5.0}}, at + 1.0),  # not t's
              end]
    if finished:
        phase = "Failed" if schema_failure else "Succeeded"
        events.append(Event(EventType.run_finished, None, {"phase": phase}, at + 3.0))
    return events
