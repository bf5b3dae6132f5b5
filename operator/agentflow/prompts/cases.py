"""Evaluation cases from past runs: what a run's llm steps were given becomes a suite's cases (pure).

``agentflow prompt cases NAME --run RUN ...`` (agentflow.commands.prompt) reads the runs' journals (the local
state dir, or the operator's PostgreSQL) and prints the cases, to paste under ``spec.evaluations.cases`` of the
next version (a PromptVersion's spec is immutable). The steps a run's inputs are taken from::

    --step NAME given        those steps
    otherwise                the llm steps that rendered PromptVersion NAME: promptRef.name NAME, or a
                             family whose version the run got was NAME (RunStarted ``prompts``)

One case per node that was scheduled (a fan-out item, a state visit: each its own case), named RUN/NODE, with
the inputs as the step got them (rendered: the journal's StepScheduled or LoopStarted ``inputs``). With
``expect_output``, a node that succeeded also gets an ``equals`` assertion of the output it produced then: a
regression case (the new version must answer as the old one did); use it only where the answer is exact.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from agentflow.engine.journal import Record
from agentflow.engine.values import EventType
from agentflow.models import StepSpec, Workflow

__all__ = ["MAX_CASE_NAME", "prompt_steps", "run_cases"]

MAX_CASE_NAME = 253


def _steps(workflow: Workflow) -> list[StepSpec]:
    spec = workflow.spec
    if spec.state_machine is not None:
        return [s.step for s in spec.state_machine.states if s.step is not None]
    return list(spec.steps)


def prompt_steps(workflow: Workflow, prompt: str, recorded: Mapping[str, Any] | None = None) -> set[str]:
    """The llm steps of ``workflow`` that rendered PromptVersion ``prompt`` in a run that recorded ``recorded``
    (RunStarted ``prompts``: step -> {name, ...} of the family steps)."""
    out: set[str] = set()
    for step in _steps(workflow):
        ref = step.prompt_ref
        if ref is None:
            continue
        choice = (recorded or {}).get(step.name)
        got = choice.get("name") if isinstance(choice, Mapping) else None
        if ref.name == prompt or (ref.family is not None and got == prompt):
            out.add(step.name)
    return out


def recorded_prompts(records: Sequence[Record]) -> dict[str, Any]:
    """RunStarted ``prompts`` of a journal ({} without)."""
    for record in records:
        if record.event.type == EventType.run_started:
            prompts = record.event.data.get("prompts")
            return dict(prompts) if isinstance(prompts, Mapping) else {}
    return {}


def run_cases(run: str, records: Sequence[Record], steps: Collection[str], *,
              expect_output: bool = False) -> list[dict[str, Any]]:
    """The cases of one run: each node of ``steps`` that was scheduled, with its inputs (see the module
    docstring)."""
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    loops: list[str] = []  # an agent loop's turns and tool calls are inside its step: not cases of its prompt
    for record in records:
        event = record.event
        if event.node is None:
            continue
        if event.type == EventType.loop_started:
            loops.append(event.node + "/")
        if any(event.node.startswith(prefix) for prefix in loops):
            continue
        if event.type in (EventType.step_scheduled, EventType.loop_started) and event.data.get("step") in steps:
            inputs.setdefault(event.node, event.data.get("inputs") or {})  # a retry gets the same inputs
        elif event.node in inputs and (event.type == EventType.step_succeeded or (
                event.type == EventType.loop_finished and event.data.get("phase") == "Succeeded")):
            outputs[event.node] = event.data.get("output")
    cases: list[dict[str, Any]] = []
    for node, given in inputs.items():
        name = f"{run}/{node}"
        if len(name) > MAX_CASE_NAME:
            name = name[-MAX_CASE_NAME:]
        case: dict[str, Any] = {"name": name, "inputs": dict(given)}
        if expect_output and node in outputs and outputs[node] is not None:
            case["assertions"] = [{"equals": outputs[node]}]
        cases.append(case)
    return cases
