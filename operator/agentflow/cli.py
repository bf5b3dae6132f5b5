"""`agentflow`: run, validate, replay, diff and steer workflows from a terminal.

Exit codes: 0 the command did what was asked (a run Succeeded); 1 a run
ended Failed or Cancelled, or a replay diverged; 2 bad input (manifests,
flags, unknown runs) with every problem printed; 3 a run waits for an
approval (with --no-wait).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engine.history import diff, history, where_they_differ
from .models import ManifestError
from .models.limits import DEFAULT_WORKFLOW_DEPTH, MAX_WORKFLOW_DEPTH, workflow_depth
from .runner import session
from .runner.loop import RunStuck
from .runner.progress import Progress, print_summary, summary
from .runner.replay import ReplayError, WhatIfExecutor, replay_exact
from .runner.store import RunStore, StoreError
from .telemetry import Tracing

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_WAITING = 0, 1, 2, 3


def _user() -> str:
    try:
        return os.environ.get("AGENTFLOW_USER") or getpass.getuser()
    except Exception:
        return "unknown"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _store(args: argparse.Namespace) -> RunStore:
    return RunStore(Path(args.state_dir))


WRITING_COMMANDS = frozenset({"run", "replay", "resume", "approve", "cancel"})
"""The commands that write into --state-dir (it is made when missing)."""


def _check_args(args: argparse.Namespace) -> None:
    """SessionError naming the flag, before anything is created: --max-parallel, --state-dir."""
    if hasattr(args, "max_parallel"):  # the flag, else AGENTFLOW_MAX_PARALLEL
        session.max_parallel_from(args.max_parallel, os.environ)
    state_dir = getattr(args, "state_dir", None)
    if state_dir is None:
        return
    path = Path(state_dir)
    if path.exists() and not path.is_dir():
        raise session.SessionError(f"--state-dir {state_dir}: is a file, not a folder")
    if args.command in WRITING_COMMANDS:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise session.SessionError(f"--state-dir {state_dir}: cannot make the folder: "
                                       f"{exc.strerror or exc}") from None


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(session.parse_input(i) for i in args.input or [])


def _file_roots(args: argparse.Namespace) -> list[Path]:
    """Where the files manifests name may be besides their own folders: --allow-files-under, AGENTFLOW_FILE_ROOTS."""
    from .loader import file_roots_from_env

    return [Path(p) for p in getattr(args, "allow_files_under", None) or []] + file_roots_from_env(os.environ)


def _progress_mode(args: argparse.Namespace) -> str:
    if args.json:
        return "quiet"
    if args.progress != "auto":
        return str(args.progress)
    return "live" if sys.stdout.isatty() else "lines"


def _env(args: argparse.Namespace) -> dict[str, str]:
    """The environment the run's executor is built from, with --container-isolation applied."""
    from .tools.sandbox import ISOLATION_ENV

    env = dict(os.environ)
    if getattr(args, "container_isolation", None):
        env[ISOLATION_ENV] = args.container_isolation
    return env


def _workflow_depth(text: str) -> int:
    """--max-workflow-depth (agentflow.models.limits.workflow_depth)."""
    try:
        return workflow_depth(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _executor(bundle: session.Bundle, args: argparse.Namespace,
              tracing: Tracing | None = None) -> tuple[Any, list[str]]:
    """The run's executor and the warnings to say once (printed here to stderr)."""
    env = _env(args)
    sandbox = session.container_sandbox(bundle, env)
    warnings = session.run_warnings(bundle, sandbox)
    for warning in warnings:
        print(f"agentflow: warning: {warning}", file=sys.stderr)
    return session.make_executor(bundle, args.executor, env, state_dir=args.state_dir, sandbox=sandbox,
                                 tracing=tracing,
                                 max_depth=getattr(args, "max_workflow_depth", DEFAULT_WORKFLOW_DEPTH)), warnings


def _finish(run: Any, args: argparse.Namespace, warnings: Sequence[str] = ()) -> int:
    if args.json:
        _print_json({**summary(run), **({"warnings": list(warnings)} if warnings else {})})
    else:
        print_summary(run, sys.stdout)
        for warning in warnings:
            print(f"warning: {warning}")
    if not run.finished:
        waiting = [n.id for n in run.nodes.values() if n.phase == "Waiting"]
        if not args.json:
            print(f"\nrun {run.run_id} waits for approval of {', '.join(waiting)}: "
                  f"agentflow approve {run.run_id} STEP (or --reject), then agentflow resume {run.run_id}")
        return EXIT_WAITING
    return EXIT_OK if run.phase == "Succeeded" else EXIT_RUN_FAILED


async def _drive(run_dir: Any, bundle: session.Bundle, executor: Any, args: argparse.Namespace,
                 tracing: Tracing | None = None) -> Any:
    cap = session.max_parallel_from(args.max_parallel, os.environ)
    with Progress(_progress_mode(args), sys.stderr if args.json else sys.stdout) as progress:
        return await session.drive(run_dir, bundle, executor, progress, wait_for_approvals=not args.no_wait,
                                   max_parallel=cap, tracing=tracing)


TRACE_FLUSH_SECONDS = 2.0
"""How long a finished local run waits for its last spans to be exported (an unreachable collector: no longer)."""


def cmd_run(args: argparse.Namespace) -> int:
    bundle = session.load_bundle(args.files, args.workflow, _inputs(args), _file_roots(args))
    run_id = session.new_run_id(bundle.workflow.metadata.name)
    bundle = session.bind_prompts(bundle, run_id)  # the prompt family versions this run gets
    tracing = session.tracing_from_env(os.environ)
    try:
        executor, warnings = _executor(bundle, args, tracing)
        run_dir = session.create_run(_store(args), bundle, args.files, warnings, run_id=run_id)
        if not args.json:
            print(f"run {run_dir.run_id} (journal: {run_dir.path / 'journal.jsonl'})")
        return _finish(asyncio.run(_drive(run_dir, bundle, executor, args, tracing)), args, warnings)
    finally:
        tracing.shutdown(TRACE_FLUSH_SECONDS)


def cmd_resume(args: argparse.Namespace) -> int:
    run_dir = _store(args).resolve(args.run)
    bundle = session.bundle_of(run_dir)
    tracing = session.tracing_from_env(os.environ)
    try:
        executor, warnings = _executor(bundle, args, tracing)
        return _finish(asyncio.run(_drive(run_dir, bundle, executor, args, tracing)), args, warnings)
    finally:
        tracing.shutdown(TRACE_FLUSH_SECONDS)


def cmd_validate(args: argparse.Namespace) -> int:
    from .loader import validate_paths

    loaded, problems = validate_paths(args.files, _file_roots(args))
    if args.json:
        _print_json({"ok": not problems, "resources": [f"{r.resource.kind}/{r.resource.metadata.name}"
                                                        for r in loaded], "problems": session.problems_json(problems)})
    elif problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{len(problems)} problem(s)", file=sys.stderr)
    else:
        for r in loaded:
            print(f"ok  {r.resource.kind}/{r.resource.metadata.name}  ({r.doc.source})")
    return EXIT_USAGE if problems else EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    store = _store(args)
    original = store.resolve(args.run)
    events = [r.event for r in original.read_records()]
    if args.from_step is None:
        if args.manifests or args.input:
            raise session.SessionError("--manifests and --input change the run: give --from-step STEP as well")
        bundle = session.bundle_of(original)
        run, _, result = replay_exact(session.plan_of(bundle), original.run_id, events)
        report = {"run": original.run_id, "mode": "exact", "phase": run.phase, **result.to_dict()}
        if args.json:
            _print_json(report)
        else:
            verdict = "same path, same outputs" if result.same_path_and_outputs else "DIVERGED"
            print(f"replay of {original.run_id}: {verdict}; phase {run.phase}; no model or tool was called")
            for c in result.changes:
                print(f"  {c.node}.{c.field}: {c.before!r} -> {c.after!r}")
            for n in result.only_in_a:
                print(f"  only in the original: {n}")
            for n in result.only_in_b:
                print(f"  only in the replay: {n}")
        return EXIT_OK if result.same_path_and_outputs else EXIT_RUN_FAILED
    bundle = session.what_if_bundle(original, args.manifests, _inputs(args), _file_roots(args))
    # the what-if run gets the prompt versions the original got
    run_id = session.new_run_id(bundle.workflow.metadata.name)
    bundle = session.bind_prompts(bundle, run_id, session.bundle_of(original).prompts)
    plan = session.plan_of(bundle)
    names = plan.units()
    if args.from_step not in names:
        raise session.SessionError(f"--from-step {args.from_step!r}: no such step; steps: {', '.join(names)}")
    live, _ = _executor(bundle, args)
    executor = WhatIfExecutor(events, live, plan, args.from_step)
    run_dir = session.create_run(store, bundle, [str(original.path)], run_id=run_id)
    run = asyncio.run(_drive(run_dir, bundle, executor, args))
    result = diff(history(events), history([r.event for r in run_dir.read_records()]))
    if args.json:
        _print_json({"run": run_dir.run_id, "replayOf": original.run_id, "mode": "what-if",
                     "liveSteps": executor.live_calls, "phase": run.phase, **result.to_dict()})
    else:
        print_summary(run, sys.stdout)
        print(f"\nwhat-if {run_dir.run_id} from step {args.from_step} (recorded before it, live after: "
              f"{', '.join(executor.live_calls) or 'none'})")
        _print_diff(result)
    return EXIT_OK if run.phase == "Succeeded" else EXIT_RUN_FAILED


def _print_diff(result: Any) -> None:
    print(f"phase: {result.phase[0]} -> {result.phase[1]}")
    print(f"cost:  ${result.cost_usd[0]:.6f} -> ${result.cost_usd[1]:.6f}")
    if result.seconds[0] is not None and result.seconds[1] is not None:
        print(f"time:  {result.seconds[0]:.3f}s -> {result.seconds[1]:.3f}s")
    for n in result.only_in_a:
        print(f"  - {n} (only in A)")
    for n in result.only_in_b:
        print(f"  + {n} (only in B)")
    for c in result.changes:
        before, after = where_they_differ(json.dumps(c.before, default=str), json.dumps(c.after, default=str))
        print(f"  ~ {c.node}.{c.field}: {before} -> {after}")
    if result.outputs[0] != result.outputs[1]:
        before, after = where_they_differ(json.dumps(result.outputs[0], default=str),
                                          json.dumps(result.outputs[1], default=str), 200)
        print(f"outputs: {before}\n      -> {after}")


def cmd_diff(args: argparse.Namespace) -> int:
    store = _store(args)
    a, b = store.resolve(args.run_a), store.resolve(args.run_b)
    result = diff(history(r.event for r in a.read_records()), history(r.event for r in b.read_records()))
    if args.json:
        _print_json({"a": a.run_id, "b": b.run_id, **result.to_dict()})
    else:
        print(f"A {a.run_id}\nB {b.run_id}")
        _print_diff(result)
    return EXIT_OK


def _in_cluster(args: argparse.Namespace) -> bool:
    """approve/cancel act on a Workflow in the cluster when --namespace or --kubeconfig is given."""
    return bool(args.namespace or args.kubeconfig)


def _cluster_steer(args: argparse.Namespace, cancel: bool) -> int:
    if not cancel and args.by:
        print(f"agentflow {args.command}: --by is for local runs; on a cluster the decision names the Kubernetes "
              "user of your kubeconfig (the operator's admission webhook records it)", file=sys.stderr)
        return EXIT_USAGE
    from .k8s.kube import KubeClient, user_words  # without the operator extra: main says which to install
    from .services import approvals

    async def act() -> tuple[str, dict[str, Any]]:
        kube, context_namespace = KubeClient.from_kubeconfig(args.kubeconfig)
        namespace = args.namespace or context_namespace
        try:
            if cancel:
                return namespace, await approvals.cancel(kube, namespace, args.run)
            return namespace, await approvals.decide(kube, namespace, args.run, args.step, approved=not args.reject,
                                                     reason=args.reason or "")
        finally:
            kube.close()

    try:
        namespace, patch = asyncio.run(act())
    except approvals.ApprovalError as exc:
        print(f"agentflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except approvals.KubeError as exc:  # as the user of the kubeconfig: their RBAC, or the webhook, refused
        print(f"agentflow {args.command}: {user_words(exc)}", file=sys.stderr)
        return EXIT_USAGE
    where = f"workflow {namespace}/{args.run}"
    if args.json:
        _print_json({"workflow": args.run, "namespace": namespace, "patch": patch})
    elif cancel:
        print(f"cancel requested for {where} (spec.cancel=true); the operator stops it")
    else:
        print(f"{args.step} {'rejected' if args.reject else 'approved'} in {where}; the operator picks it up")
    return EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    if _in_cluster(args):
        return _cluster_steer(args, cancel=False)
    run_dir = _store(args).resolve(args.run)
    session.post_decision(run_dir, args.step, not args.reject, args.by or _user(), args.reason or "")
    verb = "rejected" if args.reject else "approved"
    if args.json:
        _print_json({"run": run_dir.run_id, "step": args.step, "decision": verb})
    else:
        print(f"{args.step} {verb} in run {run_dir.run_id}; the running process picks it up "
              f"(or: agentflow resume {run_dir.run_id})")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    if _in_cluster(args):
        return _cluster_steer(args, cancel=True)
    run_dir = _store(args).resolve(args.run)
    session.post_cancel(run_dir, args.by or _user(), args.reason or "")
    print(f"cancel requested for run {run_dir.run_id}")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = []
    for info in store.list_runs():
        run_dir = store.open(info.run_id)
        try:
            run = session.load_run(run_dir)
            phase, progress, cost = run.phase, "{}/{}".format(*run.progress), run.cost_usd
        except (ManifestError, StoreError, ValueError) as exc:
            phase, progress, cost = f"unreadable: {exc}", "", 0.0
        rows.append({"runId": info.run_id, "workflow": run_dir.meta.get("workflow"), "phase": phase,
                     "progress": progress, "costUsd": round(cost, 6)})
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['runId']:<60} {r['phase']:<10} {r['progress']:>7}  ${r['costUsd']:.4f}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    run_dir = _store(args).resolve(args.run)
    run = session.load_run(run_dir)
    if args.json:
        _print_json(summary(run))
    else:
        print_summary(run, sys.stdout)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    expected = None
    if args.expect_head is not None:
        from .audit.chain import Head

        try:
            expected = Head.parse(args.expect_head)
        except ValueError as exc:
            raise session.SessionError(f"--expect-head: {exc}") from None
    run_dir = _store(args).resolve(args.run)
    report = run_dir.verify(head=expected.hash if expected else None, head_seq=expected.seq if expected else None)
    if args.json:
        _print_json({"run": run_dir.run_id, "ok": report.ok, "checked": report.checked, "badSeq": report.bad_seq,
                     "problem": report.problem, "head": report.head})
    else:
        print(f"journal of {run_dir.run_id}: " + ("intact" if report.ok else f"TAMPERED: {report.problem}") +
              f" ({report.checked} records)")
        if report.ok:
            print(f"head: {report.head}")
            if expected is None:
                print("(keep this head elsewhere and pass it back with --expect-head: without it a truncated tail "
                      "or records appended later still verify)")
    return EXIT_OK if report.ok else EXIT_RUN_FAILED


# The commands with parsers of their own, and their modules (imported only for them). A module of the operator
# extra missing from the base install, whether on import (operator, gateway) or on the way (cost --postgres-dsn,
# approve --namespace), ends in one line naming the extra, never a traceback.
OWN_PARSERS: dict[str, str] = {
    "operator": ".controller.main",
    "step": ".runtime.step",
    "gateway": ".commands.gateway",
    "cost": ".commands.cost",
    "audit": ".commands.audit",
    "screen": ".commands.screen",
    "redact": ".commands.redact",
    "events": ".commands.events",
    "ui": ".commands.ui",
    "memory": ".commands.memory",
    "prompt": ".commands.prompt",
    "init": ".commands.init",
}
OPERATOR_EXTRA_MODULES = ("asyncpg", "kopf", "kubernetes", "nats")
INSTALL_OPERATOR_EXTRA = "pip install -e '.[operator]' in the repository"  # as make quickstart installs it


def operator_extra_missing(exc: ModuleNotFoundError) -> bool:
    """Whether ``exc`` is a module of the operator extra (pyproject.toml) missing from this install."""
    name = exc.name or ""
    return any(name == m or name.startswith(m + ".") for m in OPERATOR_EXTRA_MODULES)


def _needs_extra(command: str, exc: ModuleNotFoundError) -> int:
    if not operator_extra_missing(exc):
        raise exc
    print(f"agentflow {command}: this needs the operator extra (no module {exc.name!r}): {INSTALL_OPERATOR_EXTRA}",
          file=sys.stderr)
    return EXIT_USAGE


def _own_parser(command: str, argv: list[str]) -> int:
    import importlib

    try:
        module = importlib.import_module(OWN_PARSERS[command], __package__)
        return int(module.main(argv))
    except ModuleNotFoundError as exc:
        return _needs_extra(command, exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentflow", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", default=os.environ.get("AGENTFLOW_STATE_DIR", ".agentflow"),
                        help="where local runs are kept (default .agentflow)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("init", help="create a project folder from a template, runnable offline at once "
                   "(see: agentflow init --list)", add_help=False)
    sub.add_parser("operator", help="run the Kubernetes operator (see: agentflow operator --help)", add_help=False)
    sub.add_parser("step", help="run one step attempt inside a step pod (used by the operator)", add_help=False)
    sub.add_parser("gateway", help="run the OpenAI-compatible LLM gateway (see: agentflow gateway --help)",
                   add_help=False)
    sub.add_parser("cost", help="estimate a workflow's cost, or report spend (see: agentflow cost --help)",
                   add_help=False)
    sub.add_parser("audit", help="verify or export the audit chain (see: agentflow audit --help)", add_help=False)
    sub.add_parser("screen", help="score a text for prompt injection (see: agentflow screen --help)", add_help=False)
    sub.add_parser("redact", help="replace the PII in a text by tokens (see: agentflow redact --help)",
                   add_help=False)
    sub.add_parser("events", help="tail the events of runs: local journals, or the cluster's from NATS "
                   "(see: agentflow events --help)", add_help=False)
    sub.add_parser("ui", help="the console: watch runs live, act on them, design workflows "
                   "(see: agentflow ui --help)", add_help=False)
    sub.add_parser("memory", help="search, list and erase Agents' long-term memory (see: agentflow memory --help)",
                   add_help=False)
    sub.add_parser("prompt", help="run a PromptVersion's evaluation suite, show a prompt family's rollout "
                   "(see: agentflow prompt --help)", add_help=False)

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(func=func)
        return p

    def driving(p: argparse.ArgumentParser) -> None:
        p.add_argument("--executor", choices=["inprocess", "subprocess"], default="inprocess",
                       help="run steps in this process or one subprocess per attempt")
        p.add_argument("--progress", choices=["auto", "live", "lines", "none"], default="auto")
        p.add_argument("--no-wait", action="store_true", help="stop (exit 3) instead of waiting for approvals")
        p.add_argument("--container-isolation", choices=["auto", "bwrap", "off"],
                       help="how container tools run locally: auto (bubblewrap where it works, else a plain "
                       "subprocess, with a warning), bwrap (refuse to run without it), off; default: "
                       "AGENTFLOW_CONTAINER_ISOLATION, else auto")
        p.add_argument("--max-parallel", metavar="N", help="at most N attempts at once (default: "
                       "AGENTFLOW_MAX_PARALLEL, else 32; a lower spec.parallelism wins; a resumed run keeps the "
                       "cap it started with)")
        p.add_argument("--max-workflow-depth", metavar="N", type=_workflow_depth, default=DEFAULT_WORKFLOW_DEPTH,
                       help=f"how deep workflow steps may nest child runs (default {DEFAULT_WORKFLOW_DEPTH}; at most "
                            f"{MAX_WORKFLOW_DEPTH}): a workflow step of a run this deep fails instead of starting one")

    def files_under(p: argparse.ArgumentParser) -> None:
        p.add_argument("--allow-files-under", action="append", metavar="DIR",
                       help="a folder the files manifests name (wasm.module) may be in besides the manifest's own "
                            "folder; repeat for several (also: AGENTFLOW_FILE_ROOTS, separated by ':')")

    p = add("run", cmd_run, "run a Workflow manifest locally, with no cluster")
    files_under(p)
    p.add_argument("files", nargs="+", help="YAML files or folders with the Workflow and what it refers to")
    p.add_argument("--workflow", help="which Workflow, when the files hold several")
    p.add_argument("--input", action="append", metavar="KEY=VALUE", help="override an input (value read as YAML)")
    driving(p)
    p = add("resume", cmd_resume, "continue an interrupted run from its journal")
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    driving(p)
    p = add("validate", cmd_validate, "check manifests and report every problem with its file, line and field")
    p.add_argument("files", nargs="+")
    files_under(p)
    p = add("replay", cmd_replay, "re-run a run from its journal (exact), or from a step with changes (what-if)")
    p.add_argument("run")
    p.add_argument("--from-step", help="run this step and what follows live; earlier steps use recorded results")
    p.add_argument("--manifests", nargs="+", help="changed manifests for a what-if run: only the changed objects "
                   "(e.g. an edited PromptVersion) or the whole set; each replaces the run's object of its kind and "
                   "name")
    p.add_argument("--input", action="append", metavar="KEY=VALUE", help="changed input for a what-if run (the "
                   "others keep the values the run had)")
    files_under(p)
    driving(p)
    p = add("diff", cmd_diff, "compare two runs: path, outputs, cost and timing")
    p.add_argument("run_a")
    p.add_argument("run_b")
    def cluster(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", "-n", help="act on the Workflow RUN in this namespace of the cluster "
                       "(the operator's run) instead of a local run")
        p.add_argument("--kubeconfig", help="the cluster's kubeconfig (default: KUBECONFIG, ~/.kube/config); "
                       "implies the cluster, in the namespace of the current context unless --namespace")

    p = add("approve", cmd_approve, "approve (or --reject) a step that waits for a human")
    p.add_argument("run")
    p.add_argument("step", help="the waiting step's node id, e.g. review or review[2]")
    p.add_argument("--reject", action="store_true")
    p.add_argument("--by", help="local runs: who decides (default: your user name); on a cluster it is always "
                   "your Kubernetes user")
    p.add_argument("--reason", help="why")
    cluster(p)
    p = add("cancel", cmd_cancel, "cancel a run (its exit handlers still run)")
    p.add_argument("run")
    p.add_argument("--by")
    p.add_argument("--reason")
    cluster(p)
    add("runs", cmd_runs, "list local runs")
    p = add("show", cmd_show, "show a run's state from its journal")
    p.add_argument("run")
    p = add("verify", cmd_verify, "check a run's journal hash chain for tampering; prints the head to keep")
    p.add_argument("run")
    p.add_argument("--expect-head", metavar="SEQ:HASH", help="the head an earlier verify printed: the journal must "
                   "still end at that record (catches a truncated tail and records appended since)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `agentflow --state-dir DIR memory ...`: the commands with parsers of their own read the state dir from
    # AGENTFLOW_STATE_DIR (their --state-dir default), so a leading --state-dir reaches them too.
    if (argv[:1] == ["--state-dir"] and len(argv) > 2) or (argv[:1] and argv[0].startswith("--state-dir=")):
        value, rest = (argv[1], argv[2:]) if argv[0] == "--state-dir" else (argv[0].split("=", 1)[1], argv[1:])
        if rest[:1] and rest[0] in ("memory", "ui", "events", "cost", "audit", "prompt"):
            os.environ["AGENTFLOW_STATE_DIR"] = value
            argv = rest
    if argv[:1] and argv[0] in OWN_PARSERS:
        return _own_parser(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_args(args)
        return int(args.func(args))
    except ManifestError as exc:
        if getattr(args, "json", False):
            _print_json({"ok": False, "problems": session.problems_json(exc.problems)})
        else:
            for p in exc.problems:
                print(p, file=sys.stderr)
        return EXIT_USAGE
    except (session.SessionError, StoreError, ReplayError) as exc:
        print(f"agentflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunStuck as exc:
        print(f"agentflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except ModuleNotFoundError as exc:
        return _needs_extra(args.command, exc)
    except KeyboardInterrupt:
        print("\ninterrupted; the journal is intact: agentflow resume latest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
