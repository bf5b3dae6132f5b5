"""A trigger's run started for one mapped delivery: shared by the HTTP server (server.py) and the event consumer
(agentflow.events.triggers), so both check inputs, name, dedupe and report the same way.

    TriggerRuns(kube, clock).start(namespace, trigger, delivery)     Started(workflow, started)
        inputs checked against the template's inputSchema               Refused 422 naming the input
        the Workflow NAME-HASH(delivery id) created                     Started(started=True)
        ... it exists already and was started by this delivery          Started(started=False): a replay
        ... it exists and was not                                       Refused 409
        the API server away                                             Refused 503 (retryable)

Refused carries an HTTP status, as the server answers it; the event consumer reads ``retryable`` (try the event
again later) or reports it on the trigger's status. The trigger's status (lastDelivery) is written after each
outcome, best effort; a refusal that repeats the last one written for the same trigger (the same outcome and
message) within REFUSAL_STATUS_SECONDS is not written again, so a storm of events or signed requests that a trigger
refuses for one reason costs the API server one status write per interval, not one per delivery.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..k8s.kube import Kube, KubeError, NotFound
from ..k8s.trigger import delivery_of, delivery_status, workflow_body
from ..models import (
    AnyTemplate,
    ClusterWorkflowTemplate,
    ManifestError,
    WorkflowTemplate,
    WorkflowTrigger,
    parse_resource,
)
from ..validation.templates import template_input_findings
from ..validation.triggers import Delivery

__all__ = ["RETRY_AFTER_SECONDS", "Refused", "Started", "TriggerRuns"]

log = logging.getLogger("agentflow.triggers")

RETRY_AFTER_SECONDS = 5
TRIGGERS, WORKFLOWS, TEMPLATES = "workflowtriggers", "workflows", "workflowtemplates"
CLUSTER_TEMPLATES = "clusterworkflowtemplates"
REFUSAL_STATUS_SECONDS = 10.0
"""A refusal that repeats the last one of its trigger is written at most this often."""
REMEMBERED_TRIGGERS = 4096
"""How many triggers' last refusal are remembered (the least recently refused are forgotten first)."""


class Refused(Exception):
    """No run was started: ``status`` is the HTTP status that says why, ``message`` the reason."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.reported = False
        """Whether the trigger's status says it already."""

    @property
    def retryable(self) -> bool:
        """The API server was away: the same delivery may start its run later."""
        return self.status == 503


@dataclasses.dataclass(frozen=True)
class Started:
    workflow: str
    started: bool
    """False: the delivery had started this run already (a replay, a retry)."""


class TriggerRuns:
    """Starts the runs of mapped deliveries with the operator's Kubernetes client."""

    def __init__(self, kube: Kube, clock: Callable[[], float]) -> None:
        self._kube = kube
        self._clock = clock
        self._refusals: collections.OrderedDict[tuple[str, str, str], tuple[str, float]] = collections.OrderedDict()
        """(namespace, name, uid) -> the message and time of the last refusal written to the trigger's status."""

    async def start(self, namespace: str, trigger: WorkflowTrigger, delivery: Delivery, *,
                    labels: Mapping[str, str] | None = None) -> Started:
        """Start the run of an accepted delivery (``delivery.inputs`` set); Refused when none is started.
        ``labels`` are added to the Workflow's."""
        assert delivery.inputs is not None
        template = await self.template(namespace, trigger)
        findings = template_input_findings(template, delivery.inputs, ("inputs",))
        if findings:
            text = "; ".join(f"{'.'.join(str(p) for p in path)}: {message}" for path, message in findings)
            await self.status(namespace, trigger, delivery.id, "Refused", message=text)
            refused = Refused(422, text)
            refused.reported = True
            raise refused
        body = workflow_body(trigger, delivery.id, delivery.inputs, namespace)
        body["metadata"]["labels"].update(labels or {})
        workflow = body["metadata"]["name"]
        name = trigger.metadata.name
        created = await self.api(self._kube.create_resource(WORKFLOWS, namespace, body), "create the Workflow")
        if created:
            log.info("trigger %s/%s: delivery %s started %s", namespace, name, delivery.id, workflow)
            await self.status(namespace, trigger, delivery.id, "Started", workflow)
            return Started(workflow, True)
        existing = await self.api(self._kube.get_resource(WORKFLOWS, namespace, workflow), "read the Workflow")
        if delivery_of(existing, name) != delivery.id:
            raise Refused(409, f"Workflow {namespace}/{workflow} exists and was not started by this delivery "
                               f"of WorkflowTrigger {name}; no run started")
        await self.status(namespace, trigger, delivery.id, "Duplicate", workflow)
        return Started(workflow, False)

    async def template(self, namespace: str, trigger: WorkflowTrigger) -> AnyTemplate:
        ref = trigger.spec.workflow_template_ref
        cluster = ref.kind == "ClusterWorkflowTemplate"
        shown = ref.name if cluster else f"{namespace}/{ref.name}"
        try:
            body = await self.api(self._kube.get_cluster_resource(CLUSTER_TEMPLATES, ref.name) if cluster
                                  else self._kube.get_resource(TEMPLATES, namespace, ref.name), f"read the {ref.kind}")
            template = parse_resource(body)
        except NotFound:
            raise Refused(422, f"spec.workflowTemplateRef.name: {ref.kind} {shown} does not exist") from None
        except ManifestError as exc:
            raise Refused(422, f"spec.workflowTemplateRef.name: {ref.kind} {shown} is invalid: {exc}") from None
        assert isinstance(template, WorkflowTemplate | ClusterWorkflowTemplate)
        return template

    async def api(self, call: Awaitable[Any], what: str) -> Any:
        """``call``'s answer; NotFound raised as it is, anything else the API server says as Refused."""
        try:
            return await call
        except NotFound:
            raise
        except KubeError as exc:
            if exc.retryable:
                raise unavailable(exc) from None
            if exc.status in (400, 422):  # the API server (the admission webhook) refused the Workflow
                raise Refused(422, f"the API server refused to {what}: {exc}") from None
            log.error("trigger: cannot %s: %s", what, exc)
            raise Refused(500, f"the operator cannot {what}; its log has the details") from None

    async def status(self, namespace: str, trigger: WorkflowTrigger, delivery_id: str, outcome: str,
                     workflow: str | None = None, message: str = "") -> None:
        now = self._clock()
        key = (namespace, trigger.metadata.name, str(trigger.metadata.uid))
        if outcome == "Refused":
            last = self._refusals.get(key)
            if last is not None and last[0] == message and now - last[1] < REFUSAL_STATUS_SECONDS:
                log.debug("trigger %s/%s: refusal of %s not written again: %s", namespace, key[1], delivery_id,
                          message)
                return
            self._refusals[key] = (message, now)
            self._refusals.move_to_end(key)
            while len(self._refusals) > REMEMBERED_TRIGGERS:
                self._refusals.popitem(last=False)
        else:
            self._refusals.pop(key, None)  # the next refusal is news again
        await self.patch_status(namespace, trigger.metadata.name,
                                delivery_status(namespace, trigger, delivery_id, outcome, now, workflow, message))

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        try:  # best effort: the run is what matters, and it is started (or refused) already
            await self._kube.patch_status(TRIGGERS, namespace, name, status)
        except KubeError as exc:
            log.warning("trigger %s/%s: status not written: %s", namespace, name, exc)


def unavailable(exc: KubeError) -> Refused:
    log.warning("trigger: the API server is unavailable: %s", exc)
    return Refused(503, "the Kubernetes API server is unavailable; post the delivery again",
                   {"Retry-After": str(RETRY_AFTER_SECONDS)})
