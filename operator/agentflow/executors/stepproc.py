"""The child process of SubprocessExecutor: run one attempt, print its StepResult.

    python -m agentflow.executors.stepproc  < {"request": {...}, "manifests": "YAML", "workflow": "NAME"}

stdout gets exactly one line of JSON (StepResult.to_dict), also when the payload is bad: the error then
says what was wrong. Model calls go to the parent's gateway (AGENTFLOW_GATEWAY_URL and the attempt's
AGENTFLOW_TOKEN, set by the parent; see agentflow.executors.access). Exit status 0 when a result was
printed, 2 when the payload could not be read.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from agentflow.engine.values import StepError, StepResult
from agentflow.llm import prices_from_env
from agentflow.security import RunKeys, SecurityContext
from agentflow.telemetry import Tracing, attached, from_env
from agentflow.tools import ToolRunner
from agentflow.tools.sandbox import ISOLATION_ENV, SandboxUnavailable, choose_sandbox

from .access import close_access, model_access
from .attempt import StepServices
from .inprocess import InProcessExecutor
from .payload import PayloadError, load_payload


async def run(text: str, env: Mapping[str, str]) -> StepResult:
    request, catalog, workflow = load_payload(text)
    keys = RunKeys.from_env(env, env.get("AGENTFLOW_STATE_DIR") or None)
    access = model_access(env, workflow, catalog)
    # The runner's OTEL_* variables: this process's own spans (an http tool's request) go where the runner's do.
    tracing, warning = Tracing.for_child(env, "agentflow-step")
    if warning is not None:
        print(f"agentflow.executors.stepproc: {warning}", file=sys.stderr)
    try:
        # The parent says how container tools run (it resolved auto into bwrap or off); unsaid: plainly, like
        # ToolRunner's default.
        tools = ToolRunner(container_sandbox=choose_sandbox(env) if env.get(ISOLATION_ENV) else None,
                           tracing=tracing)
        executor = InProcessExecutor(StepServices(catalog, workflow.spec, access, tools, SecurityContext(keys=keys),
                                                  prices=prices_from_env(env)))
        with attached(from_env(env)):  # the parent's attempt span (TRACEPARENT): the gateway's spans are its children
            return await executor.execute(request)
    finally:
        tracing.shutdown(2.0)
        await close_access(access)


def main(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    try:
        result = asyncio.run(run(stdin.read(), os.environ))
        status = 0
    except (PayloadError, ValueError, SandboxUnavailable) as exc:
        result = StepResult(error=StepError("ExecutorError", f"agentflow.executors.stepproc: {exc}", False))
        status = 2
    stdout.write(json.dumps(result.to_dict(), ensure_ascii=False, default=str) + "\n")
    stdout.flush()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
