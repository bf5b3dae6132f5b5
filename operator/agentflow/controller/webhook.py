"""The validating admission webhook: the validation of ``agentflow validate``, served by the operator.

::

    register_admission(registry)        @kopf.on.validate for the seven kinds (CREATE and UPDATE)
      review(body, catalog, ...)        -> Verdict: allowed or not, the message, warnings    (pure)
        validate_body(body, catalog)    agentflow.validation: the function `agentflow validate` runs
        admission_message(problems)     -> the message: every problem with its field path     (pure)

A request is checked by :func:`agentflow.validation.validate_body` with the
catalog of the object's namespace, built by ``handlers.catalog_for`` from the
operator's kopf indices (``agents``, ``promptversions``, ``toolpolicies``,
``budgets``); a rejection is ``kopf.AdmissionError(message, code=422)``, which
kubectl prints as ``admission webhook "validate-workflows.agentflow.dev" denied
the request: Workflow/demo has 2 problems: ...``.

Always allowed, so that the webhook never stands in the way of cleaning up:

- DELETE: the handlers are not registered for it (deleting never depends on the
  operator being up), and a DELETE that arrives anyway is allowed;
- subresources (``status``): not registered, allowed if they arrive;
- an UPDATE of an object being deleted, or one that leaves ``spec`` unchanged
  (finalizers, annotations, labels): a Workflow whose Agent has since been
  deleted must still be able to lose its finalizer and take its approval
  annotation.

Dry runs get the same answer: the handlers have no side effects.

References to other resources (an Agent, PromptVersion, ToolPolicy or Budget
the namespace does not have) are decided by ``references``:

- ``"warn"`` (the default): a body whose only problems are unknown references
  is admitted with one admission warning per reference (kubectl prints them as
  ``Warning: ...``); the reconciler reports them on the resource's status. The
  examples hold a Workflow before the Agents it names, and kubectl applies a
  file in order, so rejecting them would refuse ``kubectl apply -f`` of every
  example; and the indices trail the API server by a watch event, so an Agent
  created a moment before its Workflow may not be in them yet.
- ``"reject"``: unknown references are rejected like every other problem.

Either way a rejected body's message lists every problem, references included.

The platform's decisions (``services.platform``), in the same ``validate-*`` webhooks: an Agent's apiBase
must be an endpoint the platform lists for its namespace, and the Secret its credentialsSecretRef names
must carry ``agentflow.dev/credential: "true"`` (read with the operator's client; one that does not exist
yet is a warning); a ToolPolicy's egress grants must stay clear of the egress deny-list. Each refusal names
the field.

Budgets (``services.admission``), a webhook of its own (``budget-workflows.agentflow.dev``, CREATE and
UPDATE of Workflows): a valid Workflow is checked against the Budgets of its namespace: its cost preflight
against what each hard Budget has left (refused with the estimate and the remainders), soft Budgets
(admitted with a warning), and ``maxConcurrentWorkflows`` (on CREATE). An UPDATE is checked when it
changes the spec (more fan-out, another model): its new estimate against what is left. What is left comes
from the budget ledger (none, or unreachable: hard budgets fail closed, see
:mod:`agentflow.services.admission`).

Approvals (``services.approvals.stamp``), a mutating webhook (``approve-workflows.agentflow.dev``, CREATE
and UPDATE of Workflows): a request that sets an approve/reject annotation is checked against the step's
approvers with the requesting user's identity (admission ``userInfo``), and RBAC is asked (a
SubjectAccessReview) whether that user may ``approve`` ``workflows/approval`` in the namespace, since the
annotation itself takes only ``patch``, which runners hold to cancel; refused when not allowed, and the
annotation is rewritten to name that user and signed, so the reconciler knows who really decided.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import kopf

from ..k8s.kube import KubeError, NotFound
from ..llm import litellm_provider
from ..llm.litellm_upstream import load as load_litellm
from ..models import Agent, Catalog, Workflow, parse_resource
from ..models.manifests import Problem
from ..services import approvals
from ..services.admission import CostMeter, admit
from ..services.platform import PlatformPolicy
from ..validation import validate_body
from ..validation.templates import CYCLE, resolve_workflow
from .handlers import CLUSTER_KINDS, GROUP, INDEXED, KINDS, VERSION, catalog_for

__all__ = ["PLURALS", "ReferencePolicy", "Verdict", "admission_message", "register_admission", "review"]

PLURALS = ("workflows", *KINDS, "workflowschedules", "workflowtriggers", *CLUSTER_KINDS)
"""The resources the webhook validates (all of group agentflow.dev, version v1alpha1)."""

ReferencePolicy = Literal["warn", "reject"]
UNPROCESSABLE = 422  # what the API server itself answers for an invalid object
FORBIDDEN = 403  # what the API server answers when a ResourceQuota refuses an object


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The answer to one admission request."""

    allowed: bool
    message: str | None = None  # why not, when not allowed
    warnings: tuple[str, ...] = ()


def _line(problem: Problem) -> str:
    return f"{problem.path}: {problem.message}" if problem.path else problem.message


def admission_message(problems: Sequence[Problem]) -> str | None:
    """The rejection message listing every problem with its field path; None when there are none.

    ``Workflow/demo has 2 problems:`` then one ``- <path>: <message>`` line per
    problem, in the order validation found them. Problems of another source
    than the first (never the case for one admission body) name their source.
    """
    if not problems:
        return None
    source = problems[0].source
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    lines = [f"{source} has {count}:"]
    for problem in problems:
        prefix = "" if problem.source == source else f"{problem.source}: "
        lines.append(f"- {prefix}{_line(problem)}")
    return "\n".join(lines)


def _exempt(body: Mapping[str, Any], operation: str | None, old: Mapping[str, Any] | None) -> bool:
    if operation == "DELETE":
        return True
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("deletionTimestamp"):
        return True
    return operation == "UPDATE" and old is not None and old.get("spec") == body.get("spec")


def review(
    body: Mapping[str, Any],
    catalog: Catalog | None,
    *,
    operation: str | None = "CREATE",
    old: Mapping[str, Any] | None = None,
    references: ReferencePolicy = "warn",
    platform: PlatformPolicy | None = None,
    namespace: str | None = None,
) -> Verdict:
    """Whether to admit this body: the validation of ``agentflow validate`` against ``catalog``, and the
    platform's decisions (an Agent's endpoint, a ToolPolicy's egress) for ``namespace``.

    A catalog of None skips the reference checks (as ``validate_body`` does).
    """
    if _exempt(body, operation, old):
        return Verdict(allowed=True)
    problems = validate_body(body, catalog)
    if platform is not None and namespace and not problems:
        try:
            resource = parse_resource(dict(body))
        except Exception:  # validate_body reported it
            resource = None
        if resource is not None:
            name = (body.get("metadata") or {}).get("name", "<unnamed>")
            refused = platform.problems(resource, namespace, f"{body.get('kind')}/{name}")
            if refused:
                return Verdict(allowed=False, message=admission_message(refused))
    if not problems:
        return Verdict(allowed=True)
    if references == "reject" or catalog is None or any(p.message.startswith(CYCLE) for p in problems):
        # a cycle of templates is refused whatever the reference policy: it would nest runs until the depth limit
        return Verdict(allowed=False, message=admission_message(problems))
    # Problems found only with the catalog are the unknown references: the rest stand on their own.
    intrinsic = {(p.path, p.message) for p in validate_body(body, None)}
    if any((p.path, p.message) in intrinsic for p in problems):
        return Verdict(allowed=False, message=admission_message(problems))
    return Verdict(allowed=True, warnings=tuple(_line(p) for p in problems))


log = logging.getLogger("agentflow.webhook")


def cost_meter() -> CostMeter:
    """Prompt tokens and prices from litellm's tokenizers and bundled table (imported on first use)."""
    provider = litellm_provider()
    return CostMeter(count_tokens=provider.count_tokens, prices=provider.prices)


async def budget_verdict(workflow: Workflow, namespace: str, catalog: Catalog, memo: Any,
                         meter: CostMeter | None = None, *, created: bool = True) -> Verdict:
    """The Budgets' answer for a valid Workflow being created or changed (services.admission)."""
    kube = memo.driver.reconciler.kube
    factory = getattr(memo, "factory", None)
    decision = await admit(
        workflow, namespace, catalog, meter=meter or cost_meter(), ledger=factory.db.ledger if factory else None,
        ledger_problem=getattr(memo, "ledger_problem", None),
        list_workflows=lambda: kube.list_resources("workflows", namespace), now=dt.datetime.now(dt.UTC),
        quota=created,
    )
    return Verdict(decision.allowed, decision.message, decision.warnings)


async def check_budgets(
    body: kopf.Body, old: kopf.Body | None, namespace: str | None, operation: str | None, subresource: str | None,
    warnings: list[str], memo: Any, **kwargs: Any,
) -> None:
    """The ``budget-workflows`` webhook: on CREATE of a Workflow, and on an UPDATE that changes its spec, the
    Budgets of its namespace.

    A body that is not a valid Workflow is left to ``validate-workflows``, which refuses it.
    """
    if subresource or operation not in ("CREATE", "UPDATE") or not namespace or _exempt(body, operation, old):
        return
    try:
        workflow = parse_resource(dict(body))
    except Exception:
        return
    if not isinstance(workflow, Workflow):
        return
    indices = {p: kwargs[p] for p in INDEXED}
    catalog = catalog_for(namespace, indices)
    resolved, _ = resolve_workflow(workflow, catalog)  # the cost of what the template makes it
    if resolved is None:  # left to validate-workflows (an unknown template, inputs that do not fit)
        return
    verdict = await budget_verdict(resolved, namespace, catalog, memo, created=operation == "CREATE")
    warnings.extend(verdict.warnings)
    if not verdict.allowed:
        raise kopf.AdmissionError(verdict.message, code=FORBIDDEN)


def _validator(references: ReferencePolicy, platform: PlatformPolicy | None) -> Callable[..., Any]:
    async def validate(
        body: kopf.Body,
        old: kopf.Body | None,
        namespace: str | None,
        operation: str | None,
        subresource: str | None,
        warnings: list[str],
        memo: Any,
        agents: kopf.Index[Any, Any],
        promptversions: kopf.Index[Any, Any],
        toolpolicies: kopf.Index[Any, Any],
        budgets: kopf.Index[Any, Any],
        workflowtemplates: kopf.Index[Any, Any],
        promptrollouts: kopf.Index[Any, Any],
        clusterworkflowtemplates: kopf.Index[Any, Any],
        **_: Any,
    ) -> None:
        if subresource:
            return
        indices = {"agents": agents, "promptversions": promptversions, "toolpolicies": toolpolicies,
                   "budgets": budgets, "workflowtemplates": workflowtemplates, "promptrollouts": promptrollouts,
                   "clusterworkflowtemplates": clusterworkflowtemplates}
        catalog = catalog_for(namespace, indices) if namespace else None
        if catalog is None and body.get("kind") == "ClusterWorkflowTemplate":  # its cycles through the others
            catalog = catalog_for("", indices)
        verdict = review(body, catalog, operation=operation, old=old, references=references, platform=platform,
                         namespace=namespace)
        warnings.extend(verdict.warnings)
        if not verdict.allowed:
            raise kopf.AdmissionError(verdict.message, code=UNPROCESSABLE)
        if platform is not None and platform.check_secrets and namespace and body.get("kind") == "Agent" \
                and not _exempt(body, operation, old):
            await _check_credentials(body, namespace, memo, warnings)

    return validate


async def _check_credentials(body: Mapping[str, Any], namespace: str, memo: Any, warnings: list[str]) -> None:
    """An Agent's credentialsSecretRef must name a Secret that opts in as a model credential."""
    try:
        agent = parse_resource(dict(body))
    except Exception:
        return
    if not isinstance(agent, Agent) or agent.spec.model.credentials_secret_ref is None:
        return
    kube = memo.driver.reconciler.kube
    ref = agent.spec.model.credentials_secret_ref
    try:
        secret: dict[str, Any] | None = await kube.read_secret(namespace, ref.name)
    except NotFound:
        secret = None
    except KubeError as exc:
        warnings.append(f"spec.model.credentialsSecretRef: cannot check Secret {namespace}/{ref.name} ({exc}); "
                        "the gateway checks it again before every call")
        return
    problem = PlatformPolicy.secret_problem(agent, namespace, secret)
    if problem is None:
        return
    if secret is None:  # it may be applied after the Agent; the gateway refuses calls until it exists
        warnings.append(_line(problem))
        return
    raise kopf.AdmissionError(admission_message([problem]), code=UNPROCESSABLE)


def _approver(secret: bytes) -> Callable[..., Any]:
    async def stamp_approvals(body: kopf.Body, old: kopf.Body | None, userinfo: Mapping[str, Any],
                              namespace: str | None, patch: kopf.Patch, subresource: str | None, memo: Any,
                              **_: Any) -> None:
        """Who decides is who asks, if RBAC lets them approve: the annotation is rewritten to name the
        requesting user, and signed."""
        if subresource:
            return
        username = str(userinfo.get("username") or "")
        try:
            if not approvals.requested(body, old):
                return
            name = str((body.get("metadata") or {}).get("name") or "")
            await approvals.authorize(memo.driver.reconciler.kube, namespace or "", name, userinfo)
            stamped = approvals.stamp(secret, body, old, username, [str(g) for g in userinfo.get("groups") or []])
        except approvals.ApprovalError as exc:
            raise kopf.AdmissionError(str(exc), code=FORBIDDEN) from None
        for key, value in stamped.items():
            patch.setdefault("metadata", {}).setdefault("annotations", {})[key] = value

    return stamp_approvals


def register_admission(registry: kopf.OperatorRegistry, *, references: ReferencePolicy = "warn",
                       platform: PlatformPolicy | None = None, signing_key: bytes | None = None) -> None:
    """Register the admission webhooks on ``registry`` (which must hold the indices of ``handlers.register``).

    ``budget-workflows`` (CREATE and spec UPDATEs of Workflows) checks the Budgets; see :func:`check_budgets`.
    With ``signing_key``, ``approve-workflows`` (mutating) stamps approval decisions with the requesting user.

    The handler ids name the webhooks in the configurations kopf manages (``settings.admission.managed``):
    ``validate-<plural>.<managed name>``.
    """
    validate = _validator(references, platform)
    budgets: Callable[..., Any] = check_budgets
    for plural in PLURALS:
        kopf.on.validate(
            GROUP, VERSION, plural, registry=registry, id=f"validate-{plural}",
            operations=["CREATE", "UPDATE"], side_effects=False,
        )(validate)
    kopf.on.validate(
        GROUP, VERSION, "workflows", registry=registry, id="budget-workflows", operations=["CREATE", "UPDATE"],
        side_effects=False,
    )(budgets)
    if signing_key is not None:
        kopf.on.mutate(
            GROUP, VERSION, "workflows", registry=registry, id="approve-workflows",
            operations=["CREATE", "UPDATE"], side_effects=False,
        )(_approver(signing_key))

    @kopf.on.startup(registry=registry)
    async def preload_prices(**_: Any) -> None:
        """Import litellm (seconds) in the background now, not inside the first admission request."""
        def loaded(future: asyncio.Future[Any]) -> None:
            if future.exception() is not None:
                log.warning("litellm did not load: %s", future.exception())

        asyncio.get_running_loop().run_in_executor(None, load_litellm).add_done_callback(loaded)
