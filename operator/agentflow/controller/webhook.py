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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import kopf

from ..models import Catalog
from ..models.manifests import Problem
from ..validation import validate_body
from .handlers import GROUP, KINDS, VERSION, catalog_for

__all__ = ["PLURALS", "ReferencePolicy", "Verdict", "admission_message", "register_admission", "review"]

PLURALS = ("workflows", *KINDS)
"""The resources the webhook validates (all of group agentflow.dev, version v1alpha1)."""

ReferencePolicy = Literal["warn", "reject"]
UNPROCESSABLE = 422  # what the API server itself answers for an invalid object


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

    The handler ids name the webhooks in the ValidatingWebhookConfiguration kopf
    manages (``settings.admission.managed``): ``validate-<plural>.<managed name>``.
    """
    validate = _validator(references)
    for plural in PLURALS:
        kopf.on.validate(
            GROUP, VERSION, plural, registry=registry, id=f"validate-{plural}",
            operations=["CREATE", "UPDATE"], side_effects=False,
        )(validate)
