"""kopf handlers: thin. Each reads the resource, calls one service, and returns.

Registered on an explicit registry (``register(registry)``) so importing this
module has no effect and tests can build an operator of their own.

Workflows are driven by one kopf daemon each: it reconciles, then sleeps
until the engine's next timer or until something about the run changes (its
own watch events, its pods' events, its child Workflows' events, a result posted by a step pod), which
poke it through ``memo.wakeups``; once the run finished, the same daemon waits
for its TTL (services.retention) and deletes it, and the DELETED watch event
collects its rows. Nothing here writes to the API by itself:
kopf daemons and on.event handlers keep no progress annotations.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from ..k8s import evaluation, names, subworkflow
from ..k8s.kube import KubeError
from ..models import Catalog
from ..services.budgets import BudgetStatusSync
from ..services.errors import InvalidWorkflow
from ..services.metrics import Metrics
from ..services.resources import check_dependent
from ..services.schedules import ScheduleSync
from ..services.shards import while_owned
from ..storage.errors import StorageError
from .runtime import Memo, stop_task

log = logging.getLogger("agentflow.handlers")

GROUP, VERSION = "agentflow.dev", "v1alpha1"
KINDS = {"agents": "Agent", "promptversions": "PromptVersion", "toolpolicies": "ToolPolicy", "budgets": "Budget",
         "workflowtemplates": "WorkflowTemplate", "promptrollouts": "PromptRollout"}
"""The namespaced kinds a Workflow refers to: indexed by namespace, Ready kept current."""
CLUSTER_KINDS = {"clusterworkflowtemplates": "ClusterWorkflowTemplate"}
"""The cluster-scoped kinds a Workflow refers to: indexed under None (no Ready: what a ClusterWorkflowTemplate
names is checked per namespace, when a Workflow made from it is admitted and reconciled)."""
INDEXED = (*KINDS, *CLUSTER_KINDS)
"""Every kopf index, by id (the handlers that build a Catalog take them all)."""
SCHEDULE_INTERVAL_SECONDS = 10.0
"""How often each WorkflowSchedule is looked at (a slot starts at most this late)."""
ROLLOUT_INTERVAL_SECONDS = 10.0
"""How often each PromptRollout is looked at (a step passed is acted on at most this late)."""


def same_readiness(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a status patch would change nothing but timestamps (a PromptVersion's rollout included)."""
    def ready(status: Mapping[str, Any]) -> tuple[Any, ...]:
        cond: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        return (cond.get("status"), cond.get("reason"), cond.get("message"), status.get("observedGeneration"),
                status.get("rollout"))

    return ready(current) == ready(new)


def workflow_wake_key(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a Workflow's watch event may change its run's next reconcile: its spec (generation), the approval
    annotations, its deletion, its phase (a finished run's TTL is counted from it). A status patch of the
    operator's own that changes nothing of this wakes nothing (issue 17: it doubled the reconciles of a burst)."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (meta.get("generation"), annotations.get(names.APPROVE_ANNOTATION), annotations.get(names.REJECT_ANNOTATION),
            meta.get("deletionTimestamp"), (body.get("status") or {}).get("phase"))


def pod_wakes(body: Mapping[str, Any], event: str | None) -> bool:
    """Whether a step pod's watch event may change its run's next reconcile: it ended (Succeeded, Failed), is
    being deleted or is gone. Pending and Running decide nothing (the run moves on its results)."""
    if event == "DELETED" or (body.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return (body.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def catalog_for(namespace: str, indices: dict[str, kopf.Index[Any, Any]]) -> Catalog:
    """What a Workflow of ``namespace`` can refer to: that namespace's resources and the cluster-scoped ones."""
    catalog = Catalog()
    from ..models import parse_resource

    for plural in INDEXED:
        for body in indices[plural].get(namespace if plural in KINDS else None, []):
            try:
                catalog.add(parse_resource(body))  # type: ignore[arg-type]
            except Exception:  # an invalid one is reported on its own status; skip it here
                continue
    return catalog


def register(registry: kopf.OperatorRegistry) -> None:
    for plural in INDEXED:
        _index(registry, plural)

    @kopf.daemon(GROUP, VERSION, "workflows", registry=registry, cancellation_timeout=30.0)
    async def drive(*, body: kopf.Body, memo: Memo, stopped: Any, logger: Any, **kwargs: Any) -> None:
        indices = {plural: kwargs[plural] for plural in INDEXED}  # kopf passes indices by their ids
        uid = str(body.metadata.uid)
        wakeup = memo.wakeups.setdefault(uid, asyncio.Event())

        async def work(stop: Any) -> None:
            try:
                await memo.driver.drive(body, lambda: catalog_for(str(body.metadata.namespace), indices), wakeup,
                                        stop)
            except InvalidWorkflow as exc:
                logger.error("workflow cannot run: %s", exc)
            if not stop:
                await memo.retention.expire(body, wakeup, stop)  # finished: kept until its TTL passes, if any

        try:  # with --shards auto every replica has this daemon; it acts while this replica owns the uid
            await while_owned(memo.shards, uid, wakeup, stopped, work, lost=lambda: memo.driver.reconciler.forget(uid))
        finally:
            memo.wakeups.pop(uid, None)

    @kopf.on.event(GROUP, VERSION, "workflows", registry=registry)
    async def workflow_changed(*, body: kopf.Body, memo: Memo, type: str | None, **_: Any) -> None:
        uid = str(body.metadata.uid)
        parent = (body.metadata.labels or {}).get(subworkflow.PARENT_RUN_LABEL)
        if type == "DELETED":  # its pods go with it (owner references); its rows go here (services.retention)
            memo.seen.pop(uid, None)
            memo.poke(uid)
            if parent:  # a workflow step's child gone: its parent makes it again (like a pod)
                memo.poke(parent)
            if memo.shards.owns(uid):  # sharded: its owner collects (a miss is the orphan sweep's)
                await memo.retention.collect(uid)
            elif memo.retention.forget is not None:
                memo.retention.forget(uid)
            return
        key = workflow_wake_key(body)
        if memo.seen.get(uid) != key:  # not the echo of the operator's own status patch
            memo.seen[uid] = key
            memo.poke(uid)
            if parent:  # a workflow step's child: its parent looks at it (k8s.subworkflow); a poke only wakes a driver
                memo.poke(parent)

    @kopf.on.event("", "v1", "pods", registry=registry, labels={names.MANAGED_BY_LABEL: names.MANAGED_BY})
    def pod_changed(*, body: kopf.Body, memo: Memo, type: str | None, **_: Any) -> None:
        pods = memo.driver.reconciler.pods
        if pods is not None:  # what the reconcile reads instead of listing (services.podcache)
            pods.observe(body, deleted=type == "DELETED")
        run = (body.metadata.labels or {}).get(names.RUN_LABEL)
        if run and pod_wakes(body, type):
            memo.poke(run)
        if not run or memo.shards.owns(run):  # sharded: one replica counts each pod (the label is the run's uid)
            memo.driver.metrics.observe_pod(body)

    @kopf.on.event("networking.k8s.io", "v1", "networkpolicies", registry=registry, id="step-baseline",
                   labels={names.COMPONENT_LABEL: names.COMPONENT_STEP_BASELINE,
                           names.MANAGED_BY_LABEL: names.MANAGED_BY})
    async def baseline_changed(*, body: kopf.Body, memo: Memo, type: str | None, namespace: str | None,
                               **_: Any) -> None:
        """The namespace's baseline NetworkPolicy of step pods, deleted or changed: made again (services.isolation)."""
        if namespace is None or body.metadata.name != names.BASELINE_POLICY:
            return
        try:
            await memo.driver.reconciler.isolation.observed(namespace, None if type == "DELETED" else body)
        except KubeError as exc:  # the next step pod created there ensures it again
            log.warning("the baseline NetworkPolicy of step pods in %s was not made again: %s", namespace, exc)

    for plural, kind in KINDS.items():
        _readiness(registry, plural, kind)

    @kopf.on.event(GROUP, VERSION, "promptversions", registry=registry, id="promptversions-evaluation")
    async def evaluate(*, body: kopf.Body, memo: Memo, type: str | None, **_: Any) -> None:
        if type != "DELETED":  # its evaluation Workflows go with it (owner references), their rows with them
            await _sync_evaluation(memo, body)

    @kopf.on.event(GROUP, VERSION, "workflows", registry=registry, id="evaluation-workflows",
                   labels={evaluation.EVALUATION_LABEL: kopf.PRESENT})
    async def evaluation_changed(*, body: kopf.Body, memo: Memo, namespace: str | None, **_: Any) -> None:
        name = (body.metadata.annotations or {}).get(evaluation.PROMPT_ANNOTATION)
        if memo.evaluations is None or namespace is None or not name:
            return
        try:
            prompt = await memo.evaluations.kube.get_resource("promptversions", namespace, name)
        except KubeError as exc:  # gone (its Workflows follow it), or the API is away: its next event retries
            log.info("evaluation Workflow %s/%s: PromptVersion %s not read: %s", namespace, body.metadata.name,
                     name, exc)
            return
        await _sync_evaluation(memo, prompt)

    @kopf.timer(GROUP, VERSION, "workflowschedules", registry=registry, interval=SCHEDULE_INTERVAL_SECONDS,
                idle=None)
    async def schedule(*, body: kopf.Body, memo: Memo, logger: Any, **_: Any) -> None:
        if not memo.shards.owns(str(body.metadata.uid)):  # sharded like Workflows (one replica looks each tick)
            return
        now = dt.datetime.fromtimestamp(memo.clock(), dt.UTC)
        try:
            await ScheduleSync(memo.driver.reconciler.kube).sync(body, now)
        except KubeError as exc:  # the next tick tries again: slots are named, nothing starts twice
            logger.warning("schedule not synced: %s", exc)

    @kopf.timer(GROUP, VERSION, "promptrollouts", registry=registry, interval=ROLLOUT_INTERVAL_SECONDS, idle=None)
    async def rollout(*, body: kopf.Body, memo: Memo, logger: Any, **_: Any) -> None:
        if memo.rollouts is None or not memo.shards.owns(str(body.metadata.uid)):
            return
        try:
            await memo.rollouts.sync(body)
        except (KubeError, StorageError) as exc:  # the next tick looks again: the evidence is in the journal
            logger.warning("rollout not synced: %s", exc)


async def _sync_evaluation(memo: Memo, body: Mapping[str, Any]) -> None:
    """A PromptVersion's evaluation (agentflow.services.evaluations); what fails is retried by its next event."""
    if memo.evaluations is None:
        return
    meta = body.get("metadata") or {}
    try:
        await memo.evaluations.sync(body)
    except (KubeError, StorageError) as exc:
        log.warning("evaluation of PromptVersion %s/%s not synced: %s", meta.get("namespace"), meta.get("name"), exc)


def _index(registry: kopf.OperatorRegistry, plural: str) -> None:
    @kopf.index(GROUP, VERSION, plural, registry=registry, id=plural)
    def index(*, body: kopf.Body, namespace: str | None, **_: Any) -> dict[str | None, dict[str, Any]]:
        return {namespace: dict(body)}  # None for a cluster-scoped kind


def _readiness(registry: kopf.OperatorRegistry, plural: str, kind: str) -> None:
    """Ready of Agents, PromptVersions, ToolPolicies and Budgets, kept current from watch events.

    Any change of any of them in a namespace re-checks all of them there: what one refers to may
    appear later (kubectl apply of a folder creates them in any order). Statuses are written only
    when they change. Watch-event handlers keep no progress annotations and add no finalizer, so
    these resources stay deletable when the operator is not running.
    """

    @kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"{plural}-ready")
    async def ready(*, namespace: str | None, memo: Memo, type: str | None, **kwargs: Any) -> None:
        if namespace is None:
            return
        if plural == "budgets" and memo.budget_sync is not None:
            memo.budget_sync.poke()  # a Budget changed: its status now rather than at the next round
        indices = {p: kwargs[p] for p in INDEXED}
        catalog = catalog_for(namespace, indices)
        kube = memo.driver.reconciler.kube
        for other in KINDS:
            if other in ("budgets", "promptrollouts"):  # their whole status is BudgetStatusSync's, RolloutSync's
                continue
            for body in list(indices[other].get(namespace, [])):
                status = check_dependent(body, catalog, memo.clock())
                if same_readiness(body.get("status") or {}, status):
                    continue
                try:
                    await kube.patch_status(other, namespace, body["metadata"]["name"], status)
                except KubeError as exc:  # deleted meanwhile, or the API is away: the next event retries
                    log.info("could not update the status of %s/%s: %s", other, body["metadata"]["name"], exc)


def start_budget_sync(memo: Memo, ledger: Any, *, namespaces: list[str] | None, metrics: Metrics | None,
                      reporting_instance: str = "", interval: float = 5.0) -> BudgetStatusSync:
    """At startup: keep every Budget's status current from ``ledger`` in a background task (every
    ``interval`` seconds and when a Budget changes), until :func:`stop_budget_sync`.

    Not a kopf timer or daemon on Budgets: those would put a finalizer on every Budget. Every replica
    runs it; status patches carry a resourceVersion precondition so each Event is emitted once.
    """
    clock = memo.clock
    sync = BudgetStatusSync(memo.driver.reconciler.kube, ledger, metrics=metrics, namespaces=namespaces,
                            interval=interval, reporting_instance=reporting_instance,
                            clock=lambda: dt.datetime.fromtimestamp(clock(), dt.UTC))
    memo.budget_sync = sync
    memo.budget_sync_stopped = asyncio.Event()
    memo.budget_sync_task = asyncio.create_task(sync.run(memo.budget_sync_stopped), name="budget-status-sync")
    return sync


async def stop_budget_sync(memo: Memo, timeout: float = 10.0) -> None:
    """At cleanup: stop the loop started by :func:`start_budget_sync` (a no-op if none runs)."""
    await stop_task(memo.budget_sync_task, memo.budget_sync_stopped, "the budget status sync", timeout)
    memo.budget_sync_task = None
