"""Engine overhead per step, AgentFlow vs LangGraph, in the same process and run.

Shapes (no-op steps, so only orchestration is measured):
  chain    N steps, each depending on the one before
  fan-out  one step mapped over N items, then a fan-in step receiving all N results

AgentFlow is measured as the engine plus its journal (every event appended to
the SHA-256 hash chain with canonical JSON), driven synchronously; and as the
full local runner (asyncio tasks, journal on disk with fsync per batch) for
reference. LangGraph runs the same shapes: a StateGraph chain, and Send-based
map-reduce; with and without its in-memory checkpointer (its journal).

Prints microseconds per step and the ratio. Usage:
  python bench/engine_bench.py [--steps 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

from agentflow.engine.journal import Journal
from agentflow.engine.plan import Plan, compile_plan
from agentflow.engine.run import Run
from agentflow.engine.values import Event, EventType, StepRequest, StepResult
from agentflow.models import Workflow


def chain_workflow(n: int) -> Workflow:
    steps = [{"name": f"s{i}", "kind": "tool", "tool": "noop", **({"dependsOn": [f"s{i - 1}"]} if i else {})}
             for i in range(n)]
    return Workflow.model_validate({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
                                    "metadata": {"name": "chain"}, "spec": {"steps": steps}})


def fanout_workflow(n: int) -> Workflow:
    return Workflow.model_validate({
        "apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "fanout"},
        "spec": {"inputs": {"items": list(range(n))}, "steps": [
            {"name": "map", "kind": "tool", "tool": "noop", "forEach": "inputs.items"},
            {"name": "reduce", "kind": "tool", "tool": "noop", "dependsOn": ["map"],
             "inputs": {"all": "${{ steps.map.output }}"}},
        ]}})


def run_engine(plan: Plan) -> tuple[Run, int]:
    run = Run(plan, "bench", 0)
    journal = Journal()
    now = 0.0
    succeeded = EventType.step_succeeded
    while True:
        decision = run.decide(now)
        journal.extend(decision.events)
        if decision.finished:
            break
        results = [Event(succeeded, r.node, {"attempt": r.attempt, "output": None}, now) for r in decision.start]
        for event in results:
            run.apply(event)
        journal.extend(results)
        now += 0.001
    assert run.phase == "Succeeded", run.reason
    return run, len(journal)


class NoopExecutor:
    async def execute(self, request: StepRequest) -> StepResult:
        return StepResult(output=None)


def run_local_runner(plan: Plan) -> None:
    from agentflow.runner.loop import LocalRun
    from agentflow.runner.store import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunStore(Path(tmp)).create("bench", "", {"workflow": plan.name})
        run = asyncio.run(LocalRun(run_dir, plan, NoopExecutor()).drive())
        assert run.phase == "Succeeded", run.reason


# ---------------------------------------------------------------- LangGraph

class ChainState(TypedDict):
    n: int


class MapState(TypedDict):
    items: list[int]
    results: Annotated[list[Any], operator.add]


def langgraph_chain(n: int, checkpoint: bool) -> Callable[[], None]:
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(ChainState)
    for i in range(n):
        graph.add_node(f"s{i}", lambda state: {})
    graph.add_edge(START, "s0")
    for i in range(1, n):
        graph.add_edge(f"s{i - 1}", f"s{i}")
    graph.add_edge(f"s{n - 1}", END)
    return _compiled(graph, {"n": 0}, n, checkpoint)


def langgraph_fanout(n: int, checkpoint: bool) -> Callable[[], None]:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    graph = StateGraph(MapState)
    graph.add_node("work", lambda state: {"results": [None]})
    graph.add_node("reduce", lambda state: {})
    graph.add_conditional_edges(START, lambda state: [Send("work", {"item": i}) for i in state["items"]], ["work"])
    graph.add_edge("work", "reduce")
    graph.add_edge("reduce", END)
    return _compiled(graph, {"items": list(range(n)), "results": []}, n, checkpoint)


def _compiled(graph: Any, state: dict[str, Any], n: int, checkpoint: bool) -> Callable[[], None]:
    from langgraph.checkpoint.memory import InMemorySaver

    app = graph.compile(checkpointer=InMemorySaver() if checkpoint else None)
    counter = [0]

    def invoke() -> None:
        counter[0] += 1
        config: dict[str, Any] = {"recursion_limit": n * 2 + 10}
        if checkpoint:
            config["configurable"] = {"thread_id": f"t{counter[0]}"}
        app.invoke(state, config)

    return invoke


def measure(fn: Callable[[], Any], repeat: int) -> float:
    """Median CPU seconds of the process (all its threads) for one call.

    CPU time rather than wall time: the machines this runs on are shared, and another
    process's load inflates wall time far more than it inflates our own CPU time.
    """
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.steps
    try:
        import langgraph  # noqa: F401
    except ImportError:
        print("langgraph is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    from importlib.metadata import version

    print(f"engine overhead per no-op step in CPU time, N={n}, median of {args.repeat} "
          f"(agentflow {version('agentflow')}, langgraph {version('langgraph')}, Python {sys.version.split()[0]})")
    print(f"{'shape':<8} {'agentflow engine+journal':>25} {'agentflow runner+disk':>22} "
          f"{'langgraph':>11} {'langgraph+ckpt':>15} {'ratio':>7} {'ratio ckpt':>11}")
    worst_us = 0.0
    worst_ratio = float("inf")
    for shape, wf, lg in (("chain", chain_workflow, langgraph_chain), ("fan-out", fanout_workflow, langgraph_fanout)):
        plan = compile_plan(wf(n))
        steps = n if shape == "chain" else n + 1
        engine = measure(lambda plan=plan: run_engine(plan), args.repeat) / steps * 1e6  # type: ignore[misc]
        runner = measure(lambda plan=plan: run_local_runner(plan), max(1, args.repeat // 2)) / steps * 1e6  # type: ignore[misc]
        lang = measure(lg(n, False), args.repeat) / steps * 1e6
        lang_ck = measure(lg(n, True), args.repeat) / steps * 1e6
        ratio, ratio_ck = lang / engine, lang_ck / engine
        worst_us, worst_ratio = max(worst_us, engine), min(worst_ratio, ratio)
        print(f"{shape:<8} {engine:>22.1f} µs {runner:>19.1f} µs {lang:>8.1f} µs {lang_ck:>12.1f} µs "
              f"{ratio:>6.1f}x {ratio_ck:>10.1f}x")
    print(f"target: <= 20 µs per step and >= 8x faster than LangGraph; "
          f"worst here: {worst_us:.1f} µs, {worst_ratio:.1f}x (vs LangGraph without checkpointer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
