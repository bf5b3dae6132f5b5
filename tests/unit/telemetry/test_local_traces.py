"""A local run's trace: one trace per run, the GenAI span tree of an agent loop, resume continuing the trace."""

from __future__ import annotations

from pathlib import Path

from agentflow.runner import session
from agentflow.runner.store import RunStore
from agentflow.telemetry import attempt_ids, genai, run_ids, trace_id
from agentflow.testing import RecordedSpans, recording_tracing

REPO = Path(__file__).resolve().parents[3]
SUPPORT_AGENT = REPO / "examples/manifests/support-agent.yaml"
OFFLINE = {"AGENTFLOW_MODEL_MODE": "offline"}

APPROVAL = """
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: gated}
spec:
  steps:
    - name: first
      kind: tool
      tool: echo
      agentRef: {name: a}
      inputs: {text: hello}
    - name: gate
      kind: approval
      dependsOn: [first]
      approval: {message: go on?}
    - name: last
      kind: tool
      tool: echo
      agentRef: {name: a}
      dependsOn: [gate]
      inputs: {text: done}
---
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {name: a, labels: {team: t}}
spec:
  role: echo
  model: {name: openai/gpt-4o-mini}
  tools: [echo]
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: p}
spec:
  agentSelector: {matchLabels: {team: t}}
  tools:
    - name: echo
      builtin: {name: echo}
"""


async def _run(tmp_path: Path, paths: list[Path], tracing: object, **kwargs: object) -> tuple[str, object]:
    bundle = session.load_bundle(paths)
    run_dir = session.create_run(RunStore(tmp_path / "state"), bundle, paths)
    executor = session.make_executor(bundle, "inprocess", env=OFFLINE, state_dir=tmp_path / "state",
                                     tracing=tracing)  # type: ignore[arg-type]
    run = await session.drive(run_dir, bundle, executor, tracing=tracing, **kwargs)  # type: ignore[arg-type]
    return run_dir.run_id, run


def _tree(recorded: RecordedSpans) -> dict[str, list[str]]:
    """Each span name -> the names of its children, sorted."""
    out: dict[str, list[str]] = {}
    for span in recorded.spans:
        parent = recorded.parent_of(span)
        out.setdefault(parent.name if parent is not None else "", []).append(span.name)
    return {k: sorted(v) for k, v in out.items()}


async def test_an_agent_loop_run_is_one_trace_with_the_genai_span_tree(tmp_path: Path) -> None:
    tracing, recorded = recording_tracing()
    run_id, run = await _run(tmp_path, [SUPPORT_AGENT], tracing)
    assert run.phase == "Succeeded"  # type: ignore[attr-defined]
    spans = recorded.spans
    assert {s.context.trace_id for s in spans} == {trace_id(run_id)}
    root = recorded.one("invoke_workflow support-agent")
    assert root.parent is None and root.context.span_id == run_ids(run_id).span_id
    assert root.attributes[genai.OPERATION_NAME] == "invoke_workflow"
    assert all(recorded.parent_of(s) is not None for s in spans if s is not root), "every span has its parent"

    tree = _tree(recorded)
    assert tree[""] == ["invoke_workflow support-agent"]
    assert tree["invoke_workflow support-agent"] == ["execute_tool support-actions", "invoke_agent support-agent"]
    loop = recorded.one("invoke_agent support-agent")
    assert loop.attributes[genai.AGENT_NAME] == "support-agent" and loop.attributes[genai.LOOP_TURNS] == 2
    assert tree["invoke_agent support-agent"] == sorted([
        "step answer/t1", "step answer/t2", "execute_tool orders__order_status", "execute_tool kb-search",
        "invoke_agent billing-specialist", "execute_tool memory_search", "execute_tool memory_save"])
    assert tree["invoke_agent billing-specialist"] == ["execute_tool kb-search", "step answer/t1/call-3/t1",
                                                       "step answer/t1/call-3/t2"]

    # A model turn's attempt span is the parent of the gateway's chat span, which has the GenAI attributes.
    turn = recorded.one("step answer/t1")
    assert turn.context.span_id == attempt_ids(run_id, "answer/t1", 1).span_id
    (chat,) = [s for s in recorded.named("chat") if recorded.parent_of(s) is turn]
    assert chat.attributes[genai.OPERATION_NAME] == "chat"
    assert chat.attributes[genai.PROVIDER_NAME] == "openai"
    assert chat.attributes[genai.REQUEST_MODEL] == "openai/gpt-4o-mini"
    assert chat.attributes[genai.RESPONSE_MODEL]
    assert chat.attributes[genai.USAGE_INPUT_TOKENS] > 0 and chat.attributes[genai.USAGE_OUTPUT_TOKENS] > 0
    assert chat.attributes[genai.AGENT_NAME] == "support-agent"
    assert len(recorded.named("chat")) == 4  # two turns of each loop

    # Tool calls: execute_tool with the tool's name; memory operations are spans of the gateway inside them.
    tool = recorded.one("execute_tool orders__order_status")  # the MCP server's tool, as the model called it
    assert tool.attributes[genai.TOOL_NAME] == "orders__order_status" and tool.attributes[genai.TOOL_CALL_ID]
    search = recorded.one("memory memory_search")
    assert recorded.parent_of(search) is recorded.one("execute_tool memory_search")
    assert search.attributes[genai.OPERATION_NAME] == "retrieval"
    assert recorded.parent_of(recorded.one("memory memory_save")) is recorded.one("execute_tool memory_save")
    record = recorded.one("execute_tool support-actions")
    assert record.attributes[genai.TOOL_NAME] == "support-actions" and record.attributes[genai.STEP] == "record"

    # Content is not recorded unless opted in.
    assert not any(genai.INPUT_MESSAGES in s.attributes or genai.OUTPUT_MESSAGES in s.attributes for s in spans)
    assert all(s.end_time >= s.start_time for s in spans)


async def test_a_resumed_run_continues_its_trace_without_repeating_spans(tmp_path: Path) -> None:
    manifest = tmp_path / "gated.yaml"
    manifest.write_text(APPROVAL)
    tracing, recorded = recording_tracing()
    bundle = session.load_bundle([manifest])
    run_dir = session.create_run(RunStore(tmp_path / "state"), bundle, [manifest])
    executor = session.make_executor(bundle, "inprocess", env=OFFLINE, tracing=tracing)
    run = await session.drive(run_dir, bundle, executor, wait_for_approvals=False, tracing=tracing)
    assert not run.finished
    before = {s.name for s in recorded.spans}
    assert before == {"execute_tool echo"}  # the run's span is sent when it ends

    session.post_decision(run_dir, "gate", True, "alice", "fine")
    again, recorded_again = recording_tracing()  # a new process: a new tracer, the same trace
    executor = session.make_executor(bundle, "inprocess", env=OFFLINE, tracing=again)
    run = await session.drive(run_dir, bundle, executor, tracing=again)
    assert run.phase == "Succeeded"
    names = sorted(s.name for s in recorded_again.spans)
    assert names == ["approval gate", "execute_tool echo", "invoke_workflow gated"]
    assert {s.context.trace_id for s in recorded.spans + recorded_again.spans} == {trace_id(run_dir.run_id)}
    approval = recorded_again.one("approval gate")
    assert approval.attributes[genai.APPROVED] is True and approval.attributes[genai.APPROVED_BY] == "alice"
    root = recorded_again.one("invoke_workflow gated")
    first = recorded.one("execute_tool echo")
    assert first.parent.span_id == root.context.span_id  # the first process's span found its parent later
    assert root.start_time <= first.start_time


async def test_off_records_nothing_and_the_run_is_the_same(tmp_path: Path) -> None:
    from agentflow.telemetry import Tracing

    _, run = await _run(tmp_path, [SUPPORT_AGENT], Tracing.off())
    assert run.phase == "Succeeded"  # type: ignore[attr-defined]
    assert not Tracing.off().enabled
