"""`agentflow prompt eval|status`: a PromptVersion's evaluation suite run locally, and where a family stands.

::

    agentflow prompt eval NAME -f MANIFESTS [-f ...] [--json] [--parallel 4]
    agentflow prompt eval NAME --cluster [-n NS] [--kubeconfig PATH] [--timeout 1800] [--no-wait] [--json]
    agentflow prompt status FAMILY_OR_NAME -f MANIFESTS [--json]
    agentflow prompt cases NAME --run RUN [--run ...] [--step STEP] [--expect-output] [--state-dir DIR |
                           --postgres-dsn DSN -n NS] [--json]
    agentflow prompt status FAMILY_OR_NAME -n NAMESPACE [--kubeconfig PATH] [--json]

``eval`` reads the PromptVersion and the Agents (and Budgets) it needs from files or folders (as
``kubectl -f``), runs every case through the same executor and gateway as ``agentflow run`` (the offline
model ``agentflow/offline`` without a provider key: NOT a real model; a real provider with one; one model call
per case and repairs, as an llm step without an agent loop: an Agent's tools and delegates are not offered), prints a
table (or JSON) and stores the results in ``STATE_DIR/evals/NAME/``. ``status`` shows a family's versions,
the rollout split (agentflow.prompts.rollout) and each version's newest stored results; with ``-n`` (or
``--kubeconfig``) it reads the family's PromptVersions and PromptRollout from the cluster instead, and the
evaluation each version has there (status.evaluation). When a PromptRollout rolls the family out, ``status``
explains it: phase, step, weight, each online gate's numbers (samples, candidate and stable values, the test's
statistic and p-value against its level) and the last decision (agentflow.prompts.canary).

``eval --cluster`` asks the operator to run the PromptVersion's suite again on the cluster: it sets the annotation
agentflow.dev/evaluate to a new value (your kubeconfig's user needs patch on promptversions), waits for
status.evaluation to be final for it, and prints it (per-case results are in the operator's PostgreSQL:
agentflow_evaluation_cases). The operator runs the suite as a Workflow of step pods
(agentflow.services.evaluations); nothing runs on this machine.

``cases`` turns past runs' inputs into evaluation cases (agentflow.prompts.cases): the inputs of the steps that
rendered PromptVersion NAME (or --step) in each run, local runs from the state dir or, with --postgres-dsn, the
operator's runs of Workflow RUN in namespace -n (its newest run by that name), printed as YAML to paste under
spec.evaluations.cases of the next version.

Exit codes: 0 the suite passed (status: shown; eval --cluster --no-wait: asked for), 1 the suite failed its
thresholds (on the cluster also: Error, or not final within --timeout), 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..loader import file_roots_from_env, validate_paths
from ..models import Catalog, ManifestError, PromptRollout, PromptVersion, Workflow
from ..prompts.assertions import describe
from ..runner import evaluate
from ..runner.session import SessionError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
WAIT_SECONDS = 1800.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentflow prompt", description="Evaluate PromptVersions locally and "
                                     "show where a prompt family's rollout stands.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, files_required: bool = True) -> None:
        p.add_argument("-f", "--filename", dest="files", action="append", required=files_required, metavar="PATH",
                       help="a manifest file or folder (repeat for several), as kubectl -f")
        p.add_argument("--state-dir", default=os.environ.get("AGENTFLOW_STATE_DIR", ".agentflow"),
                       help="where results are kept (default .agentflow)")
        p.add_argument("--allow-files-under", action="append", metavar="DIR",
                       help="a folder the files manifests name may be in besides the manifest's own")
        p.add_argument("--json", action="store_true", help="print JSON")

    e = sub.add_parser("eval", help="run a PromptVersion's evaluation suite (exit 1 when it fails)")
    e.add_argument("name", help="the PromptVersion")
    e.add_argument("--parallel", type=int, default=4, help="cases at once (default 4)")
    e.add_argument("--cluster", action="store_true", help="run it on the cluster: the operator runs the suite "
                   "again as step pods (no -f); prints status.evaluation")
    e.add_argument("-n", "--namespace", help="with --cluster: the PromptVersion's namespace (default: the "
                   "current context's)")
    e.add_argument("--kubeconfig", help="with --cluster: the cluster's kubeconfig (default: KUBECONFIG, "
                   "~/.kube/config)")
    e.add_argument("--timeout", type=float, default=WAIT_SECONDS, metavar="SECONDS",
                   help=f"with --cluster: how long to wait for the verdict (default {WAIT_SECONDS:.0f})")
    e.add_argument("--no-wait", action="store_true", help="with --cluster: ask for the run and return")
    common(e, files_required=False)
    c = sub.add_parser("cases", help="evaluation cases from past runs' inputs (YAML for spec.evaluations.cases)")
    c.add_argument("name", help="the PromptVersion whose steps' inputs become cases")
    c.add_argument("--run", dest="runs", action="append", required=True, metavar="RUN",
                   help="a local run id (unique prefix, or latest), or with --postgres-dsn a Workflow's name; repeat")
    c.add_argument("--step", dest="steps", action="append", metavar="STEP",
                   help="take these steps' inputs (default: the llm steps that rendered NAME); repeat")
    c.add_argument("--expect-output", action="store_true",
                   help="add an equals assertion of the output each step produced then (regression cases)")
    c.add_argument("--state-dir", default=os.environ.get("AGENTFLOW_STATE_DIR", ".agentflow"),
                   help="where local runs are (default .agentflow)")
    c.add_argument("--postgres-dsn", default=os.environ.get("AGENTFLOW_POSTGRES_DSN"), metavar="DSN",
                   help="read the operator's runs from this PostgreSQL (default AGENTFLOW_POSTGRES_DSN) instead")
    c.add_argument("-n", "--namespace", help="with --postgres-dsn: the runs' namespace")
    c.add_argument("--json", action="store_true", help="print JSON")
    s = sub.add_parser("status", help="a family's versions, its rollout split and their newest results")
    s.add_argument("name", help="a prompt family (spec.prompt) or one of its PromptVersions")
    s.add_argument("--namespace", "-n", help="read the family from this namespace of the cluster (instead of -f)")
    s.add_argument("--kubeconfig", help="the cluster's kubeconfig (default: KUBECONFIG, ~/.kube/config); implies "
                   "the cluster, in the namespace of the current context unless --namespace")
    common(s, files_required=False)
    return parser


def _catalog(args: argparse.Namespace) -> Catalog:
    roots = [Path(p) for p in args.allow_files_under or []] + file_roots_from_env(os.environ)
    loaded, problems = validate_paths(args.files, roots)
    if problems:
        raise ManifestError(problems)
    catalog = Catalog()
    for r in loaded:
        if not isinstance(r.resource, Workflow):
            catalog.add(r.resource)
    return catalog


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def cmd_eval(args: argparse.Namespace) -> int:
    if args.cluster:
        return cmd_eval_cluster(args)
    if args.namespace or args.kubeconfig or args.no_wait:
        raise SessionError("--namespace, --kubeconfig and --no-wait are for --cluster")
    if not args.files:
        raise SessionError("-f: give the manifests holding the PromptVersion and its Agents (or --cluster)")
    if args.parallel < 1:
        raise SessionError("--parallel: give 1 or more")
    catalog = _catalog(args)
    results = Path(args.state_dir) / evaluate.EVALS_DIR / args.name
    try:  # where the results go, made before the suite spends anything on models
        results.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SessionError(f"--state-dir {args.state_dir}: cannot keep results in {results}: "
                           f"{exc.strerror or exc}") from None
    eval_id, result, models = asyncio.run(evaluate.run_suite(catalog, args.name, args.state_dir,
                                                             parallel=args.parallel))
    try:
        path = evaluate.save(args.state_dir, eval_id, result, models)
    except OSError as exc:
        raise SessionError(f"the results of {eval_id} could not be kept in {results}: {exc.strerror or exc}") \
            from None
    if args.json:
        _print_json({"evalId": eval_id, "models": models, "stored": str(path), **result.to_dict()})
        return EXIT_OK if result.passed else EXIT_FAILED
    prompt = catalog.prompts[args.name]
    print(f"{eval_id}: PromptVersion {result.prompt} (family {result.family}, version {result.version}); "
          f"models: {', '.join(models) or 'none called'}")
    print(f"{'CASE':<28} {'RESULT':<6} {'SCORE':>5}  {'TOKENS':>6} {'COST $':>9} {'MS':>7}  ASSERTIONS")
    assert prompt.spec.evaluations is not None
    cases = {c.name: c for c in prompt.spec.evaluations.cases}
    for case in result.cases:
        labels = [describe(a) for a in cases[case.name].assertions]
        marks = [f"{'ok' if v.passed else 'FAIL'} {label}" + ("" if v.passed else f" ({v.detail[:60]})")
                 for v, label in zip(case.verdicts, labels, strict=False)]
        if case.error is not None:
            marks = [f"ERROR {case.error[:100]}"]
        if case.pairwise is not None:
            marks.append(f"pairwise {case.pairwise}")
        print(f"{case.name[:28]:<28} {'pass' if case.passed else 'FAIL':<6} {case.score:>5.2f}  {case.tokens:>6} "
              f"{case.cost_usd:>9.6f} {case.latency_ms:>7.1f}  {'; '.join(marks)}")
    win = f", win rate {result.win_rate:.0%}" if result.win_rate is not None else ""
    print(f"\npass rate {result.pass_rate:.0%} ({sum(c.passed for c in result.cases)}/{len(result.cases)}), "
          f"mean score {result.mean_score:.3f}{win}, {result.tokens} tokens, ${result.cost_usd:.6f}, "
          f"mean latency {result.latency_ms:.1f} ms")
    print(f"suite {'PASSED' if result.passed else 'FAILED'}" +
          ("" if result.passed else ": " + "; ".join(result.failures)) + f"  (stored: {path})")
    return EXIT_OK if result.passed else EXIT_FAILED


def cmd_eval_cluster(args: argparse.Namespace) -> int:
    if args.files:
        raise SessionError("-f is for local runs: with --cluster the operator evaluates the PromptVersion in the "
                           "cluster")
    if args.timeout <= 0:
        raise SessionError("--timeout: give a number of seconds above 0")
    from ..k8s.kube import KubeClient, KubeError  # without the operator extra: main says which to install
    from ..services import evaluations

    trigger = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"

    async def act() -> tuple[str, str, dict[str, Any] | None]:
        kube, context_namespace = KubeClient.from_kubeconfig(args.kubeconfig)
        namespace = args.namespace or context_namespace
        try:
            workflow = await evaluations.request(kube, namespace, args.name, trigger)
            if args.no_wait:
                return namespace, workflow, None
            return namespace, workflow, await evaluations.wait(kube, namespace, args.name, trigger,
                                                               timeout=args.timeout, sleep=asyncio.sleep,
                                                               clock=time.monotonic)
        finally:
            kube.close()

    try:
        namespace, workflow, status = asyncio.run(act())
    except (evaluations.EvaluationRequestError, KubeError) as exc:
        raise SessionError(str(exc)) from None
    where = f"PromptVersion {namespace}/{args.name}"
    if status is None:
        if args.json:
            _print_json({"namespace": namespace, "name": args.name, "trigger": trigger, "workflow": workflow})
        else:
            print(f"{where}: evaluation {trigger} requested; the operator runs it as Workflow {workflow}")
        return EXIT_OK
    if args.json:
        _print_json({"namespace": namespace, "name": args.name, **status})
    else:
        print(f"{where}: evaluation {status.get('phase')} (Workflow {status.get('workflow') or workflow})")
        if status.get("cases") is not None:
            win = f", win rate {status['winRate']:.0%}" if status.get("winRate") is not None else ""
            print(f"pass rate {status['passRate']:.0%} ({status['passedCases']}/{status['cases']}), mean score "
                  f"{status['meanScore']:.3f}{win}, {status['inputTokens']}+{status['outputTokens']} tokens, "
                  f"${status['costUsd']:.6f}, p50 latency {status['latencyP50Seconds']:.3f} s")
        if status.get("message"):
            print(status["message"])
    return EXIT_OK if status.get("phase") == "Passed" else EXIT_FAILED


def _workflow_of(manifests: str, where: str) -> Workflow:
    import yaml

    try:
        bodies = [b for b in yaml.safe_load_all(manifests) if isinstance(b, dict) and b.get("kind") == "Workflow"]
        return Workflow.model_validate(bodies[0])
    except (yaml.YAMLError, IndexError, ValueError) as exc:
        raise SessionError(f"{where}: the manifests it ran with hold no valid Workflow ({exc})") from None


async def _stored_runs(args: argparse.Namespace) -> list[tuple[str, list[Any], str]]:
    """(run, journal records, manifests) of each --run: local runs, or the operator's in PostgreSQL."""
    if args.postgres_dsn is None:
        from ..runner.store import RunStore, StoreError

        store = RunStore(Path(args.state_dir))
        out = []
        for ref in args.runs:
            try:
                run = store.resolve(ref)
            except StoreError as exc:
                raise SessionError(f"--run {ref}: {exc}") from None
            out.append((run.run_id, run.read_records(), run.manifests_yaml))
        return out
    if not args.namespace:
        raise SessionError("-n/--namespace: give the namespace of the runs (with --postgres-dsn)")
    from ..storage import PostgresStore, StorageError

    try:
        async with await PostgresStore.connect(args.postgres_dsn, max_size=2) as pg:
            out = []
            for ref in args.runs:
                found = await pg.recent_runs(args.namespace, limit=1, workflow=ref)
                if not found:
                    raise SessionError(f"--run {ref}: no run of Workflow {ref!r} in namespace {args.namespace!r} "
                                       "in the operator's PostgreSQL (only runs that started a step pod are kept)")
                out.append((ref, await pg.load_journal(found[0].run_uid), found[0].manifests))
            return out
    except StorageError as exc:
        raise SessionError(f"--postgres-dsn: {exc}") from None


def cmd_cases(args: argparse.Namespace) -> int:
    from ..models import EvaluationCase
    from ..prompts.cases import prompt_steps, recorded_prompts, run_cases

    if args.namespace and args.postgres_dsn is None:
        raise SessionError("-n/--namespace is for the operator's runs: give --postgres-dsn too")
    cases: list[dict[str, Any]] = []
    seen: set[str] = set()
    for run, records, manifests in asyncio.run(_stored_runs(args)):
        if run in seen:  # --run latest --run latest: the same run once
            continue
        seen.add(run)
        steps = set(args.steps or ()) or prompt_steps(_workflow_of(manifests, f"run {run}"), args.name,
                                                       recorded_prompts(records))
        if not steps:
            raise SessionError(f"run {run}: no llm step rendered PromptVersion {args.name!r}; name one with --step")
        found = run_cases(run, records, steps, expect_output=args.expect_output)
        if not found:
            raise SessionError(f"run {run}: step(s) {', '.join(sorted(steps))} never ran")
        cases.extend(found)
    for i, case in enumerate(cases):
        try:
            EvaluationCase.model_validate(case)
        except ValueError as exc:
            raise SessionError(f"case {case['name']} (cases[{i}]) is not a valid case: {exc}") from None
    if args.json:
        _print_json({"cases": cases})
    else:
        import yaml

        print(yaml.safe_dump({"cases": cases}, sort_keys=False, allow_unicode=True), end="")
    return EXIT_OK


def _family(catalog: Catalog, name: str) -> tuple[str, list[PromptVersion]]:
    family = catalog.prompts[name].spec.prompt if name in catalog.prompts else name
    versions = [p for p in catalog.prompts.values() if p.spec.prompt == family]
    if not versions:
        families = ", ".join(sorted({p.spec.prompt for p in catalog.prompts.values()})) or "none"
        raise SessionError(f"no prompt family or PromptVersion {name!r} in the manifests; families: {families}")
    return family, versions


def _cluster_catalog(args: argparse.Namespace) -> tuple[Catalog, dict[str, dict[str, Any]], str]:
    """The namespace's PromptVersions and PromptRollouts (the raw PromptVersions too: their status.evaluation)."""
    from ..k8s.kube import KubeClient, KubeError  # the operator extra; main says which to install
    from ..models import parse_resource

    async def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
        kube, context_namespace = KubeClient.from_kubeconfig(args.kubeconfig)
        namespace = args.namespace or context_namespace
        try:
            return (await kube.list_resources("promptversions", namespace),
                    await kube.list_resources("promptrollouts", namespace), namespace)
        finally:
            kube.close()

    try:
        versions, rollouts, namespace = asyncio.run(read())
    except KubeError as exc:
        raise SessionError(f"cannot read the cluster: {exc}") from None
    catalog = Catalog()
    raw: dict[str, dict[str, Any]] = {}
    for body in [*versions, *rollouts]:
        try:
            resource = parse_resource(body)
        except ManifestError:  # an invalid one says why on its own status
            continue
        catalog.add(resource)  # type: ignore[arg-type]
        raw[f"{body.get('kind')}/{resource.metadata.name}"] = body
    return catalog, raw, namespace


def _evaluation_text(row: dict[str, Any]) -> str:
    ev = row.get("eval")
    if ev is None:
        return "not evaluated"
    if "evalId" not in ev:  # the cluster's status.evaluation
        numbers = ", ".join(f"{k} {ev[k]:.3g}" for k in ("passRate", "meanScore") if isinstance(ev.get(k), float | int))
        return f"{ev.get('phase', 'Pending')}" + (f": {numbers}" if numbers else "")
    return (f"{'passed' if ev['passed'] else 'FAILED'}: pass rate {ev['passRate']:.0%}, mean score "
            f"{ev['meanScore']:.3f}" + (f", win rate {ev['winRate']:.0%}" if ev.get("winRate") is not None else "")
            + f" ({ev['evalId']})")


def rollout_lines(rollout: PromptRollout) -> list[str]:
    """The explanation of a PromptRollout, with the numbers (its status as the operator wrote it)."""
    spec, status = rollout.spec, rollout.status
    lines = [f"PromptRollout {rollout.metadata.name}: {spec.stable} -> {spec.candidate}, steps "
             + ", ".join(f"{s.weight}% (minRuns {s.min_runs}" + (f", pause {s.pause_seconds}s" if s.pause_seconds
                                                                   else "") + ")" for s in spec.steps)
             + f"; onFailure {spec.on_failure}, confidence {spec.confidence:g}, minSamples {spec.min_samples}"]
    if status is None or status.phase is None or status.observed_generation != rollout.metadata.generation:
        lines.append("  not looked at by the operator yet (candidate weight 0)")
        return lines
    step = "" if status.step_index is None else f", step {status.step_index + 1} of {len(spec.steps)}"
    lines.append(f"  phase {status.phase}{step}, candidate weight {status.weight or 0}%, runs this step: candidate "
                 f"{status.candidate_runs or 0}, stable {status.stable_runs or 0}")
    if status.gates:
        lines.append(f"  {'GATE':<18} {'VERDICT':<7} {'CANDIDATE':>12} {'STABLE':>12} {'MAX':>6} {'STAT':>8} "
                     f"{'P':>8} {'ALPHA':>7}  TEST")
        for g in status.gates:
            def num(v: float | None) -> str:
                return "-" if v is None else f"{v:.4g}"
            lines.append(f"  {g.signal:<18} {g.verdict:<7} {num(g.candidate) + f' n={g.candidate_samples}':>12} "
                         f"{num(g.stable) + f' n={g.stable_samples}':>12} {g.max_degradation:>6g} "
                         f"{num(g.statistic):>8} {num(g.p_value):>8} {num(g.alpha):>7}  {g.test}")
    elif spec.online_gates:
        lines.append("  gates: not tested yet (a step's gates are tested when it has its runs)")
    else:
        lines.append("  no online gates: steps advance on minRuns and pauseSeconds")
    if status.last_decision is not None:
        d = status.last_decision
        lines.append(f"  last decision {d.action} at {d.at} ({d.reason}): {d.message}")
    current = next((c for c in status.conditions if c.type == "Rollout"), None)
    if current is not None and status.last_decision is not None and current.message != status.last_decision.message:
        lines.append(f"  now: {current.message}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    from ..prompts.rollout import RolloutError, rollout_of

    cluster = bool(args.namespace or args.kubeconfig)
    if cluster == bool(args.files):
        raise SessionError("give the manifests (-f) or the cluster (-n NAMESPACE / --kubeconfig), one of them")
    raw: dict[str, dict[str, Any]] = {}
    where = "local"
    if cluster:
        catalog, raw, namespace = _cluster_catalog(args)
        where = f"namespace {namespace}"
    else:
        catalog = _catalog(args)
    family, versions = _family(catalog, args.name)
    rollouts = [r for _, r in sorted(catalog.rollouts.items()) if r.spec.prompt == family]
    try:
        rollout = rollout_of(family, versions, rollouts)
    except RolloutError as exc:
        raise SessionError(str(exc)) from None
    rows: list[dict[str, Any]] = []
    for p in sorted(versions, key=lambda p: p.metadata.name):
        if cluster:
            ev = (raw.get(f"PromptVersion/{p.metadata.name}", {}).get("status") or {}).get("evaluation")
            evaluation = {k: ev.get(k) for k in ("phase", "passRate", "meanScore", "message")} if isinstance(
                ev, dict) else None
        else:
            stored = evaluate.latest(args.state_dir, p.metadata.name)
            evaluation = None if stored is None else {k: stored.get(k) for k in (
                "evalId", "passed", "passRate", "meanScore", "winRate", "costUsd", "tokens", "failures")}
        rows.append({"name": p.metadata.name, "version": p.spec.version, "role": rollout.role(p.metadata.name),
                     "weight": rollout.weight(p.metadata.name), "eval": evaluation})
    if args.json:
        _print_json({"family": family, "stable": rollout.stable, "candidate": rollout.candidate,
                     "candidateWeight": rollout.candidate_weight, "versions": rows,
                     "rollout": None if not rollouts else rollouts[0].model_dump(mode="json", by_alias=True,
                                                                                  exclude_none=True)})
        return EXIT_OK
    print(f"prompt family {family} ({where}): stable {rollout.stable}" + (
        f", candidate {rollout.candidate} at {rollout.candidate_weight}% of runs" if rollout.candidate else ""))
    print(f"{'PROMPTVERSION':<32} {'VERSION':<10} {'ROLE':<10} {'WEIGHT':>6}  EVALUATION "
          + ("(status.evaluation)" if cluster else "(newest local)"))
    for r in rows:
        print(f"{r['name'][:32]:<32} {r['version'][:10]:<10} {r['role']:<10} {r['weight']:>5}%  "
              f"{_evaluation_text(r)}")
    for line in rollout_lines(rollouts[0]) if rollouts else []:
        print(line)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        command = {"eval": cmd_eval, "cases": cmd_cases, "status": cmd_status}[args.command]
        return int(command(args))
    except ManifestError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return EXIT_USAGE
    except SessionError as exc:
        print(f"agentflow prompt {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
