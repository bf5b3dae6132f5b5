"""The checks of the resources other than Workflows: PromptVersion, ToolPolicy and Agent.

Each returns findings with paths relative to the resource body; what the
pydantic models already check is not checked again.
"""

from __future__ import annotations

from typing import Any

from agentflow.engine.expressions import ExpressionError, compile_expression, compile_template
from agentflow.models import Agent, Catalog, PromptVersion, ToolPolicy, Workflow
from agentflow.models.manifests import Resource

from .findings import CEL_NAMES, Finding, PathParts, known_names, strings_in
from .schemas import schema_and_instances
from .workflow import check_workflow

__all__ = ["check_resource"]

_PROMPT_ROOTS = frozenset({"inputs"})  # prompts and Agent instructions render over the step's inputs


def _templates(value: Any, path: PathParts, allowed: frozenset[str]) -> list[Finding]:
    findings: list[Finding] = []
    for where, text in strings_in(value, path):
        try:
            template = compile_template(text)
        except ExpressionError as exc:
            findings.append((where, str(exc)))
            continue
        for expr in template.expressions:
            for root in sorted(expr.roots - allowed - CEL_NAMES):
                why = f"unknown name {root!r}; expressions here can read {', '.join(sorted(allowed))}"
                findings.append((where, f"expression {expr.text!r}: {why}"))
    return findings


def _check_prompt(prompt: PromptVersion, catalog: Catalog | None) -> list[Finding]:
    spec = prompt.spec
    findings: list[Finding] = []
    for i, message in enumerate(spec.messages):
        findings.extend(_templates(message.content, ["spec", "messages", i, "content"], _PROMPT_ROOTS))
    evaluations: list[tuple[Any, PathParts]] = [
        (case.inputs, ["spec", "evaluations", i, "inputs"]) for i, case in enumerate(spec.evaluations)
    ]
    findings.extend(schema_and_instances(spec.input_schema, ["spec", "inputSchema"], evaluations))
    findings.extend(schema_and_instances(spec.output_schema, ["spec", "outputSchema"], []))
    for i, case in enumerate(spec.evaluations):
        for j, text in enumerate(case.assertions):
            path: PathParts = ["spec", "evaluations", i, "assertions", j]
            try:
                expr = compile_expression(text)
            except ExpressionError as exc:
                findings.append((path, str(exc)))
                continue
            for root in sorted(expr.roots - {"output", "inputs"} - CEL_NAMES):
                why = f"unknown name {root!r}; assertions can read output, inputs"
                findings.append((path, f"expression {text!r}: {why}"))
    if catalog is not None and spec.canary is not None and spec.canary.baseline.name not in catalog.prompts:
        known = known_names(catalog.prompts, "PromptVersions")
        why = f"unknown PromptVersion {spec.canary.baseline.name!r}; {known}"
        findings.append((["spec", "canary", "baseline", "name"], why))
    return findings


def _check_policy(policy: ToolPolicy) -> list[Finding]:
    findings: list[Finding] = []
    first: dict[str, int] = {}
    for i, tool in enumerate(policy.spec.tools):
        path: PathParts = ["spec", "tools", i]
        if tool.name in first:
            why = f"duplicate tool name {tool.name!r} (also spec.tools[{first[tool.name]}])"
            findings.append(([*path, "name"], why))
        else:
            first[tool.name] = i
        findings.extend(schema_and_instances(tool.input_schema, [*path, "inputSchema"], []))
        findings.extend(schema_and_instances(tool.output_schema, [*path, "outputSchema"], []))
    return findings


def check_resource(resource: Resource, catalog: Catalog | None = None) -> list[Finding]:
    """Every problem of one typed resource beyond what its model checks; paths relative to its body."""
    if isinstance(resource, Workflow):
        return check_workflow(resource.spec, catalog)
    if isinstance(resource, PromptVersion):
        return _check_prompt(resource, catalog)
    if isinstance(resource, ToolPolicy):
        return _check_policy(resource)
    if isinstance(resource, Agent):
        return _templates(resource.spec.instructions, ["spec", "instructions"], _PROMPT_ROOTS)
    return []
