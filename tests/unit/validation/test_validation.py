"""The one validation of manifests (agentflow.validation): every problem, with its path and line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentflow.loader import validate_paths
from agentflow.models import Agent, Budget, Catalog, PromptVersion, ToolPolicy, Workflow
from agentflow.models.manifests import parse_resource, parse_yaml
from agentflow.validation import (
    Finding,
    check_resource,
    check_workflow,
    validate_body,
    validate_documents,
)

API = "agentflow.dev/v1alpha1"


def tool_step(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "tool", "tool": "search", **extra}


def workflow(spec: dict[str, Any], name: str = "wf") -> Workflow:
    resource = parse_resource(
        {"apiVersion": API, "kind": "Workflow", "metadata": {"name": name}, "spec": spec}
    )
    assert isinstance(resource, Workflow)
    return resource


def check(spec: dict[str, Any], catalog: Catalog | None = None) -> list[Finding]:
    return check_workflow(workflow(spec).spec, catalog)


def messages_at(findings: list[Finding], path: list[str | int]) -> list[str]:
    return [message for p, message in findings if p == path]


def agent(name: str, tools: list[str], labels: dict[str, str] | None = None) -> Agent:
    return Agent.model_validate(
        {
            "apiVersion": API,
            "kind": "Agent",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"role": "r", "model": {"name": "offline/echo"}, "tools": tools},
        }
    )


def policy(name: str, tools: list[str], selector: dict[str, str] | None = None) -> ToolPolicy:
    return ToolPolicy.model_validate(
        {
            "apiVersion": API,
            "kind": "ToolPolicy",
            "metadata": {"name": name},
            "spec": {
                "agentSelector": {"matchLabels": selector or {}},
                "tools": [{"name": t, "builtin": {"name": "echo"}} for t in tools],
            },
        }
    )


def prompt(name: str, **spec: Any) -> PromptVersion:
    body = {"prompt": "p", "version": "1", "messages": [{"role": "user", "content": "hi"}], **spec}
    return PromptVersion.model_validate(
        {"apiVersion": API, "kind": "PromptVersion", "metadata": {"name": name}, "spec": body}
    )


def budget(name: str) -> Budget:
    return Budget.model_validate(
        {"apiVersion": API, "kind": "Budget", "metadata": {"name": name}, "spec": {"limits": {"usd": 5}}}
    )


def catalog_of(*resources: Agent | PromptVersion | ToolPolicy | Budget) -> Catalog:
    catalog = Catalog()
    for resource in resources:
        catalog.add(resource)
    return catalog


# --- DAG structure -----------------------------------------------------------------------------------------


def test_a_valid_dag_has_no_findings() -> None:
    spec = {
        "inputs": {"q": "refund"},
        "steps": [
            tool_step("search", inputs={"query": "${{ inputs.q }}"}),
            tool_step("rank", dependsOn=["search"], when="size(steps.search.output) > 0"),
            tool_step("each", dependsOn=["rank"], forEach="steps.rank.output", inputs={"doc": "${{ item }}"}),
        ],
        "outputs": {"best": "steps.each.output"},
    }
    assert check(spec) == []


def test_duplicate_step_names() -> None:
    findings = check({"steps": [tool_step("a"), tool_step("b"), tool_step("a")]})
    assert messages_at(findings, ["spec", "steps", 2, "name"]) == [
        "duplicate step name 'a' (also spec.steps[0])"
    ]


def test_depends_on_unknown_step_and_itself() -> None:
    findings = check({"steps": [tool_step("a"), tool_step("b", dependsOn=["a", "nope", "b"])]})
    assert messages_at(findings, ["spec", "steps", 1, "dependsOn", 1]) == [
        "unknown step 'nope' in dependsOn; steps: a, b"
    ]
    assert messages_at(findings, ["spec", "steps", 1, "dependsOn", 2]) == [
        "step 'b' depends on itself; remove it from dependsOn"
    ]
    assert len(findings) == 2


def test_cycle_is_reported_with_its_path() -> None:
    findings = check(
        {
            "steps": [
                tool_step("a", dependsOn=["c"]),
                tool_step("b", dependsOn=["a"]),
                tool_step("c", dependsOn=["b"]),
                tool_step("d", dependsOn=["c"]),
            ]
        }
    )
    assert findings == [
        (
            ["spec", "steps", 0, "dependsOn"],
            "dependsOn has a cycle: a -> c -> b -> a; remove one of these dependencies",
        )
    ]


# --- expressions in a DAG ----------------------------------------------------------------------------------


def test_bad_expressions_are_reported_where_they_are() -> None:
    findings = check(
        {
            "steps": [
                tool_step(
                    "a",
                    when="inputs.x ==",
                    forEach="[1, 2",
                    inputs={"q": {"deep": ["ok", "${{ 1 + }}"]}, "u": "${{ inputs.x"},
                )
            ],
            "outputs": {"r": "__import__('os')"},
        }
    )
    assert messages_at(findings, ["spec", "steps", 0, "when"]) == [
        "invalid expression 'inputs.x ==': syntax error: the expression ends too early"
    ]
    assert len(messages_at(findings, ["spec", "steps", 0, "forEach"])) == 1
    assert messages_at(findings, ["spec", "steps", 0, "inputs", "q", "deep", 1]) == [
        "invalid expression '1 +': syntax error: the expression ends too early"
    ]
    assert messages_at(findings, ["spec", "steps", 0, "inputs", "u"]) == [
        "invalid expression '${{ inputs.x': '${{' at offset 0 has no closing '}}'"
    ]
    assert messages_at(findings, ["spec", "outputs", "r"]) == [
        "invalid expression \"__import__('os')\": unknown function '__import__' at column 1"
    ]


def test_approval_message_is_checked() -> None:
    findings = check(
        {
            "steps": [
                {"name": "ok", "kind": "approval", "approval": {"message": "Approve ${{ steps.x.output }}?"}}
            ]
        }
    )
    assert messages_at(findings, ["spec", "steps", 0, "approval", "message"]) == [
        "expression 'steps.x.output': unknown step 'x' in steps.x; steps: ok"
    ]


def test_reading_a_step_that_is_not_a_dependency() -> None:
    findings = check(
        {
            "steps": [
                tool_step("a"),
                tool_step("b", dependsOn=["a"]),
                tool_step("c", dependsOn=["b"], when="steps.a.output != null"),  # a is an ancestor: fine
                tool_step("d", inputs={"x": "${{ steps.b.output }}"}),
                tool_step("e", when="steps.e.output == 1"),
            ]
        }
    )
    assert messages_at(findings, ["spec", "steps", 3, "inputs", "x"]) == [
        "expression 'steps.b.output': steps.b does not exist yet when 'd' runs; add 'b' to its dependsOn"
    ]
    assert messages_at(findings, ["spec", "steps", 4, "when"]) == [
        "expression 'steps.e.output == 1': step 'e' cannot read its own result steps.e"
    ]
    assert len(findings) == 2


def test_exit_handlers_may_read_every_main_step() -> None:
    findings = check(
        {
            "steps": [
                tool_step("a"),
                tool_step("cleanup", runOn="always", inputs={"r": "${{ steps.a.phase }}"}),
                tool_step("alert", runOn="failure", inputs={"r": "${{ steps.cleanup.output }}"}),
            ]
        }
    )
    assert findings == [
        (
            ["spec", "steps", 2, "inputs", "r"],
            "expression 'steps.cleanup.output': "
            "steps.cleanup may not exist when 'alert' runs (both run at the end)",
        )
    ]


def test_item_and_index_only_in_for_each_inputs() -> None:
    findings = check(
        {
            "steps": [
                tool_step("a", inputs={"x": "${{ item }}"}),
                tool_step("b", forEach="[1, 2]", when="index > 0", inputs={"x": "${{ item }}-${{ index }}"}),
            ]
        }
    )
    assert messages_at(findings, ["spec", "steps", 0, "inputs", "x"]) == [
        "expression 'item': item exists only in the inputs of a forEach step"
    ]
    assert messages_at(findings, ["spec", "steps", 1, "when"]) == [
        "expression 'index > 0': index exists only in the inputs of a forEach step"
    ]
    assert len(findings) == 2


def test_unknown_names_in_expressions() -> None:
    findings = check({"steps": [tool_step("a", when="foo == 1 && type(inputs) == map && output")]})
    assert messages_at(findings, ["spec", "steps", 0, "when"]) == [
        "expression 'foo == 1 && type(inputs) == map && output': "
        "unknown name 'foo'; expressions here can read inputs, steps, workflow",
        "expression 'foo == 1 && type(inputs) == map && output': "
        "output exists only in the when of a state-machine transition",
    ]


def test_outputs_may_read_any_step_but_not_unknown_ones() -> None:
    findings = check(
        {
            "steps": [tool_step("a"), tool_step("b")],
            "outputs": {"x": "steps.a.output", "y": "steps.zz.output"},
        }
    )
    assert findings == [
        (["spec", "outputs", "y"], "expression 'steps.zz.output': unknown step 'zz'; steps: a, b")
    ]


# --- state machines ----------------------------------------------------------------------------------------


def fsm(states: list[dict[str, Any]], initial: str = "start") -> dict[str, Any]:
    return {"stateMachine": {"initial": initial, "states": states}}


def test_a_valid_state_machine_has_no_findings() -> None:
    spec = fsm(
        [
            {
                "name": "start",
                "step": tool_step("score"),
                "transitions": [
                    {"target": "review", "when": "output.score > 0.8 && steps.start.phase == 'Succeeded'"},
                    {"target": "done"},
                    {"target": "failed", "result": "error", "when": "error.type != ''"},
                ],
            },
            {
                "name": "review",
                "step": {"name": "ask", "kind": "approval"},
                "transitions": [{"target": "done"}],
            },
            {"name": "done", "final": "Succeeded"},
            {"name": "failed", "final": "Failed"},
        ]
    )
    assert check(spec) == []


def test_state_machine_structure_problems() -> None:
    findings = check(
        fsm(
            [
                {"name": "start", "transitions": [{"target": "nowhere"}, {"target": "a"}]},
                {"name": "a", "step": tool_step("x", dependsOn=["y"])},
                {"name": "a", "final": "Succeeded"},
                {"name": "island", "final": "Failed"},
            ],
            initial="begin",
        )
    )
    assert messages_at(findings, ["spec", "stateMachine", "initial"]) == [
        "unknown initial state 'begin'; states: a, island, start"
    ]
    assert messages_at(findings, ["spec", "stateMachine", "states", 0, "transitions", 0, "target"]) == [
        "unknown state 'nowhere'; states: a, island, start"
    ]
    assert messages_at(findings, ["spec", "stateMachine", "states", 2, "name"]) == [
        "duplicate state name 'a' (also stateMachine.states[1])"
    ]
    assert messages_at(findings, ["spec", "stateMachine", "states", 1, "transitions"]) == [
        "state 'a' is not final and has no transitions; add one or set final"
    ]
    assert messages_at(findings, ["spec", "stateMachine", "states", 1, "step", "dependsOn"]) == [
        "dependsOn is for DAG steps (spec.steps); transitions order a state machine's steps"
    ]


def test_unreachable_states_and_no_final_state() -> None:
    findings = check(
        fsm(
            [
                {"name": "start", "transitions": [{"target": "loop"}]},
                {"name": "loop", "transitions": [{"target": "start"}]},
                {"name": "orphan", "final": "Succeeded"},
            ]
        )
    )
    assert findings == [
        (
            ["spec", "stateMachine", "states", 2],
            "state 'orphan' cannot be reached from the initial state 'start'",
        ),
        (["spec", "stateMachine"], "no final state can be reached from the initial state 'start'"),
    ]


def test_a_loop_without_exit_next_to_a_way_out() -> None:
    findings = check(
        fsm(
            [
                {
                    "name": "start",
                    "transitions": [{"target": "done", "when": "inputs.ok"}, {"target": "spin"}],
                },
                {"name": "spin", "transitions": [{"target": "spin"}]},
                {"name": "done", "final": "Succeeded"},
            ]
        )
    )
    assert findings == [
        (
            ["spec", "stateMachine", "states", 1],
            "state 'spin' has no path to a final state (a loop without exit)",
        )
    ]


def test_state_machine_expressions() -> None:
    findings = check(
        fsm(
            [
                {
                    "name": "start",
                    "step": tool_step("s", when="output == 1", inputs={"v": "${{ steps.choice.output }}"}),
                    "transitions": [
                        {"target": "choice", "when": "steps.ghost.output > 1"},
                        {"target": "done"},
                    ],
                },
                {"name": "choice", "transitions": [{"target": "done", "when": "output ="}]},
                {"name": "done", "final": "Succeeded"},
            ]
        )
    )
    base: list[str | int] = ["spec", "stateMachine", "states"]
    assert messages_at(findings, [*base, 0, "step", "when"]) == [
        "expression 'output == 1': output exists only in the when of a state-machine transition"
    ]
    assert messages_at(findings, [*base, 0, "step", "inputs", "v"]) == [
        "expression 'steps.choice.output': state 'choice' has no step, so steps.choice never exists"
    ]
    (ghost,) = messages_at(findings, [*base, 0, "transitions", 0, "when"])
    assert "unknown state 'ghost' in steps.ghost" in ghost and "states with a step: start" in ghost
    (syntax,) = messages_at(findings, [*base, 1, "transitions", 0, "when"])
    assert syntax.startswith("invalid expression 'output =': syntax error at column 8")
    assert len(findings) == 4


# --- references to other resources ------------------------------------------------------------------------


def test_catalog_none_skips_reference_checks() -> None:
    spec = {
        "budgetRef": {"name": "nope"},
        "steps": [{"name": "a", "kind": "llm", "agentRef": {"name": "x"}, "promptRef": {"name": "y"}}],
    }
    assert check(spec) == []


def test_unknown_agent_prompt_and_budget() -> None:
    spec = {
        "budgetRef": {"name": "money"},
        "steps": [{"name": "a", "kind": "llm", "agentRef": {"name": "ghost"}, "promptRef": {"name": "p2"}}],
    }
    findings = check(spec, catalog_of(agent("bot", []), prompt("p1"), budget("other")))
    assert findings == [
        (["spec", "steps", 0, "agentRef", "name"], "unknown Agent 'ghost'; Agents: bot"),
        (["spec", "steps", 0, "promptRef", "name"], "unknown PromptVersion 'p2'; PromptVersions: p1"),
        (["spec", "budgetRef", "name"], "unknown Budget 'money'; Budgets: other"),
    ]


def test_tool_must_be_declared_in_a_policy() -> None:
    findings = check({"steps": [tool_step("a")]}, catalog_of(policy("base", ["echo"])))
    assert findings == [
        (
            ["spec", "steps", 0, "tool"],
            "tool 'search' is not declared in any ToolPolicy; declare it in one (ToolPolicies: base)",
        )
    ]
    assert check({"steps": [tool_step("a")]}, catalog_of(policy("base", ["search"]))) == []


def test_agent_must_list_the_tool() -> None:
    catalog = catalog_of(agent("bot", ["echo"]), policy("base", ["search"]))
    findings = check({"steps": [tool_step("a", agentRef={"name": "bot"})]}, catalog)
    assert findings == [
        (["spec", "steps", 0, "tool"], "Agent 'bot' does not list tool 'search' in spec.tools; add it there")
    ]


def test_tool_is_denied_unless_a_matching_policy_declares_it() -> None:
    catalog = catalog_of(
        agent("bot", ["search"], labels={"team": "support"}),
        policy("research-only", ["search"], selector={"team": "research"}),
        policy("support", ["echo"], selector={"team": "support"}),
    )
    findings = check({"steps": [tool_step("a", agentRef={"name": "bot"})]}, catalog)
    assert findings == [
        (
            ["spec", "steps", 0, "tool"],
            "tool 'search' is denied for Agent 'bot': no ToolPolicy whose agentSelector matches the Agent "
            "(labels {team=support}) declares it (considered: research-only declares it "
            "but its agentSelector {team=research} does not match)",
        )
    ]
    allowed = catalog_of(agent("bot", ["search"], labels={"team": "support"}), policy("all", ["search"]))
    assert check({"steps": [tool_step("a", agentRef={"name": "bot"})]}, allowed) == []


# --- inputs and JSON Schemas -------------------------------------------------------------------------------


def test_inputs_must_satisfy_the_input_schema() -> None:
    schema = {
        "type": "object",
        "required": ["q", "n"],
        "properties": {
            "q": {"type": "string"},
            "opts": {"type": "object", "properties": {"k": {"type": "integer"}}},
        },
    }
    findings = check(
        {"inputs": {"q": 3, "opts": {"k": "x"}}, "inputSchema": schema, "steps": [tool_step("a")]}
    )
    assert findings == [
        (["spec", "inputs"], "'n' is a required property"),
        (["spec", "inputs", "opts", "k"], "'x' is not of type 'integer'"),
        (["spec", "inputs", "q"], "3 is not of type 'string'"),
    ]


def test_an_invalid_input_schema_is_reported_and_inputs_not_checked() -> None:
    findings = check({"inputs": {"q": 1}, "inputSchema": {"type": "objekt"}, "steps": [tool_step("a")]})
    assert len(findings) == 1
    path, message = findings[0]
    assert path == ["spec", "inputSchema", "type"]
    assert message.startswith("not a valid JSON Schema: 'objekt' is not valid")


def test_remote_refs_are_never_fetched() -> None:
    schema = {"type": "object", "properties": {"q": {"$ref": "https://example.invalid/q.json"}}}
    findings = check({"inputs": {"q": 1}, "inputSchema": schema, "steps": [tool_step("a")]})
    assert len(findings) == 1
    assert findings[0][0] == ["spec", "inputSchema", "properties", "q", "$ref"]  # the schema itself, inputs or not
    assert "remote references are never fetched" in findings[0][1]
    dangling = {"type": "object", "properties": {"q": {"$ref": "#/$defs/nope"}}}
    [(path, message)] = check({"inputSchema": dangling, "steps": [tool_step("a")]})
    assert path == ["spec", "inputSchema", "properties", "q", "$ref"] and "names nothing in the schema" in message
    local = {"type": "object", "$defs": {"q": {"type": "integer"}}, "properties": {"q": {"$ref": "#/$defs/q"}}}
    assert check({"inputs": {"q": 1}, "inputSchema": local, "steps": [tool_step("a")]}) == []


def test_a_schema_whose_checks_multiply_is_refused_before_any_value_is_checked() -> None:
    """2^40 checks of one input, on the admission webhook's event loop, if it were checked."""
    defs = {f"a{i}": {"allOf": [{"$ref": f"#/$defs/a{i + 1}"}, {"$ref": f"#/$defs/a{i + 1}"}]} for i in range(40)}
    schema = {"type": "object", "$defs": {**defs, "a40": {"type": "string"}},
              "properties": {"q": {"$ref": "#/$defs/a0"}}}
    [(path, message)] = check({"inputs": {"q": "x"}, "inputSchema": schema, "steps": [tool_step("a")]})
    assert path == ["spec", "inputSchema"] and "more than 10,000 subschemas" in message


# --- the other resources -----------------------------------------------------------------------------------


def test_a_canary_is_not_its_own_baseline() -> None:
    resource = prompt("p2", messages=[{"role": "user", "content": "hi"}], canary={"baseline": {"name": "p2"},
                                                                                "weight": 20})
    for catalog in (None, Catalog()):
        [(path, message)] = check_resource(resource, catalog)
        assert path == ["spec", "canary", "baseline", "name"] and "'p2' is this PromptVersion" in message


def test_prompt_version_checks() -> None:
    resource = prompt(
        "p",
        messages=[
            {"role": "system", "content": "Hi ${{ inputs.name }}"},
            {"role": "user", "content": "${{ steps.a.output }} and ${{ inputs. }}"},
        ],
        inputSchema={"type": "object", "properties": {"name": {"type": "string"}}},
        outputSchema={"type": 7},
        evaluations={"agentRef": {"name": "a"}, "cases": [
            {"name": "c", "inputs": {"name": 5}, "assertions": [{"cel": "output.ok"}, {"cel": "output =="},
                                                                {"cel": "steps.x"}, {"regex": "("}]}
        ]},
        canary={"baseline": {"name": "old"}, "weight": 10},
    )
    findings = check_resource(resource, Catalog())
    paths = [path for path, _ in findings]
    assert paths == [
        ["spec", "messages", 1, "content"],
        ["spec", "evaluations", "cases", 0, "inputs", "name"],
        ["spec", "outputSchema", "type"],
        ["spec", "evaluations", "cases", 0, "assertions", 1, "cel"],
        ["spec", "evaluations", "cases", 0, "assertions", 2, "cel"],
        ["spec", "evaluations", "cases", 0, "assertions", 3, "regex"],
        ["spec", "evaluations", "agentRef", "name"],
        ["spec", "canary", "baseline", "name"],
    ]
    assert findings[0][1].startswith("invalid expression 'inputs.': syntax error")
    assert findings[1][1] == "5 is not of type 'string'"
    assert findings[4][1] == "expression 'steps.x': unknown name 'steps'; assertions can read output, inputs"
    assert findings[5][1].startswith("not a regular expression")
    assert findings[6][1] == "unknown Agent 'a'; there are no Agents"
    assert findings[7][1] == "unknown PromptVersion 'old'; there are no PromptVersions"


def test_prompt_templates_read_only_inputs() -> None:
    resource = prompt("p", messages=[{"role": "user", "content": "${{ steps.a.output }}"}])
    assert check_resource(resource) == [
        (
            ["spec", "messages", 0, "content"],
            "expression 'steps.a.output': unknown name 'steps'; expressions here can read inputs",
        )
    ]


def test_tool_policy_checks() -> None:
    resource = ToolPolicy.model_validate(
        {
            "apiVersion": API,
            "kind": "ToolPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "tools": [
                    {"name": "a", "builtin": {"name": "echo"}, "inputSchema": {"required": "x"}},
                    {"name": "a", "builtin": {"name": "echo"}},
                ]
            },
        }
    )
    findings = check_resource(resource)
    assert [path for path, _ in findings] == [
        ["spec", "tools", 0, "inputSchema", "required"],
        ["spec", "tools", 1, "name"],
    ]
    assert findings[1][1] == "duplicate tool name 'a' (also spec.tools[0])"


def test_agent_and_budget_are_fine() -> None:
    assert check_resource(agent("bot", ["x"])) == []
    assert check_resource(budget("b")) == []


# --- documents, files and bodies ---------------------------------------------------------------------------


MANIFESTS = textwrap.dedent(
    """\
    apiVersion: agentflow.dev/v1alpha1
    kind: Agent
    metadata:
      name: bot
    spec:
      role: helper
      model: {name: offline/echo}
      tools: [search]
    ---
    apiVersion: agentflow.dev/v1alpha1
    kind: ToolPolicy
    metadata:
      name: tools
    spec:
      tools:
        - name: search
          builtin: {name: text-search}
    ---
    apiVersion: agentflow.dev/v1alpha1
    kind: Workflow
    metadata:
      name: broken
    spec:
      budgetRef: {name: nope}
      steps:
        - name: a
          kind: tool
          tool: search
          agentRef: {name: bot}
          dependsOn: [c]
        - name: b
          kind: tool
          tool: search
          when: "steps.a.output =="
        - name: c
          kind: tool
          tool: search
          dependsOn: [a]
          inputs:
            x: "${{ item }}"
        - name: b
          kind: tool
          tool: search
      outputs:
        r: steps.zz.output
    """
)


def test_five_problems_are_all_reported_with_lines() -> None:
    docs = parse_yaml(MANIFESTS, "support.yaml")
    loaded, problems = validate_documents(docs)
    assert [type(r.resource).__name__ for r in loaded] == ["Agent", "ToolPolicy", "Workflow"]
    got = [(p.path, p.line) for p in problems]
    assert got == [
        ("spec.steps[3].name", 41),
        ("spec.steps[0].dependsOn", 30),
        ("spec.steps[1].when", 34),
        ("spec.steps[2].inputs.x", 40),
        ("spec.outputs.r", 45),
        ("spec.budgetRef.name", 24),
    ]
    assert all(p.source == "support.yaml" for p in problems)
    assert "a -> c -> a" in problems[1].message
    assert (
        str(problems[0])
        == "support.yaml:41: spec.steps[3].name: duplicate step name 'b' (also spec.steps[1])"
    )


def test_parse_problems_and_check_problems_together(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(MANIFESTS)
    (tmp_path / "typo.yaml").write_text(
        "apiVersion: agentflow.dev/v1alpha1\nkind: Budget\nmetadata: {name: b}\n"
        "spec:\n  limits: {usd: 1}\n  perod: x\n"
    )
    (tmp_path / "bad.yml").write_text("kind: [unclosed\n")
    loaded, problems = validate_paths([tmp_path, tmp_path / "missing.yaml"])
    assert len(loaded) == 3
    sources = {Path(p.source).name for p in problems}
    assert {"good.yaml", "typo.yaml", "bad.yml", "missing.yaml"} <= sources
    typo = next(p for p in problems if p.source.endswith("typo.yaml"))
    assert (typo.path, typo.message, typo.line) == ("spec.perod", "unknown field", 6)
    missing = next(p for p in problems if p.source.endswith("missing.yaml"))
    assert missing.message == "no such file or folder"


def test_duplicate_names_of_the_same_kind_across_documents() -> None:
    text = MANIFESTS.split("---")[0] + "---\n" + MANIFESTS.split("---")[0]
    _, problems = validate_documents(parse_yaml(text, "dup.yaml"))
    assert [(p.path, p.line, p.message) for p in problems] == [
        ("metadata.name", 13, "duplicate Agent name 'bot' (also in dup.yaml:4)")
    ]


def test_extra_catalog_fills_in_references() -> None:
    docs = parse_yaml(
        MANIFESTS.split("---")[2].replace("budgetRef: {name: nope}", "budgetRef: {name: money}"), "w.yaml"
    )
    extra = catalog_of(agent("bot", ["search"]), policy("tools", ["search"]), budget("money"))
    _, problems = validate_documents(docs, extra)
    assert "spec.budgetRef.name" not in [p.path for p in problems]
    assert not any("agentRef" in p.path or p.path.endswith(".tool") for p in problems)


def test_validate_body_for_the_webhook() -> None:
    body = {
        "apiVersion": API,
        "kind": "Workflow",
        "metadata": {"name": "w", "uid": "123"},
        "spec": {"steps": [tool_step("a", dependsOn=["zz"])]},
    }
    problems = validate_body(body, catalog_of(policy("p", ["search"])))
    assert [(p.source, p.path, p.message, p.line) for p in problems] == [
        ("Workflow/w", "spec.steps[0].dependsOn[0]", "unknown step 'zz' in dependsOn; steps: a", None)
    ]
    parse_problems = validate_body(
        {"apiVersion": API, "kind": "Workflow", "metadata": {"name": "w"}, "spec": {}}
    )
    assert [p.message for p in parse_problems] == ["exactly one of steps, stateMachine or behaviorTree must be given"]
    assert validate_body({"kind": "Nope"})[0].source == "Nope/<unnamed>"


@pytest.mark.parametrize("catalog", [None, Catalog()])
def test_check_resource_on_a_workflow_is_check_workflow(catalog: Catalog | None) -> None:
    resource = workflow({"steps": [tool_step("a"), tool_step("a")]})
    assert check_resource(resource, catalog) == check_workflow(resource.spec, catalog)


def test_a_bad_regular_expression_in_a_schema_is_a_problem_not_a_crash() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string", "pattern": "a("}}}
    findings = check({"inputs": {"q": "abc"}, "inputSchema": schema, "steps": [tool_step("a")]})
    assert findings == [
        (["spec", "inputSchema", "properties", "q", "pattern"], "not a valid JSON Schema: 'a(' is not a 'regex'")
    ]
