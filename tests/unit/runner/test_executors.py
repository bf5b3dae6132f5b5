"""Executors: llm steps (render, call, validate, repair, fallback), tool steps (deny by default), deadlines,
idempotency, and the same attempt in a child process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import deque
from typing import Any

import pytest

from agentflow.engine.values import StepRequest, StepResult
from agentflow.executors import InProcessExecutor, StepServices, SubprocessExecutor
from agentflow.executors.tool_step import gated_by_approval
from agentflow.gateway.cache import ResponseCache
from agentflow.gateway.local import LOCAL_ENDPOINTS, LocalModels, LoopbackGateway, local_gateway
from agentflow.gateway.service import Gateway
from agentflow.llm import (
    ChatRequest,
    Endpoint,
    ModelError,
    ModelResponse,
    Provider,
    approximate_token_counter,
    no_prices,
    offline_provider,
    request_hash,
)
from agentflow.llm.prompts import REPAIR_PREFIX
from agentflow.models import Catalog, Workflow
from agentflow.models.manifests import parse_documents, parse_yaml
from agentflow.storage.memory_ledger import MemoryLedger
from agentflow.tools import ToolRunner

MANIFESTS = """
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {name: triage, labels: {team: support}}
spec:
  role: support triage specialist
  instructions: Classify tickets.
  model: {name: openai/primary, fallbacks: [anthropic/backup], temperature: 0.2, maxTokens: 300}
  tools: [kb-search, echo-tool]
---
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {name: outsider, labels: {team: other}}
spec:
  role: outsider
  model: {name: openai/primary}
  tools: [echo-tool]
---
apiVersion: agentflow.dev/v1alpha1
kind: PromptVersion
metadata: {name: classify-v1}
spec:
  prompt: classify
  version: "1"
  messages:
    - {role: user, content: "Ticket: ${{ inputs.ticket }}"}
  outputSchema:
    type: object
    required: [category, confidence]
    properties:
      category: {enum: [billing, technical, other]}
      confidence: {type: number, minimum: 0, maximum: 1}
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: support-tools}
spec:
  agentSelector: {matchLabels: {team: support}}
  tools:
    - name: kb-search
      builtin: {name: text-search, config: {documents: [{id: a, title: Refunds, text: refunds take five days}]}}
    - name: echo-tool
      builtin: {name: echo}
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: ops-tools}
spec:
  agentSelector: {matchLabels: {team: ops}}
  tools:
    - name: slow
      container: {image: x, command: ["@PYTHON@", "-c", "import time; time.sleep(30)"]}
---
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: support}
spec:
  inputs: {ticket: "I was charged twice, please refund"}
  steps:
    - {name: classify, kind: llm, agentRef: {name: triage}, promptRef: {name: classify-v1},
       modelParams: {temperature: 0.7}}
    - {name: search, kind: tool, tool: kb-search, agentRef: {name: triage}}
    - {name: plain-echo, kind: tool, tool: echo-tool}
    - {name: outsider-echo, kind: tool, tool: echo-tool, agentRef: {name: outsider}}
    - {name: unlisted, kind: tool, tool: slow, agentRef: {name: triage}}
    - {name: slow, kind: tool, tool: slow}
    - {name: ghost, kind: tool, tool: no-such-tool}
    - {name: approve, kind: approval}
---
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: fsm}
spec:
  stateMachine:
    initial: score
    states:
      - name: score
        step: {name: score-step, kind: llm, agentRef: {name: triage}, promptRef: {name: classify-v1}}
        transitions: [{target: done}]
      - {name: done, final: Succeeded}
""".replace("@PYTHON@", sys.executable)


def load(workflow: str = "support") -> tuple[Catalog, Workflow]:
    catalog = Catalog()
    workflows = {}
    for item in parse_documents(parse_yaml(MANIFESTS, "test")):
        if isinstance(item.resource, Workflow):
            workflows[item.resource.metadata.name] = item.resource
        else:
            catalog.add(item.resource)
    return catalog, workflows[workflow]


def request(step: str, kind: str = "llm", inputs: dict[str, Any] | None = None, **kw: Any) -> StepRequest:
    fields: dict[str, Any] = {
        "run_id": "run-1",
        "node": step,
        "step": step,
        "kind": kind,
        "attempt": 1,
        "inputs": {"ticket": "I was charged twice, please refund"} if inputs is None else inputs,
    }
    fields.update(kw)
    return StepRequest(**fields)


class Scripted:
    """An Upstream (what the gateway calls) answering from a script: strings are answers, ModelErrors are raised."""

    def __init__(self, *script: str | ModelError, delay: float = 0.0) -> None:
        self.script: deque[str | ModelError] = deque(script)
        self.requests: list[ChatRequest] = []
        self.delay = delay

    async def complete(self, req: ChatRequest, endpoint: Endpoint) -> ModelResponse:
        self.requests.append(req)
        if self.delay:
            await asyncio.sleep(self.delay)
        item = self.script.popleft()
        if isinstance(item, ModelError):
            raise item
        return ModelResponse(item, req.model, input_tokens=10, output_tokens=5, cost_usd=0.001, latency_ms=3.0)


def models(catalog: Catalog, wf: Workflow, upstream: Any = None) -> LocalModels:
    """The local gateway over ``upstream`` (default: the offline model), without its cache."""
    provider = Provider(upstream, approximate_token_counter, no_prices, live=False) if upstream else offline_provider()
    gateway = Gateway(ledger=MemoryLedger(), provider=provider, endpoints=LOCAL_ENDPOINTS,
                      cache=ResponseCache(ttl_seconds=0, clock=time.monotonic))
    return LocalModels(gateway, wf, catalog)


def executor(model: Any = None, workflow: str = "support", **kw: Any) -> InProcessExecutor:
    catalog, wf = load(workflow)
    return InProcessExecutor(StepServices(catalog, wf.spec, models(catalog, wf, model), ToolRunner(), **kw))


GOOD = '{"category": "billing", "confidence": 0.9}'


class TestLlmSteps:
    async def test_offline_model_answer_is_parsed_and_recorded(self) -> None:
        result = await executor().execute(request("classify"))
        assert result.ok, result.error
        assert result.output["category"] == "billing"
        [call] = result.calls
        assert (call.kind, call.name) == ("llm", "agentflow/offline")
        assert json.loads(call.response) == result.output

    async def test_request_carries_rendered_prompt_params_and_key(self) -> None:
        model = Scripted(GOOD)
        result = await executor(model).execute(request("classify"))
        assert result.output == {"category": "billing", "confidence": 0.9}
        [sent] = model.requests
        assert sent.model == "openai/primary"
        assert sent.temperature == 0.7, "step modelParams override the Agent's temperature"
        assert sent.max_tokens == 300
        assert sent.messages[-1]["content"] == "Ticket: I was charged twice, please refund"
        assert sent.output_schema is not None and sent.idempotency_key == "run-1/classify/1"
        [call] = result.calls
        assert call.request_hash == request_hash(sent)
        assert (call.input_tokens, call.output_tokens, call.cost_usd) == (10, 5, 0.001)

    async def test_one_repair_request_fixes_a_bad_answer(self) -> None:
        model = Scripted('{"category": "refunds", "confidence": 0.9}', GOOD)
        result = await executor(model).execute(request("classify"))
        assert result.ok and result.output["category"] == "billing"
        assert len(result.calls) == 2
        repair = model.requests[1]
        assert repair.messages[-1]["content"].startswith(REPAIR_PREFIX)
        assert "$.category" in repair.messages[-1]["content"]
        assert repair.idempotency_key == "run-1/classify/1/repair"

    async def test_two_bad_answers_fail_retryably_with_both_calls(self) -> None:
        model = Scripted("not json", '{"category": "billing"}')
        result = await executor(model).execute(request("classify"))
        assert result.error is not None
        assert (result.error.type, result.error.retryable) == ("InvalidModelOutput", True)
        assert "confidence" in result.error.message and "classify-v1" in result.error.message
        assert len(result.calls) == 2 and result.cost_usd == pytest.approx(0.002)

    async def test_the_gateway_falls_back_on_a_retryable_error(self) -> None:
        model = Scripted(ModelError("RateLimited", "slow down", retryable=True, model="openai/primary"), GOOD)
        result = await executor(model).execute(request("classify"))
        assert result.ok
        assert [r.model for r in model.requests] == ["openai/primary", "anthropic/backup"]
        assert result.calls[0].name == "anthropic/backup" and len(result.calls) == 1

    async def test_model_errors_become_step_errors(self) -> None:
        model = Scripted(ModelError("AuthenticationFailed", "bad key", retryable=False, model="openai/primary"))
        result = await executor(model).execute(request("classify"))
        assert result.error is not None
        assert (result.error.type, result.error.retryable) == ("AuthenticationFailed", False)

    async def test_missing_input_is_a_render_error(self) -> None:
        result = await executor(Scripted()).execute(request("classify", inputs={}))
        assert result.error is not None
        assert (result.error.type, result.error.retryable) == ("PromptRenderError", False)
        assert "classify" in result.error.message

    async def test_state_machine_steps_are_found_by_state_name(self) -> None:
        result = await executor(Scripted(GOOD), workflow="fsm").execute(request("score"))
        assert result.ok and result.output["category"] == "billing"

    async def test_data_residency_refuses_models_of_other_providers(self) -> None:
        catalog, wf = load()
        agent = catalog.agents["triage"]
        residency = agent.spec.data_residency.model_copy(update={"allowed_providers": ["mistral"]})
        catalog.agents["triage"] = agent.model_copy(
            update={"spec": agent.spec.model_copy(update={"data_residency": residency})}
        )
        model = Scripted(GOOD)
        ex = InProcessExecutor(StepServices(catalog, wf.spec, models(catalog, wf, model), ToolRunner()))
        result = await ex.execute(request("classify"))
        assert result.error is not None and result.error.type == "DataResidencyViolation"
        assert model.requests == []


class TestToolSteps:
    async def test_allowed_tool_runs_and_is_recorded(self) -> None:
        result = await executor().execute(request("search", "tool", {"query": "refund"}))
        assert result.ok, result.error
        assert [hit["id"] for hit in result.output] == ["a"]
        [call] = result.calls
        assert (call.kind, call.name, call.response) == ("tool", "kb-search", result.output)
        assert len(call.request_hash) == 64

    async def test_tool_without_agent_needs_a_declaring_policy(self) -> None:
        ok = await executor().execute(request("plain-echo", "tool", {"x": 1}))
        assert ok.output == {"x": 1}
        ghost = await executor().execute(request("ghost", "tool", {}))
        assert ghost.error is not None and ghost.error.type == "UnknownTool"

    async def test_agent_must_list_the_tool(self) -> None:
        result = await executor().execute(request("unlisted", "tool", {}))
        assert result.error is not None
        assert (result.error.type, result.error.retryable) == ("ToolNotAllowed", False)
        assert "'triage'" in result.error.message and "'slow'" in result.error.message

    async def test_a_policy_matching_the_agent_must_declare_the_tool(self) -> None:
        result = await executor().execute(request("outsider-echo", "tool", {}))
        assert result.error is not None and result.error.type == "ToolNotAllowed"
        message = result.error.message
        assert "'outsider'" in message and "'echo-tool'" in message
        assert "policies considered: support-tools declares it but its agentSelector" in message
        assert "matching the Agent without the tool: none (all ToolPolicies: ops-tools, support-tools)" in message

    async def test_tool_errors_become_step_errors(self) -> None:
        result = await executor().execute(request("search", "tool", {}))
        assert result.error is not None
        assert (result.error.type, result.error.retryable) == ("InvalidToolInput", False)


class TestAttempts:
    async def test_deadline_stops_a_slow_model_and_keeps_it_retryable(self) -> None:
        ex = executor(Scripted(GOOD, delay=10))  # it would answer GOOD after 10 s: the error proves the deadline
        result = await ex.execute(request("classify", deadline=time.time() + 0.2))
        assert result.error is not None
        assert (result.error.type, result.error.retryable) == ("DeadlineExceeded", True)

    async def test_deadline_already_passed_uses_the_injected_clock(self) -> None:
        model = Scripted(GOOD)
        result = await executor(model, clock=lambda: 2000.0).execute(request("classify", deadline=1999.0))
        assert result.error is not None and result.error.type == "DeadlineExceeded"
        assert model.requests == []

    async def test_same_idempotency_key_returns_the_first_result(self) -> None:
        model = Scripted(GOOD, '{"category": "other", "confidence": 0.1}')
        ex = executor(model)
        first = await ex.execute(request("classify"))
        again = await ex.execute(request("classify"))
        assert again == first and len(model.requests) == 1
        retry = await ex.execute(request("classify", attempt=2))
        assert retry.output["category"] == "other"

    async def test_approval_and_unknown_steps_are_refused(self) -> None:
        approval = await executor().execute(request("approve", "approval", {}))
        assert approval.error is not None and approval.error.type == "UnsupportedStepKind"
        unknown = await executor().execute(request("nope"))
        assert unknown.error is not None and unknown.error.type == "UnknownStep"

    def test_dict_round_trips(self) -> None:
        req = request("classify", deadline=12.5)
        assert StepRequest.from_dict(json.loads(json.dumps(req.to_dict()))) == req
        result = asyncio.run(executor(Scripted("nope", "still nope")).execute(request("classify")))
        assert StepResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
        assert StepResult.from_dict(StepResult(output=[1]).to_dict()) == StepResult(output=[1])


def offline_env() -> dict[str, str]:
    return {**os.environ, "AGENTFLOW_MODEL_MODE": "offline"}


class TestSubprocess:
    async def test_child_gives_the_same_result_as_in_process(self) -> None:
        child = await SubprocessExecutor(MANIFESTS, "support", env=offline_env()).execute(request("classify"))
        local = await executor().execute(request("classify"))
        assert child.ok, child.error
        assert child.output == local.output
        assert [(c.kind, c.name, c.response) for c in child.calls] == [
            (c.kind, c.name, c.response) for c in local.calls
        ]

    async def test_child_is_killed_at_the_deadline(self) -> None:
        # the tool sleeps 30 s and would then succeed: the error proves the deadline stopped it
        result = await SubprocessExecutor(MANIFESTS, "support", env=offline_env()).execute(
            request("slow", "tool", {}, deadline=time.time() + 1.5)
        )
        assert result.error is not None and result.error.type in ("DeadlineExceeded", "ToolTimeout")
        assert result.error.retryable

    async def test_child_errors_are_results(self) -> None:
        result = await SubprocessExecutor(MANIFESTS, "missing", env=offline_env()).execute(request("classify"))
        assert result.error is not None and result.error.type == "ExecutorError"
        assert "'missing'" in result.error.message

    async def test_the_childs_calls_go_through_the_parents_gateway(self) -> None:
        catalog, wf = load()
        local = local_gateway(wf, catalog, offline_provider())
        loopback = LoopbackGateway(local)
        ex = SubprocessExecutor(MANIFESTS, "support", gateway=loopback,
                                env={k: v for k, v in os.environ.items() if k != "AGENTFLOW_MODEL_MODE"})
        try:
            result = await ex.execute(request("classify"))
        finally:
            await ex.aclose()
        assert result.ok, result.error
        [logged] = await local.gateway.ledger.calls()  # type: ignore[attr-defined]
        assert (logged.run_uid, logged.node, logged.attempt, logged.agent) == ("run-1", "classify", 1, "triage")
        assert loopback._tokens == {}, "the attempt's token is revoked when it ends"

    def test_stepproc_reports_a_bad_payload_on_stdout(self) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "agentflow.executors.stepproc"],
            input="{}",
            capture_output=True,
            text=True,
            env=offline_env(),
            timeout=60,
        )
        assert proc.returncode == 2
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["error"]["type"] == "ExecutorError" and "'request'" in out["error"]["message"]


GATED = """
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: money}
spec:
  tools:
    - {name: pay, builtin: {name: echo}, requiresApproval: true}
---
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: dag}
spec:
  steps:
    - {name: ok-to-pay, kind: approval}
    - {name: pay-after-approval, kind: tool, tool: pay, dependsOn: [ok-to-pay]}
    - {name: pay-unguarded, kind: tool, tool: pay}
---
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: machine}
spec:
  stateMachine:
    initial: ask
    states:
      - name: ask
        step: {name: ask-step, kind: approval}
        transitions: [{target: paying}, {target: refused, result: error}]
      - name: paying
        step: {name: pay-step, kind: tool, tool: pay}
        transitions: [{target: done}, {target: sneaky, result: error}]
      - name: sneaky
        step: {name: sneaky-step, kind: tool, tool: pay}
        transitions: [{target: done}]
      - {name: refused, final: Failed}
      - {name: done, final: Succeeded}
"""


def gated(workflow: str) -> InProcessExecutor:
    catalog = Catalog()
    workflows = {}
    for item in parse_documents(parse_yaml(GATED, "gated")):
        if isinstance(item.resource, Workflow):
            workflows[item.resource.metadata.name] = item.resource
        else:
            catalog.add(item.resource)
    wf = workflows[workflow]
    return InProcessExecutor(StepServices(catalog, wf.spec, models(catalog, wf), ToolRunner()))


class TestRequiresApproval:
    """requiresApproval tools: the engine gates every step calling one (see tests/unit/engine/test_gates.py)."""

    def test_every_step_of_a_requires_approval_tool_is_gated(self) -> None:
        ex = gated("dag")
        steps = {s.name: s for s in ex.services.workflow.steps}
        assert gated_by_approval(ex.services, steps["pay-after-approval"])
        assert gated_by_approval(ex.services, steps["pay-unguarded"])
        assert not gated_by_approval(ex.services, steps["ok-to-pay"])

    def test_state_machine_steps_are_gated_by_state(self) -> None:
        ex = gated("machine")
        sm = ex.services.workflow.state_machine
        assert sm is not None
        states = {s.name: s.step for s in sm.states if s.step is not None}
        assert gated_by_approval(ex.services, states["paying"]) and gated_by_approval(ex.services, states["sneaky"])
        assert not gated_by_approval(ex.services, states["ask"])

    async def test_a_gated_step_runs_its_tool_once_the_engine_starts_it(self) -> None:
        ex = gated("dag")
        assert (await ex.execute(request("pay-unguarded", "tool", {"n": 1}))).output == {"n": 1}
