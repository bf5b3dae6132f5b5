"""Local runs as a service: load manifests, start, resume, approve, cancel.

The CLI is a thin layer over these functions; tests call them directly.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..engine.plan import Plan, compile_plan
from ..engine.run import Run
from ..engine.values import Event, EventType, Executor
from ..llm import make_model_client
from ..models import Catalog, ManifestError, Problem, Workflow
from ..models.manifests import parse_yaml
from ..security import LocalTokenMapStore, RunKeys, SecurityContext
from ..storage.audit_file import JsonlAuditLog
from ..tools.runner import ToolRunner
from ..tools.wasm import inline_module_files
from ..validation import validate_documents, validate_paths
from ..validation.grants import approval_gates
from .executors import InProcessExecutor, SubprocessExecutor
from .local_gateway import local_gateway
from .loop import LocalRun, Observer, check_inbox_event
from .store import RunDir, RunStore


class SessionError(Exception):
    """A request about local runs that cannot be done; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A Workflow and everything it refers to."""

    workflow: Workflow
    catalog: Catalog
    manifests_yaml: str


def parse_input(text: str) -> tuple[str, Any]:
    """`key=value` from --input; the value is read as YAML (so 3 is a number, [a, b] a list)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SessionError(f"--input {text!r}: expected KEY=VALUE, for example --input ticket='my order is late'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise SessionError(f"--input {key}: the value is not valid YAML: {exc}") from None
    return key.strip(), value


def _bundle(loaded: Sequence[Any], workflow_name: str | None, inputs: Mapping[str, Any], where: str) -> Bundle:
    workflows = [r.resource for r in loaded if isinstance(r.resource, Workflow)]
    catalog = Catalog()
    for r in loaded:
        if not isinstance(r.resource, Workflow):
            catalog.add(r.resource)
    if workflow_name is not None:
        workflows = [w for w in workflows if w.metadata.name == workflow_name]
    if len(workflows) != 1:
        names = ", ".join(w.metadata.name for w in workflows) or "none"
        hint = "name one with --workflow NAME" if len(workflows) > 1 else "add a Workflow manifest"
        raise SessionError(f"{where}: expected exactly one Workflow, found {names}; {hint}")
    workflow = workflows[0]
    if inputs:
        spec = workflow.spec.model_copy(update={"inputs": {**workflow.spec.inputs, **inputs}})
        workflow = workflow.model_copy(update={"spec": spec})
    bodies = [workflow.dump()] + [r.resource.dump() for r in loaded if not isinstance(r.resource, Workflow)]
    text = yaml.safe_dump_all(bodies, sort_keys=False, allow_unicode=True)
    # Re-validate with the inputs applied (inputSchema) so a bad --input is caught before anything runs.
    _, problems = validate_documents(parse_yaml(text, f"{where} (with --input)"))
    if problems:
        raise ManifestError(problems)
    return Bundle(workflow, catalog, text)


def load_bundle(paths: Sequence[str | Path], workflow_name: str | None = None,
                inputs: Mapping[str, Any] | None = None) -> Bundle:
    """Load and validate manifests; raises ManifestError with every problem found."""
    loaded, problems = validate_paths(paths)
    if problems:
        raise ManifestError(problems)
    # Relative wasm.module paths become inline modules here, resolved against their manifest's folder, so the
    # run's stored manifests (and the subprocess executor and step pods) are self-contained.
    loaded, problems = inline_module_files(loaded)
    if problems:
        raise ManifestError(problems)
    return _bundle(loaded, workflow_name, inputs or {}, ", ".join(str(p) for p in paths))


def bundle_of(run_dir: RunDir) -> Bundle:
    """The manifests a run was started with."""
    name = run_dir.meta.get("workflow")
    loaded, problems = validate_documents(parse_yaml(run_dir.manifests_yaml, str(run_dir.path / "manifests.yaml")))
    if problems:
        raise ManifestError(problems)
    return _bundle(loaded, name, {}, str(run_dir.path))


def new_run_id(workflow: str) -> str:
    return f"{workflow[:40]}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


AUDIT_FILE = "audit.jsonl"
"""The local runner's audit chain, in the state directory (``agentflow audit verify --file``)."""


def make_executor(bundle: Bundle, kind: str, env: Mapping[str, str] | None = None,
                  state_dir: str | Path | None = None) -> Executor:
    """The executor of a local run. ``inprocess``: every model call goes through an in-process Gateway (the
    Budgets of the manifests on a MemoryLedger, the response cache, the router), like a step pod's calls go
    through the operator's gateway; the model client behind it is the one the environment selects.
    ``subprocess``: each attempt in a child process that calls the model client directly.

    With ``state_dir``, PII tokens use the state directory's key (AGENTFLOW_PII_KEY wins) and the run's sealed
    token map, and policy decisions, redactions and injection findings go to its audit chain (AUDIT_FILE)."""
    env = os.environ if env is None else env
    model_client = make_model_client(env)
    tools = ToolRunner()
    if kind == "inprocess":
        if state_dir is None:
            client = local_gateway(bundle.workflow, bundle.catalog, model_client)
            return InProcessExecutor(bundle.catalog, bundle.workflow.spec, client, tools)
        audit = JsonlAuditLog(Path(state_dir) / AUDIT_FILE)
        client = local_gateway(bundle.workflow, bundle.catalog, model_client, audit=audit)
        try:
            keys = RunKeys.from_env(env, state_dir)
        except ValueError as exc:
            raise SessionError(str(exc)) from exc
        security = SecurityContext(keys=keys, store=LocalTokenMapStore(state_dir))
        return InProcessExecutor(bundle.catalog, bundle.workflow.spec, client, tools, security=security,
                                 audit=audit)
    if kind == "subprocess":
        return SubprocessExecutor(bundle.manifests_yaml, bundle.workflow.metadata.name)
    raise SessionError(f"--executor {kind!r}: expected inprocess or subprocess")


def create_run(store: RunStore, bundle: Bundle, sources: Sequence[str | Path]) -> RunDir:
    run_id = new_run_id(bundle.workflow.metadata.name)
    meta = {
        "runId": run_id,
        "workflow": bundle.workflow.metadata.name,
        "created": time.time(),
        "sources": [str(s) for s in sources],
        "seed": secrets.randbits(32),
    }
    return store.create(run_id, bundle.manifests_yaml, meta)


def plan_of(bundle: Bundle) -> Plan:
    # Tool steps whose granted tool has requiresApproval pause for a human (agentflow.validation.grants).
    return compile_plan(bundle.workflow, approval_gates(bundle.workflow.spec, bundle.catalog))


async def drive(run_dir: RunDir, bundle: Bundle, executor: Executor, observer: Observer | None = None,
                *, wait_for_approvals: bool = True) -> Run:
    local = LocalRun(run_dir, plan_of(bundle), executor, seed=int(run_dir.meta.get("seed", 0)),
                     observer=observer, wait_for_approvals=wait_for_approvals)
    return await local.drive()


def load_run(run_dir: RunDir) -> Run:
    """The state of a run from its journal, without driving it."""
    bundle = bundle_of(run_dir)
    return Run.resume(plan_of(bundle), run_dir.run_id, [r.event for r in run_dir.read_records()])


def post_decision(run_dir: RunDir, step: str, approved: bool, by: str, reason: str) -> Path:
    """Queue an approval decision for the process that drives the run (or its next resume)."""
    run = load_run(run_dir)
    if run.finished:
        raise SessionError(f"run {run_dir.run_id} already finished ({run.phase}); nothing to approve")
    event = Event(EventType.approval_decided, step, {"approved": approved, "by": by, "reason": reason})
    problem = check_inbox_event(run, event)
    if problem is not None:
        raise SessionError(f"run {run_dir.run_id}: {problem}")
    return run_dir.post(event)


def post_cancel(run_dir: RunDir, by: str, reason: str) -> Path:
    run = load_run(run_dir)
    if run.finished:
        raise SessionError(f"run {run_dir.run_id} already finished ({run.phase}); nothing to cancel")
    return run_dir.post(Event(EventType.cancel_requested, None, {"by": by, "reason": reason}))


def problems_json(problems: Sequence[Problem]) -> list[dict[str, Any]]:
    return [p.to_dict() for p in problems]
