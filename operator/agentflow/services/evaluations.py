"""PromptVersion evaluation suites on a cluster: start the evaluation Workflow, follow it, conclude, store, report.

One idempotent ``sync`` per PromptVersion, called by kopf watch events of the PromptVersion and of its
evaluation Workflows (agentflow.controller.handlers)::

    PromptVersion with spec.evaluations, trigger T = annotation agentflow.dev/evaluate ("" at creation)
      status.evaluation already final for T                 -> nothing (only a new T runs it again)
      the suite cannot run on the cluster (EvaluationError)  -> Error, the field named
      the built-in judge prompts (when the suite has a judge): created when missing; one of that name with
      another spec                                          -> Error (never used)
      Workflow W = workflow_name(PV, T) missing              -> create it (owned by the PromptVersion)   Pending
      W there but not the one built (spec or owner)          -> Error (something else took its name)
      W not finished                                        -> Running
      W finished: its journal from PostgreSQL -> conclude (agentflow.k8s.evaluation, the local command's verdict)
                  -> agentflow_evaluations + _cases (once)   -> Passed | Failed (thresholds missed in message)
                  a case never ran (cancelled, timed out)   -> Error
      older evaluation Workflows of the PromptVersion past the newest HISTORY are deleted (their rows with them)

Safe to repeat and to crash anywhere: W's name is derived from the PromptVersion's uid and T (creating it again
finds it there), the rows are written once per Workflow uid, and the status is a merge patch written only when
it changes. The Workflow is an ordinary run: the reconciler drives it, its pods are sandboxed step pods, and the
gateway charges its calls to the namespace's Budgets (those whose scope covers it, and suite.budgetRef).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..engine.journal import Record
from ..k8s import evaluation as ev
from ..k8s.kube import Kube, KubeError, NotFound
from ..models import ManifestError, PromptVersion, parse_resource
from ..prompts.suite import SuiteResult

__all__ = ["HISTORY", "EvaluationRequestError", "EvaluationStore", "EvaluationSync", "request", "wait"]

log = logging.getLogger("agentflow.evaluations")

WORKFLOWS, PROMPTS = "workflows", "promptversions"
HISTORY = 3
"""Evaluation Workflows kept per PromptVersion (the newest); older ones are deleted with their stored rows."""


class EvaluationStore(Protocol):
    async def load_journal(self, run_uid: str, after_seq: int = -1) -> list[Record]: ...
    async def put_evaluation(self, run_uid: str, namespace: str, workflow: str, trigger: str,
                             result: SuiteResult) -> None: ...


def _now(clock: Callable[[], float]) -> str:
    return dt.datetime.fromtimestamp(clock(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EvaluationSync:
    """Runs PromptVersions' evaluation suites as Workflows and writes what they conclude."""

    def __init__(self, kube: Kube, store: EvaluationStore, clock: Callable[[], float]) -> None:
        self.kube = kube
        self.store = store
        self.clock = clock

    async def sync(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """One pass over one PromptVersion: the status.evaluation written (None: nothing to evaluate or to
        change)."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            prompt = parse_resource(body)
        except ManifestError:
            return None  # its Ready condition says why (agentflow.services.resources)
        if not isinstance(prompt, PromptVersion) or prompt.spec.evaluations is None:
            return None
        trigger = str((meta.get("annotations") or {}).get(ev.EVALUATE_ANNOTATION, ""))
        wanted = ev.workflow_name(prompt, trigger)
        current = dict((body.get("status") or {}).get("evaluation") or {})
        if current.get("phase") in ev.FINAL_PHASES and current.get("trigger", "") == trigger and (
                current.get("workflow") in (wanted, None)):  # None: an Error before any Workflow (the spec's)
            return None
        status = await self._evaluate(prompt, namespace, trigger, wanted, current)
        if {k: v for k, v in status.items() if v is not None} != {k: v for k, v in current.items() if v is not None}:
            await self.kube.patch_status(PROMPTS, namespace, name, {"evaluation": status})
        return status

    async def _evaluate(self, prompt: PromptVersion, namespace: str, trigger: str, wanted: str,
                        current: Mapping[str, Any]) -> dict[str, Any]:
        started = current.get("startedAt") if current.get("workflow") == wanted else None

        def status(phase: str, **kw: Any) -> dict[str, Any]:
            out: dict[str, Any] = ev.evaluation_status(phase, workflow=kw.pop("workflow", wanted), trigger=trigger,
                                                       started_at=kw.pop("started_at", started), **kw)["evaluation"]
            return out

        try:
            built = ev.workflow_body(prompt, namespace, trigger)
        except ev.EvaluationError as exc:
            return status("Error", workflow=None, finished_at=_now(self.clock), message=str(exc))
        if prompt.spec.evaluations is not None and prompt.spec.evaluations.judge is not None:
            problem = await self._judge_prompts(namespace)
            if problem:
                return status("Error", finished_at=_now(self.clock), message=problem)
        try:
            observed = await self.kube.get_resource(WORKFLOWS, namespace, wanted)
        except NotFound:
            await self.kube.create_resource(WORKFLOWS, namespace, built)
            log.info("%s/%s: evaluation Workflow %s created", namespace, prompt.metadata.name, wanted)
            await self._prune(namespace, prompt, keep=wanted)
            return status("Pending", started_at=_now(self.clock))
        if not ev.same_workflow(observed, built):
            return status("Error", finished_at=_now(self.clock),
                          message=f"Workflow {wanted} exists and is not this PromptVersion's evaluation (another spec "
                                  "or owner): run the evaluation again (a new agentflow.dev/evaluate value)")
        started = started or (observed.get("metadata") or {}).get("creationTimestamp")
        if not ev.finished(observed):
            return status("Running")
        return await self._conclude(prompt, namespace, trigger, observed, status)

    async def _conclude(self, prompt: PromptVersion, namespace: str, trigger: str, observed: Mapping[str, Any],
                        status: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        meta = observed.get("metadata") or {}
        uid, workflow = str(meta.get("uid")), str(meta.get("name"))
        records = await self.store.load_journal(uid)
        finished_at = (observed.get("status") or {}).get("finishedAt") or _now(self.clock)
        try:
            result = ev.conclude(prompt, records)
        except ev.EvaluationError as exc:
            run = observed.get("status") or {}
            why = f" (the Workflow {run.get('phase')}: {run['message']})" if run.get("message") else ""
            return status("Error", finished_at=finished_at, message=f"{exc}{why}")
        await self.store.put_evaluation(uid, namespace, workflow, trigger, result)
        log.info("%s/%s: evaluation %s %s", namespace, prompt.metadata.name, workflow,
                 "passed" if result.passed else "failed")
        return status("Passed" if result.passed else "Failed", result=result, finished_at=finished_at)

    async def _judge_prompts(self, namespace: str) -> str | None:
        """Create the built-in judge prompts where missing; the problem when one of their names holds another."""
        for name, prompt in ev.judge_prompts().items():
            try:
                observed = await self.kube.get_resource(PROMPTS, namespace, name)
            except NotFound:
                await self.kube.create_resource(PROMPTS, namespace, ev.prompt_body(prompt, namespace))
                continue
            if not ev.same_spec(observed, prompt):
                return (f"PromptVersion {name} is not AgentFlow's built-in judge prompt (another spec): delete it "
                        "(the operator creates it again) and run the evaluation again")
        return None

    async def _prune(self, namespace: str, prompt: PromptVersion, keep: str) -> None:
        """Delete the PromptVersion's evaluation Workflows past the newest HISTORY (``keep`` is one of them)."""
        mine = [b for b in await self.kube.list_resources(WORKFLOWS, namespace) if _owned(b, prompt)]
        mine.sort(key=lambda b: str((b.get("metadata") or {}).get("creationTimestamp") or ""), reverse=True)
        names = [str(b["metadata"]["name"]) for b in mine if b["metadata"]["name"] != keep]
        for old in names[HISTORY - 1:]:
            try:
                await self.kube.delete_resource(WORKFLOWS, namespace, old)
            except KubeError as exc:  # the next evaluation tries again
                log.info("%s: old evaluation Workflow %s not deleted: %s", namespace, old, exc)


def _owned(body: Mapping[str, Any], prompt: PromptVersion) -> bool:
    meta = body.get("metadata") or {}
    if (meta.get("labels") or {}).get(ev.EVALUATION_LABEL) != ev.label_value(prompt.metadata.name):
        return False
    owners: Sequence[Mapping[str, Any]] = meta.get("ownerReferences") or []
    return any(o.get("uid") == prompt.metadata.uid for o in owners)


# --------------------------------------------------------------------------- `agentflow prompt eval --cluster`


class EvaluationRequestError(Exception):
    """An evaluation cannot be asked for (no such PromptVersion, no suite); the message says which."""


async def request(kube: Kube, namespace: str, name: str, trigger: str) -> str:
    """Ask the operator to run PromptVersion ``name``'s suite again (the annotation set to ``trigger``, a value it
    never had): the name of the evaluation Workflow that will run it."""
    try:
        body = await kube.get_resource(PROMPTS, namespace, name)
    except NotFound:
        raise EvaluationRequestError(f"no PromptVersion {name!r} in namespace {namespace!r}") from None
    try:
        prompt = parse_resource(body)
    except ManifestError as exc:
        raise EvaluationRequestError(f"PromptVersion {namespace}/{name} is invalid: {exc}") from None
    if not isinstance(prompt, PromptVersion) or prompt.spec.evaluations is None:
        raise EvaluationRequestError(f"PromptVersion {namespace}/{name} has no spec.evaluations: nothing to run")
    patch = {"metadata": {"annotations": {ev.EVALUATE_ANNOTATION: trigger}}}
    await kube.patch_resource(PROMPTS, namespace, name, patch)
    return ev.workflow_name(prompt, trigger)


async def wait(kube: Kube, namespace: str, name: str, trigger: str, *, timeout: float,
               sleep: Callable[[float], Any], clock: Callable[[], float], interval: float = 2.0) -> dict[str, Any]:
    """status.evaluation once it is final for ``trigger`` (or as it stands when ``timeout`` seconds are over:
    phase Pending when the operator has not taken the request up yet)."""
    deadline = clock() + timeout
    while True:
        body = await kube.get_resource(PROMPTS, namespace, name)
        status = dict((body.get("status") or {}).get("evaluation") or {})
        mine = status.get("trigger") == trigger
        if mine and status.get("phase") in ev.FINAL_PHASES:
            return status
        if clock() >= deadline:
            return status if mine else {"phase": "Pending", "trigger": trigger,
                                        "message": "the operator has not taken the request up yet"}
        await sleep(interval)
