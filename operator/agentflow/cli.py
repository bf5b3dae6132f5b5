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

from .models import ManifestError
from .runner import session
from .runner.history import diff, history
from .runner.progress import Progress, print_summary, summary
from .runner.replay import ReplayError, WhatIfExecutor, replay_exact
from .runner.store import RunStore, StoreError

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


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(session.parse_input(i) for i in args.input or [])


def _progress_mode(args: argparse.Namespace) -> str:
    if args.json:
        return "quiet"
    if args.progress != "auto":
        return str(args.progress)
    return "live" if sys.stdout.isatty() else "lines"


def _finish(run: Any, args: argparse.Namespace) -> int:
    if args.json:
        _print_json(summary(run))
    else:
        print_summary(run, sys.stdout)
    if not run.finished:
        waiting = [n.id for n in run.nodes.values() if n.phase == "Waiting"]
        if not args.json:
            print(f"\nrun {run.run_id} waits for approval of {', '.join(waiting)}: "
                  f"agentflow approve {run.run_id} STEP (or --reject), then agentflow resume {run.run_id}")
        return EXIT_WAITING
    return EXIT_OK if run.phase == "Succeeded" else EXIT_RUN_FAILED


async def _drive(run_dir: Any, bundle: session.Bundle, executor: Any, args: argparse.Namespace) -> Any:
    with Progress(_progress_mode(args), sys.stderr if args.json else sys.stdout) as progress:
        return await session.drive(run_dir, bundle, executor, progress, wait_for_approvals=not args.no_wait)


def cmd_run(args: argparse.Namespace) -> int:
    bundle = session.load_bundle(args.files, args.workflow, _inputs(args))
    executor = session.make_executor(bundle, args.executor, state_dir=args.state_dir)
    run_dir = session.create_run(_store(args), bundle, args.files)
    if not args.json:
        print(f"run {run_dir.run_id} (journal: {run_dir.path / 'journal.jsonl'})")
    return _finish(asyncio.run(_drive(run_dir, bundle, executor, args)), args)


def cmd_resume(args: argparse.Namespace) -> int:
    run_dir = _store(args).resolve(args.run)
    bundle = session.bundle_of(run_dir)
    executor = session.make_executor(bundle, args.executor, state_dir=args.state_dir)
    return _finish(asyncio.run(_drive(run_dir, bundle, executor, args)), args)


def cmd_validate(args: argparse.Namespace) -> int:
    from .validation import validate_paths

    loaded, problems = validate_paths(args.files)
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
    bundle = (session.load_bundle(args.manifests, None, _inputs(args)) if args.manifests
              else session.bundle_of(original))
    if args.input and not args.manifests:
        bundle = session.load_bundle([original.path / "manifests.yaml"], original.meta.get("workflow"), _inputs(args))
    plan = session.plan_of(bundle)
    names = plan.steps if plan.mode == "dag" else plan.states
    if args.from_step not in names:
        raise session.SessionError(f"--from-step {args.from_step!r}: no such step; steps: {', '.join(names)}")
    live = session.make_executor(bundle, args.executor, state_dir=args.state_dir)
    executor = WhatIfExecutor(events, live, plan, args.from_step)
    run_dir = session.create_run(store, bundle, [str(original.path)])
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
        print(f"  ~ {c.node}.{c.field}: {json.dumps(c.before, default=str)[:80]} -> "
              f"{json.dumps(c.after, default=str)[:80]}")
    if result.outputs[0] != result.outputs[1]:
        print(f"outputs: {json.dumps(result.outputs[0], default=str)[:200]}\n      -> "
              f"{json.dumps(result.outputs[1], default=str)[:200]}")


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
    try:
        from .k8s.kube import Kube
        from .services import approvals
    except ImportError as exc:
        print(f"agentflow {args.command}: acting on the cluster needs the operator extra "
              f"(pip install 'agentflow[operator]'): {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def act() -> tuple[str, dict[str, Any]]:
        kube, context_namespace = Kube.from_kubeconfig(args.kubeconfig)
        namespace = args.namespace or context_namespace
        try:
            if cancel:
                return namespace, await approvals.cancel(kube, namespace, args.run)
            return namespace, await approvals.decide(kube, namespace, args.run, args.step, approved=not args.reject,
                                                     by=args.by or _user(), reason=args.reason or "")
        finally:
            kube.close()

    try:
        namespace, patch = asyncio.run(act())
    except (approvals.ApprovalError, approvals.KubeError) as exc:
        print(f"agentflow {args.command}: {exc}", file=sys.stderr)
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
    run_dir = _store(args).resolve(args.run)
    report = run_dir.verify()
    if args.json:
        _print_json({"run": run_dir.run_id, "ok": report.ok, "checked": report.checked, "badSeq": report.bad_seq,
                     "problem": report.problem})
    else:
        print(f"journal of {run_dir.run_id}: " + ("intact" if report.ok else f"TAMPERED: {report.problem}") +
              f" ({report.checked} records)")
    return EXIT_OK if report.ok else EXIT_RUN_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentflow", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", default=os.environ.get("AGENTFLOW_STATE_DIR", ".agentflow"),
                        help="where local runs are kept (default .agentflow)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("operator", help="run the Kubernetes operator (see: agentflow operator --help)", add_help=False)
    sub.add_parser("step", help="run one step attempt inside a step pod (used by the operator)", add_help=False)
    sub.add_parser("gateway", help="run the OpenAI-compatible LLM gateway (see: agentflow gateway --help)",
                   add_help=False)
    sub.add_parser("cost", help="estimate a workflow's cost, or report spend (see: agentflow cost --help)",
                   add_help=False)
    sub.add_parser("audit", help="verify or export the audit chain (see: agentflow audit --help)", add_help=False)

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

    p = add("run", cmd_run, "run a Workflow manifest locally, with no cluster")
    p.add_argument("files", nargs="+", help="YAML files or folders with the Workflow and what it refers to")
    p.add_argument("--workflow", help="which Workflow, when the files hold several")
    p.add_argument("--input", action="append", metavar="KEY=VALUE", help="override an input (value read as YAML)")
    driving(p)
    p = add("resume", cmd_resume, "continue an interrupted run from its journal")
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    driving(p)
    p = add("validate", cmd_validate, "check manifests and report every problem with its file, line and field")
    p.add_argument("files", nargs="+")
    p = add("replay", cmd_replay, "re-run a run from its journal (exact), or from a step with changes (what-if)")
    p.add_argument("run")
    p.add_argument("--from-step", help="run this step and what follows live; earlier steps use recorded results")
    p.add_argument("--manifests", nargs="+", help="changed manifests for a what-if run (e.g. an edited prompt)")
    p.add_argument("--input", action="append", metavar="KEY=VALUE", help="changed input for a what-if run")
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
    p.add_argument("--by", help="who decides (default: your user name)")
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
    p = add("verify", cmd_verify, "check a run's journal hash chain for tampering")
    p.add_argument("run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The cluster-side commands have flags of their own and need the operator extra.
    if argv[:1] == ["operator"]:
        from .controller.main import main as operator_main

        return operator_main(argv[1:])
    if argv[:1] == ["step"]:
        from .runtime.step import main as step_main

        return step_main(argv[1:])
    if argv[:1] == ["gateway"]:
        from .commands.gateway import main as gateway_main

        return gateway_main(argv[1:])
    if argv[:1] == ["cost"]:
        from .commands.cost import main as cost_main

        return cost_main(argv[1:])
    if argv[:1] == ["audit"]:
        from .commands.audit import main as audit_main

        return audit_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
    except KeyboardInterrupt:
        print("\ninterrupted; the journal is intact: agentflow resume latest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
