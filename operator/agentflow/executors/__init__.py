"""Executors: run one attempt of an llm or tool step (the engine's Executor protocol).

Used by both drivers: the local runner (in this process, or a subprocess per attempt) and the operator's
step pods (agentflow.runtime.step runs the InProcessExecutor inside the pod)::

    attempt.py      StepFailure, Who (audit identity), ModelAccess, StepServices (what an executor is built with)
    inprocess.py    InProcessExecutor: idempotency memo, deadline, dispatch by step kind
    llm_step.py     an llm attempt: render, screen, redact, call the gateway, validate with repairs, restore
    tool_step.py    a tool attempt: the grant, redaction of what leaves the sandbox, the call, screening
    screening.py    PII redaction and injection screening of one attempt, and their audit events
    subprocess.py   SubprocessExecutor: a child ``python -m agentflow.executors.stepproc`` per attempt
    stepproc.py     that child
    payload.py      the attempt payload a step pod or child is given, and load_payload
    access.py       ModelAccess from a process's environment (gateway URL + attempt token, or in-process)
"""

from .attempt import ModelAccess, OneClient, StepFailure, StepServices, Who
from .inprocess import InProcessExecutor
from .payload import PayloadError, attempt_payload, load_payload
from .subprocess import SubprocessExecutor

__all__ = [
    "InProcessExecutor",
    "ModelAccess",
    "OneClient",
    "PayloadError",
    "StepFailure",
    "StepServices",
    "SubprocessExecutor",
    "Who",
    "attempt_payload",
    "load_payload",
]
