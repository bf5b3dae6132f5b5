"""Validation of behavior trees: every problem names its path in the tree, bounds included."""

from __future__ import annotations

from typing import Any

from agentflow.models.limits import MAX_TREE_DEPTH, MAX_TREE_NODES
from agentflow.validation import validate_body

from .test_validation import API, check, messages_at


def leaf(name: str, **step: Any) -> dict[str, Any]:
    return {"type": "step", "step": {"name": name, "kind": "tool", "tool": "search", **step}}


def body(tree: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": "wf"}, "spec": {"behaviorTree": tree, **spec}}


def test_a_valid_tree_has_no_findings() -> None:
    tree = {"type": "sequence", "children": [
        leaf("a"),
        {"type": "selector", "children": [
            {"type": "condition", "when": "steps.a.output.ok", "child": leaf("b")},
            {"type": "retry", "limit": 2, "child": leaf("c")}]},
        {"type": "parallel", "successThreshold": 1, "children": [leaf("d"), leaf("e")]},
        {"type": "timeout", "timeoutSeconds": 10, "child": {"type": "invert", "child": leaf("f")}},
        {"type": "repeat", "count": 3, "child": leaf("g", inputs={"x": "${{ steps.a.output }}"})}]}
    assert check({"behaviorTree": tree, "outputs": {"last": "steps.g.output"}}) == []


def test_parse_problems_name_the_path_in_the_tree() -> None:
    tree = {"type": "sequence", "children": [
        leaf("a"),
        {"type": "sequence", "children": [{"type": "step", "step": {"name": "b", "kind": "tool"}}]},
        {"type": "retry", "child": leaf("c")},
        {"type": "invert", "children": [leaf("d")]},
        {"type": "sequence", "children": []}]}
    problems = {p.path: p.message for p in validate_body(body(tree))}
    assert problems == {
        "spec.behaviorTree.children[1].children[0].step": "a tool step needs tool",
        "spec.behaviorTree.children[2]": "a retry node needs limit",
        "spec.behaviorTree.children[3]": "an invert node has no children",
        "spec.behaviorTree.children[4]": "a sequence node needs children",
    }


def test_exactly_one_shape() -> None:
    problems = validate_body(body(leaf("a"), steps=[leaf("b")["step"]]))
    assert [p.message for p in problems] == ["exactly one of steps, stateMachine or behaviorTree must be given"]


def test_checks_name_the_path_in_the_tree() -> None:
    tree = {"type": "sequence", "children": [
        leaf("a", dependsOn=["b"], when="true", forEach="inputs.x", continueOnFailure=True),
        {"type": "parallel", "successThreshold": 3, "failureThreshold": 4, "children": [
            leaf("a"), {"type": "condition", "when": "steps.nope.output && bogus"}]},
        {"type": "selector", "name": "a", "children": [leaf("b", inputs={"x": "${{ steps.zz }}"})]}]}
    findings = check({"behaviorTree": tree, "outputs": {"o": "steps.missing.output"}})
    base: list[str | int] = ["spec", "behaviorTree", "children"]
    assert messages_at(findings, [*base, 0, "step", "dependsOn"]) == [
        "dependsOn is not for a behavior tree's steps: the tree orders its steps (sequence, parallel)"]
    assert messages_at(findings, [*base, 0, "step", "when"]) == [
        "when is not for a behavior tree's steps: use a condition node above the step"]
    assert len(messages_at(findings, [*base, 0, "step", "forEach"])) == 1
    assert len(messages_at(findings, [*base, 0, "step", "continueOnFailure"])) == 1
    assert messages_at(findings, [*base, 1, "children", 0, "step", "name"]) == [
        "duplicate name 'a' in the behavior tree (also spec.behaviorTree.children[0]); step names and node names "
        "are the ids of the tree's nodes"]
    assert messages_at(findings, [*base, 2, "name"])[0].startswith("duplicate name 'a'")
    assert messages_at(findings, [*base, 1, "successThreshold"]) == [
        "successThreshold 3 is more than the 2 children of this parallel node"]
    assert len(messages_at(findings, [*base, 1, "failureThreshold"])) == 1
    assert messages_at(findings, [*base, 1, "children", 1, "when"]) == [
        "expression 'steps.nope.output && bogus': unknown name 'bogus'; expressions here can read inputs, steps, "
        "workflow",
        "expression 'steps.nope.output && bogus': unknown step 'nope' in steps.nope; steps of the tree: a, b"]
    assert messages_at(findings, [*base, 2, "children", 0, "step", "inputs", "x"]) == [
        "expression 'steps.zz': unknown step 'zz' in steps.zz; steps of the tree: a, b"]
    assert len(messages_at(findings, ["spec", "outputs", "o"])) == 1


def test_bounds_on_depth_size_and_runs() -> None:
    deep: dict[str, Any] = leaf("bottom")
    for _ in range(MAX_TREE_DEPTH):
        deep = {"type": "invert", "child": deep}
    findings = check({"behaviorTree": deep})
    path: list[str | int] = ["spec", "behaviorTree", *(["child"] * MAX_TREE_DEPTH)]
    assert messages_at(findings, path) == [
        f"this node is {MAX_TREE_DEPTH + 1} levels deep, deeper than the {MAX_TREE_DEPTH} a behavior tree may nest"]

    wide = {"type": "sequence", "children": [{"type": "parallel", "children": [leaf(f"s{i}-{j}") for j in range(100)]}
                                             for i in range(MAX_TREE_NODES // 100)]}
    assert any("nodes, more than the 2,000 a tree may hold" in m for _, m in check({"behaviorTree": wide}))

    runs = {"type": "repeat", "count": 10_000, "child": {"type": "retry", "limit": 100, "child": leaf("x")}}
    assert messages_at(check({"behaviorTree": runs}), ["spec", "behaviorTree"]) == [
        "the tree's steps may run 1,010,000 times in all (retry limits and repeat counts multiplied down the tree), "
        "more than the 100,000 a run may hold; lower them"]


def test_the_roots_id_is_reserved() -> None:
    tree = {"type": "sequence", "children": [leaf("bt"), {"type": "invert", "name": "bt", "child": leaf("a")}]}
    findings = check({"behaviorTree": tree})
    assert messages_at(findings, ["spec", "behaviorTree", "children", 0, "step", "name"]) == [
        "the name 'bt' is the id of the tree's root; choose another name"]
    assert len(messages_at(findings, ["spec", "behaviorTree", "children", 1, "name"])) == 1
    assert check({"behaviorTree": {"type": "sequence", "name": "bt", "children": [leaf("a")]}}) == []
