"""The manifests in examples/manifests parse, refer only to what they declare, and keep their promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.expressions import compile_expression, compile_template
from agentflow.llm import OfflineModel
from agentflow.models import Catalog, StepKind, StepSpec, Workflow
from agentflow.models.manifests import load_documents, parse_documents
from agentflow.runner.executors import InProcessExecutor
from agentflow.tools import ToolRunner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"
FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def load(name: str) -> tuple[Workflow, Catalog]:
    loaded = parse_documents(load_documents([EXAMPLES / name]))
    workflows = [r.resource for r in loaded if isinstance(r.resource, Workflow)]
    assert len(workflows) == 1, f"{name} must hold exactly one Workflow"
    catalog = Catalog()
    for r in loaded:
        if not isinstance(r.resource, Workflow):
            catalog.add(r.resource)
    return workflows[0], catalog


def steps_of(workflow: Workflow) -> list[StepSpec]:
    if workflow.spec.state_machine is None:
        return list(workflow.spec.steps)
    return [s.step for s in workflow.spec.state_machine.states if s.step is not None]


def test_the_promised_examples_exist() -> None:
    assert {
        "customer-support.yaml",
        "document-analysis.yaml",
        "content-pipeline.yaml",
        "fraud-detection.yaml",
        "quickstart.yaml",
    } <= set(FILES)


def test_names_are_unique_across_the_folder() -> None:
    seen: dict[tuple[str, str], str] = {}
    for item in parse_documents(load_documents([EXAMPLES])):
        key = (item.resource.kind, item.resource.metadata.name)
        assert key not in seen, f"{key} in both {seen[key]} and {item.doc.source}"
        seen[key] = item.doc.source


@pytest.mark.parametrize("name", FILES)
def test_references_resolve_and_tools_are_granted(name: str) -> None:
    workflow, catalog = load(name)
    executor = InProcessExecutor(catalog, workflow.spec, OfflineModel(), ToolRunner())
    for step in steps_of(workflow):
        if step.agent_ref is not None:
            assert step.agent_ref.name in catalog.agents, f"{name}: {step.name}: unknown Agent"
        if step.prompt_ref is not None:
            assert step.prompt_ref.name in catalog.prompts, f"{name}: {step.name}: unknown PromptVersion"
        if step.kind is StepKind.tool:
            executor.allowed_tool(step)  # raises when deny-by-default refuses the tool


@pytest.mark.parametrize("name", FILES)
def test_every_expression_compiles(name: str) -> None:
    workflow, catalog = load(name)
    expressions: list[str] = list(workflow.spec.outputs.values())
    templates: list[Any] = [workflow.spec.inputs]
    for step in steps_of(workflow):
        expressions += [e for e in (step.when, step.for_each) if e]
        templates.append(step.inputs)
        if step.approval is not None:
            templates.append(step.approval.message)
    if workflow.spec.state_machine is not None:
        expressions += [t.when for s in workflow.spec.state_machine.states for t in s.transitions if t.when]
    for prompt in catalog.prompts.values():
        templates += [m.content for m in prompt.spec.messages]
    for text in expressions:
        compile_expression(text)
    for value in templates:
        compile_template(value)


def test_quickstart_finishes_unattended() -> None:
    workflow, _ = load("quickstart.yaml")
    assert all(step.kind is not StepKind.approval for step in steps_of(workflow))


def test_customer_support_shape() -> None:
    workflow, _ = load("customer-support.yaml")
    steps = {s.name: s for s in workflow.spec.steps}
    assert set(steps) == {"classify", "search", "respond", "escalate", "act"}
    assert steps["escalate"].kind is StepKind.approval and "confidence < 0.7" in (steps["escalate"].when or "")
    assert "confidence >= 0.7" in (steps["respond"].when or "")
    assert set(steps["act"].depends_on) == {"respond", "escalate"}


def test_document_analysis_fans_out_and_in() -> None:
    workflow, _ = load("document-analysis.yaml")
    steps = {s.name: s for s in workflow.spec.steps}
    assert steps["summarize"].for_each == "inputs.documents" and steps["summarize"].parallelism == 2
    assert steps["combine"].depends_on == ["summarize"]
    assert len(workflow.spec.inputs["documents"]) >= 2


def test_content_pipeline_has_a_gate_and_an_exit_handler() -> None:
    workflow, _ = load("content-pipeline.yaml")
    steps = {s.name: s for s in workflow.spec.steps}
    assert "steps.review.output.score" in (steps["publish"].when or "")
    assert steps["notify-failure"].run_on.value == "failure"


def test_fraud_detection_is_a_bounded_state_machine() -> None:
    workflow, _ = load("fraud-detection.yaml")
    machine = workflow.spec.state_machine
    assert machine is not None
    states = {s.name: s for s in machine.states}
    assert {"block", "approve"} <= {n for n, s in states.items() if s.final is not None}
    assert states["recheck"].max_visits is not None and states["score"].max_visits is not None
    assert any(t.target == "recheck" for t in states["score"].transitions)
    assert any(t.target == "score" for t in states["recheck"].transitions)
    review = states["manual-review"].step
    assert review is not None and review.kind is StepKind.approval
