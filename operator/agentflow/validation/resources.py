"""The checks of the resources other than Workflows: PromptVersion, ToolPolicy and Agent.

Each returns findings with paths relative to the resource body; what the
pydantic models already check is not checked again.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentflow.engine.expressions import ExpressionError, compile_expression
from agentflow.engine.templates import compile_template
from agentflow.models import (
    Agent,
    Catalog,
    ClusterWorkflowTemplate,
    EvaluationSuite,
    PromptRollout,
    PromptVersion,
    TemplateRef,
    ToolPolicy,
    Workflow,
    WorkflowSchedule,
    WorkflowTemplate,
    WorkflowTrigger,
)
from agentflow.models.cron import CronError, parse_cron
from agentflow.models.manifests import Resource
from agentflow.prompts.compose import composition_findings

from .findings import CEL_NAMES, Finding, PathParts, known_names, strings_in
from .schemas import schema_and_instances
from .templates import resolve_workflow, template_cycle_findings, template_input_findings, unknown_template
from .triggers import trigger_findings
from .values import json_value_findings
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


def _check_expression(text: str, path: PathParts) -> list[Finding]:
    try:
        expr = compile_expression(text)
    except ExpressionError as exc:
        return [(path, str(exc))]
    return [(path, f"expression {text!r}: unknown name {root!r}; assertions can read output, inputs")
            for root in sorted(expr.roots - {"output", "inputs"} - CEL_NAMES)]


def _check_suite(suite: EvaluationSuite, catalog: Catalog | None) -> list[Finding]:
    findings: list[Finding] = []
    for i, case in enumerate(suite.cases):
        for j, assertion in enumerate(case.assertions):
            path: PathParts = ["spec", "evaluations", "cases", i, "assertions", j]
            if assertion.cel is not None:
                findings.extend(_check_expression(assertion.cel, [*path, "cel"]))
            if assertion.path is not None:
                findings.extend(_check_expression(assertion.path, [*path, "path"]))
            if assertion.json_schema is not None:
                findings.extend(schema_and_instances(assertion.json_schema, [*path, "jsonSchema"], []))
            if assertion.regex is not None:
                try:
                    re.compile(assertion.regex)
                except re.error as exc:
                    findings.append(([*path, "regex"], f"not a regular expression: {exc}"))
    if catalog is None:
        return findings
    refs: list[tuple[str, str, PathParts]] = [("Agent", suite.agent_ref.name, ["spec", "evaluations", "agentRef"])]
    if suite.judge is not None:
        refs.append(("Agent", suite.judge.agent_ref.name, ["spec", "evaluations", "judge", "agentRef"]))
        if suite.judge.pairwise_against is not None:
            refs.append(("PromptVersion", suite.judge.pairwise_against.name,
                         ["spec", "evaluations", "judge", "pairwiseAgainst"]))
    for kind, name, where in refs:
        table: dict[str, Any] = catalog.agents if kind == "Agent" else catalog.prompts
        if name not in table:
            known = known_names(table, f"{kind}s")
            findings.append(([*where, "name"], f"unknown {kind} {name!r}; {known}"))
    return findings


def _check_prompt(prompt: PromptVersion, catalog: Catalog | None) -> list[Finding]:
    spec = prompt.spec
    findings: list[Finding] = []
    for i, message in enumerate(spec.messages):
        if message.content is not None:
            findings.extend(_templates(message.content, ["spec", "messages", i, "content"], _PROMPT_ROOTS))
    for part, messages in sorted(spec.parts.items()):
        for i, message in enumerate(messages):
            if message.content is not None:
                findings.extend(_templates(message.content, ["spec", "parts", part, i, "content"], _PROMPT_ROOTS))
    if catalog is not None:
        findings.extend(composition_findings(prompt, catalog.prompts))
    cases = spec.evaluations.cases if spec.evaluations is not None else []
    evaluations: list[tuple[Any, PathParts]] = [
        (case.inputs, ["spec", "evaluations", "cases", i, "inputs"]) for i, case in enumerate(cases)
    ]
    findings.extend(schema_and_instances(spec.input_schema, ["spec", "inputSchema"], evaluations))
    findings.extend(schema_and_instances(spec.output_schema, ["spec", "outputSchema"], []))
    if spec.evaluations is not None:
        findings.extend(_check_suite(spec.evaluations, catalog))
    if spec.canary is not None and spec.canary.baseline.name == prompt.metadata.name:
        findings.append((["spec", "canary", "baseline", "name"], f"{prompt.metadata.name!r} is this PromptVersion: a "
                         "canary's baseline is the stable version it is compared with, another one of the family"))
    elif catalog is not None and spec.canary is not None:
        baseline = catalog.prompts.get(spec.canary.baseline.name)
        if baseline is None:
            known = known_names(catalog.prompts, "PromptVersions")
            why = f"unknown PromptVersion {spec.canary.baseline.name!r}; {known}"
            findings.append((["spec", "canary", "baseline", "name"], why))
        elif baseline.spec.prompt != spec.prompt:
            why = (f"PromptVersion {baseline.metadata.name!r} is of family {baseline.spec.prompt!r}, not "
                   f"{spec.prompt!r}: a canary's baseline is the stable version of the same family")
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


def _check_from_template(workflow: Workflow, catalog: Catalog | None) -> list[Finding]:
    """A Workflow naming a WorkflowTemplate: its inputs against the template, then the resolved spec."""
    if catalog is None:  # no templates to resolve against: only what stands on its own
        return json_value_findings(workflow.spec.inputs, ["spec", "inputs"])
    resolved, findings = resolve_workflow(workflow, catalog)
    if resolved is None:
        return findings
    ref = workflow.spec.workflow_template_ref
    source = f"{ref.kind} {ref.name!r}" if ref else ""
    findings = check_workflow(resolved.spec, catalog) + template_cycle_findings(resolved.spec, catalog, ref)
    return [(path, f"{message} (from {source})") for path, message in findings]


def _check_schedule(schedule: WorkflowSchedule, catalog: Catalog | None) -> list[Finding]:
    spec = schedule.spec
    findings: list[Finding] = []
    try:
        parse_cron(spec.schedule)
    except CronError as exc:
        findings.append((["spec", "schedule"], f"{spec.schedule!r}: {exc}"))
    try:
        ZoneInfo(spec.time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of tzdata (Europe), a name too long
        findings.append((["spec", "timeZone"], f"unknown time zone {spec.time_zone[:100]!r}; use an IANA name such as "
                                               "Europe/Berlin or UTC"))
    if catalog is not None:
        template = catalog.template(spec.workflow_template_ref)
        if template is None:
            findings.append(unknown_template(spec.workflow_template_ref, catalog))
        else:
            findings.extend(template_input_findings(template, spec.inputs))
    return findings


def _check_rollout(rollout: PromptRollout, catalog: Catalog | None) -> list[Finding]:
    """A PromptRollout's versions are PromptVersions of its family, and the family has no other rollout."""
    if catalog is None:
        return []
    spec = rollout.spec
    findings: list[Finding] = []
    for field, name in (("stable", spec.stable), ("candidate", spec.candidate)):
        version = catalog.prompts.get(name)
        if version is None:
            known = known_names([n for n, p in catalog.prompts.items() if p.spec.prompt == spec.prompt],
                                f"PromptVersions of family {spec.prompt!r}")
            findings.append((["spec", field], f"unknown PromptVersion {name!r}; {known}"))
        elif version.spec.prompt != spec.prompt:
            findings.append((["spec", field], f"PromptVersion {name!r} is of family {version.spec.prompt!r}, not "
                                              f"spec.prompt {spec.prompt!r}"))
    others = sorted(n for n, r in catalog.rollouts.items()
                    if r.spec.prompt == spec.prompt and n != rollout.metadata.name)
    if others:
        findings.append((["spec", "prompt"], f"prompt family {spec.prompt!r} is rolled out by PromptRollout "
                                             f"{others[0]!r} already (one PromptRollout per family)"))
    canaries = sorted(n for n, p in catalog.prompts.items() if p.spec.prompt == spec.prompt and p.spec.canary)
    if canaries:
        findings.append((["spec", "prompt"], f"PromptVersion {canaries[0]!r} of family {spec.prompt!r} has "
                                             "spec.canary: a family has a fixed canary or a PromptRollout, not both"))
    return findings


def check_resource(resource: Resource, catalog: Catalog | None = None) -> list[Finding]:
    """Every problem of one typed resource beyond what its model checks; paths relative to its body."""
    if isinstance(resource, Workflow):
        if resource.spec.workflow_template_ref is not None:
            return _check_from_template(resource, catalog)
        return check_workflow(resource.spec, catalog) + template_cycle_findings(resource.spec, catalog)
    if isinstance(resource, WorkflowTemplate):
        own = TemplateRef(name=resource.metadata.name, kind=resource.kind)
        return check_workflow(resource.spec, catalog) + template_cycle_findings(resource.spec, catalog, own)
    if isinstance(resource, ClusterWorkflowTemplate):
        # What it names is looked up in each namespace that uses it, when that Workflow is checked: a catalog of
        # one namespace (or of the manifests beside it) says nothing about the others. Its cycles through
        # cluster templates are the same in every namespace.
        own = TemplateRef(name=resource.metadata.name, kind=resource.kind)
        cluster = Catalog(cluster_templates=dict(catalog.cluster_templates)) if catalog is not None else None
        return check_workflow(resource.spec, None) + template_cycle_findings(resource.spec, cluster, own)
    if isinstance(resource, WorkflowSchedule):
        return _check_schedule(resource, catalog)
    if isinstance(resource, WorkflowTrigger):
        return trigger_findings(resource, catalog)
    if isinstance(resource, PromptVersion):
        return _check_prompt(resource, catalog)
    if isinstance(resource, PromptRollout):
        return _check_rollout(resource, catalog)
    if isinstance(resource, ToolPolicy):
        return _check_policy(resource)
    if isinstance(resource, Agent):
        return _templates(resource.spec.instructions, ["spec", "instructions"], _PROMPT_ROOTS)
    return []
