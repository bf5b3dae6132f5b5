"""The run graph: the whole plan laid out before anything ran, merged with live node states."""

from __future__ import annotations

from pathlib import Path

from agentflow.console.graph import changed, graph, layout, node_views
from agentflow.engine.run import Run
from agentflow.runner import session

from .conftest import APPROVALS, MACHINE, start


def _plan(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return session.plan_of(session.load_bundle([path]))


def test_the_whole_plan_is_drawn_before_the_run_starts(tmp_path: Path) -> None:
    plan = _plan(APPROVALS, tmp_path)
    g = graph(plan, Run(plan, "r"), {})
    nodes = {n["id"]: n for n in g["nodes"]}
    assert set(nodes) == {"ask", "each", "done", "cleanup"}
    assert all(n["state"]["phase"] == "Pending" for n in nodes.values())
    assert (nodes["ask"]["rank"], nodes["each"]["rank"], nodes["done"]["rank"]) == (0, 1, 2)
    assert nodes["cleanup"]["rank"] == 3, "an exit handler is drawn after every other step"
    assert nodes["each"]["fanOut"] is True
    assert {(e["source"], e["target"]) for e in g["edges"]} == {("ask", "each"), ("each", "done")}


def test_fan_out_items_are_collapsed_into_counts(state: Path) -> None:
    run_dir = start(state, APPROVALS)
    session.post_decision(run_dir, "ask", True, "alice", "fine")
    import asyncio

    from .conftest import drive

    asyncio.run(drive(run_dir))
    run = session.load_run(run_dir)
    views = node_views(run.plan, run)
    assert views["ask"]["phase"] == "Succeeded"
    assert views["each"]["items"] == 3
    assert views["each"]["counts"] == {"Waiting": 3}
    assert views["each"]["phase"] == "Waiting"
    assert views["done"]["phase"] == "Pending"
    assert "each[0]" not in views, "items are not graph nodes of their own"


def test_state_machine_states_carry_their_visits(state: Path) -> None:
    run_dir = start(state, MACHINE)
    run = session.load_run(run_dir)
    shape = layout(run.plan)
    assert [(n["id"], n["rank"], n["initial"]) for n in shape.nodes] == [("review", 0, True), ("done", 1, False)]
    assert {e["label"] for e in shape.edges} == {"success", "error"}
    views = node_views(run.plan, run)
    assert views["review"]["visits"] == 1 and views["review"]["phase"] == "Waiting"
    assert views["review"]["visitIds"] == ["review#1"]
    assert views["done"]["phase"] == "Pending"


def test_changed_sends_only_what_differs() -> None:
    before = {"a": {"phase": "Pending"}, "b": {"phase": "Running"}}
    after = {"a": {"phase": "Pending"}, "b": {"phase": "Succeeded"}, "c": {"phase": "Pending"}}
    assert changed(before, after) == {"b": {"phase": "Succeeded"}, "c": {"phase": "Pending"}}


def test_a_summary_names_at_most_fifty_waiting_nodes_and_counts_them(tmp_path: Path) -> None:
    from agentflow.console.graph import run_summary
    from agentflow.runner.store import RunStore
    from agentflow.testing import waiting_run

    run_id = waiting_run(tmp_path / "state", steps=120)
    run = session.load_run(RunStore(tmp_path / "state").open(run_id))
    summary = run_summary(run, {})
    assert summary["waitingCount"] == 120 and len(summary["waiting"]) == 50
    assert summary["progress"] == {"done": 0, "total": 120}


TREE = """\
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: tree}
spec:
  behaviorTree:
    type: sequence
    children:
      - type: selector
        name: pick
        children:
          - {type: condition, when: "false", child: {type: step, step: {name: never, kind: approval}}}
          - type: step
            step: {name: review, kind: approval, approval: {message: "ok?"}}
      - {type: retry, limit: 1, child: {type: step, step: {name: after, kind: approval}}}
"""


def test_a_behavior_tree_is_drawn_as_the_tree_with_its_phases(state: Path) -> None:
    run_dir = start(state, TREE)
    run = session.load_run(run_dir)
    shape = layout(run.plan)
    assert [(n["id"], n["kind"], n["rank"]) for n in shape.nodes] == [
        ("bt", "sequence", 0), ("pick", "selector", 1), ("pick.0", "condition", 2), ("never", "step", 3),
        ("review", "step", 2), ("bt.1", "retry", 1), ("after", "step", 2)]
    assert {(e["source"], e["target"]) for e in shape.edges} == {
        ("bt", "pick"), ("bt", "bt.1"), ("pick", "pick.0"), ("pick.0", "never"), ("pick", "review"),
        ("bt.1", "after")}
    views = node_views(run.plan, run)
    assert views["pick.0"]["phase"] == "Failed"  # its guard was false
    assert views["never"]["phase"] == "Pending" and views["never"]["visits"] == 0
    assert views["review"]["phase"] == "Waiting" and views["review"]["visitIds"] == ["review#1"]
    assert views["pick"]["phase"] == "Running" and views["bt"]["phase"] == "Running"
    assert views["bt.1"]["phase"] == "Pending"
    g = graph(run.plan, run, {})
    assert g["run"]["mode"] == "tree"


def test_a_behavior_tree_node_has_details(state: Path) -> None:
    from agentflow.console.details import node_detail

    run_dir = start(state, TREE)
    run = session.load_run(run_dir)
    events = [r.event for r in run_dir.read_records()]
    pick = node_detail(run.plan, run, events, "pick")
    assert (pick["type"], pick["phase"], pick["children"]) == ("selector", "Running", ["pick.0", "review"])
    assert pick["path"] == "spec.behaviorTree.children[0]"
    review = node_detail(run.plan, run, events, "review")
    assert review["phase"] == "Waiting" and review["spec"]["kind"] == "approval"
    assert [v["id"] for v in review["visits"]] == ["review#1"]
    assert node_detail(run.plan, run, events, "review#1")["phase"] == "Waiting"
