"""Local runs as a service: load manifests, start, resume, approve, cancel.

The CLI is a thin layer over these functions; tests call them directly.
"""

from __future__ import annotations

import dataclasses
import getpass
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
from ..executors import InProcessExecutor, StepServices, SubprocessExecutor
from ..gateway.local import LoopbackGateway, local_gateway
from ..llm import provider_from_env
from ..loader import load_documents, referenced_file_problems, validate_paths
from ..memory.local import SqliteMemoryStore
from ..memory.local import default_path as default_memory_path
from ..models import (
    API_VERSION,
    Catalog,
    ManifestError,
    Problem,
    StepKind,
    TemplateRef,
    ToolSpec,
    Workflow,
    WorkflowSpec,
)
from ..models.limits import DEFAULT_WORKFLOW_DEPTH, MAX_FANOUT_ITEMS
from ..models.manifests import Document, LoadedResource, format_path, parse_resource, parse_yaml, parse_yaml_value
from ..models.template import TEMPLATE_ANNOTATION
from ..prompts.rollout import Choice, RolloutError, bind, choices_for
from ..security import LocalTokenMapStore, RunKeys, SecurityContext
from ..security.pii import text_redactor
from ..storage.audit_file import JsonlAuditLog
from ..storage.ledger import BudgetLedger
from ..storage.memory_ledger import MemoryLedger
from ..telemetry import TraceSettings, Tracing
from ..tools.runner import ToolRunner
from ..tools.sandbox import ISOLATION_ENV, ContainerSandbox, SandboxUnavailable, choose_sandbox
from ..tools.wasm import inline_module_files
from ..validation import validate_documents
from ..validation.grants import ToolDenied, agent_loops, approval_gates, decide_tool, tool_steps
from ..validation.templates import resolve_workflow, spec_steps
from ..validation.values import json_value_findings
from .episodes import LocalEpisodes
from .loop import DEFAULT_MAX_PARALLEL, LocalRun, Observer, check_inbox_event
from .store import RunDir, RunStore


class SessionError(Exception):
    """A request about local runs that cannot be done; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A Workflow and everything it refers to."""

    workflow: Workflow
    catalog: Catalog
    manifests_yaml: str
    prompts: Mapping[str, Choice] = dataclasses.field(default_factory=dict)
    """The PromptVersions the run's family steps got (bind_prompts), by step; the workflow names them."""


def parse_input(text: str) -> tuple[str, Any]:
    """`key=value` from --input; the value is read as YAML (so 3 is a number, [a, b] a list), under the bounds
    of manifests (agentflow.models.limits: no alias bombs, no deep nesting)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SessionError(f"--input {text!r}: expected KEY=VALUE, for example --input ticket='my order is late'")
    try:
        value = parse_yaml_value(raw, f"--input {key.strip()}") if raw.strip() else ""
    except ManifestError as exc:
        problem = exc.problems[0]
        where = f" (line {problem.line})" if problem.line else ""
        raise SessionError(f"--input {key.strip()}: the value is not valid YAML{where}: {problem.message}") from None
    return key.strip(), value


def known_inputs(workflow: Workflow) -> tuple[set[str], bool]:
    """The inputs a Workflow declares (keys of spec.inputs and properties of spec.inputSchema), and whether its
    inputSchema takes others too (additionalProperties given and not false)."""
    spec = workflow.spec
    known = set(spec.inputs)
    schema = spec.input_schema or {}
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        known.update(str(k) for k in properties)
    extra = schema.get("additionalProperties", False)
    return known, extra is not False


def check_input_names(workflow: Workflow, inputs: Mapping[str, Any]) -> None:
    """SessionError for an --input the Workflow does not declare (a typo would otherwise run with the default)."""
    known, open_schema = known_inputs(workflow)
    if open_schema:
        return
    unknown = sorted(set(inputs) - known)
    if not unknown:
        return
    names = ", ".join(sorted(known)) or "none"
    what = "inputs" if len(unknown) > 1 else "input"
    raise SessionError(
        f"--input {', '.join(unknown)}: Workflow {workflow.metadata.name!r} has no such {what}; it declares: {names} "
        "(keys of spec.inputs and properties of spec.inputSchema; declare new ones there, or set "
        "inputSchema.additionalProperties to accept any)")


def _bundle(loaded: Sequence[Any], workflow_name: str | None, inputs: Mapping[str, Any], where: str) -> Bundle:
    workflows = [r.resource for r in loaded if isinstance(r.resource, Workflow)]
    catalog = Catalog()
    for r in loaded:
        if not isinstance(r.resource, Workflow):
            catalog.add(r.resource)
    if workflow_name is not None:
        named = [w for w in workflows if w.metadata.name == workflow_name]
        if not named:
            names = ", ".join(sorted(w.metadata.name for w in workflows)) or "none"
            raise SessionError(f"--workflow {workflow_name!r}: {where} has no Workflow of that name; its Workflows: "
                               f"{names}")
        workflows = named
    if len(workflows) != 1:
        names = ", ".join(w.metadata.name for w in workflows) or "none"
        hint = "name one with --workflow NAME" if len(workflows) > 1 else "add a Workflow manifest"
        raise SessionError(f"{where}: expected exactly one Workflow, found {names}; {hint}")
    workflow = workflows[0]
    if workflow.spec.workflow_template_ref is not None:
        # Made from a template: run the resolved Workflow (the template's spec with its inputs); the run's
        # manifests.yaml holds the resolved spec, so an edit of the template file never changes this run.
        resolved, findings = resolve_workflow(workflow, catalog)
        if resolved is None:
            raise ManifestError([Problem(where, format_path(path), message) for path, message in findings])
        ref = workflow.spec.workflow_template_ref
        made_from = ref.name if ref.kind == "WorkflowTemplate" else f"{ref.kind}/{ref.name}"
        annotations = {**workflow.metadata.annotations, TEMPLATE_ANNOTATION: made_from}
        workflow = resolved.model_copy(update={"metadata": workflow.metadata.model_copy(
            update={"annotations": annotations})})
    if inputs:
        check_input_names(workflow, inputs)
        not_json = json_value_findings(dict(inputs), [])
        if not_json:  # NaN, bytes...: the dump below would turn them into what they are not
            path, message = not_json[0]
            raise SessionError(f"--input {format_path(path) or 'inputs'}: {message}")
        spec = workflow.spec.model_copy(update={"inputs": {**workflow.spec.inputs, **inputs}})
        workflow = workflow.model_copy(update={"spec": spec})
    bodies = [workflow.dump()] + [r.resource.dump() for r in loaded if not isinstance(r.resource, Workflow)]
    # libyaml's emitter when PyYAML has it (the wheels do): a workflow of thousands of steps dumps in a blink.
    text = yaml.dump_all(bodies, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                         allow_unicode=True)
    # Re-validate with the inputs applied (inputSchema) so a bad --input is caught before anything runs.
    _, problems = validate_documents(parse_yaml(text, f"{where} (with --input)"))
    if problems:
        raise ManifestError(problems)
    return Bundle(workflow, catalog, text)


def load_bundle(paths: Sequence[str | Path], workflow_name: str | None = None,
                inputs: Mapping[str, Any] | None = None, file_roots: Sequence[str | Path] = ()) -> Bundle:
    """Load and validate manifests; raises ManifestError with every problem found.

    ``file_roots``: folders besides each manifest's own that the files it names may be in (agentflow.loader).
    """
    return _bundle(_load(paths, file_roots), workflow_name, inputs or {}, ", ".join(str(p) for p in paths))


def _load(paths: Sequence[str | Path], file_roots: Sequence[str | Path]) -> list[LoadedResource]:
    """The manifests, validated, their module files inlined; ManifestError with every problem."""
    loaded, problems = validate_paths(paths, file_roots)
    if problems:
        raise ManifestError(problems)
    # Relative wasm.module paths become inline modules here, resolved against their manifest's folder, so the
    # run's stored manifests (and the subprocess executor and step pods) are self-contained. validate_paths
    # refused every path that leaves the manifest's folder and the allowed roots.
    loaded, problems = inline_module_files(loaded)
    if problems:
        raise ManifestError(problems)
    return loaded


def template_bundle(paths: Sequence[str | Path], ref: TemplateRef, inputs: Mapping[str, Any], name: str,
                    file_roots: Sequence[str | Path] = ()) -> Bundle:
    """A Bundle of a new Workflow ``name`` made from the template ``ref`` names in these manifests, with ``inputs``
    (what agentflow.client starts): the manifests' own Workflows are left out, the rest (templates, Agents,
    PromptVersions, ToolPolicies, Budgets) is its catalog. ManifestError with every problem, on the new
    Workflow's fields (``spec.workflowTemplateRef.name``, ``spec.inputs.KEY``, ``metadata.name``)."""
    where = f"Workflow/{name}"
    loaded = _load(paths, file_roots)
    body = {"apiVersion": API_VERSION, "kind": "Workflow", "metadata": {"name": name},
            "spec": {"workflowTemplateRef": ref.dump(), "inputs": dict(inputs)}}
    doc = Document(where, body, {})
    workflow = LoadedResource(parse_resource(body, doc), doc)
    return _bundle([*(r for r in loaded if not isinstance(r.resource, Workflow)), workflow], name, {}, where)


def child_bundle(parent: Bundle, ref: TemplateRef, inputs: Mapping[str, Any], name: str,
                 annotations: Mapping[str, str]) -> Bundle:
    """The Bundle of a workflow step's child run: a new Workflow ``name`` made from the template ``ref`` names in
    the parent's catalog (the same manifests), with ``inputs``, the parent's budgetRef and its labels (but
    agentflow.dev/ ones): the Budgets that count the parent's calls count the child's. ManifestError with
    every problem, on the child's fields (``spec.inputs.KEY``, ``spec.workflowTemplateRef.name``)."""
    where = f"Workflow/{name}"
    spec: dict[str, Any] = {"workflowTemplateRef": ref.dump(), "inputs": dict(inputs)}
    if parent.workflow.spec.budget_ref is not None:
        spec["budgetRef"] = parent.workflow.spec.budget_ref.dump()
    labels = {k: v for k, v in parent.workflow.metadata.labels.items() if not k.startswith("agentflow.dev/")}
    body = {"apiVersion": API_VERSION, "kind": "Workflow",
            "metadata": {"name": name, "labels": labels, "annotations": dict(annotations)}, "spec": spec}
    doc = Document(where, body, {})
    catalog = parent.catalog
    resources = [r for table in (catalog.agents, catalog.prompts, catalog.policies, catalog.budgets, catalog.templates,
                                 catalog.schedules, catalog.triggers, catalog.rollouts, catalog.cluster_templates)
                 for r in table.values()]
    loaded = [LoadedResource(r, Document(where, {}, {})) for r in resources]
    return _bundle([*loaded, LoadedResource(parse_resource(body, doc), doc)], name, {}, where)


def bundle_of(run_dir: RunDir) -> Bundle:
    """The manifests a run was started with (its family steps bound to the versions it got)."""
    name = run_dir.meta.get("workflow")
    loaded, problems = validate_documents(parse_yaml(run_dir.manifests_yaml, str(run_dir.path / "manifests.yaml")))
    if problems:
        raise ManifestError(problems)
    bundle = _bundle(loaded, name, {}, str(run_dir.path))
    prompts = run_dir.meta.get("prompts") or {}
    return dataclasses.replace(bundle, prompts={k: Choice.from_dict(v) for k, v in prompts.items()})


def bind_prompts(bundle: Bundle, run_id: str, recorded: Mapping[str, Choice] | None = None) -> Bundle:
    """The bundle of run ``run_id``: each step referring to a prompt family bound to the version the run gets
    (agentflow.prompts.rollout: ``recorded`` choices kept, the others decided from the run id), its manifests
    re-written so that the run's stored manifests, step subprocesses and resumes read the same version."""
    try:
        choices = choices_for(bundle.workflow, bundle.catalog.prompts, run_id, recorded,
                              bundle.catalog.rollouts)
    except RolloutError as exc:
        raise SessionError(f"Workflow {bundle.workflow.metadata.name!r}: {exc}") from None
    if not choices:
        return bundle
    workflow = bind(bundle.workflow, choices)
    bodies = list(yaml.safe_load_all(bundle.manifests_yaml))
    bodies = [workflow.dump() if b.get("kind") == "Workflow" and b["metadata"]["name"] == workflow.metadata.name
              else b for b in bodies]
    text = yaml.dump_all(bodies, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                         allow_unicode=True)
    return Bundle(workflow, bundle.catalog, text, choices)


def _key(doc: Document) -> tuple[str, str]:
    body = doc.body if isinstance(doc.body, Mapping) else {}
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return str(body.get("kind")), str(name)


def what_if_bundle(run_dir: RunDir, paths: Sequence[str | Path] | None, inputs: Mapping[str, Any],
                   file_roots: Sequence[str | Path] = ()) -> Bundle:
    """The manifests of a what-if run of ``run_dir``: the ones it ran with, where the objects ``paths`` hold
    replace theirs (by kind and name; a Workflow replaces its Workflow, so a changed PromptVersion alone is
    enough), and the inputs it ran with (its --input values too) unless ``inputs`` gives new ones. A recorded
    input the new Workflow does not declare is dropped."""
    original = parse_yaml(run_dir.manifests_yaml, str(run_dir.path / "manifests.yaml"))
    recorded = bundle_of(run_dir).workflow.spec.inputs
    changed = load_documents(paths) if paths else []
    keys = {_key(d) for d in changed}
    new_workflow = any(kind == "Workflow" for kind, _ in keys)
    kept = [d for d in original if _key(d) not in keys and not (new_workflow and _key(d)[0] == "Workflow")]
    loaded, problems = validate_documents(kept + changed)
    problems += referenced_file_problems(loaded, file_roots)
    if problems:
        raise ManifestError(problems)
    loaded, problems = inline_module_files(loaded)
    if problems:
        raise ManifestError(problems)
    where = ", ".join([str(run_dir.path)] + [str(p) for p in paths or []])
    workflows = [r.resource for r in loaded if isinstance(r.resource, Workflow)]
    if len(workflows) == 1:
        known, open_schema = known_inputs(workflows[0])
        recorded = {k: v for k, v in recorded.items() if open_schema or k in known}
    return _bundle(loaded, None, {**recorded, **inputs}, where)


def new_run_id(workflow: str) -> str:
    return f"{workflow[:40]}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


AUDIT_FILE = "audit.jsonl"
"""The local runner's audit chain, in the state directory (``agentflow audit verify --file``)."""


def container_tools(bundle: Bundle) -> list[ToolSpec]:
    """The container tools the Workflow's tool steps are granted (each once)."""
    found: dict[str, ToolSpec] = {}
    for _, step in tool_steps(bundle.workflow.spec):
        try:
            grant = decide_tool(step, bundle.catalog)
        except ToolDenied:
            continue
        if grant.tool.container is not None:
            found.setdefault(grant.tool.name, grant.tool)
    return list(found.values())


def container_sandbox(bundle: Bundle, env: Mapping[str, str]) -> ContainerSandbox:
    """How this run's container tools run (agentflow.tools.sandbox); without any, nothing is probed.

    SessionError when AGENTFLOW_CONTAINER_ISOLATION is not a mode, or is bwrap and bubblewrap cannot run."""
    if not container_tools(bundle):
        return ContainerSandbox(None, "the workflow has no container tools")
    try:
        return choose_sandbox(env)
    except (ValueError, SandboxUnavailable) as exc:
        raise SessionError(str(exc)) from None


def run_warnings(bundle: Bundle, sandbox: ContainerSandbox) -> list[str]:
    """What a run must be told once before it starts (container tools running unisolated)."""
    try:
        user = f"{getpass.getuser()} (uid {os.getuid()})"
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    warning = sandbox.warning(container_tools(bundle), user)
    return [warning] if warning else []


def make_executor(bundle: Bundle, kind: str, env: Mapping[str, str] | None = None,
                  state_dir: str | Path | None = None, sandbox: ContainerSandbox | None = None,
                  tracing: Tracing | None = None, *, depth: int = 0,
                  max_depth: int = DEFAULT_WORKFLOW_DEPTH, ledger: BudgetLedger | None = None) -> Executor:
    """The executor of a local run. Every model call goes through an in-process Gateway (the Budgets of the
    manifests on a MemoryLedger, the response cache, the router) over the Provider the environment selects,
    like a step pod's calls go through the operator's gateway. ``inprocess``: attempts run in this process;
    ``subprocess``: each attempt in a child process that calls the same gateway over HTTP on 127.0.0.1.

    With ``state_dir``, PII tokens use the state directory's key (AGENTFLOW_PII_KEY wins) and the run's sealed
    token map, and model calls, policy decisions, redactions and injection findings go to its audit chain
    (AUDIT_FILE). ``sandbox``: how container tools run (default: :func:`container_sandbox` of ``env``).
    ``tracing``: the gateway's spans (model calls, budget reservations, memory operations) go there.

    A Workflow with workflow steps gets a SubWorkflowExecutor around that executor: each attempt of one runs its
    template as a child run (agentflow.runner.subworkflows), ``depth`` deep (this run's), at most ``max_depth``.
    ``ledger``: the Budgets' spend (a new MemoryLedger without one); a child run's gateway shares its parent's,
    so a Budget counts the parent's and the children's calls together."""
    ledger = MemoryLedger() if ledger is None else ledger
    inner = _executor(bundle, kind, os.environ if env is None else env, state_dir, sandbox, tracing, ledger)
    if not has_workflow_steps(bundle.workflow.spec):
        return inner
    from .subworkflows import SubWorkflowExecutor

    def child(child_bundle: Bundle, child_depth: int) -> Executor:
        return make_executor(child_bundle, kind, env, state_dir, sandbox, tracing, depth=child_depth,
                             max_depth=max_depth, ledger=ledger)

    return SubWorkflowExecutor(inner, bundle, child, state_dir=state_dir, depth=depth, max_depth=max_depth,
                               tracing=tracing)


def has_workflow_steps(spec: WorkflowSpec) -> bool:
    """Whether any step of ``spec`` (DAG, states, tree leaves, fallback machines) is a workflow step."""
    return any(step.kind is StepKind.workflow for _, step in spec_steps(spec))


def _executor(bundle: Bundle, kind: str, env: Mapping[str, str], state_dir: str | Path | None,
              sandbox: ContainerSandbox | None, tracing: Tracing | None, ledger: BudgetLedger) -> Executor:
    """make_executor's executor of the attempts of every kind but workflow steps."""
    if sandbox is None:
        sandbox = container_sandbox(bundle, env)
    if kind not in ("inprocess", "subprocess"):
        raise SessionError(f"--executor {kind!r}: expected inprocess or subprocess")
    try:
        provider = provider_from_env(env)
    except ValueError as exc:
        raise SessionError(str(exc)) from None
    audit = JsonlAuditLog(Path(state_dir) / AUDIT_FILE) if state_dir is not None else None
    memory: dict[str, Any] = {}
    if state_dir is not None:  # the agents' memory: facts in the state dir's SQLite file, past runs from its journals
        memory_file = default_memory_path(Path(state_dir))
        memory = {"memory_store": lambda embedder: SqliteMemoryStore(memory_file, embedder, audit=audit),
                  "episodes": LocalEpisodes(RunStore(Path(state_dir)))}
    models = local_gateway(bundle.workflow, bundle.catalog, provider, ledger=ledger, audit=audit, tracing=tracing,
                           **memory)
    if kind == "subprocess":  # the children run container tools as decided here, not by probing again
        return SubprocessExecutor(bundle.manifests_yaml, bundle.workflow.metadata.name,
                                  gateway=LoopbackGateway(models), env={**env, ISOLATION_ENV: sandbox.mode})
    security = SecurityContext()
    if state_dir is not None:
        try:
            keys = RunKeys.from_env(env, state_dir)
        except ValueError as exc:
            raise SessionError(str(exc)) from exc
        security = SecurityContext(keys=keys, store=LocalTokenMapStore(state_dir))
    return InProcessExecutor(StepServices(bundle.catalog, bundle.workflow.spec, models,
                                          ToolRunner(container_sandbox=sandbox, tracing=tracing), security, audit,
                                          prices=provider.prices))


def tracing_from_env(env: Mapping[str, str]) -> Tracing:
    """The local runner's tracing: on when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set; content
    (AGENTFLOW_TRACE_CONTENT=true) redacted by agentflow.security.pii. SessionError naming a bad setting."""
    try:
        settings = TraceSettings.from_env(env, service_name="agentflow-runner")
    except ValueError as exc:
        raise SessionError(str(exc)) from None
    if not settings.enabled:
        return Tracing.off()
    return Tracing.build(settings, redact=text_redactor() if settings.content else None)


def create_run(store: RunStore, bundle: Bundle, sources: Sequence[str | Path],
               warnings: Sequence[str] = (), run_id: str | None = None) -> RunDir:
    """A new run directory; ``warnings`` (run_warnings) are kept in its meta.json. ``run_id``: the id the
    bundle was bound with (bind_prompts); without it a new id, and the bundle is bound here."""
    if run_id is None:
        run_id = new_run_id(bundle.workflow.metadata.name)
        bundle = bind_prompts(bundle, run_id, bundle.prompts)
    meta: dict[str, Any] = {
        "runId": run_id,
        "workflow": bundle.workflow.metadata.name,
        "created": time.time(),
        "sources": [str(s) for s in sources],
        "seed": secrets.randbits(32),
    }
    if warnings:
        meta["warnings"] = list(warnings)
    if bundle.prompts:
        meta["prompts"] = {k: c.to_dict() for k, c in bundle.prompts.items()}
    return store.create(run_id, bundle.manifests_yaml, meta)


MAX_PARALLEL_ENV = "AGENTFLOW_MAX_PARALLEL"


def max_parallel_from(value: str | int | None, env: Mapping[str, str]) -> int:
    """The runner's cap on attempts running at once: ``value`` (--max-parallel), else AGENTFLOW_MAX_PARALLEL,
    else DEFAULT_MAX_PARALLEL; SessionError naming the flag or variable when it is not 1 to MAX_FANOUT_ITEMS."""
    where, raw = ("--max-parallel", value) if value is not None else (MAX_PARALLEL_ENV, env.get(MAX_PARALLEL_ENV))
    if raw is None or raw == "":
        return DEFAULT_MAX_PARALLEL
    try:
        cap = int(raw)
    except ValueError:
        raise SessionError(f"{where}: expected a whole number of attempts, got {raw!r}") from None
    if not 1 <= cap <= MAX_FANOUT_ITEMS:
        raise SessionError(f"{where}: {cap} is out of range; give 1 to {MAX_FANOUT_ITEMS}")
    return cap


def plan_of(bundle: Bundle, max_parallel: int | None = None) -> Plan:
    """The Plan of a bundle. ``max_parallel``: the runner's cap (the lower of it and spec.parallelism applies;
    a run keeps the one recorded when it started)."""
    # Tool steps whose granted tool has requiresApproval pause for a human (agentflow.validation.grants).
    # llm steps whose Agent has tools or delegates run an agent loop (the same grants).
    return compile_plan(bundle.workflow, approval_gates(bundle.workflow.spec, bundle.catalog),
                        max_parallel=max_parallel, loops=agent_loops(bundle.workflow.spec, bundle.catalog),
                        prompts={k: c.to_dict() for k, c in bundle.prompts.items()})


async def drive(run_dir: RunDir, bundle: Bundle, executor: Executor, observer: Observer | None = None,
                *, wait_for_approvals: bool = True, max_parallel: int | None = DEFAULT_MAX_PARALLEL,
                tracing: Tracing | None = None) -> Run:
    """Drive a run to its end (or until it waits for a human, without ``wait_for_approvals``); with
    ``tracing``, its spans (agentflow.telemetry) are exported as its journal grows."""
    local = LocalRun(run_dir, plan_of(bundle, max_parallel), executor, seed=int(run_dir.meta.get("seed", 0)),
                     observer=observer, wait_for_approvals=wait_for_approvals, tracing=tracing)
    try:
        return await local.drive()
    finally:
        close = getattr(executor, "aclose", None)
        if close is not None:
            await close()


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
