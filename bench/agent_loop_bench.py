"""Agent loop overhead per tool call, AgentFlow vs LangGraph's prebuilt ReAct agent, in the same process and run.

The same loop on both sides, with a fake model and a no-op tool, so only the loop's own work is measured (no
model time, no tool time): the model asks for --per-turn tool calls a turn until it made --calls, then answers.

  AgentFlow   the engine's agent loop (an llm step whose Agent has a tool): every turn and every call a node of
              the run, decided by the engine (grant check, arguments parsed, conversation kept), every event
              appended to the SHA-256 hash-chained journal; a scripted executor answers turns and calls at once.
              Also the full local runner (asyncio tasks, the journal on disk with fsync), for reference.
  LangGraph   langgraph.prebuilt.create_react_agent over a fake chat model (a BaseChatModel answering from a
              script, bind_tools a no-op) and one no-op @tool; without a checkpointer, and with InMemorySaver.

Prints CPU microseconds per tool call (a turn plus its call) and the ratio. Usage:
  python bench/agent_loop_bench.py [--calls 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentflow.engine.journal import Journal
from agentflow.engine.plan import Plan, compile_plan
from agentflow.engine.run import Run
from agentflow.engine.values import Event, EventType, StepRequest, StepResult
from agentflow.models import Catalog, Workflow
from agentflow.models.manifests import parse_documents, parse_yaml
from agentflow.validation.grants import agent_loops

MANIFESTS = """
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: loop}
spec:
  steps:
    - {name: answer, kind: llm, agentRef: {name: bench}, promptRef: {name: p}}
---
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {name: bench, labels: {app: bench}}
spec:
  role: bench
  model: {name: openai/gpt-4o-mini}
  tools: [noop]
  loop: {maxTurns: 100, maxToolCalls: 1000}
---
apiVersion: agentflow.dev/v1alpha1
kind: PromptVersion
metadata: {name: p}
spec:
  prompt: p
  version: "1"
  messages: [{role: user, content: go}]
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: bench}
spec:
  agentSelector: {matchLabels: {app: bench}}
  tools:
    - {name: noop, builtin: {name: echo}}
"""


def loop_plan() -> Plan:
    docs = [d.resource for d in parse_documents(parse_yaml(MANIFESTS, "bench.yaml"))]
    workflow = next(d for d in docs if isinstance(d, Workflow))
    catalog = Catalog()
    for doc in docs:
        if not isinstance(doc, Workflow):
            catalog.add(doc)
    return compile_plan(workflow, loops=agent_loops(workflow.spec, catalog))


def script(turn: int, calls: int, per_turn: int) -> list[int]:
    """The call numbers model turn ``turn`` (from 1) asks for; none: it answers."""
    first = (turn - 1) * per_turn + 1
    return list(range(first, min(first + per_turn, calls + 1)))


def turn_output(turn: int, calls: int, per_turn: int) -> dict[str, Any]:
    """What the executor reports for model turn ``turn``: its calls of noop, or the final answer."""
    wanted = script(turn, calls, per_turn)
    if not wanted:
        return {"final": True, "value": {"answer": "done"}, "message": {"role": "assistant", "content": "done"}}
    tool_calls = [{"id": f"c{i}", "type": "function", "function": {"name": "noop", "arguments": json.dumps({"i": i})}}
                  for i in wanted]
    return {"final": False, "message": {"role": "assistant", "content": None, "tool_calls": tool_calls}}


def result_of(request: StepRequest, calls: int, per_turn: int) -> Any:
    if request.context is not None and "turn" in request.context:
        return turn_output(int(request.context["turn"]), calls, per_turn)
    return {"ok": True}


def run_engine(plan: Plan, calls: int, per_turn: int) -> int:
    run = Run(plan, "bench", 0)
    journal = Journal()
    now = 0.0
    succeeded = EventType.step_succeeded
    while True:
        decision = run.decide(now)
        journal.extend(decision.events)
        if decision.finished:
            break
        results = [Event(succeeded, r.node, {"attempt": r.attempt, "output": result_of(r, calls, per_turn)}, now)
                   for r in decision.start]
        for event in results:
            run.apply(event)
        journal.extend(results)
        now += 0.001
    assert run.phase == "Succeeded", run.reason
    assert run.nodes["answer"].output == {"answer": "done"}
    return len(journal)


class ScriptedExecutor:
    def __init__(self, calls: int, per_turn: int) -> None:
        self.calls = calls
        self.per_turn = per_turn

    async def execute(self, request: StepRequest) -> StepResult:
        return StepResult(output=result_of(request, self.calls, self.per_turn))


def run_local_runner(plan: Plan, calls: int, per_turn: int) -> None:
    from agentflow.runner.loop import LocalRun
    from agentflow.runner.store import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunStore(Path(tmp)).create("bench", "", {"workflow": plan.name})
        run = asyncio.run(LocalRun(run_dir, plan, ScriptedExecutor(calls, per_turn)).drive())
        assert run.phase == "Succeeded", run.reason


# ---------------------------------------------------------------- LangGraph

def langgraph_react(calls: int, per_turn: int, checkpoint: bool) -> Callable[[], None]:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.prebuilt import create_react_agent

    class ScriptedModel(BaseChatModel):
        """Turn k (counted from the AI messages so far) asks for the calls of ``script``, then answers."""

        calls: int
        per_turn: int

        @property
        def _llm_type(self) -> str:
            return "scripted"

        def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
            return self

        def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            wanted = script(sum(1 for m in messages if m.type == "ai") + 1, self.calls, self.per_turn)
            message = AIMessage(content="", tool_calls=[{"name": "noop", "args": {"i": i}, "id": f"c{i}"}
                                                        for i in wanted]) if wanted else AIMessage(content="done")
            return ChatResult(generations=[ChatGeneration(message=message)])

    @tool
    def noop(i: int) -> str:
        """Does nothing."""
        return "ok"

    with warnings.catch_warnings():  # LangGraph 1.x names it langchain.agents.create_agent; the graph is the same
        warnings.simplefilter("ignore")
        agent = create_react_agent(ScriptedModel(calls=calls, per_turn=per_turn), [noop],
                                   checkpointer=InMemorySaver() if checkpoint else None)
    counter = [0]

    def invoke() -> None:
        counter[0] += 1
        config: dict[str, Any] = {"recursion_limit": 2 * len(range(0, calls, per_turn)) + 10}
        if checkpoint:
            config["configurable"] = {"thread_id": f"t{counter[0]}"}
        out = agent.invoke({"messages": [("user", "go")]}, config)
        assert out["messages"][-1].content == "done"

    return invoke


def measure(fn: Callable[[], Any], repeat: int) -> float:
    """Median CPU seconds of the process for one call (CPU, not wall time: the machines here are shared)."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="tool calls of the loop")
    parser.add_argument("--per-turn", type=int, default=4, help="tool calls the model asks for in one turn")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.calls
    per_turn = args.per_turn
    if not 1 <= n <= 1000 or per_turn < 1 or -(-n // per_turn) >= 100:
        parser.error("--calls must be 1 to 1000 and take fewer than 100 turns of --per-turn (loop.maxTurns 100)")
    try:
        import langgraph.prebuilt  # noqa: F401
    except ImportError:
        print("langgraph is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    from importlib.metadata import version

    plan = loop_plan()
    engine = measure(lambda: run_engine(plan, n, per_turn), args.repeat) / n * 1e6
    runner = measure(lambda: run_local_runner(plan, n, per_turn), max(1, args.repeat // 2)) / n * 1e6
    lang = measure(langgraph_react(n, per_turn, False), args.repeat) / n * 1e6
    lang_ck = measure(langgraph_react(n, per_turn, True), args.repeat) / n * 1e6
    print(f"agent loop overhead per tool call in CPU time, {n} calls ({per_turn} a turn), median of "
          f"{args.repeat} (agentflow {version('agentflow')}, langgraph {version('langgraph')}, "
          f"Python {sys.version.split()[0]})")
    print(f"{'agentflow engine+journal':>25} {'agentflow runner+disk':>22} {'langgraph ReAct':>16} "
          f"{'langgraph+ckpt':>15} {'ratio':>7} {'ratio ckpt':>11}")
    print(f"{engine:>22.1f} µs {runner:>19.1f} µs {lang:>13.1f} µs {lang_ck:>12.1f} µs "
          f"{lang / engine:>6.1f}x {lang_ck / engine:>10.1f}x")
    print(f"target: >= 5x less overhead than LangGraph's prebuilt ReAct agent; here {lang / engine:.1f}x "
          f"(engine+journal vs ReAct without checkpointer), {lang / runner:.1f}x for the whole local runner")
    return 0


if __name__ == "__main__":
    sys.exit(main())
