"""The operator's trace of a Workflow: spans from the reconciler's journal appends, TRACEPARENT on step pods,
status.traceId and traceUrl, the events outbox's traceparent, and a restarted operator continuing the trace."""

from __future__ import annotations

from agentflow.k8s.podspec import PodConfig
from agentflow.services.reconcile import WorkflowReconciler
from agentflow.telemetry import attempt_ids, genai, run_ids, trace_id
from agentflow.testing import SIGNING_KEY, RecordedSpans, recording_tracing

from ..services.test_reconcile import FANOUT, Cluster, catalog, workflow

UID = "0b5e7c1a-0000-4000-8000-000000000001"
TEMPLATE = "https://jaeger.example.com/trace/{trace_id}"


class TracedCluster(Cluster):
    def __init__(self) -> None:
        self.tracing, self.recorded = recording_tracing()
        self.pods_env: dict[str, dict[str, str]] = {}
        super().__init__()

    def new_reconciler(self) -> WorkflowReconciler:
        self.tracing, self.recorded = recording_tracing()  # a new operator process: a tracer of its own
        return WorkflowReconciler(self.kube, self.store,
                                  PodConfig(image="runtime:dev", callback_url="http://10.88.0.1:8081", trace=True),
                                  signing_key=SIGNING_KEY, clock=lambda: self.now, tracing=self.tracing,
                                  trace_url_template=TEMPLATE)

    def kubelet(self) -> None:
        for pod in self.kube.pods.values():
            env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
            self.pods_env[pod["metadata"]["name"]] = env
        super().kubelet()


def _names(recorded: RecordedSpans) -> list[str]:
    return sorted(s.name for s in recorded.spans)


async def test_a_fan_out_run_is_one_trace_with_its_id_and_link_on_the_status() -> None:
    c = TracedCluster()
    outcome = await c.run(workflow(FANOUT))
    assert outcome.phase == "Succeeded"
    spans = c.recorded.spans
    assert {s.context.trace_id for s in spans} == {trace_id(UID)}
    assert _names(c.recorded) == ["execute_tool echo"] * 5 + ["invoke_workflow wf"]
    root = c.recorded.one("invoke_workflow wf")
    assert root.context.span_id == run_ids(UID).span_id and root.attributes[genai.NAMESPACE] == "team"
    items = [s for s in spans if s is not root]
    assert all(s.parent.span_id == root.context.span_id for s in items)
    assert sorted(s.attributes[genai.NODE] for s in items) == ["first", "last", "map[0]", "map[1]", "map[2]"]

    # Every pod's TRACEPARENT is its attempt's span: the parent of what the pod does (gateway, tools).
    for name, env in c.pods_env.items():
        node = next(s.attributes[genai.NODE] for s in items
                    if env["TRACEPARENT"] == attempt_ids(UID, str(s.attributes[genai.NODE]), 1).traceparent)
        assert env["AGENTFLOW_NODE"] == node, name
    assert len(c.pods_env) == 5

    hex_id = f"{trace_id(UID):032x}"
    final = c.kube.statuses[-1]
    assert final["traceId"] == hex_id
    assert final["traceUrl"] == f"https://jaeger.example.com/trace/{hex_id}"
    assert {s.traceparent for s in c.store.sources[UID]} == {run_ids(UID).traceparent}


async def test_a_restarted_operator_continues_the_same_trace_without_repeating_spans() -> None:
    c = TracedCluster()
    body = workflow(FANOUT)
    for _ in range(3):
        await c.reconciler.reconcile(body, catalog())
        c.kubelet()
        c.now += 1.0
    before = c.recorded
    c.reconciler = c.new_reconciler()  # the operator restarts: its runs are read back from the journal
    outcome = await c.run(body)
    assert outcome.phase == "Succeeded"
    every = before.spans + c.recorded.spans
    assert {s.context.trace_id for s in every} == {trace_id(UID)}
    ids = [s.context.span_id for s in every]
    assert len(ids) == len(set(ids)) == 6, "each attempt and the run exactly once across both processes"
    assert "invoke_workflow wf" in _names(c.recorded) and before.spans


async def test_without_tracing_nothing_is_set() -> None:
    c = Cluster()
    await c.run(workflow(FANOUT))
    assert "traceId" not in c.kube.statuses[-1]
    assert all(s.traceparent is None for s in c.store.sources[UID])
