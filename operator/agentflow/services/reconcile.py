"""The one idempotent reconcile of a Workflow: desired (spec, journal) vs observed (pods, results).

    load      the run's journal from PostgreSQL (once; then only what this process appends)
    observe   spec.cancel / spec.suspend, approval annotations, stored step results, failed pods
    decide    the pure engine, given the wall clock
    record    append the decision's events to the journal (fenced by sequence number)
    act       store each attempt's payload, create its pod (deterministic name: never twice),
              delete pods to cancel or clean up, write status and Kubernetes Events
    notify    approval notifications due (agentflow.services.notifications: sent in the background, their
              next time is a wake-up)

Tool steps (issue 6): before anything is created, the grant is decided
(agentflow.validation.grants.decide_tool, the same decision the executor makes).
Denied: the attempt fails at once with a non-retryable ToolNotAllowed naming the
Agent, the tool and the policies considered; no pod, no NetworkPolicy. Allowed:
the step's execution profile (agentflow.k8s.profile) gives the pod's runtime
class, resources and env, and its NetworkPolicy: the namespace's baseline (created once
and kept, agentflow.services.isolation) and, when the tool is granted egress,
one of its own (same name as the pod, owned by the Workflow, deleted with the
pod), both before the pod. Tools with
requiresApproval are approval gates in the plan: the step waits like an
approval step. Every decision is appended to the audit sink when there is one.

Namespace quota: no more step pods start in a namespace than the smallest
``maxConcurrentSteps`` of its Budgets; the engine gets the room left as
``decide(capacity=...)`` and the others stay Pending with the reason in status.

It is safe to run again at any time, after any crash: everything it does is
either keyed by (run, node, attempt) or compares desired with observed state.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from ..audit.records import AuditEvent, AuditSink
from ..engine.journal import Journal, Record
from ..engine.plan import Plan, compile_plan
from ..engine.run import Run
from ..engine.values import Event, EventType, StepError, StepRequest
from ..executors.payload import attempt_payload
from ..k8s import names, podspec, subworkflow
from ..k8s.events import HeldEvents, KubeEvent, coalesce, event_body, kubernetes_events
from ..k8s.kube import Forbidden, Invalid, Kube, KubeError, NotFound
from ..k8s.netpol import NetworkConfig
from ..k8s.podspec import Owner, PodConfig, build_step_pod
from ..k8s.profile import Egress, ExecutionProfile, compile_profile, parse_host
from ..k8s.status import trace_url, workflow_phase, workflow_status
from ..models import (
    Catalog,
    ManifestError,
    StepKind,
    StepSpec,
    TemplateRecord,
    Workflow,
    WorkflowSpec,
    parse_resource,
)
from ..models.limits import DEFAULT_WORKFLOW_DEPTH
from ..models.manifests import format_path
from ..prompts.rollout import RolloutError, bind, choices_for, recorded
from ..storage.attempts import AttemptPod
from ..storage.errors import JournalConflict
from ..storage.outbox import EventSource
from ..storage.retention import Collected
from ..telemetry import RunTrace, Tracing, run_ids, steps_of
from ..validation import check_workflow
from ..validation.grants import (
    ToolDenied,
    ToolGrant,
    agent_loops,
    approval_gates,
    decide_agent_server,
    decide_agent_tool,
    decide_tool,
    loop_call_ref,
)
from ..validation.templates import resolve_workflow, template_input_findings, unknown_template
from . import approvals
from .errors import InvalidWorkflow, MissingReferences
from .isolation import StepIsolation
from .notifications import ApprovalNotifier
from .podcache import RunPods

log = logging.getLogger("agentflow.reconcile")

PLURAL = "workflows"
STEP_PODS = f"{names.COMPONENT_LABEL}={names.COMPONENT_STEP},{names.MANAGED_BY_LABEL}={names.MANAGED_BY}"
QUOTA_TTL_SECONDS = 2.0
"""How long a namespace's count of running step pods is reused before it is listed again."""
DEFAULT_MAX_PARALLEL = 50
"""Step pods one Workflow runs at once unless its spec.parallelism is lower (agentflow operator --max-parallel):
a fan-out of thousands of items must not become thousands of pods at once."""
EVENT_WINDOW_SECONDS = 30.0
"""How long progress Events of a run with a step running may be held to be posted as one (k8s.events.coalesce)."""


class JournalStore(Protocol):
    async def load_journal(self, run_uid: str, after_seq: int = -1) -> list[Record]: ...
    async def append(self, run_uid: str, records: Sequence[Record], source: EventSource | None = None) -> None: ...
    async def put_attempt(self, run_uid: str, node: str, attempt: int, payload: Mapping[str, Any], *,
                          pod: AttemptPod | None = None) -> None: ...
    async def set_pod_uid(self, run_uid: str, node: str, attempt: int, pod_uid: str) -> None: ...
    async def attempt_of_pod(self, namespace: str, pod: str) -> AttemptPod | None: ...
    async def get_results(self, run_uid: str) -> dict[tuple[str, int], dict[str, Any]]: ...
    async def delete_run(self, run_uid: str) -> Collected: ...


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
    namespace: str = ""
    workflow: str = ""
    last_status: dict[str, Any] | None = None
    cleaned: set[str] = dataclasses.field(default_factory=set)
    recorded: set[str] = dataclasses.field(default_factory=set)
    """Pods whose uid is recorded with their attempt."""
    notices: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(reason, message) of Warning Events to post: annotations that could not be taken."""
    stale_decision: bool = False
    """An annotation of a decision already journaled is still there: cleared without an Event."""
    trace: RunTrace | None = None
    """The run's spans from its journal (agentflow.telemetry), when tracing is on."""
    held: HeldEvents = dataclasses.field(default_factory=HeldEvents)
    """Progress Events not posted yet (agentflow.k8s.events.coalesce)."""


@dataclasses.dataclass
class _Quota:
    """Step pods running in a namespace, as last counted (plus those started since)."""

    running: int
    counted_at: float


class WorkflowReconciler:
    def __init__(self, kube: Kube, store: JournalStore, pod_config: PodConfig, *,
                 network: NetworkConfig | None = None, signing_key: bytes | None = None, previews: bool = True,
                 clock: Callable[[], float] = time.time,
                 audit: AuditSink | None = None, quota_ttl: float = QUOTA_TTL_SECONDS,
                 max_parallel: int | None = DEFAULT_MAX_PARALLEL, tracing: Tracing | None = None,
                 trace_url_template: str | None = None, notifier: ApprovalNotifier | None = None,
                 max_workflow_depth: int = DEFAULT_WORKFLOW_DEPTH, event_window: float = EVENT_WINDOW_SECONDS,
                 pods: RunPods | None = None) -> None:
        self.kube = kube
        self.notifier = notifier
        self.store = store
        self.pod_config = pod_config
        self.network = network or NetworkConfig()
        self.signing_key = signing_key
        self.previews = previews
        self.clock = clock
        self.audit = audit
        self.quota_ttl = quota_ttl
        self.max_parallel = max_parallel
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.trace_url_template = trace_url_template
        self.max_workflow_depth = max_workflow_depth
        self.runs: dict[str, RunState] = {}
        self._quotas: dict[str, _Quota] = {}
        callback_host, callback_port = parse_host(pod_config.callback_url)
        self._callback: tuple[str, int] = (callback_host, callback_port or 80)
        self._gateway: Egress | None = parse_host(pod_config.gateway_url) if pod_config.gateway_url else None
        self.isolation = StepIsolation(kube, self.network, callback=self._callback, gateway=self._gateway)
        self.pods = pods
        """Step pods from the operator's pod watch (services.podcache); None: listed from the API every pass."""
        self.event_window = event_window

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
        workflow = await self._from_template(body, workflow, catalog)
        findings = check_workflow(workflow.spec, None)
        if findings:
            raise InvalidWorkflow("; ".join(f"{format_path(path)}: {msg}" for path, msg in findings))
        # A tool declared but denied to the step's Agent is not missing: that step fails when it starts.
        missing = check_workflow(workflow.spec, catalog, grants=False)
        if missing:
            raise MissingReferences("; ".join(f"{format_path(path)}: {msg}" for path, msg in missing))
        records = await self.store.load_journal(uid)
        # Steps referring to a prompt family get the version this run recorded when it started, else the one
        # the rollout gives its uid (agentflow.prompts.rollout); the workflow is bound to it for the step pods.
        started = records[0].event.data if records and records[0].event.type is EventType.run_started else {}
        try:
            choices = choices_for(workflow, catalog.prompts, uid, recorded(started), catalog.rollouts)
        except RolloutError as exc:
            raise MissingReferences(f"spec: promptRef: {exc}") from None
        workflow = bind(workflow, choices)
        plan = compile_plan(workflow, approval_gates(workflow.spec, catalog), max_parallel=self.max_parallel,
                            loops=agent_loops(workflow.spec, catalog),
                            prompts={k: c.to_dict() for k, c in choices.items()})
        journal = Journal(records)
        if records:
            run = Run.resume(plan, uid, [r.event for r in records])
        else:
            run = Run(plan, uid, seed=int(uid.replace("-", "")[:8], 16))
        state = RunState(plan, run, journal, _manifests(workflow, catalog), str(body["metadata"]["namespace"]),
                         str(body["metadata"]["name"]))
        if self.tracing is not None:  # the trace goes on where the journal is (another replica, a restart)
            state.trace = RunTrace(uid, state.workflow, namespace=state.namespace, steps=steps_of(plan))
            state.trace.observe([r.event for r in records], emit=False)
        self.runs[uid] = state
        return state

    async def _from_template(self, body: Mapping[str, Any], workflow: Workflow, catalog: Catalog) -> Workflow:
        """A Workflow naming a (Cluster)WorkflowTemplate: the spec it was resolved to when it was first seen (its status
        keeps it: later edits of the template do not change this run), else resolved now and recorded first."""
        ref = workflow.spec.workflow_template_ref
        if ref is None:
            return workflow
        pinned = (body.get("status") or {}).get("templateSpec")
        if isinstance(pinned, Mapping):
            try:
                return workflow.model_copy(update={"spec": WorkflowSpec.model_validate(pinned)})
            except ValidationError as exc:
                raise InvalidWorkflow(f"status.templateSpec: {exc}") from None
        resolved, findings = resolve_workflow(workflow, catalog)
        template = catalog.template(ref)
        if resolved is None or template is None:
            message = "; ".join(f"{format_path(path)}: {msg}" for path, msg in findings)
            if template is None:  # kubectl apply of a folder: the template may come
                raise MissingReferences(message)
            raise InvalidWorkflow(message)
        meta = template.metadata
        record = TemplateRecord(name=ref.name, kind=ref.kind, uid=meta.uid, generation=meta.generation,
                                resource_version=meta.resource_version)
        await self.kube.patch_status("workflows", str(body["metadata"]["namespace"]), str(body["metadata"]["name"]),
                                     {"workflowTemplate": record.dump(), "templateSpec": resolved.spec.dump()})
        return resolved

    def forget(self, uid: str) -> None:
        self.runs.pop(uid, None)

    # ------------------------------------------------------------- observe

    def _observed_events(self, body: Mapping[str, Any], state: RunState, results: Mapping[tuple[str, int], Any],
                         pods: Sequence[Mapping[str, Any]],
                         children: Mapping[str, Mapping[str, Any]] | None = None) -> list[Event]:
        run = state.run
        now = self.clock()
        spec = body.get("spec", {})
        out: list[Event] = []
        if spec.get("cancel") and run.stop_reason is None and not run.finished:
            out.append(Event(EventType.cancel_requested, None, {"by": "spec.cancel", "reason": ""}, now))
        if bool(spec.get("suspend")) != run.suspended and not run.finished:
            kind = EventType.suspended if spec.get("suspend") else EventType.resumed
            out.append(Event(kind, None, {"by": "spec.suspend"}, now))
        out.extend(self._decisions(body, state, now))
        running = {n.id: n for n in run.nodes.values() if n.phase == "Running"}
        for (node_id, attempt), result in sorted(results.items()):
            node = running.get(node_id)
            if node is None or node.attempt != attempt:
                continue
            out.extend(_result_events(node_id, attempt, result, now))
            running.pop(node_id)
        for node_id, child in sorted((children or {}).items()):  # workflow steps: their children's ends
            node = running.get(node_id)
            if node is None:
                continue
            if not subworkflow.is_child_of(child, str(body["metadata"]["uid"]), node_id, node.attempt):
                out.append(Event(EventType.step_failed, node_id, {"attempt": node.attempt, "error": StepError(
                    "WorkflowConflict", f"Workflow {child['metadata'].get('name')} exists but is not the child the "
                    f"operator made for attempt {node.attempt} of {node_id}: it was left alone and the attempt "
                    "failed; delete that Workflow and re-run", retryable=False).to_dict()}, now))
                running.pop(node_id)
                continue
            ended = subworkflow.child_events(node_id, node.attempt, child, now)
            if ended:
                out.extend(ended)
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

    def _decisions(self, body: Mapping[str, Any], state: RunState, now: float) -> list[Event]:
        """Approval decisions from the annotations; one that cannot be taken becomes a notice (a Warning Event)
        and is cleared, never silently ignored. Only decisions the admission webhook stamped with the requesting
        user's identity are journaled (agentflow.services.approvals)."""
        run = state.run
        meta = body.get("metadata", {})
        annotations = meta.get("annotations") or {}
        out: list[Event] = []
        for key in (names.APPROVE_ANNOTATION, names.REJECT_ANNOTATION):
            if not annotations.get(key):
                continue
            try:
                decision = names.parse_decision(key, annotations[key])
            except ValueError as exc:
                state.notices.append(("InvalidApproval", f"{exc}; the annotation was removed"))
                continue
            if self.signing_key is None or not approvals.verified(self.signing_key, str(meta.get("uid")), decision):
                state.notices.append(("ApprovalRefused", f"the {key} annotation for {decision.node} was not set "
                                      "through the operator's admission webhook, so who decided is unknown; it was "
                                      "removed: decide with `agentflow approve` or kubectl while the webhook runs"))
                continue
            node = run.nodes.get(decision.node)
            if any(r.event.type is EventType.approval_decided and r.event.node == decision.node
                   and r.event.data.get("by") == decision.by and r.event.data.get("approved") == decision.approved
                   for r in state.journal.records):
                state.stale_decision = True  # taken already: a view of the Workflow from before it was cleared
                continue
            if node is None or node.phase != "Waiting":
                waiting = sorted(n.id for n in run.nodes.values() if n.phase == "Waiting")
                state.notices.append(("ApprovalRefused", f"{decision.node} does not wait for a decision (waiting: "
                                      f"{', '.join(waiting) or 'none'}); the {key} annotation was removed"))
                continue
            approval = node.plan.spec.approval
            approvers = list(approval.approvers) if approval else []
            if not approvals.may_decide(approvers, decision.by or "", decision.groups):
                # The run's plan is the spec it started with: approvers added to the spec since do not count.
                state.notices.append(("ApprovalRefused", f"{decision.by} is not among the approvers of "
                                      f"{decision.node} ({', '.join(approvers)}); the {key} annotation was removed"))
                continue
            out.append(Event(EventType.approval_decided, decision.node, {
                "approved": decision.approved, "by": decision.by, "groups": list(decision.groups),
                "reason": decision.reason}, now))
        return out

    # ---------------------------------------------------------------- act

    async def _record(self, uid: str, state: RunState, events: Sequence[Event], *, apply: bool) -> None:
        if not events:
            return
        if apply:
            for event in events:
                state.run.apply(event)
        records = state.journal.extend(events)
        # Namespace, Workflow and the phase after these records: for the events outbox (agentflow.events), with
        # the run's trace context when it is traced.
        traced = run_ids(uid).traceparent if state.trace is not None else None
        try:
            await self.store.append(uid, records, EventSource(state.namespace, state.workflow,
                                                              workflow_phase(state.run), traceparent=traced))
        except JournalConflict:  # another writer (a replica that owned this run) extended the journal first:
            self.forget(uid)  # what is kept here is behind it; the next reconcile reads the journal again
            raise
        if state.trace is not None and self.tracing is not None:  # spans only of what was journaled
            self.tracing.emit(state.trace.observe(events))

    def _pod(self, body: Mapping[str, Any], request: StepRequest, profile: ExecutionProfile, *, isolated: bool,
             own_policy: bool) -> dict[str, Any]:
        meta = body["metadata"]
        timeout = None if request.deadline is None else max(1.0, request.deadline - self.clock())
        return build_step_pod(_owner(body), meta["namespace"], request, self.pod_config,
                              timeout_seconds=timeout, runtime_class=profile.runtime_class,
                              resources=profile.resources, env=profile.env, isolated=isolated,
                              own_policy=own_policy)

    async def _audit(self, events: Sequence[AuditEvent]) -> None:
        if self.audit is not None and events:
            await self.audit.append(events)

    def _policy_event(self, body: Mapping[str, Any], request: StepRequest, decision: str, tool: str,
                      agent: str | None, considered: Sequence[str], **data: Any) -> AuditEvent:
        meta = body["metadata"]
        return AuditEvent("policy_decision", "operator", meta["namespace"],
                          f"{meta['namespace']}/{meta['name']}/{request.node}#{request.attempt}", decision,
                          iso(self.clock()), {"tool": tool, "agent": agent, "policiesConsidered": list(considered),
                                              "step": request.step, **data})

    async def _grant(self, body: Mapping[str, Any], state: RunState, request: StepRequest,
                     catalog: Catalog) -> tuple[ExecutionProfile, bool] | StepError:
        """The profile of ``request``'s pod and whether it gets a NetworkPolicy, or why it may not run."""
        step = _step_spec(state.plan, request)
        agent_name = request.agent or (step.agent_ref.name if step is not None and step.agent_ref else None)
        agent = catalog.agents.get(agent_name) if agent_name else None
        call = request.context.get("call") if request.context else None
        if call is None and (step is None or step.kind is not StepKind.tool or request.kind != StepKind.tool.value):
            # llm steps and agent loop turns: the Agent's runtime class; a NetworkPolicy only when model calls
            # go to the gateway, or a turn lists the tools of the loop's MCP servers (their egress too)
            servers = [str(s) for s in (request.context or {}).get("mcp") or []]
            if agent is not None and servers:
                egress: list[Egress] = []
                for server in servers:
                    try:
                        egress.extend(compile_profile(agent, decide_agent_server(agent, server, catalog)).egress)
                    except ToolDenied:
                        continue  # the turn's executor says why
                profile = compile_profile(agent, None)
                return dataclasses.replace(profile, egress=tuple(dict.fromkeys((*profile.egress, *egress)))), True
            return compile_profile(agent, None), self._gateway is not None
        if call is not None and call.get("kind") == "memory":  # run by the gateway, scoped to the attempt's Agent
            return compile_profile(agent, None), self._gateway is not None
        try:
            if call is not None:  # a tool call of an agent loop: the same decision, for the loop's Agent
                if agent is None:
                    raise ToolDenied("UnknownReference", f"Agent {agent_name!r} of step {request.step!r}'s loop is "
                                     "not in this namespace", step=request.step, tool=str(call.get("name")),
                                     agent=agent_name, considered=tuple(sorted(catalog.policies)))
                grant: ToolGrant = decide_agent_tool(agent, loop_call_ref(call), catalog, request.step)
            else:
                assert step is not None
                grant = decide_tool(step, catalog)
        except ToolDenied as denied:
            await self._audit([self._policy_event(body, request, "deny", denied.tool, denied.agent,
                                                  denied.considered, reason=denied.type, message=denied.message)])
            return StepError(denied.type, denied.message, retryable=False)
        profile = compile_profile(grant.agent, grant)
        refused = [f"{h}" + (f":{p}" if p is not None else "") + f": {why}" for h, p in profile.egress
                  if (why := self.network.deny.problem(h, p)) is not None]
        if refused:
            message = (f"step {request.step!r}: tool {grant.tool.name!r} of ToolPolicy {grant.policy_name!r} is "
                       f"granted egress the platform denies: {'; '.join(refused)}")
            await self._audit([self._policy_event(body, request, "deny", grant.tool.name,
                                                  grant.agent.metadata.name if grant.agent else None,
                                                  grant.considered, reason="EgressDenied", message=message)])
            return StepError("EgressDenied", message, retryable=False)
        await self._audit([self._policy_event(body, request, "allow", grant.tool.name,
                                              grant.agent.metadata.name if grant.agent else None, grant.considered,
                                              policy=grant.policy_name)])
        return profile, True

    async def _start(self, body: Mapping[str, Any], state: RunState, request: StepRequest,
                     catalog: Catalog) -> tuple[int, Event | None]:
        """Create the attempt's pod, after the namespace's baseline NetworkPolicy and the pod's own one when it is
        granted egress (services.isolation): (API writes, None), or (0, the StepFailed of a denial); a workflow
        step's child Workflow instead (_start_child)."""
        if request.kind == StepKind.workflow.value:
            return await self._start_child(body, state, request, catalog)
        meta = body["metadata"]
        uid, namespace = meta["uid"], meta["namespace"]
        granted = await self._grant(body, state, request, catalog)
        if isinstance(granted, StepError):
            return 0, Event(EventType.step_failed, request.node,
                            {"attempt": request.attempt, "error": granted.to_dict()}, self.clock())
        profile, isolated = granted
        pod_name = names.pod_name(meta["name"], request.node, request.attempt)
        policy = self.isolation.own_policy(_owner(body), namespace, pod_name, profile) if isolated else None
        pod = self._pod(body, request, profile, isolated=isolated, own_policy=policy is not None)
        await self.store.put_attempt(uid, request.node, request.attempt,
                                     attempt_payload(request, state.manifests, meta["name"]),
                                     pod=AttemptPod(namespace, meta["name"], pod_name,
                                                    fingerprint=podspec.fingerprint(pod)))
        writes = 0
        if isolated:  # before the pod: it never runs unrestricted
            writes += await self.isolation.ensure(namespace)
        if policy is not None:
            await self.kube.apply_network_policy(namespace, policy)
            writes += 1
        created = await self.kube.create_pod(namespace, pod)
        if created:  # the pod's identity: only the pod made here may act for the attempt (services.identity)
            if self.pods is not None:  # seen by the next pass even before the watch tells of it
                self.pods.seed(uid, [{**pod, "metadata": {**pod["metadata"], "uid": created}}])
            await self.store.set_pod_uid(uid, request.node, request.attempt, created)
            state.recorded.add(pod_name)
        return writes + (1 if created is not None else 0), None

    async def _start_child(self, body: Mapping[str, Any], state: RunState, request: StepRequest,
                           catalog: Catalog) -> tuple[int, Event | None]:
        """Create the attempt's child Workflow in this namespace (k8s.subworkflow): (API writes, None), or (0, the
        StepFailed of a child that may not be made: too deep, an unknown template, inputs it does not take, or
        one the API server refuses)."""
        def failed(kind: str, message: str) -> tuple[int, Event]:
            return 0, Event(EventType.step_failed, request.node, {"attempt": request.attempt, "error": StepError(
                kind, f"step {request.step!r}: {message}", retryable=False).to_dict()}, self.clock())

        step = _step_spec(state.plan, request)
        ref = step.workflow_template_ref if step is not None else None
        if ref is None:
            return failed("UnsupportedStepKind", "not a workflow step")
        try:
            depth = subworkflow.depth_of(body) + 1
        except ValueError as exc:
            return failed("WorkflowDepthExceeded", f"{exc}; this run's depth is unknown, so it starts no child")
        if depth > self.max_workflow_depth:
            return failed("WorkflowDepthExceeded", f"a child would be at depth {depth}, deeper than workflow steps "
                          f"may nest (agentflow operator --max-workflow-depth {self.max_workflow_depth}); a template "
                          "that runs itself through workflow steps never ends")
        template = catalog.template(ref)
        if template is None:
            return failed("UnknownTemplate", unknown_template(ref, catalog, ("workflowTemplateRef",))[1])
        findings = template_input_findings(template, request.inputs, ("inputs",))
        if findings:
            return failed("InvalidInputs", "; ".join(f"{format_path(p)}: {m}" for p, m in findings))
        child = subworkflow.child_body(body, request, ref, depth)
        try:
            created = await self.kube.create_resource(PLURAL, str(body["metadata"]["namespace"]), child)
        except (Invalid, Forbidden) as exc:  # the admission webhook or RBAC refuses it: retrying changes nothing
            return failed("ChildRefused", f"the API server refuses its child Workflow "
                          f"{child['metadata']['name']}: {exc}")
        return (1 if created else 0), None

    async def _children(self, namespace: str, name: str, requests: Sequence[StepRequest]
                        ) -> dict[str, dict[str, Any]]:
        """The child Workflows of the running attempts of workflow steps, by node (absent: not made yet, or
        deleted: made again)."""
        out: dict[str, dict[str, Any]] = {}
        for request in requests:
            if request.kind != StepKind.workflow.value:
                continue
            try:
                out[request.node] = await self.kube.get_resource(
                    PLURAL, namespace, subworkflow.child_name(name, request.node, request.attempt))
            except NotFound:
                continue
        return out

    async def _foreign(self, namespace: str, request: StepRequest, pod: Mapping[str, Any]) -> Event | None:
        """The StepFailed of an attempt whose pod name is taken by a pod that is not the one recorded for it;
        None when the pod is the attempt's."""
        name = pod["metadata"]["name"]
        recorded = await self.store.attempt_of_pod(namespace, name)
        if recorded is not None and recorded.pod_uid in (None, pod["metadata"]["uid"]) and (
                recorded.fingerprint is None or recorded.fingerprint == podspec.fingerprint(pod)):
            return None
        message = (f"pod {namespace}/{name} exists but is not the pod the operator made for attempt "
                   f"{request.attempt} of {request.node} (another spec or uid): it was left alone and the attempt "
                   "failed; delete that pod and re-run")
        return Event(EventType.step_failed, request.node, {"attempt": request.attempt, "error": StepError(
            "PodConflict", message, retryable=False).to_dict()}, self.clock())

    async def _capacity(self, namespace: str, catalog: Catalog) -> tuple[int | None, str | None]:
        """How many more step pods may start in ``namespace`` now, and the reason when none may."""
        limits: list[tuple[int, str]] = []
        for budget_name, budget in sorted(catalog.budgets.items()):
            if budget.spec.max_concurrent_steps is not None:
                limits.append((budget.spec.max_concurrent_steps, budget_name))
        if not limits:
            return None, None
        limit, budget_name = min(limits, key=lambda x: x[0])
        now = self.clock()
        quota = self._quotas.get(namespace)
        if quota is None or now - quota.counted_at >= self.quota_ttl:
            pods = await self.kube.list_pods(namespace, STEP_PODS)
            running = sum(1 for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                          and not (p.get("metadata") or {}).get("deletionTimestamp"))
            quota = self._quotas[namespace] = _Quota(running, now)
        room = max(0, limit - quota.running)
        reason = None if room else f"namespace quota: {quota.running} of {limit} steps running (Budget {budget_name})"
        return room, reason

    async def reconcile(self, body: Mapping[str, Any], catalog: Catalog) -> Outcome:
        meta = body["metadata"]
        uid, namespace, name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
        writes = 0
        known = uid in self.runs
        state = await self._state(body, catalog)
        run = state.run
        pods = await self._observe_pods(uid, namespace, first=not known and len(state.journal) > 0)
        waiting_reason = None
        children: dict[str, dict[str, Any]] = {}
        if not run.finished:
            results = await self.store.get_results(uid)
            children = await self._children(namespace, name, run.in_flight())
            observed = self._observed_events(body, state, results, pods, children)
            await self._audit_approvals(body, state, observed)
            await self._record(uid, state, observed, apply=True)
            writes += await self._follow_suspension(namespace, str(meta["uid"]), run, children)
            notices, state.notices = state.notices, []
            stale, state.stale_decision = state.stale_decision, False
            writes += await self._clear_decisions(body, observed, bool(notices) or stale)
            all_events: list[Event] = list(observed)
            # Attempts journaled as started whose pod does not exist (a crash between journal and create).
            existing = {p["metadata"]["name"]: p for p in pods}
            denied: list[Event] = []
            for request in run.in_flight():
                if request.kind == StepKind.workflow.value:  # a child Workflow, not a pod
                    if request.node not in children:
                        w, failure = await self._start(body, state, request, catalog)
                        writes += w
                        denied.extend([failure] if failure else [])
                    continue
                pod_name = names.pod_name(name, request.node, request.attempt)
                if pod_name not in existing:
                    w, failure = await self._start(body, state, request, catalog)
                    writes += w
                    denied.extend([failure] if failure else [])
                elif pod_name not in state.recorded and existing[pod_name]["metadata"].get("uid"):
                    # made by an earlier process that may have stopped before it recorded the pod's uid, or by
                    # someone else under the name the attempt's pod gets: only the pod made here may act for it
                    foreign = await self._foreign(namespace, request, existing[pod_name])
                    if foreign is not None:
                        denied.append(foreign)
                        continue
                    await self.store.set_pod_uid(uid, request.node, request.attempt,
                                                 existing[pod_name]["metadata"]["uid"])
                    state.recorded.add(pod_name)
            await self._record(uid, state, denied, apply=True)
            all_events.extend(denied)
            wake_at: float | None = None
            for _ in range(100):  # a denial fails the step at once: decide again until nothing new starts
                capacity, waiting_reason = await self._capacity(namespace, catalog)
                decision = run.decide(self.clock(), capacity)
                await self._record(uid, state, decision.events, apply=False)
                all_events.extend(decision.events)
                quota = self._quotas.get(namespace) if capacity is not None else None
                pods_started = [r for r in decision.start if r.kind != StepKind.workflow.value]  # children: no pod
                if quota is not None:
                    quota.running += len(pods_started)  # taken before the awaits below: no overshoot
                denied = []
                for request in decision.start:
                    w, failure = await self._start(body, state, request, catalog)
                    writes += w
                    if failure is not None:
                        denied.append(failure)
                        if quota is not None and request.kind != StepKind.workflow.value:
                            quota.running -= 1
                for node_id in decision.cancel:
                    node = run.nodes[node_id]
                    if node.plan.kind is StepKind.workflow and node.parent is None:  # its child is cancelled
                        writes += await self._cancel_child(namespace, name, node_id, node.attempt)
                        continue
                    pod_name = names.pod_name(name, node_id, node.attempt)
                    await self.kube.delete_pod(namespace, pod_name)
                    writes += 1
                    seen = existing.get(pod_name)  # one made in this pass is not listed: its policy may exist
                    if seen is None or _own_policy(seen):
                        await self.kube.delete_network_policy(namespace, pod_name)
                        writes += 1
                wake_at = decision.wake_at
                if not denied:
                    break
                await self._record(uid, state, denied, apply=True)
                all_events.extend(denied)
            _, waiting_reason = await self._capacity(namespace, catalog)  # the count just updated, no API call
            if waiting_reason is not None and not run.finished:
                retry = self.clock() + self.quota_ttl
                wake_at = retry if wake_at is None else min(wake_at, retry)
            now = self.clock()
            running = any(n.phase == "Running" for n in run.nodes.values())
            posts, state.held = coalesce(state.held, kubernetes_events(all_events, workflow=name, plan=state.plan),
                                         now, window=self.event_window, hold=running and not run.finished)
            posts = [(KubeEvent("Warning", reason, message), now) for reason, message in notices] + posts
            writes += await self._post_events(namespace, name, uid, posts)
            due = state.held.due(self.event_window)
            if due is not None:
                wake_at = due if wake_at is None else min(wake_at, due)
        else:
            wake_at = None
        if self.notifier is not None:  # in the background: never blocks or fails the run
            notify_at = await self.notifier.observe(body, run, state.journal.records)
            if notify_at is not None and not run.finished:
                wake_at = notify_at if wake_at is None else min(wake_at, notify_at)
        writes += await self._cleanup(body, state, pods)
        trace = state.trace.trace_hex if state.trace is not None else None
        status = workflow_status(run, now=self.clock(), generation=meta.get("generation"), previews=self.previews,
                                 previous=(body.get("status") or {}).get("conditions") or (), trace_id=trace,
                                 trace_url=trace_url(self.trace_url_template, trace))
        if waiting_reason is not None and not run.finished:
            _quota_status(status, run, waiting_reason)
        _child_status(status, run, name, children)
        if status != state.last_status:
            await self.kube.patch_status(PLURAL, namespace, name, status)
            state.last_status = status
            writes += 1
        return Outcome(run.phase, run.finished, wake_at, writes, len(state.journal))

    async def _follow_suspension(self, namespace: str, uid: str, run: Run,
                                 children: Mapping[str, Mapping[str, Any]]) -> int:
        """Suspend the running children of a suspended run, resume those it suspended once it is resumed
        (agentflow.k8s.subworkflow.suspension_patch); the writes made. A child gone meanwhile needs nothing."""
        writes = 0
        for node_id, child in sorted(children.items()):
            node = run.nodes.get(node_id)
            if node is None or node.phase != "Running" or not subworkflow.is_child_of(child, uid, node_id,
                                                                                         node.attempt):
                continue
            patch = subworkflow.suspension_patch(child, run.suspended and not run.finished)
            if patch is None:
                continue
            try:
                await self.kube.patch_resource(PLURAL, namespace, str(child["metadata"]["name"]), patch)
            except NotFound:
                continue
            writes += 1
        return writes

    async def _cancel_child(self, namespace: str, name: str, node: str, attempt: int) -> int:
        """Cancel an attempt's child Workflow (spec.cancel, as `agentflow cancel` does); one gone or never made
        needs nothing."""
        try:
            await self.kube.patch_resource(PLURAL, namespace, subworkflow.child_name(name, node, attempt),
                                           approvals.cancel_patch())
        except NotFound:
            return 0
        return 1

    async def _observe_pods(self, uid: str, namespace: str, *, first: bool) -> list[dict[str, Any]]:
        """The run's pods: from the pod watch (``self.pods``), listed from the API when there is none, and the first
        time this process drives a run that has started (after a restart the watch may not have told yet)."""
        if self.pods is not None and not first:
            return self.pods.of(uid)
        pods = await self.kube.list_pods(namespace, f"{names.RUN_LABEL}={names.label_value(uid)}")
        if self.pods is not None:
            self.pods.seed(uid, pods)
        return pods

    async def _post_events(self, namespace: str, name: str, uid: str,
                           posts: Sequence[tuple[KubeEvent, float]]) -> int:
        """Create the Events about Workflow ``name``; best effort (the status is the record): the writes made."""
        writes = 0
        now = iso(self.clock())
        for event, first in posts:
            try:
                await self.kube.create_event(namespace, event_body(
                    Owner("agentflow.dev/v1alpha1", "Workflow", name, uid), namespace, event.type, event.reason,
                    event.message, now, first_iso=iso(first)))
                writes += 1
            except KubeError as exc:
                log.warning("could not record event %s on %s/%s: %s", event.reason, namespace, name, exc)
        return writes

    async def _audit_approvals(self, body: Mapping[str, Any], state: RunState, observed: Sequence[Event]) -> None:
        """An ``approval`` audit event per decision, before it is journaled (a failed append is retried)."""
        if self.audit is None:
            return
        meta = body["metadata"]
        out = []
        for event in observed:
            if event.type is not EventType.approval_decided:
                continue
            node = state.run.nodes.get(str(event.node))
            gate = state.run.gates.get(node.key) if node is not None else None
            data = {"node": event.node, "reason": event.data.get("reason", "")}
            if gate is not None:
                data.update(tool=gate.tool, policy=gate.policy)
            out.append(AuditEvent("approval", f"user:{event.data.get('by') or 'unknown'}", meta["namespace"],
                                  f"{meta['namespace']}/{meta['name']}/{event.node}",
                                  "approved" if event.data.get("approved") else "rejected", iso(event.at), data))
        await self._audit(out)

    async def _clear_decisions(self, body: Mapping[str, Any], observed: Sequence[Event], refused: bool) -> int:
        """Remove approval annotations once their decision is in the journal (or was refused)."""
        if not refused and not any(e.type is EventType.approval_decided for e in observed):
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
            writes += 1
            if _own_policy(pod):  # a pod with no policy of its own is under the namespace's baseline only
                await self.kube.delete_network_policy(body["metadata"]["namespace"], pod_name)
                writes += 1
            state.cleaned.add(pod_name)
        return writes


def _own_policy(pod: Mapping[str, Any]) -> bool:
    """Whether the step pod has a NetworkPolicy of its own (named like it)."""
    return bool(((pod.get("metadata") or {}).get("annotations") or {}).get(names.NETWORK_POLICY_ANNOTATION))


def _owner(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(str(body.get("apiVersion", "agentflow.dev/v1alpha1")), "Workflow", meta["name"], meta["uid"])


def _step_spec(plan: Plan, request: StepRequest) -> StepSpec | None:
    """The spec of the DAG step, the state's step or the tree leaf the request names (StepRequest.step), or of
    the step of a plan it runs (its spec is in the request: agentflow.engine.planner)."""
    planned = request.context.get("planned") if request.context else None
    if planned is not None:
        try:
            return StepSpec.model_validate(planned)
        except ValueError:
            return None
    step = plan.step_plan(request.step)
    return step.spec if step is not None else None


def _child_status(status: dict[str, Any], run: Run, name: str, children: Mapping[str, Mapping[str, Any]]) -> None:
    """``nodes[NODE].workflow`` (name, phase) of the workflow steps' nodes the status lists."""
    nodes = status.get("nodes") or {}
    steps = {nid: (n.attempt, n.phase, n.error.type if n.error is not None else None)
             for nid, n in run.nodes.items() if nid in nodes and n.plan.kind is StepKind.workflow and n.parent is None}
    if not steps:
        return
    observed = {nid: subworkflow.child_phase(c) for nid, c in children.items()}
    for nid, child in subworkflow.child_statuses(steps, name, observed).items():
        nodes[nid]["workflow"] = child


def _quota_status(status: dict[str, Any], run: Run, reason: str) -> None:
    """Say on the status why Pending nodes do not start: the namespace's step quota is full."""
    pending = [n.id for n in run.nodes.values() if n.phase == "Pending"]
    if not pending:
        return
    nodes = status.get("nodes") or {}
    for node_id in pending:
        if node_id in nodes:
            nodes[node_id]["message"] = reason
    status["message"] = reason


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
