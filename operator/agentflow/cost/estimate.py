"""Cost preflight: what a Workflow will cost before it runs, per step, as low / expected / high.

::

    estimate_workflow(workflow, catalog, inputs, prices, calibration, count_tokens=...) -> Estimate
      per llm step:  calls  = multiplicity x attempts x calls per attempt
                     tokens = calls x (prompt tokens, output tokens) per call
                     usd    = tokens x the primary model's prices

Pure: the two functions that need litellm (``count_tokens`` over chat messages, ``prices`` of a model)
are passed in (:mod:`agentflow.llm.pricing` has both), and past runs come in as a
:class:`~agentflow.cost.calibration.Calibration`. Every number that is not exact says so in
``assumptions``; a step whose fan-out is not known before the run is marked ``multiplicity_basis
="assumed"`` (or ``"calibrated"``).

How each part is estimated, and the documented defaults:

- **Model**: the Agent's primary ``spec.model.name``. Fallbacks are not priced (they run only when
  the primary fails); a step with fallbacks says so.
- **Prompt tokens**: ``count_tokens`` of the rendered messages (system message with the Agent's role,
  instructions and the JSON instruction of an outputSchema, then the prompt's messages) for the step's
  inputs. Inputs that are exact before the run (workflow inputs, literals, ``item`` of a forEach over a
  literal or input list) are rendered as they are. Inputs that depend on an upstream step's output are
  unknown: they are counted as the upstream step's expected output tokens (its calibrated mean, else its
  max_tokens, else the default below; a tool step's output as :data:`TOOL_OUTPUT_TOKENS`), with the
  upstream's low/high for the low/high estimate. With calibration, the count is scaled by the ratio of
  the prompt tokens the provider reported to the tokens counted here on the same inputs.
- **Output tokens**: calibrated (low = smallest seen, expected = mean, high = max_tokens or, without it,
  the larger of twice the mean and the largest seen), else max_tokens (expected = high = max_tokens,
  low = a quarter: a cap, not a typical answer), else :data:`DEFAULT_OUTPUT_TOKENS` (high
  :data:`DEFAULT_OUTPUT_TOKENS_HIGH`).
- **Multiplicity**: forEach over a list known before the run (a literal, the inputs) is exact; over an
  upstream output it is the calibrated mean (high: the largest seen) or :data:`ASSUMED_FAN_OUT`, marked
  assumed. A ``when`` that is false for these inputs skips the step; one that depends on upstream outputs
  makes the low 0. ``runOn: failure`` steps: expected 0 (they run only when the run fails), high as if
  they ran. State machines: a state's step runs between 0 (1 for the initial state) and its maxVisits
  times, expected the calibrated mean visits, else once.
- **Attempts**: with a retry limit L and a failure rate p (calibrated, else
  :data:`DEFAULT_FAILURE_RATE`) an item takes ``1 + p + p^2 + ... + p^L`` attempts expected, 1 at
  least and ``L + 1`` at worst.
- **Conversation** (an Agent's ``memory.kind: conversation``): up to its ``maxTokens`` carried prompt tokens per
  call (expected half, low none); the summary calls that compact it are not priced.
- **Calls per attempt**: an llm step whose prompt has an outputSchema may send one repair request: the
  calibrated mean, else ``1 + DEFAULT_REPAIR_RATE``; at worst 2.
- Approval and tool steps make no model calls; they are listed with zero model cost.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from ..engine.expressions import ExpressionError, compile_expression
from ..engine.planner import PLAN_SCHEMA, PlanPolicy
from ..engine.templates import compile_template
from ..llm.prompts import PromptRenderError, render_messages
from ..models import (
    Agent,
    BehaviorNode,
    Catalog,
    PromptVersion,
    StepKind,
    StepSpec,
    TreeNodeType,
    Workflow,
    tree_leaves,
)
from ..models.workflow import RunOn
from ..prompts.compose import CompositionError, compose
from ..prompts.rollout import RolloutError, planned_version

__all__ = [
    "ASSUMED_FAN_OUT",
    "DEFAULT_FAILURE_RATE",
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_OUTPUT_TOKENS_HIGH",
    "DEFAULT_REPAIR_RATE",
    "TOOL_OUTPUT_TOKENS",
    "Estimate",
    "EstimateError",
    "Prices",
    "Range",
    "StepEstimate",
    "StepHistory",
    "TokenCounter",
    "estimate_workflow",
]

DEFAULT_OUTPUT_TOKENS = 500
"""Expected output tokens of an llm step with no calibration and no max_tokens."""
DEFAULT_OUTPUT_TOKENS_HIGH = 4000
"""High output tokens of such a step (nothing caps the answer)."""
TOOL_OUTPUT_TOKENS = 200
"""Tokens a tool step's output adds to a prompt that embeds it (tools report no token counts)."""
ASSUMED_FAN_OUT = (1, 5, 20)
"""(low, expected, high) items of a forEach whose list is known only at run time, without calibration."""
DEFAULT_FAILURE_RATE = 0.05
"""Probability that an attempt fails and is retried, without calibration."""
DEFAULT_REPAIR_RATE = 0.1
"""Probability that a structured answer needs the one repair request, without calibration."""

TokenCounter = Callable[[str, Sequence[Mapping[str, str]]], int]
"""(model, chat messages) -> prompt tokens, e.g. agentflow.llm.pricing.count_message_tokens."""
Prices = Callable[[str], "tuple[float, float] | None"]
"""model -> (USD per input token, USD per output token), None when unknown."""


PLAN_STEP_TOKENS = 120.0
"""Output tokens a planner spends per step of its plan (JSON of a name, kind, references, inputs)."""


class EstimateError(ValueError):
    """The workflow cannot be estimated (a missing Agent or PromptVersion); the message names the field."""


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """Low, expected and high of one quantity."""

    low: float
    expected: float
    high: float

    def __add__(self, other: Range) -> Range:
        return Range(self.low + other.low, self.expected + other.expected, self.high + other.high)

    def __mul__(self, other: Range) -> Range:
        return Range(self.low * other.low, self.expected * other.expected, self.high * other.high)

    def scale(self, factor: float) -> Range:
        return Range(self.low * factor, self.expected * factor, self.high * factor)

    @classmethod
    def exact(cls, value: float) -> Range:
        return cls(value, value, value)

    def to_dict(self, digits: int = 6) -> dict[str, float]:
        return {"low": round(self.low, digits), "expected": round(self.expected, digits),
                "high": round(self.high, digits)}


ZERO = Range.exact(0.0)
Basis = Literal["exact", "calibrated", "assumed"]


@dataclasses.dataclass(frozen=True, slots=True)
class StepHistory:
    """What past runs say about one step (see agentflow.cost.calibration); None fields: not enough data."""

    samples: int
    output_tokens: Range | None = None  # min / mean / max per call
    input_ratio: float | None = None  # provider-reported prompt tokens / tokens counted here
    failure_rate: float | None = None
    calls_per_attempt: float | None = None


class History(Protocol):
    """Calibration as the estimate reads it (implemented by agentflow.cost.calibration.Calibration)."""

    def step(self, model: str, prompt: str, step: str) -> StepHistory | None: ...

    def fan_out(self, workflow: str, step: str) -> Range | None: ...

    def visits(self, workflow: str, state: str) -> Range | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class StepEstimate:
    """One step (or state) of the estimate."""

    step: str
    kind: str
    model: str | None
    prompt: str | None
    multiplicity: Range
    multiplicity_basis: Basis
    attempts: Range  # per item
    calls: Range  # model calls in total
    input_tokens: Range
    output_tokens: Range
    usd: Range | None  # None: the model has no known price
    calibrated: bool = False
    assumptions: tuple[str, ...] = ()

    @property
    def tokens(self) -> Range:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "kind": self.kind, "model": self.model, "prompt": self.prompt,
            "multiplicity": self.multiplicity.to_dict(3), "multiplicityBasis": self.multiplicity_basis,
            "attempts": self.attempts.to_dict(3), "calls": self.calls.to_dict(3),
            "inputTokens": self.input_tokens.to_dict(0), "outputTokens": self.output_tokens.to_dict(0),
            "usd": self.usd.to_dict() if self.usd is not None else None, "calibrated": self.calibrated,
            "assumptions": list(self.assumptions),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Estimate:
    """The whole workflow: per step, totals, and what could not be priced."""

    workflow: str
    steps: tuple[StepEstimate, ...]
    usd: Range
    tokens: Range
    unpriced: tuple[str, ...] = ()  # models without a price: their tokens are counted, their USD is not
    assumptions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "usd": self.usd.to_dict(), "tokens": self.tokens.to_dict(0),
                "unpriced": list(self.unpriced), "assumptions": list(self.assumptions),
                "steps": [s.to_dict() for s in self.steps]}


def _expected_attempts(p: float, retries: int) -> float:
    return sum(p**k for k in range(retries + 1))


def _placeholder(tokens: float) -> str:
    """Text of about ``tokens`` tokens (one common word each, for every tokenizer litellm uses)."""
    return " ".join(["data"] * max(0, round(tokens)))


@dataclasses.dataclass
class _Item:
    """One way a step's inputs can look: the rendered exact inputs, and the unknown parts as token ranges."""

    inputs: dict[str, Any]
    unknown: Range


class _Estimator:
    def __init__(self, workflow: Workflow, catalog: Catalog, inputs: Mapping[str, Any], prices: Prices,
                 history: History | None, count_tokens: TokenCounter) -> None:
        self.workflow = workflow
        self.name = workflow.metadata.name
        self.catalog = catalog
        self.inputs = {**workflow.spec.inputs, **inputs}
        self.prices = prices
        self.history = history
        self.count = count_tokens
        self.outputs: dict[str, Range] = {}  # expected output tokens per step, for prompts that embed them
        self.unpriced: set[str] = set()

    # -- what a step is -----------------------------------------------------------------------------

    def _steps(self) -> list[tuple[StepSpec, str, str | None, int | None]]:
        """(step, field path, state name, max visits) in declaration order.

        A state's step goes by the state's name, as the engine's requests and ``steps.NAME`` do."""
        spec = self.workflow.spec
        if spec.behavior_tree is not None:
            return [(step, _dotted(where) + ".step", None, None) for where, step in tree_leaves(spec.behavior_tree)]
        if spec.state_machine is None:
            return [(s, f"spec.steps[{i}]", None, None) for i, s in enumerate(spec.steps)]
        sm = spec.state_machine
        return [(st.step.model_copy(update={"name": st.name}), f"spec.stateMachine.states[{i}].step", st.name,
                 st.max_visits or sm.max_visits)
                for i, st in enumerate(sm.states) if st.step is not None]

    def _refs(self, step: StepSpec, where: str) -> tuple[Agent, PromptVersion]:
        assert step.agent_ref is not None and step.prompt_ref is not None
        agent = self.catalog.agents.get(step.agent_ref.name)
        if agent is None:
            raise EstimateError(f"{where}.agentRef.name: unknown Agent {step.agent_ref.name!r}; "
                                "give the file that defines it")
        ref = step.prompt_ref
        name = ref.name
        if ref.family is not None:  # a family's estimate is its stable version's (or the pinned one's)
            try:
                name = planned_version(ref.family, ref.version, self.catalog.prompts, self.catalog.rollouts)
            except RolloutError as exc:
                raise EstimateError(f"{where}.promptRef: {exc}") from None
        prompt = self.catalog.prompts.get(name or "")
        if prompt is None:
            raise EstimateError(f"{where}.promptRef.name: unknown PromptVersion {ref.name!r}; "
                                "give the file that defines it")
        try:
            return agent, compose(prompt, self.catalog.prompts)
        except CompositionError as exc:
            raise EstimateError(f"PromptVersion {prompt.metadata.name!r} {'.'.join(map(str, exc.path))}: "
                                f"{exc.message}") from None

    def _history(self, model: str, prompt: PromptVersion, step: str) -> StepHistory | None:
        if self.history is None:
            return None
        return self.history.step(model, prompt_key(prompt), step)

    def _max_tokens(self, step: StepSpec, agent: Agent) -> int | None:
        if step.model_params is not None and step.model_params.max_tokens is not None:
            return step.model_params.max_tokens
        return agent.spec.model.max_tokens

    def _output(self, step: StepSpec, where: str) -> tuple[Range, str]:
        """Output tokens per call, and where that comes from."""
        if step.kind is not StepKind.llm:
            return Range.exact(TOOL_OUTPUT_TOKENS if step.kind is StepKind.tool else 0), ""
        agent, prompt = self._refs(step, where)
        cap = self._max_tokens(step, agent)
        hist = self._history(agent.spec.model.name, prompt, step.name)
        if hist is not None and hist.output_tokens is not None:
            seen = hist.output_tokens
            high = float(cap) if cap is not None else max(seen.high, 2 * seen.expected)
            return (Range(seen.low, seen.expected, max(high, seen.expected)),
                    f"output tokens calibrated from {hist.samples} past calls")
        if cap is not None:
            return (Range(cap / 4, float(cap), float(cap)),
                    f"output tokens: max_tokens {cap} (a cap; expected taken as the cap, low a quarter)")
        return (Range(DEFAULT_OUTPUT_TOKENS / 5, DEFAULT_OUTPUT_TOKENS, DEFAULT_OUTPUT_TOKENS_HIGH),
                f"output tokens: no calibration and no max_tokens: assumed {DEFAULT_OUTPUT_TOKENS} "
                f"(high {DEFAULT_OUTPUT_TOKENS_HIGH})")

    # -- multiplicity -------------------------------------------------------------------------------

    def _context(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "steps": {},
                "workflow": {"name": self.name, "namespace": self.workflow.metadata.namespace or "", "runId": ""}}

    def _fan_out(self, step: StepSpec) -> tuple[list[Any] | None, Range, Basis, str]:
        """The exact items (when known), the multiplicity, its basis and the assumption made."""
        if step.for_each is None:
            return [None], Range.exact(1), "exact", ""
        try:
            expr = compile_expression(step.for_each)
            if not expr.step_refs:
                items = expr.evaluate(self._context())
                if isinstance(items, list):
                    return items, Range.exact(len(items)), "exact", ""
        except ExpressionError:
            pass
        seen = self.history.fan_out(self.name, step.name) if self.history is not None else None
        if seen is not None:
            return None, seen, "calibrated", f"forEach items: calibrated mean {seen.expected:g} (max {seen.high:g})"
        low, mid, high = ASSUMED_FAN_OUT
        return (None, Range(low, mid, high), "assumed",
                f"forEach {step.for_each!r} is known only at run time: assumed {mid} items (low {low}, high {high})")

    def _runs(self, step: StepSpec, state: str | None, visits: int | None, initial: bool) -> tuple[Range, str]:
        """How often the step runs at all (before fan-out): when, runOn, state visits, a tree's decorators."""
        if self.workflow.spec.behavior_tree is not None:
            expected, high = _tree_runs(self.workflow.spec.behavior_tree).get(step.name, (1, 1))
            return (Range(0, float(expected), float(high)),
                    f"behavior tree: expected {expected:g} run(s) (repeat counts), high {high:g} (retry limits too); "
                    "low 0 (a selector or guard may pass it by)")
        if state is not None:
            assert visits is not None
            seen = self.history.visits(self.name, state) if self.history is not None else None
            low = 1.0 if initial else 0.0
            if seen is not None:
                return (Range(low, seen.expected, float(visits)),
                        f"state {state}: calibrated mean {seen.expected:g} visits (maxVisits {visits})")
            return (Range(low, 1.0, float(visits)),
                    f"state {state}: assumed one visit (the path is decided at run time; maxVisits {visits})")
        if step.run_on is RunOn.failure:
            return Range(0, 0, 1), "runOn failure: runs only if the run fails (expected 0)"
        if step.when is not None:
            try:
                cond = compile_expression(step.when)
                if not cond.step_refs:
                    if not cond.truthy(self._context()):
                        return ZERO, f"skipped: when {step.when!r} is false for these inputs"
                    return Range.exact(1), ""
            except ExpressionError:
                pass
            return Range(0, 1, 1), f"when {step.when!r} is decided at run time (low 0)"
        return Range.exact(1), ""

    # -- prompt tokens ------------------------------------------------------------------------------

    def _items(self, step: StepSpec, items: list[Any] | None) -> tuple[list[_Item], list[str]]:
        """The step's inputs per known item (or once with ``item`` unknown)."""
        notes: list[str] = []
        base = self._context()
        result: list[_Item] = []
        for index, item in enumerate(items if items is not None else [None]):
            ctx = dict(base)
            if step.for_each is not None and items is not None:
                ctx["item"], ctx["index"] = item, index
            rendered: dict[str, Any] = {}
            unknown = ZERO
            for key, value in step.inputs.items():
                template = compile_template(value)
                refs = template.step_refs
                if not refs and (items is not None or step.for_each is None):
                    try:
                        rendered[key] = template.render(ctx)
                        continue
                    except ExpressionError:
                        pass
                size = sum((self.outputs.get(r, Range.exact(TOOL_OUTPUT_TOKENS)) for r in sorted(refs)), ZERO)
                if not refs:
                    size = Range.exact(TOOL_OUTPUT_TOKENS)
                    note = f"input {key!r} depends on the forEach item: assumed {TOOL_OUTPUT_TOKENS} tokens"
                else:
                    note = (f"input {key!r} embeds the output of {', '.join(sorted(refs))}: counted as "
                            f"{size.expected:.0f} tokens (low {size.low:.0f}, high {size.high:.0f})")
                rendered[key] = _placeholder(size.expected)
                unknown = unknown + size
                if index == 0:
                    notes.append(note)
            result.append(_Item(rendered, unknown))
        return result, notes

    def _prompt_tokens(self, step: StepSpec, agent: Agent, prompt: PromptVersion, items: list[_Item],
                       where: str) -> Range:
        """Prompt tokens of one call, averaged over the known items (low/high over unknown parts)."""
        model = agent.spec.model.name
        if not items:  # a fan-out over an empty list: no call
            return ZERO
        totals = ZERO
        for item in items:
            try:
                messages = render_messages(agent, prompt, item.inputs)
            except PromptRenderError:
                # A template that reaches into an unknown value (inputs.ticket.subject of a placeholder):
                # count the template text and the placeholders instead.
                messages = [{"role": m.role or "user", "content": m.content or ""} for m in prompt.spec.messages]
                messages.insert(0, {"role": "system", "content": agent.spec.role + "\n" + agent.spec.instructions})
                messages.append({"role": "user", "content": json.dumps(item.inputs)})
            counted = float(self.count(model, messages))
            exp = item.unknown.expected
            totals = totals + Range(counted - exp + item.unknown.low, counted, counted - exp + item.unknown.high)
        return totals.scale(1 / len(items))

    # -- one step -----------------------------------------------------------------------------------

    def _tool_step(self, step: StepSpec, kind: str, multiplicity: Range, basis: Basis,
                   notes: list[str]) -> StepEstimate:
        """A tool step costs its tool's ``costPerCallUsd`` per attempt (what the tool runner books)."""
        tool = self.catalog.find_tool(step.tool) if step.tool else None
        price = tool.cost_per_call_usd if tool is not None else 0.0
        retry = step.retry or self.workflow.spec.retry
        attempts = Range(1, _expected_attempts(DEFAULT_FAILURE_RATE, retry.limit), retry.limit + 1)
        if tool is None:
            notes.append("tool not declared by any ToolPolicy: not priced")
        elif price:
            notes.append(f"tool {tool.name}: ${price:g} per call (costPerCallUsd); failure rate assumed "
                         f"{DEFAULT_FAILURE_RATE} with {retry.limit} retries")
        else:
            notes.append(f"tool {tool.name}: no costPerCallUsd")
        usd = (multiplicity * attempts).scale(price)
        return StepEstimate(step.name, kind, None, None, multiplicity, basis, attempts, ZERO, ZERO, ZERO, usd,
                            assumptions=tuple(notes))

    def _plan_step(self, step: StepSpec, kind: str, multiplicity: Range, basis: Basis,
                   notes: list[str]) -> StepEstimate:
        """A plan step: its planning calls (the brief, and a plan of up to maxSteps steps; up to ``repairs`` more),
        plus its plan's steps, which are not known before the run: at most planner.limits.maxCostUsd."""
        assert step.planner is not None and step.agent_ref is not None
        agent = self.catalog.agents.get(step.agent_ref.name)
        if agent is None:
            raise EstimateError(f"step {step.name}: agentRef: unknown Agent {step.agent_ref.name!r}")
        model = agent.spec.model.name
        policy = PlanPolicy.of(step.planner)
        brief = json.dumps({"goal": step.inputs, **policy.brief(), "planSchema": PLAN_SCHEMA})
        per_call_in = Range.exact(float(self.count(model, [{"role": "system", "content": agent.spec.instructions},
                                                         {"role": "user", "content": brief}])))
        output = Range(PLAN_STEP_TOKENS, PLAN_STEP_TOKENS * max(policy.max_steps // 2, 1),
                       PLAN_STEP_TOKENS * policy.max_steps)
        calls = multiplicity * Range(1, 1 + DEFAULT_REPAIR_RATE * min(policy.repairs, 1), 1 + policy.repairs)
        input_tokens, output_tokens = calls * per_call_in, calls * output
        notes.append(f"planning: up to {1 + policy.repairs} call(s) of {model} (repairs {policy.repairs}), a plan of "
                     f"up to {policy.max_steps} steps at ~{PLAN_STEP_TOKENS:g} output tokens each")
        price = self.prices(model)
        usd: Range | None = None
        if price is None:
            self.unpriced.add(model)
            notes.append(f"model {model} has no price in the price table: its tokens are not counted in USD")
        else:
            usd = input_tokens.scale(price[0]) + output_tokens.scale(price[1])
        limit = policy.max_cost_usd
        if limit is not None:
            plan = (multiplicity * Range(0, limit / 2, limit))
            usd = plan if usd is None else usd + plan
            notes.append(f"the plan's steps are known only at run time: up to planner.limits.maxCostUsd ${limit:g} "
                         "(expected half)")
        else:
            notes.append("the plan's steps are known only at run time and not priced (no planner.limits.maxCostUsd)")
        return StepEstimate(step.name, kind, model, None, multiplicity, basis, Range.exact(1), calls, input_tokens,
                            output_tokens, usd, assumptions=tuple(notes))

    def step(self, step: StepSpec, where: str, state: str | None, visits: int | None) -> StepEstimate:
        sm = self.workflow.spec.state_machine
        runs, runs_note = self._runs(step, state, visits, initial=sm is not None and sm.initial == state)
        items, fan_out, basis, fan_note = self._fan_out(step)
        multiplicity = runs * fan_out
        notes = [n for n in (runs_note, fan_note) if n]
        kind = step.kind.value
        if step.kind is StepKind.tool:
            return self._tool_step(step, kind, multiplicity, basis, notes)
        if step.kind is StepKind.plan:
            return self._plan_step(step, kind, multiplicity, basis, notes)
        if step.kind is StepKind.workflow:
            notes.append("a workflow step: the cost of its child Workflows is not in this estimate (on a cluster the "
                         "admission webhook's budget check estimates each child when it is created)")
        if step.kind is not StepKind.llm:
            notes.append("no model calls of its own" if step.kind is StepKind.workflow else "no model calls")
            return StepEstimate(step.name, kind, None, None, multiplicity, basis, Range.exact(1), ZERO, ZERO, ZERO,
                                ZERO, assumptions=tuple(notes))
        agent, prompt = self._refs(step, where)
        model = agent.spec.model.name
        if agent.spec.model.fallbacks:
            notes.append(f"priced at the primary model {model}; fallbacks {', '.join(agent.spec.model.fallbacks)} "
                         "run only when it fails and are not priced")
        hist = self._history(model, prompt, step.name)
        output, output_note = self._output(step, where)
        notes.append(output_note)
        rendered, input_notes = self._items(step, items)
        notes.extend(input_notes)
        per_call_in = self._prompt_tokens(step, agent, prompt, rendered, where)
        if hist is not None and hist.input_ratio is not None:
            per_call_in = per_call_in.scale(hist.input_ratio)
            notes.append(f"prompt tokens scaled by {hist.input_ratio:.3f}, the ratio of reported to counted "
                         f"tokens in {hist.samples} past calls")
        carried = agent.spec.memory.conversation_tokens
        if carried is not None:
            per_call_in = per_call_in + Range(0, carried / 2, carried)
            notes.append(f"memory.kind conversation: the Agent's earlier exchanges add up to its maxTokens "
                         f"{carried} prompt tokens per call (expected {carried // 2}, low none); its summary calls "
                         "are not priced")
        retry = step.retry or self.workflow.spec.retry
        if hist is not None and hist.failure_rate is not None:
            p = hist.failure_rate
            notes.append(f"failure rate {p:.3f} calibrated; {retry.limit} retries")
        else:
            p = DEFAULT_FAILURE_RATE
            if retry.limit:
                notes.append(f"failure rate assumed {p}; {retry.limit} retries (high: all of them)")
        attempts = Range(1, _expected_attempts(p, retry.limit), retry.limit + 1)
        if prompt.spec.output_schema is None:
            per_attempt = Range.exact(1)
        elif hist is not None and hist.calls_per_attempt is not None:
            per_attempt = Range(1, hist.calls_per_attempt, 2)
        else:
            per_attempt = Range(1, 1 + DEFAULT_REPAIR_RATE, 2)
            notes.append(f"structured output: a repair request assumed in {DEFAULT_REPAIR_RATE:.0%} of attempts")
        calls = multiplicity * attempts * per_attempt
        input_tokens = calls * per_call_in
        output_tokens = calls * output
        price = self.prices(model)
        usd: Range | None
        if price is None:
            self.unpriced.add(model)
            usd = None
            notes.append(f"model {model} has no price in the price table: its tokens are not counted in USD")
        else:
            usd = input_tokens.scale(price[0]) + output_tokens.scale(price[1])
        return StepEstimate(step.name, kind, model, prompt_key(prompt), multiplicity, basis, attempts, calls,
                            input_tokens, output_tokens, usd, calibrated=hist is not None,
                            assumptions=tuple(notes))

    def run(self) -> Estimate:
        steps = self._steps()
        for step, where, _, _ in steps:  # outputs first: prompts may embed any upstream output
            # A fan-out step's output is the list of its items' outputs.
            self.outputs[step.name] = self._output(step, where)[0] * self._fan_out(step)[1]
        out = tuple(self.step(step, where, state, visits) for step, where, state, visits in steps)
        usd = sum((s.usd for s in out if s.usd is not None), ZERO)
        tokens = sum((s.tokens for s in out), ZERO)
        notes = []
        if self.unpriced:
            notes.append(f"not in USD (no price): {', '.join(sorted(self.unpriced))}")
        if self.workflow.spec.state_machine is not None:
            notes.append("state machine: each state's step once expected (unless calibrated), high at maxVisits")
        if self.workflow.spec.behavior_tree is not None:
            notes.append("behavior tree: each step expected as often as the repeats above it say, high with every "
                         "retry above it too")
        return Estimate(self.name, out, usd, tokens, tuple(sorted(self.unpriced)), tuple(notes))


def _tree_runs(root: BehaviorNode) -> dict[str, tuple[int, int]]:
    """(expected, most) runs of each leaf of a behavior tree, by step name: repeat counts multiply both, retry
    limits (+1) the most."""
    out: dict[str, tuple[int, int]] = {}
    todo: list[tuple[BehaviorNode, int, int]] = [(root, 1, 1)]
    while todo:
        node, expected, most = todo.pop()
        if node.type is TreeNodeType.repeat:
            expected, most = expected * (node.count or 1), most * (node.count or 1)
        elif node.type is TreeNodeType.retry:
            most *= (node.limit or 0) + 1
        if node.step is not None:
            out[node.step.name] = (expected, most)
        todo.extend((c, expected, most) for c in [*node.children, *([node.child] if node.child else [])])
    return out


def _dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def prompt_key(prompt: PromptVersion) -> str:
    """How calibration and the ledger (``LlmCall.prompt``) name a prompt: the PromptVersion's name, one
    version of one prompt family."""
    return prompt.metadata.name


def estimate_workflow(
    workflow: Workflow,
    catalog: Catalog,
    inputs: Mapping[str, Any] | None,
    prices: Prices,
    calibration: History | None = None,
    *,
    count_tokens: TokenCounter,
) -> Estimate:
    """The cost preflight of ``workflow`` with ``inputs`` over its own; see the module docstring.

    Raises :class:`EstimateError` naming the field of a reference the catalog does not have.
    """
    return _Estimator(workflow, catalog, inputs or {}, prices, calibration, count_tokens).run()
