"""The manifests in examples/manifests parse, refer only to what they declare, and keep their promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.expressions import compile_expression
from agentflow.engine.templates import compile_template
from agentflow.executors import StepServices
from agentflow.executors.tool_step import allowed_tool
from agentflow.gateway.local import local_gateway
from agentflow.llm import offline_provider
from agentflow.loader import load_documents
from agentflow.models import Catalog, StepKind, StepSpec, TreeNodeType, Workflow, tree_nodes
from agentflow.models.manifests import parse_documents
from agentflow.runner.session import Bundle, create_run, drive, make_executor
from agentflow.runner.store import RunStore
from agentflow.tools import ToolRunner
from agentflow.validation import check_workflow
from agentflow.validation.templates import resolve_workflow

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
    resolved, findings = resolve_workflow(workflows[0], catalog)  # a Workflow made from a template
    assert resolved is not None, findings
    return resolved, catalog


def steps_of(workflow: Workflow) -> list[StepSpec]:
    return [step for _, step in workflow.spec.keyed_steps()]


def test_the_promised_examples_exist() -> None:
    assert {
        "customer-support.yaml",
        "document-analysis.yaml",
        "content-pipeline.yaml",
        "fraud-detection.yaml",
        "content-moderation.yaml",
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
    services = StepServices(catalog, workflow.spec, local_gateway(workflow, catalog, offline_provider()), ToolRunner())
    for step in steps_of(workflow):
        if step.agent_ref is not None:
            assert step.agent_ref.name in catalog.agents, f"{name}: {step.name}: unknown Agent"
        if step.prompt_ref is not None and step.prompt_ref.family is not None:
            assert any(p.spec.prompt == step.prompt_ref.family for p in catalog.prompts.values()), (
                f"{name}: {step.name}: unknown prompt family")
        elif step.prompt_ref is not None:
            assert step.prompt_ref.name in catalog.prompts, f"{name}: {step.name}: unknown PromptVersion"
        if step.kind is StepKind.tool:
            allowed_tool(services, step)  # raises when deny-by-default refuses the tool


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
    expressions += [node.when for _, node in tree_nodes(workflow.spec.behavior_tree) if node.when]
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


def test_support_conversation_compacts_its_first_exchange_before_the_follow_up() -> None:
    from agentflow.engine import conversation

    workflow, catalog = load("support-agent-conversation.yaml")
    agent = catalog.agents["conversation-agent"]
    budget = agent.spec.memory.conversation_tokens
    assert agent.spec.memory.kind == "conversation" and budget is not None
    first, follow = workflow.spec.steps
    assert first.agent_ref == follow.agent_ref and follow.depends_on == [first.name]
    # The first exchange alone (its inputs, an answer of about 90 tokens) passes the budget: follow-up/s1 runs.
    exchange = conversation.exchange(first.name, {"message": workflow.spec.inputs["first"]}, "x" * 360)
    prompt = conversation.prompt_message(follow.name, {"message": workflow.spec.inputs["followUp"]})
    assert conversation.compaction(budget, None, [exchange], prompt, []) == 1


@pytest.mark.parametrize("name", FILES)
def test_every_example_runs_offline_to_an_end_or_an_approval(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the README calls runnable templates run with the offline model: done (0) or waiting for a human (3),
    never a traceback."""
    from agentflow.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")
    code = main(["run", str(EXAMPLES / name), "--no-wait", "--json"])
    out, err = capsys.readouterr()
    assert code in (0, 3), (out[-3000:], err[-3000:])


def test_content_moderation_is_a_behavior_tree() -> None:
    workflow, catalog = load("content-moderation.yaml")
    root = workflow.spec.behavior_tree
    assert root is not None and root.type is TreeNodeType.sequence
    nodes = {node.name or (node.step.name if node.step else ""): node for _, node in tree_nodes(root)}
    assert nodes["screen"].type is TreeNodeType.parallel and len(nodes["screen"].children) == 2
    assert nodes["decide"].type is TreeNodeType.selector
    assert [c.type for c in nodes["harmful"].children] == [TreeNodeType.condition, TreeNodeType.retry]
    kinds = {node.type for _, node in tree_nodes(root)}
    assert {TreeNodeType.timeout, TreeNodeType.retry, TreeNodeType.condition} <= kinds
    assert nodes["review"].step is not None and nodes["review"].step.kind is StepKind.approval
    assert check_workflow(workflow.spec, catalog) == []


@pytest.mark.parametrize(("inputs", "decision", "ran"), [
    ({}, "published", {"classify", "guidelines", "publish", "record"}),
    ({"text": "Crypto giveaway! Send 1 BTC, get 2 back. Not a scam."}, "removed",
     {"classify", "guidelines", "takedown", "record"}),
])
async def test_content_moderation_runs_offline(tmp_path: Path, inputs: dict[str, Any], decision: str,
                                               ran: set[str]) -> None:
    workflow, catalog = load("content-moderation.yaml")
    workflow = workflow.model_copy(update={"spec": workflow.spec.model_copy(
        update={"inputs": {**workflow.spec.inputs, **inputs}})})
    bundle = Bundle(workflow, catalog, (EXAMPLES / "content-moderation.yaml").read_text())
    run_dir = create_run(RunStore(tmp_path / "runs"), bundle, [EXAMPLES / "content-moderation.yaml"])
    run = await drive(run_dir, bundle, make_executor(bundle, "inprocess", env={"AGENTFLOW_MODEL_MODE": "offline"}))
    assert run.phase == "Succeeded", run.reason
    assert (run.outputs or {})["decision"] == decision
    assert {n.state for n in run.nodes.values() if n.parent is None and n.phase == "Succeeded"} == ran


async def test_content_moderation_waits_for_a_moderator_when_reported(tmp_path: Path) -> None:
    workflow, catalog = load("content-moderation.yaml")
    workflow = workflow.model_copy(update={"spec": workflow.spec.model_copy(
        update={"inputs": {**workflow.spec.inputs, "reports": 4}})})
    bundle = Bundle(workflow, catalog, (EXAMPLES / "content-moderation.yaml").read_text())
    run_dir = create_run(RunStore(tmp_path / "runs"), bundle, [EXAMPLES / "content-moderation.yaml"])
    run = await drive(run_dir, bundle, make_executor(bundle, "inprocess", env={"AGENTFLOW_MODEL_MODE": "offline"}),
                      wait_for_approvals=False)
    assert not run.finished
    assert run.nodes["review#1"].phase == "Waiting"


def test_the_support_agents_order_lookup_is_granted_from_an_mcp_server() -> None:
    """support-agent.yaml: the order system is an MCP server shipped in the package (a demo, stdio, started with
    the Python that runs AgentFlow); only its order_status is granted, never customer_orders."""
    from agentflow.validation.grants import ToolDenied, agent_grants, decide_agent_tool

    _, catalog = load("support-agent.yaml")
    agent = catalog.agents["support-agent"]
    grants, denied = agent_grants(agent, catalog)
    assert denied == []
    (orders,) = [g.tool for g in grants if g.tool.name == "orders"]
    assert orders.mcp is not None and orders.mcp.command == ["python", "-m", "agentflow.examples.order_server"]
    assert orders.mcp.tools == ["order_status"]
    assert decide_agent_tool(agent, "orders/order_status", catalog).member == "order_status"
    with pytest.raises(ToolDenied, match="customer_orders"):
        decide_agent_tool(agent, "orders/customer_orders", catalog)
    assert "[[call orders__order_status" in (agent.spec.instructions or "")


async def test_the_support_agent_offers_only_the_granted_tool_of_the_order_server() -> None:
    from agentflow.tools import discover_functions
    from agentflow.validation.grants import agent_grants

    _, catalog = load("support-agent.yaml")
    grants, _ = agent_grants(catalog.agents["support-agent"], catalog)
    functions = await discover_functions([g for g in grants if g.tool.name == "orders"], ToolRunner().mcp)
    assert [s["function"]["name"] for s in functions.schemas] == ["orders__order_status"]
    assert functions.left_out == ()
    assert functions.schemas[0]["function"]["parameters"]["required"] == ["order"]


def test_the_support_agent_runs_offline_from_any_folder_and_asks_the_order_server_over_mcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agentflow run examples/manifests/support-agent.yaml` in an empty folder, with a PATH that names no python:
    the loop's order lookup is a call node of the run, journaled with the demo server's answer."""
    import json

    from agentflow.cli import main
    from agentflow.examples.order_server import ORDERS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")
    monkeypatch.setenv("PATH", "/nonexistent")
    code = main(["--state-dir", str(tmp_path / "state"), "run", str(EXAMPLES / "support-agent.yaml"), "--json",
                 "--progress", "none"])
    out, err = capsys.readouterr()
    assert code == 0, (out[-3000:], err[-3000:])
    result = json.loads(out)
    assert result["phase"] == "Succeeded" and result["outputs"]["action"] == "issue-refund"
    records = [r.event for r in RunStore(tmp_path / "state").open(result["runId"]).read_records()]
    (scheduled,) = [e for e in records
                    if e.type.value == "StepScheduled" and e.data.get("tool") == "orders__order_status"]
    node = scheduled.node
    assert node.startswith("answer/t1/call-") and scheduled.data["inputs"] == {"order": "4411"}
    (done,) = [e for e in records if e.type.value == "StepSucceeded" and e.node == node]
    assert done.data["output"] == ORDERS["4411"]
    assert [p["id"] for p in done.data["output"]["payments"]] == ["pay-7731", "pay-7732"]  # the duplicate charge
    (cost,) = [e for e in records if e.type.value == "CostRecorded" and e.node == node]
    assert (cost.data["call"]["kind"], cost.data["call"]["name"]) == ("tool", "orders/order_status")
