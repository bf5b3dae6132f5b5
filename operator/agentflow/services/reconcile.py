"""The one idempotent reconcile of a Workflow: desired (spec, journal) vs observed (pods, results).

    load      the run's journal from PostgreSQL (once; then only what this process appends)
    observe   spec.cancel / spec.suspend, approval annotations, stored step results, failed pods
    decide    the pure engine, given the wall clock
    record    append the decision's events to the journal (fenced by sequence number)
    act       store each attempt's payload, create its pod (deterministic name: never twice),
              delete pods to cancel or clean up, write status and Kubernetes Events

It is safe to run again at any time, after any crash: everything it does is
either keyed by (run, node, attempt) or compares desired with observed state.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..callback.tokens import AttemptClaims, issue_token
from ..engine.journal import Journal, Record
from ..engine.plan import Plan, compile_plan
from ..engine.run import Run
from ..engine.values import Event, EventType, StepRequest
from ..k8s import names
from ..k8s.events import event_body, kubernetes_events
from ..k8s.kube import Kube, KubeError
from ..k8s.podspec import Owner, PodConfig, build_step_pod
from ..k8s.status import workflow_status
from ..models import Catalog, ManifestError, Workflow, parse_resource
from ..models.manifests import format_path
from ..runner.executors import step_request_to_dict
from ..validation import check_workflow

log = logging.getLogger("agentflow.reconcile")

PLURAL = "workflows"


class JournalStore(Protocol):
    async def load_journal(self, run_uid: str, after_seq: int = -1) -> list[Record]: ...
    async def append(self, run_uid: str, records: Sequence[Record]) -> None: ...
    async def put_attempt(self, run_uid: str, node: str, attempt: int, payload: Mapping[str, Any]) -> None: ...
    async def get_results(self, run_uid: str) -> dict[tuple[str, int], dict[str, Any]]: ...


class InvalidWorkflow(Exception):
    """The Workflow cannot run as written; the message lists every problem."""


class MissingReferences(Exception):
    """The Workflow refers to Agents, PromptVersions, tools or Budgets not (yet) in its namespace.

    Not final: `kubectl apply -f` of a folder creates the Workflow before what it refers to, so the
    run waits and is checked again.
    """


@dataclasses.dataclass
class Outcome:
    """What one reconcile did and when to come back."""

    phase: str
    finished: bool
    wake_at: float | None
    api_writes: int = 0
    journaled: int = 0


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclasses.dataclass
class RunState:
    """What the reconciler keeps between passes for one run (in memory; the journal is the truth)."""

    plan: Plan
    run: Run
    journal: Journal
    manifests: str
    last_status: dict[str, Any] | None = None
    cleaned: set[str] = dataclasses.field(default_factory=set)


class WorkflowReconciler:
    def __init__(self, kube: Kube, store: JournalStore, key: bytes, pod_config: PodConfig, *,
                 clock: Callable[[], float] = time.time, token_ttl: float = 6 * 3600) -> None:
        self.kube = kube
        self.store = store
        self.key = key
        self.pod_config = pod_config
        self.clock = clock
        self.token_ttl = token_ttl
        self.runs: dict[str, RunState] = {}

    # ------------------------------------------------------------------ load

    async def _state(self, body: Mapping[str, Any], catalog: Catalog) -> RunState:
        uid = str(body["metadata"]["uid"])
        state = self.runs.get(uid)
        if state is not None:
            return state
        try:
            workflow = parse_resource(body)
        except ManifestError as exc:
            raise InvalidWorkflow("; ".join(str(p) for p in exc.problems)) from None
        assert isinstance(workflow, Workflow)
        findings = check_workflow(workflow.spec, None)
        if findings:
            raise InvalidWorkflow("; ".join(f"{format_path(path)}: {msg}" for path, msg in findings))
        missing = check_workflow(workflow.spec, catalog)
        if missing:
            raise MissingReferences("; ".join(f"{format_path(path)}: {msg}" for path, msg in missing))
        plan = compile_plan(workflow)
        records = await self.store.load_journal(uid)
        journal = Journal(records)
        if records:
            run = Run.resume(plan, uid, [r.event for r in records])
        else:
            run = Run(plan, uid, seed=int(uid.replace("-", "")[:8], 16))
        state = RunState(plan, run, journal, _manifests(workflow, catalog))
        self.runs[uid] = state
        return state

    def forget(self, uid: str) -> None:
        self.runs.pop(uid, None)

    # ------------------------------------------------------------- observe

    def _observed_events(self, body: Mapping[str, Any], state: RunState, results: Mapping[tuple[str, int], Any],
                         pods: Sequence[Mapping[str, Any]]) -> list[Event]:
        run = state.run
        now = self.clock()
        spec = body.get("spec", {})
        out: list[Event] = []
        if spec.get("cancel") and run.stop_reason is None and not run.finished:
            out.append(Event(EventType.cancel_requested, None, {"by": "spec.cancel", "reason": ""}, now))
        if bool(spec.get("suspend")) != run.suspended and not run.finished:
            kind = EventType.suspended if spec.get("suspend") else EventType.resumed
            out.append(Event(kind, None, {"by": "spec.suspend"}, now))
        annotations = body.get("metadata", {}).get("annotations") or {}
        for key in (names.APPROVE_ANNOTATION, names.REJECT_ANNOTATION):
            if not annotations.get(key):
                continue
            try:
                decision = names.parse_decision(key, annotations[key])
            except ValueError as exc:
                log.warning("ignoring annotation on %s: %s", body["metadata"].get("name"), exc)
                continue
            node = run.nodes.get(decision.node)
            if node is not None and node.phase == "Waiting":
                out.append(Event(EventType.approval_decided, decision.node, {
                    "approved": decision.approved, "by": decision.by or "kubectl", "reason": decision.reason}, now))
        running = {n.id: n for n in run.nodes.values() if n.phase == "Running"}
        for (node_id, attempt), result in sorted(results.items()):
            node = running.get(node_id)
            if node is None or node.attempt != attempt:
                continue
            out.extend(_result_events(node_id, attempt, result, now))
            running.pop(node_id)
        for pod in pods:
            meta = pod.get("metadata", {})
            pod_node = str((meta.get("annotations") or {}).get(names.NODE_ANNOTATION))
            attempt = int((meta.get("labels") or {}).get(names.ATTEMPT_LABEL, "0"))
            node = running.get(pod_node)
            if node is None or node.attempt != attempt:
                continue
            phase = pod.get("status", {}).get("phase")
            if phase == "Failed":
                reason = pod.get("status", {}).get("reason") or _container_reason(pod) or "PodFailed"
                message = pod.get("status", {}).get("message") or f"pod {meta.get('name')} failed ({reason})"
                out.append(Event(EventType.step_failed, pod_node, {"attempt": attempt, "error": {
                    "type": "PodFailed", "message": f"{reason}: {message}", "retryable": True}}, now))
                running.pop(pod_node)
        return out

    # ---------------------------------------------------------------- act

    async def _record(self, uid: str, state: RunState, events: Sequence[Event], *, apply: bool) -> None:
        if not events:
            return
        if apply:
            for event in events:
                state.run.apply(event)
        records = state.journal.extend(events)
        await self.store.append(uid, records)

    def _pod(self, body: Mapping[str, Any], request: StepRequest) -> dict[str, Any]:
        meta = body["metadata"]
        owner = Owner(str(body.get("apiVersion", "agentflow.dev/v1alpha1")), "Workflow", meta["name"], meta["uid"])
        claims = AttemptClaims(meta["uid"], meta["namespace"], meta["name"], request.node, request.attempt,
                               self.clock() + self.token_ttl)
        token = issue_token(self.key, claims)
        timeout = None if request.deadline is None else max(1.0, request.deadline - self.clock())
        return build_step_pod(owner, meta["namespace"], request, token, self.pod_config, timeout_seconds=timeout)

    async def _start(self, body: Mapping[str, Any], state: RunState, request: StepRequest) -> int:
        uid = body["metadata"]["uid"]
        await self.store.put_attempt(uid, request.node, request.attempt, {
            "request": step_request_to_dict(request), "manifests": state.manifests,
            "workflow": body["metadata"]["name"]})
        created = await self.kube.create_pod(body["metadata"]["namespace"], self._pod(body, request))
        return 1 if created else 0

    async def reconcile(self, body: Mapping[str, Any], catalog: Catalog) -> Outcome:
        meta = body["metadata"]
        uid, namespace, name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
        writes = 0
        state = await self._state(body, catalog)
        run = state.run
        pods = await self.kube.list_pods(namespace, f"{names.RUN_LABEL}={names.label_value(uid)}")
        if not run.finished:
            results = await self.store.get_results(uid)
            observed = self._observed_events(body, state, results, pods)
            await self._record(uid, state, observed, apply=True)
            writes += await self._clear_decisions(body, observed)
            # Attempts journaled as started whose pod does not exist (a crash between journal and create).
            existing = {p["metadata"]["name"] for p in pods}
            for request in run.in_flight():
                if names.pod_name(name, request.node, request.attempt) not in existing:
                    writes += await self._start(body, state, request)
            decision = run.decide(self.clock())
            await self._record(uid, state, decision.events, apply=False)
            for request in decision.start:
                writes += await self._start(body, state, request)
            for node_id in decision.cancel:
                node = run.nodes[node_id]
                await self.kube.delete_pod(namespace, names.pod_name(name, node_id, node.attempt))
                writes += 1
            for etype, reason, message in kubernetes_events(list(observed) + list(decision.events), workflow=name,
                                                            plan=state.plan):
                try:
                    await self.kube.create_event(namespace, event_body(
                        Owner("agentflow.dev/v1alpha1", "Workflow", name, uid), namespace, etype, reason, message,
                        iso(self.clock())))
                    writes += 1
                except KubeError as exc:  # Events are best effort; the status is the record
                    log.warning("could not record event %s on %s/%s: %s", reason, namespace, name, exc)
            wake_at = decision.wake_at
        else:
            wake_at = None
        writes += await self._cleanup(body, state, pods)
        status = workflow_status(run, now=self.clock(), generation=meta.get("generation"),
                                 previous=(body.get("status") or {}).get("conditions") or ())
        if status != state.last_status:
            await self.kube.patch_status(PLURAL, namespace, name, status)
            state.last_status = status
            writes += 1
        return Outcome(run.phase, run.finished, wake_at, writes, len(state.journal))

    async def _clear_decisions(self, body: Mapping[str, Any], observed: Sequence[Event]) -> int:
        """Remove approval annotations once their decision is in the journal."""
        if not any(e.type is EventType.approval_decided for e in observed):
            return 0
        meta = body["metadata"]
        patch = {"metadata": {"annotations": {names.APPROVE_ANNOTATION: None, names.REJECT_ANNOTATION: None}}}
        await self.kube.patch_resource(PLURAL, meta["namespace"], meta["name"], patch)
        return 1

    async def _cleanup(self, body: Mapping[str, Any], state: RunState, pods: Sequence[Mapping[str, Any]]) -> int:
        policy = (body.get("spec") or {}).get("podCleanup", "onSuccess")
        if policy == "never":
            return 0
        writes = 0
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            if pod_name in state.cleaned:
                continue
            node_id = (pod["metadata"].get("annotations") or {}).get(names.NODE_ANNOTATION)
            node = state.run.nodes.get(str(node_id))
            pod_phase = pod.get("status", {}).get("phase")
            # A pod is done with once its node moved on: finished, or retrying with a new attempt. A node that
            # Succeeded has its result stored, so its pod may go even before the kubelet reports it finished.
            if node is None or node.phase not in ("Succeeded", "Failed", "Cancelled", "Skipped", "Retrying"):
                continue
            if pod_phase not in ("Succeeded", "Failed") and node.phase != "Succeeded":
                continue
            keep = policy == "onSuccess" and (pod_phase == "Failed" or node.phase != "Succeeded")
            if keep:
                continue
            await self.kube.delete_pod(body["metadata"]["namespace"], pod_name)
            state.cleaned.add(pod_name)
            writes += 1
        return writes


def _container_reason(pod: Mapping[str, Any]) -> str | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated.get("reason"):
            return f"{terminated['reason']} (exit code {terminated.get('exitCode')})"
    return None


def _result_events(node: str, attempt: int, result: Mapping[str, Any], now: float) -> list[Event]:
    events = [Event(EventType.cost_recorded, node, {"attempt": attempt, "call": call}, now)
              for call in result.get("calls") or []]
    if result.get("error"):
        data: dict[str, Any] = {"attempt": attempt, "error": result["error"]}
        if result.get("output") is not None:
            data["output"] = result["output"]
        events.append(Event(EventType.step_failed, node, data, now))
    else:
        calls = result.get("calls") or []
        events.append(Event(EventType.step_succeeded, node, {
            "attempt": attempt, "output": result.get("output"),
            "costUsd": sum(float(c.get("cost_usd", 0)) for c in calls),
            "tokens": sum(int(c.get("input_tokens", 0)) + int(c.get("output_tokens", 0)) for c in calls)}, now))
    return events


def _manifests(workflow: Workflow, catalog: Catalog) -> str:
    import yaml

    bodies = [workflow.dump()] + [r.dump() for table in (catalog.agents, catalog.prompts, catalog.policies)
                                  for r in table.values()]
    for body in bodies:
        body.pop("status", None)
        body["metadata"] = {k: v for k, v in body["metadata"].items() if k in ("name", "namespace", "labels")}
    return yaml.safe_dump_all(bodies, sort_keys=False)
