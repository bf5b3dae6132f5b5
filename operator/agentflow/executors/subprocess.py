"""Run each attempt in a child ``python -m agentflow.executors.stepproc``, killed at its deadline.

The child reads the attempt payload (agentflow.executors.payload) as JSON on stdin and prints the StepResult
as JSON. Its model calls go to the parent's gateway over HTTP on 127.0.0.1 (a LoopbackGateway: the same
Gateway, budgets and cache as the parent's in-process calls), authenticated by a random token good for that
one attempt and revoked when it ends, exactly as a step pod calls the operator's gateway. ``env`` is the
child's environment (default: this process's).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping

from agentflow.engine.values import StepError, StepRequest, StepResult
from agentflow.gateway.local import LoopbackGateway
from agentflow.llm import GATEWAY_URL_ENV, MODE_ENV, TOKEN_ENV
from agentflow.telemetry import TRACEPARENT_ENV, current_traceparent

from .attempt import Clock
from .payload import attempt_payload

__all__ = ["SubprocessExecutor"]


class SubprocessExecutor:
    def __init__(
        self,
        manifests_yaml: str,
        workflow: str,
        *,
        gateway: LoopbackGateway | None = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        clock: Clock = time.time,
    ) -> None:
        self._manifests = manifests_yaml
        self._workflow = workflow
        self._gateway = gateway
        self._env = dict(env) if env is not None else None
        self._python = python
        self._clock = clock

    async def aclose(self) -> None:
        if self._gateway is not None:
            await self._gateway.stop()

    async def execute(self, request: StepRequest) -> StepResult:
        payload = attempt_payload(request, self._manifests, self._workflow)
        timeout = None
        if request.deadline is not None:
            timeout = request.deadline - self._clock()
            if timeout <= 0:
                return _error("DeadlineExceeded", f"step {request.step!r}: the deadline passed before it started")
        env = self._env
        token = None
        if self._gateway is not None:
            await self._gateway.start()
            token = self._gateway.issue(request)
            # The parent's gateway already runs the provider AGENTFLOW_MODEL_MODE chose (its budgets and the
            # agents' memory with it): the child calls it, never a gateway of its own.
            parent = self._env if self._env is not None else os.environ
            env = {**{k: v for k, v in parent.items() if k != MODE_ENV}, GATEWAY_URL_ENV: self._gateway.url,
                   TOKEN_ENV: token}
        trace = current_traceparent()  # the attempt's span (the runner's context): the child's calls are its children
        if trace is not None:
            env = {**(env if env is not None else os.environ), TRACEPARENT_ENV: trace}
        try:
            return await self._run(request, payload, env, timeout)
        finally:
            if token is not None and self._gateway is not None:
                self._gateway.revoke(token)

    async def _run(self, request: StepRequest, payload: dict[str, object], env: Mapping[str, str] | None,
                   timeout: float | None) -> StepResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python, "-m", "agentflow.executors.stepproc",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=dict(env) if env is not None else None,
            )
        except OSError as exc:
            return _error("ExecutorError", f"cannot start {self._python!r}: {exc}")
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode("utf-8")), timeout)
        except TimeoutError:
            await _kill(proc)
            return _error(
                "DeadlineExceeded",
                f"step {request.step!r} ({request.node}) did not finish within its deadline; the step process "
                "was killed",
            )
        except BaseException:
            await _kill(proc)
            raise
        return _parse_child(stdout, stderr, proc.returncode)


def _error(type: str, message: str, retryable: bool = True) -> StepResult:
    return StepResult(error=StepError(type, message, retryable))


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def _parse_child(stdout: bytes, stderr: bytes, returncode: int | None) -> StepResult:
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        return StepResult.from_dict(json.loads(lines[-1]))
    except (IndexError, ValueError, KeyError, TypeError, AttributeError):
        tail = stderr.decode("utf-8", "replace").strip()[-800:]
        return _error(
            "ExecutorError", f"the step process exited with {returncode} without a result: {tail or 'no output'}"
        )
