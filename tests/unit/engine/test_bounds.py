"""What the engine holds a run to: fan-out width and run size (agentflow.models.limits), the driver's cap."""

from __future__ import annotations

from agentflow.engine.plan import compile_plan
from agentflow.engine.run import Run
from agentflow.engine.values import EventType
from agentflow.models.limits import MAX_FANOUT_ITEMS

from .harness import Harness, plan, workflow

FAN = """
spec:
  inputs: {items: []}
  steps:
  - {name: map, kind: tool, tool: t, forEach: inputs.items}
  - {name: after, kind: tool, tool: t, dependsOn: [map]}
"""


def test_a_fan_out_past_the_limit_fails_its_step_naming_the_limit() -> None:
    p = plan(FAN.replace("items: []", f"items: {list(range(MAX_FANOUT_ITEMS + 1))}"))
    h = Harness(p, start=0.0)
    run = h.run_until_blocked()
    assert run.phase == "Failed" and h.executed == []
    error = run.nodes["map"].error
    assert error is not None and error.type == "TooManyItems" and not error.retryable
    assert f"{MAX_FANOUT_ITEMS + 1:,} items" in error.message and f"{MAX_FANOUT_ITEMS:,}" in error.message


def test_a_fan_out_at_the_limit_runs() -> None:
    text = FAN.replace("items: []", f"items: {list(range(MAX_FANOUT_ITEMS))}")
    run = Harness(compile_plan(workflow(text), max_parallel=100), start=0.0).run_until_blocked()
    assert run.phase == "Succeeded" and len(run.step_context["map"]["output"]) == MAX_FANOUT_ITEMS


def test_the_drivers_cap_is_the_lower_of_the_two_and_recorded_in_run_started() -> None:
    text = "spec:\n  parallelism: PAR\n  steps:\n" + "".join(f"  - {{name: s{i}, kind: tool, tool: t}}\n"
                                                             for i in range(10))
    assert compile_plan(workflow(text.replace("PAR", "3")), max_parallel=5).parallelism == 3
    assert compile_plan(workflow(text.replace("PAR", "8")), max_parallel=5).parallelism == 5
    capped = compile_plan(workflow(text.replace("  parallelism: PAR\n", "")), max_parallel=4)
    h = Harness(capped, start=0.0)
    first = h.decide()
    assert len(first.start) == 4 and h.events[0].data["parallelism"] == 4
    # a run keeps the cap it started with, whatever the driver's is when it resumes
    wider = compile_plan(workflow(text.replace("  parallelism: PAR\n", "")), max_parallel=9)
    resumed = Run.resume(wider, "run-1", h.events)
    assert resumed.parallelism == 4
    uncapped = compile_plan(workflow(text.replace("  parallelism: PAR\n", "")))
    assert uncapped.parallelism is None
    assert "parallelism" not in Harness(uncapped, start=0.0).decide().events[0].data


def test_a_journal_from_before_the_cap_keeps_the_plans_parallelism() -> None:
    """Journals written before RunStarted recorded a cap resume with the plan's parallelism."""
    p = compile_plan(workflow("spec:\n  steps:\n  - {name: s, kind: tool, tool: t}\n"), max_parallel=2)
    started = Run(p, "r").decide(0.0).events[0]
    assert started.type is EventType.run_started and started.data["parallelism"] == 2
    old = started._replace(data={k: v for k, v in started.data.items() if k != "parallelism"})
    assert Run.resume(p, "r", [old]).parallelism == 2
    unlimited = compile_plan(workflow("spec:\n  steps:\n  - {name: s, kind: tool, tool: t}\n"))
    assert Run.resume(unlimited, "r", [started]).parallelism == 2  # the journal wins over the plan
