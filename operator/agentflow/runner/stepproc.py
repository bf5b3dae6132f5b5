"""The child process of SubprocessExecutor: run one attempt, print its StepResult.

    python -m agentflow.runner.stepproc  < {"request": {...}, "manifests": "YAML", "workflow": "NAME"}

stdout gets exactly one line of JSON (step_result_to_dict), also when the
payload is bad: the error then says what was wrong. The model client is chosen
from this process's environment (agentflow.llm.make_model_client). Exit status
0 when a result was printed, 2 when the payload could not be read.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from agentflow.engine.values import StepError, StepRequest, StepResult
from agentflow.llm import make_model_client
from agentflow.models import Catalog, ManifestError, Workflow
from agentflow.models.manifests import parse_documents, parse_yaml
from agentflow.security import RunKeys, SecurityContext
from agentflow.tools import ToolRunner

from .executors import InProcessExecutor, step_request_from_dict, step_result_to_dict


class PayloadError(ValueError):
    """The stdin payload is not what SubprocessExecutor sends."""


def load_payload(text: str) -> tuple[StepRequest, Catalog, Workflow]:
    """(StepRequest, Catalog, Workflow) from the JSON payload; PayloadError names the bad field."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise PayloadError(f"stdin is not JSON: {exc}") from exc
    if not isinstance(payload, Mapping):
        raise PayloadError("stdin must be a JSON object with request, manifests and workflow")
    for field, kind in (("request", Mapping), ("manifests", str), ("workflow", str)):
        if not isinstance(payload.get(field), kind):
            raise PayloadError(
                f"payload field {field!r} is missing or not a {'object' if kind is Mapping else 'string'}"
            )
    try:
        request = step_request_from_dict(payload["request"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"payload field 'request' is malformed: {exc!r}") from exc
    try:
        loaded = parse_documents(parse_yaml(payload["manifests"], "<manifests>"))
    except ManifestError as exc:
        raise PayloadError(f"payload field 'manifests' does not parse: {exc}") from exc
    catalog = Catalog()
    workflows = []
    for item in loaded:
        if isinstance(item.resource, Workflow):
            workflows.append(item.resource)
        else:
            catalog.add(item.resource)
    named = [w for w in workflows if w.metadata.name == payload["workflow"]]
    if len(named) != 1:
        raise PayloadError(f"the manifests hold {len(named)} Workflow(s) named {payload['workflow']!r}, expected 1")
    return request, catalog, named[0]


async def run(text: str, env: Mapping[str, str]) -> StepResult:
    request, catalog, workflow = load_payload(text)
    keys = RunKeys.from_env(env, env.get("AGENTFLOW_STATE_DIR") or None)
    executor = InProcessExecutor(catalog, workflow.spec, make_model_client(env), ToolRunner(),
                                 security=SecurityContext(keys=keys))
    result: StepResult = await executor.execute(request)
    return result


def main(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    try:
        result = asyncio.run(run(stdin.read(), os.environ))
        status = 0
    except (PayloadError, ValueError) as exc:
        result = StepResult(error=StepError("ExecutorError", f"agentflow.runner.stepproc: {exc}", False))
        status = 2
    stdout.write(json.dumps(step_result_to_dict(result), ensure_ascii=False, default=str) + "\n")
    stdout.flush()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
