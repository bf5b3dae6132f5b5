"""`agentflow prompt eval`: a PromptVersion's evaluation suite, run locally through a run's executor and gateway.

Each case is one attempt of an llm step (``case``: the suite's Agent, the PromptVersion) on the same
InProcessExecutor and in-process Gateway ``agentflow run`` uses (session.make_executor: the offline model
without a provider key, a real provider with one; Budgets, the cache and the audit chain as for a run).
Judge assertions and pairwise comparisons are attempts of their own steps (``judge``, ``pairwise``) with
the judge Agent and the PromptVersions of agentflow.prompts.suite; the other version of a pairwise
comparison runs as step ``baseline``. What the assertions conclude is decided by agentflow.prompts.

Results go to ``STATE_DIR/evals/PROMPT/EVAL_ID.json`` (the newest is also ``latest.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..engine.values import CallRecord, Executor, StepRequest, StepResult
from ..models import Catalog, EvaluationCase, EvaluationSuite, PromptVersion, Workflow
from ..prompts import suite as suites
from ..prompts.assertions import Verdict, check
from .session import Bundle, SessionError, make_executor

CASE, JUDGE, PAIRWISE, BASELINE = "case", "judge", "pairwise", "baseline"
EVALS_DIR = "evals"


def eval_bundle(catalog: Catalog, name: str) -> tuple[Bundle, PromptVersion, EvaluationSuite]:
    """The synthetic Workflow whose steps a suite's attempts are (see the module docstring)."""
    prompt = catalog.prompts.get(name)
    if prompt is None:
        known = ", ".join(sorted(catalog.prompts)) or "none"
        raise SessionError(f"no PromptVersion {name!r} in the manifests; PromptVersions: {known}")
    suite = prompt.spec.evaluations
    if suite is None:
        raise SessionError(f"PromptVersion {name!r} has no spec.evaluations: nothing to run")
    prompts = dict(catalog.prompts)
    steps: list[dict[str, Any]] = [_step(CASE, suite.agent_ref.name, name)]
    if suite.judge is not None:
        judge_agent = suite.judge.agent_ref.name
        prompts[f"{name}.judge"] = suites.judge_prompt(f"{name}.judge")
        steps.append(_step(JUDGE, judge_agent, f"{name}.judge"))
        if suite.judge.pairwise_against is not None:
            prompts[f"{name}.pairwise"] = suites.pairwise_prompt(f"{name}.pairwise")
            steps.append(_step(PAIRWISE, judge_agent, f"{name}.pairwise"))
            steps.append(_step(BASELINE, suite.agent_ref.name, suite.judge.pairwise_against.name))
    missing = sorted({s["agentRef"]["name"] for s in steps} - set(catalog.agents)) + sorted(
        {s["promptRef"]["name"] for s in steps} - set(prompts))
    if missing:
        raise SessionError(f"PromptVersion {name!r} spec.evaluations refers to {', '.join(missing)}, not in the "
                           "manifests: give the files or folders holding them with -f")
    workflow = Workflow.model_validate({"metadata": {"name": f"eval.{name}"[:253]}, "spec": {"steps": steps}})
    bundle = Bundle(workflow, Catalog(dict(catalog.agents), prompts, dict(catalog.policies),
                                      dict(catalog.budgets)), "")
    return bundle, prompt, suite


def _step(name: str, agent: str, prompt: str) -> dict[str, Any]:
    return {"name": name, "kind": "llm", "agentRef": {"name": agent}, "promptRef": {"name": prompt}}


def _spent(calls: tuple[CallRecord, ...]) -> tuple[float, int, float]:
    return (sum(c.cost_usd for c in calls), sum(c.input_tokens + c.output_tokens for c in calls),
            sum(c.latency_ms for c in calls))


class SuiteRun:
    """Runs one suite's cases on an executor (several at once, at most ``parallel``)."""

    def __init__(self, executor: Executor, prompt: PromptVersion, suite: EvaluationSuite, eval_id: str,
                 parallel: int = 4) -> None:
        self.executor = executor
        self.prompt = prompt
        self.suite = suite
        self.eval_id = eval_id
        self._slots = asyncio.Semaphore(parallel)
        self.models: set[str] = set()  # the models that answered (agentflow/offline without a provider key)

    async def _attempt(self, step: str, node: str, inputs: Mapping[str, Any]) -> StepResult:
        async with self._slots:
            return await self.executor.execute(StepRequest(self.eval_id, node, step, "llm", 1, dict(inputs)))

    async def case(self, case: EvaluationCase) -> suites.CaseResult:
        result = await self._attempt(CASE, case.name, case.inputs)
        calls = list(result.calls)
        verdicts: list[Verdict] = []
        pairwise: str | None = None
        if result.error is None:
            for i, assertion in enumerate(case.assertions):
                if assertion.judge is None:
                    verdicts.append(check(assertion, result.output, case.inputs))
                    continue
                judged = await self._attempt(JUDGE, f"{case.name}/judge{i}", suites.judge_inputs(
                    assertion.judge.rubric, case.inputs, result.output))
                calls.extend(judged.calls)
                verdicts.append(suites.judge_verdict(judged.output, assertion.judge.min_score)
                                if judged.error is None else
                                Verdict("judge", False, 0.0, f"the judge failed: {judged.error.message}"))
            pairwise = await self._pairwise(case, result.output, calls)
        self.models.update(c.name for c in calls if c.kind == "llm")
        cost, tokens, latency = _spent(tuple(calls))
        error = f"{result.error.type}: {result.error.message}" if result.error is not None else None
        return suites.CaseResult(case.name, result.output, error, tuple(verdicts), cost, tokens, latency, pairwise)

    async def _pairwise(self, case: EvaluationCase, output: Any, calls: list[CallRecord]) -> str | None:
        judge = self.suite.judge
        if judge is None or judge.pairwise_against is None:
            return None
        other = await self._attempt(BASELINE, f"{case.name}/baseline", case.inputs)
        calls.extend(other.calls)
        if other.error is not None:
            return "win"  # the other version failed the case outright
        swapped = suites.pairwise_swapped(case.name)
        compared = await self._attempt(PAIRWISE, f"{case.name}/pairwise", suites.pairwise_inputs(
            judge.criteria, case.inputs, output, other.output, swapped))
        calls.extend(compared.calls)
        return suites.pairwise_outcome(compared.output, swapped) if compared.error is None else "tie"

    async def run(self) -> suites.SuiteResult:
        cases = await asyncio.gather(*(self.case(c) for c in self.suite.cases))
        return suites.summarize(self.prompt, self.suite, cases)


def new_eval_id(prompt: str) -> str:
    return f"eval-{prompt[:40]}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


async def run_suite(catalog: Catalog, name: str, state_dir: str | Path, env: Mapping[str, str] | None = None,
                    parallel: int = 4) -> tuple[str, suites.SuiteResult, list[str]]:
    """Run PromptVersion ``name``'s suite; (eval id, result, the models that answered). SessionError when it
    cannot be run."""
    bundle, prompt, suite = eval_bundle(catalog, name)
    executor = make_executor(bundle, "inprocess", os.environ if env is None else env, state_dir=state_dir)
    eval_id = new_eval_id(name)
    try:
        suite_run = SuiteRun(executor, prompt, suite, eval_id, parallel)
        result = await suite_run.run()
        return eval_id, result, sorted(suite_run.models)
    finally:
        close = getattr(executor, "aclose", None)
        if close is not None:
            await close()


def save(state_dir: str | Path, eval_id: str, result: suites.SuiteResult, models: list[str]) -> Path:
    """Write the results (and latest.json) under STATE_DIR/evals/PROMPT/."""
    folder = Path(state_dir) / EVALS_DIR / result.prompt
    folder.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"evalId": eval_id, "at": time.time(), "models": models, **result.to_dict()},
                      indent=2, ensure_ascii=False, default=str)
    path = folder / f"{eval_id}.json"
    for target in (path, folder / "latest.json"):
        tmp = target.with_suffix(".tmp")
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(target)
    return path


def latest(state_dir: str | Path, prompt: str) -> dict[str, Any] | None:
    """The newest stored results of a PromptVersion's suite, or None."""
    path = Path(state_dir) / EVALS_DIR / prompt / "latest.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data
