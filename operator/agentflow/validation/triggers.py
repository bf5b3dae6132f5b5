"""WorkflowTriggers: their CEL compiled and checked, and a delivery mapped to a run's inputs (pure).

The same compile serves admission (``agentflow validate``, the webhook: :func:`trigger_findings`) and the trigger
server (:func:`compile_trigger`, then :meth:`CompiledTrigger.deliver` per delivery)::

    compile_trigger(spec) -> CompiledTrigger                  TriggerSpecError naming the field (spec.inputs.X)
    CompiledTrigger.deliver(body, headers) -> Delivery        MappingError naming the field that failed
    trigger_findings(trigger, catalog) -> [Finding]            the above, and the template and its input names

Expressions read ``body`` (the parsed JSON, or a form-encoded body's fields) and ``headers`` (lower-case names,
string values). A delivery id is a string or a whole number of at most 256 characters with no control characters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agentflow.engine.expressions import Expression, ExpressionError, compile_expression
from agentflow.models import Catalog, WorkflowTrigger, WorkflowTriggerSpec
from agentflow.models.trigger import DEFAULT_DELIVERY_HEADERS

from .findings import CEL_NAMES, Finding, PathParts
from .templates import unknown_input_findings, unknown_template
from .values import json_value_findings

__all__ = ["TRIGGER_ROOTS", "CompiledTrigger", "Delivery", "MappingError", "TriggerSpecError", "compile_trigger",
           "trigger_findings"]

TRIGGER_ROOTS = frozenset({"body", "headers"})
MAX_DELIVERY_ID = 256


class TriggerSpecError(ValueError):
    """A trigger's expression does not compile or reads a name it cannot; ``field`` is its path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class MappingError(ValueError):
    """A delivery cannot be mapped: ``field`` names the trigger field whose expression failed (or the
    delivery id)."""

    def __init__(self, field: str, message: str, delivery_id: str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.delivery_id = delivery_id
        """The delivery's id when it was read before the failure."""


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What a delivery asks for: its id, whether ``when`` let it through, and the run's inputs (None when
    filtered out: they are not evaluated then)."""

    id: str
    accepted: bool
    inputs: dict[str, Any] | None


def _compile(text: str, field: str) -> Expression:
    try:
        expr = compile_expression(text)
    except ExpressionError as exc:
        raise TriggerSpecError(field, str(exc)) from None
    unknown = sorted(expr.roots - TRIGGER_ROOTS - CEL_NAMES)
    if unknown:
        raise TriggerSpecError(field, f"expression {text!r}: unknown name {unknown[0]!r}; trigger expressions "
                                      "can read body, headers")
    return expr


@dataclasses.dataclass(frozen=True)
class CompiledTrigger:
    """A trigger's expressions, compiled once."""

    inputs: Mapping[str, Expression]
    when: Expression | None
    delivery_id: Expression | None

    def deliver(self, body: Any, headers: Mapping[str, str]) -> Delivery:
        """The delivery's id first (a refused delivery still has one to report), then ``when``, then the inputs;
        MappingError naming the first field that fails."""
        context = {"body": body, "headers": {k.lower(): v for k, v in headers.items()}}
        delivery = self._delivery_id(context)
        try:
            return self._deliver(delivery, context)
        except MappingError as exc:
            exc.delivery_id = delivery
            raise

    def _deliver(self, delivery: str, context: Mapping[str, Any]) -> Delivery:
        if self.when is not None:
            try:
                accepted = self.when.truthy(context)
            except ExpressionError as exc:
                raise MappingError("spec.when", str(exc)) from None
            if not accepted:
                return Delivery(delivery, False, None)
        inputs: dict[str, Any] = {}
        for name, expr in self.inputs.items():
            field = f"spec.inputs.{name}"
            try:
                value = expr.evaluate(context)
            except ExpressionError as exc:
                raise MappingError(field, str(exc)) from None
            problems = json_value_findings(value, ["spec", "inputs", name])
            if problems:
                raise MappingError(field, f"the value is not JSON: {problems[0][1]}")
            inputs[name] = value
        return Delivery(delivery, True, inputs)

    def _delivery_id(self, context: Mapping[str, Any]) -> str:
        headers: Mapping[str, str] = context["headers"]
        if self.delivery_id is None:
            found = next((headers[h] for h in DEFAULT_DELIVERY_HEADERS if headers.get(h)), None)
            if found is None:
                raise MappingError("spec.deliveryId", "the delivery has no id: send one of the headers "
                                   f"{', '.join(DEFAULT_DELIVERY_HEADERS)} or set spec.deliveryId")
            value: Any = found
        else:
            try:
                value = self.delivery_id.evaluate(context)
            except ExpressionError as exc:
                raise MappingError("spec.deliveryId", str(exc)) from None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise MappingError("spec.deliveryId", f"a delivery id is a string or a whole number, got {value!r}"[:300])
        text = str(value).strip()
        if not text or len(text) > MAX_DELIVERY_ID or any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise MappingError("spec.deliveryId", f"a delivery id has 1 to {MAX_DELIVERY_ID} characters and no "
                                                  "control characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8, passed on as surrogates by the HTTP server
            raise MappingError("spec.deliveryId", "a delivery id is UTF-8 text") from None
        return text


def compile_trigger(spec: WorkflowTriggerSpec) -> CompiledTrigger:
    """Compile every expression of a trigger; TriggerSpecError naming the first that fails."""
    inputs = {name: _compile(text, f"spec.inputs.{name}") for name, text in sorted(spec.inputs.items())}
    when = _compile(spec.when, "spec.when") if spec.when is not None else None
    delivery = _compile(spec.delivery_id, "spec.deliveryId") if spec.delivery_id is not None else None
    return CompiledTrigger(inputs, when, delivery)


def _path(field: str) -> PathParts:
    return list(field.split(".", 2))


def trigger_findings(trigger: WorkflowTrigger, catalog: Catalog | None) -> list[Finding]:
    """Every problem of a trigger: expressions that do not compile, a template that does not exist, input names
    it does not declare (the values are known only per delivery, so only the names are checked here)."""
    spec = trigger.spec
    findings: list[Finding] = []
    fields: list[tuple[str, str | None]] = [(f"spec.inputs.{n}", text) for n, text in sorted(spec.inputs.items())]
    fields += [("spec.when", spec.when), ("spec.deliveryId", spec.delivery_id)]
    for field, text in fields:
        if text is None:
            continue
        try:
            _compile(text, field)
        except TriggerSpecError as exc:
            findings.append((_path(field), str(exc).partition(": ")[2]))
    if catalog is not None:
        template = catalog.template(spec.workflow_template_ref)
        if template is None:
            findings.append(unknown_template(spec.workflow_template_ref, catalog))
        else:
            findings.extend(unknown_input_findings(template, spec.inputs))
    return findings
