"""Hostile manifests drawn by hypothesis: parsing and validation never raise, and whatever validates runs to an end.

A valid Workflow (a DAG, or a state machine) and its ToolPolicy are mutated at random paths with hostile values
(huge, negative, infinite and NaN numbers, wrong types, deep nesting, long strings, unknown keys). Then:

* parsing and validation return problems, never raise, and every problem names the file and a line or field;
* a mutated manifest that validates compiles and runs in the engine, in virtual time, to its end (or to a node
  waiting for a human) within a bounded number of decisions, and its whole journal can be recorded;
* arbitrary JSON bodies (what the admission webhook receives) get problems from validate_body, never an
  exception; arbitrary text gets a ManifestError from parse_yaml at worst.

``deadline=None``: hypothesis's per-example time limit would be a timed assertion.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentflow.engine.journal import Journal
from agentflow.engine.plan import compile_plan
from agentflow.engine.run import Run
from agentflow.models import ManifestError, Workflow
from agentflow.models.manifests import parse_yaml
from agentflow.validation import validate_body, validate_documents

from ..engine.harness import Harness

SOURCE = "hostile.yaml"
DAG: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
    "spec": {
        "inputs": {"items": [1, 2, 3], "n": 2},
        "parallelism": 2,
        "timeoutSeconds": 600,
        "retry": {"limit": 1, "backoff": {"initialSeconds": 1, "factor": 2, "maxSeconds": 10}},
        "steps": [
            {"name": "a", "kind": "tool", "tool": "echo", "inputs": {"x": "${{ inputs.n }}"}},
            {"name": "b", "kind": "tool", "tool": "echo", "dependsOn": ["a"], "forEach": "inputs.items",
             "parallelism": 2, "timeoutSeconds": 30, "inputs": {"i": "${{ item }}"}},
            {"name": "c", "kind": "tool", "tool": "echo", "dependsOn": ["b"], "when": "inputs.n > 1"},
            {"name": "cleanup", "kind": "tool", "tool": "echo", "runOn": "always"},
        ],
    },
}
FSM: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "f"},
    "spec": {
        "inputs": {"n": 1},
        "stateMachine": {
            "initial": "start", "maxVisits": 3,
            "states": [
                {"name": "start", "step": {"name": "s", "kind": "tool", "tool": "echo"},
                 "transitions": [{"target": "loop", "when": "inputs.n > 0"}, {"target": "done"}]},
                {"name": "loop", "maxVisits": 2, "step": {"name": "l", "kind": "tool", "tool": "echo"},
                 "transitions": [{"target": "start", "when": "inputs.n > 5"}, {"target": "done"}]},
                {"name": "done", "final": "Succeeded"},
            ],
        },
    },
}
POLICY: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy", "metadata": {"name": "tools"},
    "spec": {"tools": [{"name": "echo", "builtin": {"name": "echo"}, "timeoutSeconds": 5}]},
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path in a JSON value (the root's is ())."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from paths(child, (*prefix, i))


def replaced(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(body)
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_NUMBERS = st.sampled_from([0, -1, 2**63, 2**64, 10**30, -(10**30), 1e300, -1e300, float("inf"),
                                   float("-inf"), float("nan"), 1e-300, 0.5, 7_776_001, 604_801, 10_001, 100_001])
HOSTILE = st.one_of(
    HOSTILE_NUMBERS,
    st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(),
    st.text(max_size=40), st.text(min_size=3000, max_size=3000, alphabet="x"),
    st.sampled_from(["", "${{", "${{ steps.zz.output }}", "${{ inputs..x }}", "always", "failure", "Succeeded",
                     "a" * 300, "UPPER", "x/../..", "file:///etc/passwd", "../../../../etc/passwd"]),
    st.lists(st.integers(), max_size=4), st.dictionaries(st.text(max_size=6), st.integers(), max_size=3),
    st.integers(min_value=95, max_value=140).map(nested),
)

EDGES = st.sampled_from([1, 2, 3, 0.001, 1e-9, 100, 10_000, 86_400, 604_800, 7_776_000, 100_000, "always",
                         "failure", True, False, [], {}, "${{ inputs.n }}", "inputs.items"])
"""Values at the edges of what validates: they reach the engine more often than HOSTILE ones."""


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Workflow and its ToolPolicy with 1 to 3 values replaced (or a key added) at random paths."""
    workflow = copy.deepcopy(draw(st.sampled_from([DAG, FSM])))
    policy = copy.deepcopy(POLICY)
    for _ in range(draw(st.integers(1, 3))):
        which = draw(st.sampled_from(["workflow", "workflow", "workflow", "policy"]))
        body = workflow if which == "workflow" else policy
        path = draw(st.sampled_from([p for p in paths(body) if len(p) >= 2]))
        if draw(st.booleans()) or not isinstance(body, dict):
            body = replaced(body, path, draw(st.one_of(HOSTILE, EDGES)))
        else:  # an extra key next to the chosen one (a typo, an unknown field)
            parent = replaced(body, (), body)
            target = parent
            for part in path[:-1]:
                target = target[part]
            if isinstance(target, dict):
                target[draw(st.sampled_from(["timeoutSecond", "dependson", "extra", "maxvisits"]))] = draw(HOSTILE)
            body = parent
        if which == "workflow":
            workflow = body
        else:
            policy = body
    return workflow, policy


def dump(*bodies: Any) -> str:
    return yaml.safe_dump_all(bodies, sort_keys=False, allow_unicode=True, width=10_000)


PROPERTY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(mutated())
def test_mutated_manifests_get_problems_naming_file_and_field_or_run_to_their_end(
        bodies: tuple[dict[str, Any], dict[str, Any]]) -> None:
    text = dump(*bodies)
    try:
        docs = parse_yaml(text, SOURCE)
    except ManifestError as exc:
        assert exc.problems and all(p.source == SOURCE and (p.line or p.path) for p in exc.problems)
        event("refused while parsing")
        return
    loaded, problems = validate_documents(docs)
    event("refused by validation" if problems else "valid: run in the engine")
    for problem in problems:
        assert problem.source == SOURCE and problem.message
        assert problem.line is not None or problem.path, problem
    if problems:
        return
    workflow = next(r.resource for r in loaded if isinstance(r.resource, Workflow))
    plan = compile_plan(workflow, max_parallel=8)
    harness = Harness(plan, start=1_000.0)
    run = harness.run_until_blocked(limit=20_000)
    waiting = [n.id for n in run.nodes.values() if n.phase == "Waiting"]
    assert run.finished or waiting, f"the run neither finished nor waits for a human: {run.phase} {harness.types()}"
    Journal().extend(harness.events)  # every event is JSON the journal can hold (no NaN, no 2**70)


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
JSON = st.recursive(JSON_SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    JSON,
    st.fixed_dictionaries({"apiVersion": st.just("agentflow.dev/v1alpha1"),
                           "kind": st.sampled_from(["Workflow", "Agent", "PromptVersion", "Budget", "ToolPolicy"]),
                           "metadata": st.one_of(JSON, st.just({"name": "x"})), "spec": JSON}),
    st.integers(min_value=95, max_value=3000).map(lambda d: {**POLICY, "spec": nested(d)}),
))
def test_admission_bodies_get_problems_never_an_exception(body: Any) -> None:
    problems = validate_body(body) if isinstance(body, dict) else validate_body({"spec": body})
    assert all(p.message for p in problems)


YAMLISH = st.text(alphabet=st.sampled_from([*"ab01:-[]{}&*!|>'\"#%@`, \n\t.", "\u0000", "\ufeff", "é"]),
                  max_size=300)


@settings(max_examples=500, deadline=None)
@given(YAMLISH)
def test_any_text_parses_or_is_refused_with_a_located_problem(text: str) -> None:
    try:
        docs = parse_yaml(text, SOURCE)
    except ManifestError as exc:
        assert exc.problems and all(p.source == SOURCE for p in exc.problems)
        return
    loaded, problems = validate_documents(docs)
    assert all(p.source == SOURCE and p.message for p in problems)
    assert loaded or problems or not docs


def test_the_bases_are_valid_and_run_to_their_end() -> None:
    """The mutations start from manifests that validate and succeed: what fails is what was mutated."""
    for workflow in (DAG, FSM):
        loaded, problems = validate_documents(parse_yaml(dump(workflow, POLICY), SOURCE))
        assert problems == []
        resource = next(r.resource for r in loaded if isinstance(r.resource, Workflow))
        run = Harness(compile_plan(resource), start=0.0).run_until_blocked()
        assert isinstance(run, Run) and run.phase == "Succeeded"
