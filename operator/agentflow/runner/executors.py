"""Executors of the local runner: run one attempt of an llm or tool step.

Both implement the engine's Executor protocol (agentflow.engine.values)::

    InProcessExecutor    in this process: renders the prompt, screens untrusted inputs
                         for prompt injection, redacts PII (agentflow.security), calls
                         the model (FallbackClient over the Agent's model and fallbacks),
                         validates the output with up to spec.outputRepairs repair
                         requests, restores the tokens where spec.pii allows; or checks
                         the tool grants, redacts the inputs of http/container tools,
                         calls the ToolRunner and screens the tool's output.
    SubprocessExecutor   the same, in a child ``python -m agentflow.runner.stepproc``
                         per attempt, killed at the deadline.

Tool grants are deny by default: a tool step with an agentRef runs only a tool
the Agent lists AND a ToolPolicy matching the Agent's labels declares; without
an agentRef the tool must be declared by some ToolPolicy (the decision is
agentflow.validation.grants.decide_tool). A tool with ``requiresApproval``
runs only in a step the engine gates: it waits for a human decision first.

An executor never raises for a failing step: every failure is a StepResult
with a StepError (a cancelled attempt still raises CancelledError). The calls an
attempt made are returned even when it fails, so their cost is booked.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from agentflow.audit.records import AuditEvent, AuditSink
from agentflow.engine.values import CallRecord, StepError, StepRequest, StepResult
from agentflow.llm import (
    IDEMPOTENCY_KEY,
    FallbackClient,
    ModelClient,
    ModelError,
    ModelRequest,
    OutputValidationError,
    PromptRenderError,
    parse_output,
    render_messages,
    repair_messages,
    request_hash,
    validate_inputs,
)
from agentflow.llm.client import canonical_json
from agentflow.models import Agent, Catalog, StepKind, StepSpec, ToolSpec, WorkflowSpec
from agentflow.models.agent import InjectionPolicy, PiiPolicy
from agentflow.security import (
    Redaction,
    SecurityContext,
    SecurityError,
    decide,
    injection_event,
    redaction_event,
    scan,
)
from agentflow.security.context import DEFAULT_INJECTION, DEFAULT_PII
from agentflow.tools import ToolError, ToolRunner
from agentflow.validation.grants import ToolDenied, approval_gates, decide_tool, tool_steps

Clock = Callable[[], float]


class _Failed(Exception):
    """Internal: ends an attempt with this StepError."""

    def __init__(self, error: StepError) -> None:
        super().__init__(error.message)
        self.error = error


def _fail(type: str, message: str, retryable: bool = False) -> _Failed:
    return _Failed(StepError(type, message, retryable))


def step_request_to_dict(request: StepRequest) -> dict[str, Any]:
    return {
        "runId": request.run_id,
        "node": request.node,
        "step": request.step,
        "kind": request.kind,
        "attempt": request.attempt,
        "inputs": dict(request.inputs),
        "deadline": request.deadline,
    }


def step_request_from_dict(d: Mapping[str, Any]) -> StepRequest:
    deadline = d.get("deadline")
    return StepRequest(
        run_id=str(d["runId"]),
        node=str(d["node"]),
        step=str(d["step"]),
        kind=str(d["kind"]),
        attempt=int(d["attempt"]),
        inputs=dict(d.get("inputs") or {}),
        deadline=float(deadline) if deadline is not None else None,
    )


def step_result_to_dict(result: StepResult) -> dict[str, Any]:
    return {
        "output": result.output,
        "error": result.error.to_dict() if result.error is not None else None,
        "calls": [c.to_dict() for c in result.calls],
    }


def step_result_from_dict(d: Mapping[str, Any]) -> StepResult:
    error = d.get("error")
    return StepResult(
        output=d.get("output"),
        error=StepError.from_dict(error) if error is not None else None,
        calls=tuple(CallRecord.from_dict(c) for c in d.get("calls") or ()),
    )


def find_step(workflow: WorkflowSpec, name: str) -> StepSpec | None:
    """The DAG step called ``name``, or the step of the state called ``name``."""
    for step in workflow.steps:
        if step.name == name:
            return step
    if workflow.state_machine is not None:
        for state in workflow.state_machine.states:
            if state.name == name:
                return state.step
    return None


def _provider(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


class InProcessExecutor:
    """Runs attempts in this process. Remembers the last results by idempotency key."""

    def __init__(
        self,
        catalog: Catalog,
        workflow: WorkflowSpec,
        model_client: ModelClient,
        tool_runner: ToolRunner,
        *,
        clock: Clock = time.time,
        remember: int = 1024,
        security: SecurityContext | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self._catalog = catalog
        self._workflow = workflow
        self._model = model_client
        self._tools = tool_runner
        self._clock = clock
        self._security = security if security is not None else SecurityContext()
        self._audit = audit
        self._remember = remember
        self._done: collections.OrderedDict[str, StepResult] = collections.OrderedDict()

    async def execute(self, request: StepRequest) -> StepResult:
        key = request.idempotency_key
        if key in self._done:
            return self._done[key]
        calls: list[CallRecord] = []
        try:
            output = await self._with_deadline(request, calls)
            result = StepResult(output=output, calls=tuple(calls))
        except _Failed as failed:
            result = StepResult(error=failed.error, calls=tuple(calls))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must still end the attempt with a StepResult
            error = StepError("ExecutorError", f"step {request.step!r}: {type(exc).__name__}: {exc}", True)
            result = StepResult(error=error, calls=tuple(calls))
        self._done[key] = result
        while len(self._done) > self._remember:
            self._done.popitem(last=False)
        return result

    async def _with_deadline(self, request: StepRequest, calls: list[CallRecord]) -> Any:
        if request.deadline is None:
            return await self._run(request, calls, None)
        left = request.deadline - self._clock()
        if left <= 0:
            raise _fail("DeadlineExceeded", f"step {request.step!r}: the deadline passed before it started", True)
        try:
            return await asyncio.wait_for(self._run(request, calls, left), left)
        except TimeoutError:
            raise _fail(
                "DeadlineExceeded",
                f"step {request.step!r} ({request.node}) did not finish within its deadline ({left:.3g}s left "
                "at start); raise timeoutSeconds if it needs longer",
                True,
            ) from None

    async def _run(self, request: StepRequest, calls: list[CallRecord], timeout: float | None) -> Any:
        step = find_step(self._workflow, request.step)
        if step is None:
            raise _fail("UnknownStep", f"the workflow has no step or state named {request.step!r}")
        if request.kind == StepKind.llm.value and step.kind is StepKind.llm:
            return await self._llm(request, step, calls, timeout)
        if request.kind == StepKind.tool.value and step.kind is StepKind.tool:
            return await self._tool(request, step, calls)
        raise _fail(
            "UnsupportedStepKind",
            f"step {request.step!r} is a {step.kind.value} step but the request is for kind {request.kind!r}; "
            "executors run llm and tool steps only",
        )

    # --- llm ------------------------------------------------------------------------------------------

    def _agent(self, step: StepSpec) -> Agent:
        assert step.agent_ref is not None
        agent = self._catalog.agents.get(step.agent_ref.name)
        if agent is None:
            raise _fail("UnknownReference", f"step {step.name!r}: agentRef {step.agent_ref.name!r} is not loaded")
        return agent

    def _models(self, agent: Agent) -> list[str]:
        spec = agent.spec.model
        models = [spec.name, *spec.fallbacks]
        allowed = agent.spec.data_residency.allowed_providers
        if allowed:
            models = [m for m in models if _provider(m) in allowed]
            if not models:
                raise _fail(
                    "DataResidencyViolation",
                    f"Agent {agent.metadata.name!r}: none of its models ({spec.name}, fallbacks "
                    f"{spec.fallbacks}) is from an allowed provider ({', '.join(allowed)}); change the model "
                    "or dataResidency.allowedProviders",
                )
        return models

    async def _llm(self, request: StepRequest, step: StepSpec, calls: list[CallRecord], timeout: float | None) -> Any:
        agent = self._agent(step)
        events: list[AuditEvent] = []
        try:
            return await self._llm_attempt(request, step, agent, calls, timeout, events)
        finally:
            await self._record(events)

    async def _llm_attempt(
        self,
        request: StepRequest,
        step: StepSpec,
        agent: Agent,
        calls: list[CallRecord],
        timeout: float | None,
        events: list[AuditEvent],
    ) -> Any:
        assert step.prompt_ref is not None
        prompt = self._catalog.prompts.get(step.prompt_ref.name)
        if prompt is None:
            raise _fail("UnknownReference", f"step {step.name!r}: promptRef {step.prompt_ref.name!r} is not loaded")
        try:
            validate_inputs(prompt, request.inputs)
            messages = render_messages(agent, prompt, request.inputs)
        except PromptRenderError as exc:
            raise _fail("PromptRenderError", f"step {step.name!r}: {exc}") from exc
        models = self._models(agent)
        who = _Who.of(request, agent)
        redaction = await self._redaction(agent.spec.pii, request.run_id)
        screened = _untrusted_inputs(request.inputs, agent.spec.injection)
        if screened:
            self._screen(screened, f"step {step.name!r} inputs", agent.spec.injection, who, redaction, events)
        if redaction is not None:
            messages = await asyncio.to_thread(_redact_messages, redaction, messages)
            if redaction.counts:
                events.append(redaction_event(**who.fields(self._clock), target=models[0], redaction=redaction,
                                              direction="model"))
        params = step.model_params
        model = agent.spec.model
        base = ModelRequest(
            model=models[0],
            messages=tuple(messages),
            temperature=params.temperature if params and params.temperature is not None else model.temperature,
            max_tokens=params.max_tokens if params and params.max_tokens is not None else model.max_tokens,
            api_base=model.api_base,
            output_schema=prompt.spec.output_schema,
            timeout_seconds=timeout,
            metadata={IDEMPOTENCY_KEY: request.idempotency_key, "run_id": request.run_id, "node": request.node},
        )
        client = FallbackClient(self._model, models[1:])
        schema = prompt.spec.output_schema
        repairs = agent.spec.output_repairs
        current = base
        for repair in range(repairs + 1):
            text = await self._complete(client, current, calls)
            try:
                value = parse_output(text, schema)  # the answer as the model gave it: tokens, not values
                break
            except OutputValidationError as error:
                if error.rule == "schema":
                    raise _fail("InvalidOutputSchema", f"PromptVersion {prompt.metadata.name!r}: {error}") from error
                if repair == repairs:
                    raise _fail(
                        "InvalidModelOutput",
                        f"step {step.name!r}: the model's answer failed the outputSchema of PromptVersion "
                        f"{prompt.metadata.name!r} at {error.path} (rule {error.rule!r}) after {repairs} repair "
                        f"request(s) (Agent spec.outputRepairs): {error}",
                        True,
                    ) from error
                suffix = "/repair" if repair == 0 else f"/repair{repair + 1}"
                current = dataclasses.replace(
                    current,
                    messages=tuple(repair_messages(current.messages, text, error)),
                    metadata={**base.metadata, IDEMPOTENCY_KEY: f"{request.idempotency_key}{suffix}"},
                )
        if redaction is None:
            return value
        await self._keep(request.run_id, redaction)
        if agent.spec.pii.restore == "never":
            return value
        value = redaction.restore(value)
        if redaction.restored:
            events.append(redaction_event(**who.fields(self._clock), target="step output", redaction=redaction,
                                          direction="restore"))
        return value

    async def _redaction(self, policy: PiiPolicy, run_id: str) -> Redaction | None:
        try:
            return await asyncio.to_thread(self._security.redaction, policy, run_id)
        except SecurityError as exc:
            raise _fail(type(exc).__name__, f"PII redaction: {exc}", False) from exc

    async def _keep(self, run_id: str, redaction: Redaction) -> None:
        try:
            await asyncio.to_thread(self._security.keep, run_id, redaction)
        except (SecurityError, OSError) as exc:
            raise _fail("TokenMapError", f"cannot store the run's PII token map: {exc}", True) from exc

    def _screen(
        self,
        value: Any,
        source: str,
        policy: InjectionPolicy,
        who: _Who,
        redaction: Redaction | None,
        events: list[AuditEvent],
        pii: PiiPolicy | None = None,
    ) -> None:
        """Screen untrusted ``value``; record the decision; raise _Failed when the policy blocks it."""
        report = scan(value, source)
        if not report.findings:
            return
        action = decide(report, policy.threshold, policy.action)
        if redaction is None and pii is not None:  # the evidence is recorded: never with the values it quotes
            try:
                redaction = self._security.redaction(pii, who.run_id)
            except SecurityError as exc:
                raise _fail(type(exc).__name__, f"PII redaction of the injection evidence: {exc}", False) from exc
        evidence = [
            {**f.to_dict(), "snippet": redaction.redact_text(f.snippet) if redaction is not None else f.snippet}
            for f in report.findings
        ]
        events.append(injection_event(**who.fields(self._clock), report=report, action=action,
                                      threshold=policy.threshold, evidence=evidence))
        if action not in ("block", "quarantine"):
            return
        shown = "; ".join(f"{e['rule']} ({e['category']}) in {e['source']}: {e['snippet']!r}" for e in evidence[:5])
        if action == "quarantine":
            raise _fail(
                "InjectionQuarantined",
                f"{source} quarantined for review: prompt-injection score {report.score:.2f} >= threshold "
                f"{policy.threshold} (Agent spec.injection.action: quarantine); evidence: {shown}. The step "
                "is not retried; review the evidence in the audit log and re-run the workflow if it is benign",
            )
        raise _fail(
            "InjectionDetected",
            f"{source}: prompt-injection score {report.score:.2f} >= threshold {policy.threshold} (Agent "
            f"spec.injection.action: block); evidence: {shown}",
        )

    async def _record(self, events: list[AuditEvent]) -> None:
        if self._audit is None or not events:
            return
        try:
            await self._audit.append(events)
        except Exception as exc:  # the audit must be durable: an attempt whose decisions were not recorded fails
            raise _fail("AuditUnavailable", f"cannot record {len(events)} audit event(s): {exc}", True) from exc

    async def _complete(self, client: FallbackClient, request: ModelRequest, calls: list[CallRecord]) -> str:
        try:
            response = await client.complete(request)
        except ModelError as exc:
            raise _fail(exc.type, exc.message, exc.retryable) from exc
        calls.append(
            CallRecord(
                kind="llm",
                name=response.model,
                request_hash=request_hash(request),
                response=response.text,
                input_tokens=response.input_tokens,
                output_tokens=response.output_tokens,
                cost_usd=response.cost_usd,
                latency_ms=response.latency_ms,
                cached=response.cached,
            )
        )
        return response.text

    # --- tools ----------------------------------------------------------------------------------------

    def allowed_tool(self, step: StepSpec) -> ToolSpec:
        """The ToolSpec a tool step may call, deny by default; raises _Failed (ToolNotAllowed/UnknownTool).

        The decision is :func:`agentflow.validation.grants.decide_tool`, the same the operator makes.
        """
        try:
            return decide_tool(step, self._catalog).tool
        except ToolDenied as denied:
            raise _fail(denied.type, denied.message, denied.retryable) from None

    def gated_by_approval(self, step: StepSpec) -> bool:
        """Whether a human approves each call of ``step``'s tool before it runs.

        The drivers compile the plan with :func:`agentflow.validation.grants.approval_gates` of the same
        catalog, so the engine pauses every step whose granted tool has requiresApproval (an approval gate,
        like an approval step) and starts it only once approved. This says whether ``step`` is among them.
        """
        key = next((k for k, s in tool_steps(self._workflow) if s is step), step.name)
        return key in approval_gates(self._workflow, self._catalog)

    async def _tool(self, request: StepRequest, step: StepSpec, calls: list[CallRecord]) -> Any:
        tool = self.allowed_tool(step)
        if tool.requires_approval and not self.gated_by_approval(step):
            raise _fail(
                "ApprovalRequired",
                f"step {step.name!r}: tool {tool.name!r} has requiresApproval, but no approval step gates "
                "this step; make it depend on an approval step (or, in a state machine, enter its state "
                "only from an approval state)",
            )
        agent = self._agent(step) if step.agent_ref is not None else None
        pii = agent.spec.pii if agent is not None else DEFAULT_PII
        injection = agent.spec.injection if agent is not None else DEFAULT_INJECTION
        who = _Who.of(request, agent)
        events: list[AuditEvent] = []
        try:
            return await self._tool_attempt(request, tool, calls, pii, injection, who, events)
        finally:
            await self._record(events)

    async def _tool_attempt(
        self,
        request: StepRequest,
        tool: ToolSpec,
        calls: list[CallRecord],
        pii: PiiPolicy,
        injection: InjectionPolicy,
        who: _Who,
        events: list[AuditEvent],
    ) -> Any:
        # http and container tools run outside the cluster's sandbox: what they receive is redacted unless the
        # policy lets values through; builtin and wasm tools run in the sandbox and get the inputs as they are.
        inputs: Any = dict(request.inputs)
        redaction = await self._redaction(pii, request.run_id) if tool.kind in EXTERNAL_TOOL_KINDS else None
        if redaction is not None:
            if pii.allow_restore_to_tools:
                inputs = redaction.restore(inputs)
            else:
                inputs = await asyncio.to_thread(redaction.redact, inputs)
                if redaction.counts:
                    events.append(redaction_event(**who.fields(self._clock), target=f"tool {tool.name}",
                                                  redaction=redaction, direction="tool"))
        try:
            outcome = await self._tools.call(
                tool, inputs, idempotency_key=request.idempotency_key, deadline=request.deadline
            )
        except ToolError as exc:
            raise _fail(exc.type, exc.message, exc.retryable) from exc
        digest = hashlib.sha256(canonical_json({"tool": tool.name, "inputs": dict(request.inputs)})).hexdigest()
        calls.append(
            CallRecord(
                kind="tool",
                name=tool.name,
                request_hash=digest,
                response=outcome.output,
                cost_usd=outcome.cost_usd,
                latency_ms=outcome.latency_ms,
            )
        )
        output = outcome.output
        self._screen(output, f"tool {tool.name!r} output", injection, who, redaction, events, pii)
        if redaction is not None and len(redaction.tokens):
            await self._keep(request.run_id, redaction)
            if pii.restore == "output":
                output = redaction.restore(output)
        return output


EXTERNAL_TOOL_KINDS = frozenset({"http", "container"})
"""Tool kinds that run outside the cluster's sandbox: their inputs are redacted."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Who:
    """Who the audit events of an attempt name."""

    actor: str
    namespace: str
    subject: str
    run_id: str

    @classmethod
    def of(cls, request: StepRequest, agent: Agent | None) -> _Who:
        namespace = (agent.metadata.namespace if agent is not None else None) or "default"
        actor = f"agent:{namespace}/{agent.metadata.name}" if agent is not None else "executor"
        subject = f"{namespace}/{request.run_id}/{request.node}#{request.attempt}"
        return cls(actor, namespace, subject, request.run_id)

    def fields(self, clock: Clock) -> dict[str, str]:
        at = datetime.datetime.fromtimestamp(clock(), datetime.UTC).isoformat().replace("+00:00", "Z")
        return {"actor": self.actor, "namespace": self.namespace, "subject": self.subject, "at": at}


def _redact_messages(redaction: Redaction, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{**m, "content": redaction.redact_text(m["content"])} for m in messages]


def _untrusted_inputs(inputs: Mapping[str, Any], policy: InjectionPolicy) -> dict[str, Any]:
    if "*" in policy.untrusted_inputs:
        return dict(inputs)
    return {k: v for k, v in inputs.items() if k in policy.untrusted_inputs}


class SubprocessExecutor:
    """Runs each attempt in a child ``python -m agentflow.runner.stepproc``.

    The child reads ``{"request", "manifests", "workflow"}`` as JSON on stdin
    (the manifests as the YAML text the run was started with, the Workflow's
    name) and prints the StepResult as JSON. It is killed at the deadline.
    ``env`` is the child's environment (default: this process's); the child
    picks its model client from it like the parent would.
    """

    def __init__(
        self,
        manifests_yaml: str,
        workflow: str,
        *,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        clock: Clock = time.time,
    ) -> None:
        self._manifests = manifests_yaml
        self._workflow = workflow
        self._env = dict(env) if env is not None else None
        self._python = python
        self._clock = clock

    async def execute(self, request: StepRequest) -> StepResult:
        payload = {"request": step_request_to_dict(request), "manifests": self._manifests, "workflow": self._workflow}
        timeout = None
        if request.deadline is not None:
            timeout = request.deadline - self._clock()
            if timeout <= 0:
                return _error("DeadlineExceeded", f"step {request.step!r}: the deadline passed before it started")
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                "agentflow.runner.stepproc",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
            )
        except OSError as exc:
            return _error("ExecutorError", f"cannot start {self._python!r}: {exc}")
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode("utf-8")), timeout)
        except TimeoutError:
            await _kill(proc)
            return _error(
                "DeadlineExceeded",
                f"step {request.step!r} ({request.node}) did not finish within its deadline; the step process "
                "was killed",
            )
        except BaseException:
            await _kill(proc)
            raise
        return _parse_child(stdout, stderr, proc.returncode)


def _error(type: str, message: str, retryable: bool = True) -> StepResult:
    return StepResult(error=StepError(type, message, retryable))


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def _parse_child(stdout: bytes, stderr: bytes, returncode: int | None) -> StepResult:
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        data = json.loads(lines[-1])
        return step_result_from_dict(data)
    except (IndexError, ValueError, KeyError, TypeError, AttributeError):
        tail = stderr.decode("utf-8", "replace").strip()[-800:]
        return _error(
            "ExecutorError", f"the step process exited with {returncode} without a result: {tail or 'no output'}"
        )
