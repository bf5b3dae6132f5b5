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
import math
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..engine.values import CallRecord, Executor, StepRequest, StepResult
from ..models import Catalog, EvaluationCase, EvaluationSuite, PromptVersion, Workflow
from ..prompts import suite as suites
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
    if suite.budget_ref is not None and suite.budget_ref.name not in catalog.budgets:
        missing.append(suite.budget_ref.name)
    if missing:
        raise SessionError(f"PromptVersion {name!r} spec.evaluations refers to {', '.join(missing)}, not in the "
                           "manifests: give the files or folders holding them with -f")
    spec: dict[str, Any] = {"steps": steps}
    if suite.budget_ref is not None:
        spec["budgetRef"] = {"name": suite.budget_ref.name}
    workflow = Workflow.model_validate({"metadata": {"name": f"eval.{name}"[:253]}, "spec": spec})
    bundle = Bundle(workflow, Catalog(dict(catalog.agents), prompts, dict(catalog.policies),
                                      dict(catalog.budgets)), "")
    return bundle, prompt, suite


def _step(name: str, agent: str, prompt: str) -> dict[str, Any]:
    return {"name": name, "kind": "llm", "agentRef": {"name": agent}, "promptRef": {"name": prompt}}


def _spent(calls: tuple[CallRecord, ...]) -> dict[str, Any]:
    return {"cost_usd": sum(c.cost_usd for c in calls), "input_tokens": sum(c.input_tokens for c in calls),
            "output_tokens": sum(c.output_tokens for c in calls), "latency_ms": sum(c.latency_ms for c in calls)}


def _outcome(result: StepResult, *, full: bool) -> suites.Outcome:
    """An attempt's outcome; ``full``: its error as TYPE: MESSAGE (a case's own), else the message."""
    if result.error is None:
        return suites.Outcome(result.output)
    return suites.Outcome(result.output, f"{result.error.type}: {result.error.message}" if full
                          else result.error.message)


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
        judged: dict[int, suites.Outcome] = {}
        baseline = compared = None
        if result.error is None:
            for i, assertion in enumerate(case.assertions):
                if assertion.judge is not None:
                    judge = await self._attempt(JUDGE, f"{case.name}/judge{i}", suites.judge_inputs(
                        assertion.judge.rubric, case.inputs, result.output))
                    calls.extend(judge.calls)
                    judged[i] = _outcome(judge, full=False)
            baseline, compared = await self._pairwise(case, result.output, calls)
        self.models.update(c.name for c in calls if c.kind == "llm")
        return suites.case_result(case, self.suite, _outcome(result, full=True), judged, baseline, compared,
                                  **_spent(tuple(calls)))

    async def _pairwise(self, case: EvaluationCase, output: Any, calls: list[CallRecord]
                        ) -> tuple[suites.Outcome | None, suites.Outcome | None]:
        judge = self.suite.judge
        if judge is None or judge.pairwise_against is None:
            return None, None
        other = await self._attempt(BASELINE, f"{case.name}/baseline", case.inputs)
        calls.extend(other.calls)
        if other.error is not None:
            return _outcome(other, full=False), None
        compared = await self._attempt(PAIRWISE, f"{case.name}/pairwise", suites.pairwise_inputs(
            judge.criteria, case.inputs, output, other.output, suites.pairwise_swapped(case.name)))
        calls.extend(compared.calls)
        return _outcome(other, full=False), _outcome(compared, full=False)

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
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

    if not (isinstance(data, dict) and isinstance(data.get("evalId"), str) and isinstance(data.get("passed"), bool)
            and number(data.get("passRate")) and number(data.get("meanScore"))
            and (data.get("winRate") is None or number(data.get("winRate")))):
        return None  # not results this writes (an edit, another version's): as if there were none
    result: dict[str, Any] = data
    return result
