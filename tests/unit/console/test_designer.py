"""The designer's server side: import, export that round-trips, and `agentflow validate`'s findings on nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow.console import designer
from agentflow.loader import validate_paths

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples" / "manifests").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_round_trips_and_validates(path: Path, tmp_path: Path) -> None:
    documents, problems = designer.parse(path.read_text())
    assert problems == [] and documents
    text = designer.export(documents)
    again, problems = designer.parse(text)
    assert problems == []
    assert again == documents, "import -> export -> import gives the same objects"
    assert designer.export(again) == text
    exported = tmp_path / path.name
    exported.write_text(text)
    if "wasm" not in path.name:  # its module path is relative to the examples folder
        assert validate_paths([exported])[1] == []
        assert designer.findings(text)["ok"] is True


def test_findings_are_the_messages_of_agentflow_validate_mapped_to_nodes(tmp_path: Path) -> None:
    text = (EXAMPLES[0].parent / "customer-support.yaml").read_text().replace(
        "dependsOn: [classify]\n", "dependsOn: [classify, act]\n", 1)
    report = designer.findings(text)
    assert not report["ok"]
    cycle = [p for p in report["problems"] if "cycle" in p["message"]]
    assert cycle and all(p["node"] == "search" and p["field"] == "dependsOn" for p in cycle)
    assert all(p["kind"] == "Workflow" and p["name"] == "customer-support" for p in cycle)
    path = tmp_path / "designer.yaml"
    path.write_text(text)
    cli = {(p.path, p.message, p.line) for p in validate_paths([path])[1]}
    assert {(p["path"], p["message"], p["line"]) for p in report["problems"]} == cli


def test_a_field_problem_names_the_step_and_the_field() -> None:
    text = (EXAMPLES[0].parent / "quickstart.yaml").read_text().replace(
        "promptRef: {name: quickstart-respond-v1}", "promptRef: {name: nope}")
    (problem,) = designer.findings(text)["problems"]
    assert (problem["node"], problem["field"]) == ("respond", "promptRef.name")
    assert "nope" in problem["message"]


def test_a_behavior_tree_problem_names_the_tree_node_and_the_field() -> None:
    text = (EXAMPLES[0].parent / "content-moderation.yaml").read_text()
    broken = text.replace("tool: community-guidelines\n", "tool: nowhere\n").replace(
        "when: steps.classify.output.severity > 0.8", "when: steps.classify.output.severity >")
    problems = {(p["node"], p["field"]) for p in designer.findings(broken)["problems"]}
    assert problems == {("guidelines", "tool"), ("harmful.0", "when")}  # harmful names its parent


def test_malformed_yaml_is_a_problem_with_its_line() -> None:
    documents, problems = designer.parse("apiVersion: agentflow.dev/v1alpha1\nkind: [Workflow\n")
    assert documents == []
    (problem,) = problems
    assert problem["line"] is not None and "malformed YAML" in problem["message"]
    assert designer.findings("kind: [x\n")["ok"] is False


def test_a_document_that_is_not_a_mapping_is_named() -> None:
    _, problems = designer.parse("- just\n- a list\n")
    assert problems[0]["message"] == "a manifest must be a mapping"


def test_oversized_manifests_are_refused_with_a_hint() -> None:
    text = "a: " + "x" * (designer.MAX_MANIFEST_BYTES + 1)
    _, problems = designer.parse(text)
    assert "larger than" in problems[0]["message"]


def test_schemas_are_the_crds_openapi_schemas() -> None:
    schemas = designer.schemas()
    assert set(schemas) == {"Workflow", "Agent", "PromptVersion", "Budget", "ToolPolicy", "WorkflowTemplate",
                            "WorkflowSchedule", "WorkflowTrigger", "PromptRollout", "ClusterWorkflowTemplate"}
    step = schemas["Workflow"]["properties"]["spec"]["properties"]["steps"]["items"]
    assert {"name", "kind", "dependsOn", "agentRef"} <= set(step["properties"])
