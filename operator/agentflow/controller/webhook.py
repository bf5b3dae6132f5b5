"""The validating admission webhook: the validation of ``agentflow validate``, served by the operator.

::

    register_admission(registry)        @kopf.on.validate for the five kinds (CREATE and UPDATE)
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

Budgets (``services.admission``), a webhook of its own (``budget-workflows.agentflow.dev``, CREATE of
Workflows only, so validation stays the same for every kind): a valid Workflow is checked against the
Budgets of its namespace: its cost preflight against what each hard Budget has left (refused with the
estimate and the remainders), soft Budgets (admitted with a warning), and ``maxConcurrentWorkflows``.
What is left comes from the budget ledger the operator keeps in ``memo.ledger`` (None, or unreachable:
hard budgets fail closed, see :mod:`agentflow.services.admission`); the Workflows that count against a
quota are listed through ``memo.driver.reconciler.kube``. UPDATEs are not re-checked: a running
Workflow's spend is the ledger's business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import kopf

from ..llm.pricing import count_message_tokens, load_litellm, price_per_token
from ..models import Catalog, Workflow, parse_resource
from ..models.manifests import Problem
from ..services.admission import CostMeter, admit
from ..validation import validate_body
from .handlers import GROUP, KINDS, VERSION, catalog_for

__all__ = ["PLURALS", "ReferencePolicy", "Verdict", "admission_message", "register_admission", "review"]

PLURALS = ("workflows", *KINDS)
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
) -> Verdict:
    """Whether to admit this body: the validation of ``agentflow validate`` against ``catalog``.

    A catalog of None skips the reference checks (as ``validate_body`` does).
    """
    if _exempt(body, operation, old):
        return Verdict(allowed=True)
    problems = validate_body(body, catalog)
    if not problems:
        return Verdict(allowed=True)
    if references == "reject" or catalog is None:
        return Verdict(allowed=False, message=admission_message(problems))
    # Problems found only with the catalog are the unknown references: the rest stand on their own.
    intrinsic = {(p.path, p.message) for p in validate_body(body, None)}
    if any((p.path, p.message) in intrinsic for p in problems):
        return Verdict(allowed=False, message=admission_message(problems))
    return Verdict(allowed=True, warnings=tuple(_line(p) for p in problems))


log = logging.getLogger("agentflow.webhook")
METER = CostMeter(count_tokens=count_message_tokens, prices=price_per_token)


async def budget_verdict(workflow: Workflow, namespace: str, catalog: Catalog, memo: Any) -> Verdict:
    """The Budgets' answer for a valid Workflow being created (services.admission)."""
    kube = memo.driver.reconciler.kube
    decision = await admit(
        workflow, namespace, catalog, meter=METER, ledger=getattr(memo, "ledger", None),
        ledger_problem=getattr(memo, "ledger_problem", None),
        list_workflows=lambda: kube.list_resources("workflows", namespace), now=dt.datetime.now(dt.UTC),
    )
    return Verdict(decision.allowed, decision.message, decision.warnings)


async def check_budgets(
    body: kopf.Body, namespace: str | None, operation: str | None, subresource: str | None, warnings: list[str],
    memo: Any, **kwargs: Any,
) -> None:
    """The ``budget-workflows`` webhook: on CREATE of a Workflow, the Budgets of its namespace.

    A body that is not a valid Workflow is left to ``validate-workflows``, which refuses it.
    """
    if subresource or operation != "CREATE" or not namespace or _exempt(body, operation, None):
        return
    try:
        workflow = parse_resource(dict(body))
    except Exception:
        return
    if not isinstance(workflow, Workflow):
        return
    indices = {p: kwargs[p] for p in ("agents", "promptversions", "toolpolicies", "budgets")}
    verdict = await budget_verdict(workflow, namespace, catalog_for(namespace, indices), memo)
    warnings.extend(verdict.warnings)
    if not verdict.allowed:
        raise kopf.AdmissionError(verdict.message, code=FORBIDDEN)


def _validator(references: ReferencePolicy) -> Callable[..., None]:
    def validate(
        body: kopf.Body,
        old: kopf.Body | None,
        namespace: str | None,
        operation: str | None,
        subresource: str | None,
        warnings: list[str],
        agents: kopf.Index[Any, Any],
        promptversions: kopf.Index[Any, Any],
        toolpolicies: kopf.Index[Any, Any],
        budgets: kopf.Index[Any, Any],
        **_: Any,
    ) -> None:
        if subresource:
            return
        indices = {"agents": agents, "promptversions": promptversions, "toolpolicies": toolpolicies,
                   "budgets": budgets}
        catalog = catalog_for(namespace, indices) if namespace else None
        verdict = review(body, catalog, operation=operation, old=old, references=references)
        warnings.extend(verdict.warnings)
        if not verdict.allowed:
            raise kopf.AdmissionError(verdict.message, code=UNPROCESSABLE)

    return validate


def register_admission(registry: kopf.OperatorRegistry, *, references: ReferencePolicy = "warn") -> None:
    """Register the validating webhooks on ``registry`` (which must hold the indices of ``handlers.register``).

    ``budget-workflows`` (CREATE of Workflows) checks the Budgets; see :func:`check_budgets`.

    The handler ids name the webhooks in the ValidatingWebhookConfiguration kopf
    manages (``settings.admission.managed``): ``validate-<plural>.<managed name>``.
    """
    validate = _validator(references)
    budgets: Callable[..., Any] = check_budgets
    for plural in PLURALS:
        kopf.on.validate(
            GROUP, VERSION, plural, registry=registry, id=f"validate-{plural}",
            operations=["CREATE", "UPDATE"], side_effects=False,
        )(validate)
    kopf.on.validate(
        GROUP, VERSION, "workflows", registry=registry, id="budget-workflows", operations=["CREATE"],
        side_effects=False,
    )(budgets)

    @kopf.on.startup(registry=registry)
    async def preload_prices(**_: Any) -> None:
        """Import litellm (seconds) in the background now, not inside the first admission request."""
        def loaded(future: asyncio.Future[Any]) -> None:
            if future.exception() is not None:
                log.warning("litellm did not load: %s", future.exception())

        asyncio.get_running_loop().run_in_executor(None, load_litellm).add_done_callback(loaded)
