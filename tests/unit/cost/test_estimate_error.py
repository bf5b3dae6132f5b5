"""How far the preflight is from what real runs cost, before and after calibration (a report, loosely checked).

Six local runs of a fan-out workflow go through the real runner, litellm and an OpenAI-compatible server on
loopback (tests/unit/llm/fake_openai.py) that answers with texts of varying length and reports usage the
way a provider does: prompt tokens counted on the messages it received, completion tokens on its answer.
One answer in four of the structured step is not JSON, so the runner sends its repair request.

Each run is then estimated twice: with the defaults only, and calibrated from the *other* five runs'
journals (leave one out). The table printed (``pytest -s``) is the estimate's error against each run's
actual tokens and dollars, per step and in total. The assertions are only sanity bounds: calibrated
estimates land within 100% of the actual total (one run of six can be far off: its answers are random),
and closer than the uncalibrated ones on average.

Measured (seed 7): mean |error| of the total in USD 180% with the defaults (max_tokens taken as the
expected answer), 16% calibrated; the worst calibrated run +56%.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentflow.cost.calibration import Calibration, observations_from_journal
from agentflow.cost.estimate import Estimate, estimate_workflow
from agentflow.engine.values import EventType
from agentflow.llm import litellm_provider
from agentflow.llm.litellm_upstream import count_message_tokens
from agentflow.llm.litellm_upstream import load as load_litellm
from agentflow.runner import session
from agentflow.runner.store import RunStore

from ..llm.fake_openai import FakeOpenAI, Reply

API = "agentflow.dev/v1alpha1"
MANIFESTS = [
    {"apiVersion": API, "kind": "Workflow", "metadata": {"name": "briefs"}, "spec": {
        "inputs": {"topics": ["a"]},
        "steps": [
            {"name": "outline", "kind": "llm", "agentRef": {"name": "writer"}, "promptRef": {"name": "outline-v1"},
             "inputs": {"topics": "${{ inputs.topics }}"}},
            {"name": "write", "kind": "llm", "agentRef": {"name": "writer"}, "promptRef": {"name": "write-v1"},
             "dependsOn": ["outline"], "forEach": "inputs.topics",
             "inputs": {"topic": "${{ item }}", "outline": "${{ steps.outline.output.summary }}"}},
        ]}},
    {"apiVersion": API, "kind": "Agent", "metadata": {"name": "writer"}, "spec": {
        "role": "technical writer", "instructions": "Write short, concrete briefs.",
        "model": {"name": "openai/gpt-4o-mini", "maxTokens": 400}}},
    {"apiVersion": API, "kind": "PromptVersion", "metadata": {"name": "outline-v1"}, "spec": {
        "prompt": "outline", "version": "1",
        "messages": [{"role": "user", "content": "Outline a series of briefs on: ${{ inputs.topics }}"}],
        "outputSchema": {"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}}}},
    {"apiVersion": API, "kind": "PromptVersion", "metadata": {"name": "write-v1"}, "spec": {
        "prompt": "write", "version": "1",
        "messages": [{"role": "user", "content": "Write a brief on ${{ inputs.topic }} following this outline: "
                                                  "${{ inputs.outline }}"}]}},
]
TOPICS = [["zero-downtime deploys", "feature flags"], ["on-call", "runbooks", "postmortems"],
          ["cost control", "caching", "rate limits", "retries"], ["tracing", "logs"],
          ["schema migrations", "backfills", "indexes"], ["canaries", "rollbacks", "alerts", "SLOs"]]


class Provider(deque[Reply]):
    """The fake server's script, answered on demand from the request it just received."""

    def __init__(self, server: FakeOpenAI, seed: int) -> None:
        super().__init__()
        self.server = server
        self.rng = random.Random(seed)
        self.litellm = load_litellm()

    def __bool__(self) -> bool:
        return True

    def popleft(self) -> Reply:
        body = self.server.received[-1].body
        messages = body["messages"]
        prompt_tokens = int(self.litellm.token_counter(model="gpt-4o-mini", messages=messages))
        prose = " ".join(self.rng.choice(["deploy", "service", "traffic", "rollback", "users", "metric", "risk"])
                         for _ in range(self.rng.randint(60, 260)))
        structured = "JSON Schema" in messages[0]["content"]
        if structured and self.rng.random() >= 0.25:
            text = json.dumps({"summary": prose})
        else:
            text = prose if not structured else "Here is the outline: " + prose
        completion = int(self.litellm.token_counter(model="gpt-4o-mini", text=text))
        return Reply(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion)


@pytest.fixture
def provider() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.script = Provider(server, seed=7)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def actual(events: list[Any]) -> dict[str, tuple[int, float]]:
    """(tokens, USD) per step from a journal's CostRecorded events."""
    out: dict[str, tuple[int, float]] = {}
    for e in events:
        if e.type == EventType.cost_recorded:
            c = e.data["call"]
            step = str(e.node).split("[", 1)[0]
            tokens, usd = out.get(step, (0, 0.0))
            out[step] = (tokens + c["input_tokens"] + c["output_tokens"], usd + c["cost_usd"])
    return out


def err(estimated: float, real: float) -> float:
    return (estimated - real) / real if real else 0.0


async def test_estimate_error_against_real_runs(provider: FakeOpenAI, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "briefs.yaml"
    path.write_text(yaml.safe_dump_all(MANIFESTS, sort_keys=False))
    store = RunStore(tmp_path / "state")
    env = {"AGENTFLOW_MODEL_MODE": "live", "AGENTFLOW_API_BASE": provider.base_url, "AGENTFLOW_API_KEY": "k"}
    runs = []
    for topics in TOPICS:
        bundle = session.load_bundle([path], None, {"topics": topics})
        run_dir = session.create_run(store, bundle, [path])
        run = await session.drive(run_dir, bundle, session.make_executor(bundle, "inprocess", env))
        assert run.phase == "Succeeded", run.phase
        runs.append((run_dir.run_id, bundle, [r.event for r in run_dir.read_records()]))
    journals = {run_id: observations_from_journal(run_id, events, b.workflow, b.catalog, count_message_tokens)
                for run_id, b, events in runs}

    lines = [f"{'run':<4} {'step':<8} {'actual tok':>10} {'est tok':>8} {'err':>7} {'calib tok':>9} {'err':>7}"
             f" {'actual $':>10} {'est $':>10} {'err':>7} {'calib $':>10} {'err':>7}"]
    before, after = [], []
    for i, (run_id, bundle, events) in enumerate(runs):
        others = [journals[r] for r in journals if r != run_id]
        calibration = Calibration.build([o for obs, _ in others for o in obs], [s for _, s in others])
        plain: Estimate = estimate_workflow(bundle.workflow, bundle.catalog, None, litellm_provider().prices,
                                            count_tokens=count_message_tokens)
        tuned = estimate_workflow(bundle.workflow, bundle.catalog, None, litellm_provider().prices, calibration,
                                  count_tokens=count_message_tokens)
        assert all(s.calibrated for s in tuned.steps)
        real = actual(events)
        for p, t in zip(plain.steps, tuned.steps, strict=True):
            tok, usd = real[p.step]
            assert p.usd is not None and t.usd is not None
            lines.append(f"{i:<4} {p.step:<8} {tok:>10} {p.tokens.expected:>8.0f} {err(p.tokens.expected, tok):>+7.1%}"
                         f" {t.tokens.expected:>9.0f} {err(t.tokens.expected, tok):>+7.1%} {usd:>10.6f}"
                         f" {p.usd.expected:>10.6f} {err(p.usd.expected, usd):>+7.1%} {t.usd.expected:>10.6f}"
                         f" {err(t.usd.expected, usd):>+7.1%}")
        total = sum(u for _, u in real.values())
        before.append(err(plain.usd.expected, total))
        after.append(err(tuned.usd.expected, total))
        lines.append(f"{i:<4} {'TOTAL':<8} {'':>10} {'':>8} {'':>7} {'':>9} {'':>7} {total:>10.6f} "
                     f"{plain.usd.expected:>10.6f} {before[-1]:>+7.1%} {tuned.usd.expected:>10.6f} {after[-1]:>+7.1%}")
    mean_before = sum(abs(e) for e in before) / len(before)
    mean_after = sum(abs(e) for e in after) / len(after)
    lines.append(f"mean |error| of the total in USD: {mean_before:.1%} with the defaults, {mean_after:.1%} calibrated "
                 "(leave one run out)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert all(abs(e) < 1.0 for e in after), after
    assert mean_after <= mean_before
