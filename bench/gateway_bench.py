"""Gateway overhead, AgentFlow gateway vs LiteLLM proxy, against the same fake upstream in the same run.

What runs (every process on loopback, started here and stopped by pid at the end):

  upstream   a fast OpenAI-compatible chat server (this file, ``--serve-upstream``, its own process):
             answers every POST /v1/chat/completions after a fixed delay with a fixed usage block,
             so both gateways compute a cost; GET /stats says how many calls it answered
  agentflow  ``agentflow gateway`` with a hard Budget (PostgresLedger on a throwaway PostgreSQL) and
             its response cache on
  litellm    ``litellm --config`` (litellm[proxy] in its own venv, see --litellm) with its in-memory
             response cache and the budget checks it has without a database (printed with the table)

The same client (one aiohttp session per target, keep-alive) sends the same requests to the upstream
directly and through each gateway, in rounds that rotate the order of the targets, so drift in the
machine's load falls on all of them alike. Overhead of request i = latency of request i through a
gateway - latency of the same request i straight to the upstream; p50 and p99 of that, per
concurrency level. Cache misses use a unique prompt per request (both caches look up and store);
cache hits repeat prompts already answered (the upstream is not called: the whole latency is the
gateway's own).

Prints a table; never asserts timings. Usage:
  python bench/gateway_bench.py [--requests 2000] [--concurrency 1,16] [--upstream-delay-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.services.postgres
MODEL = "gpt-4o-mini"  # priced in litellm's cost map, which both gateways read
PROMPT_TOKENS, COMPLETION_TOKENS = 24, 8
DEFAULT_LITELLM = "/var/cache/agentflow/bench-venv/bin/litellm"


# ---------------------------------------------------------------------------------------------
# The fake upstream (a process of its own, so its CPU is not the client's)


def upstream_app(delay: float) -> web.Application:
    stats = {"requests": 0, "in_flight": 0, "max_in_flight": 0}

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        stats["requests"] += 1
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            if delay:
                await asyncio.sleep(delay)
        finally:
            stats["in_flight"] -= 1
        return web.json_response({
            "id": f"chatcmpl-{stats['requests']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", MODEL),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok: fixed answer"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                      "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS},
        })

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", get_stats)
    return app


def serve_upstream(port: int, delay_ms: float) -> None:
    web.run_app(upstream_app(delay_ms / 1000), host="127.0.0.1", port=port, print=None, access_log=None)


# ---------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def start(name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    return Proc(name, proc, log)


def wait_http(p: Proc, url: str, timeout: float = 120, headers: dict[str, str] | None = None) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise SystemExit(f"{p.name} exited ({p.proc.returncode}):\n{p.tail()}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{p.name} did not answer {url} within {timeout}s:\n{p.tail()}")


# ---------------------------------------------------------------------------------------------
# LiteLLM proxy

LITELLM_KEY = "sk-bench-litellm-master"
LITELLM_BUDGETS = (
    "router budget limiter, in memory (no database: litellm's proxy-wide litellm_settings.max_budget and "
    "key/user/team budgets need one): provider budget openai $1000/1d (router_settings.provider_budget_config) "
    "and deployment budget $1000/1d (litellm_params max_budget + budget_duration); checked before each call, "
    "spend added after it (no reservation)"
)


def litellm_config(upstream: str) -> dict[str, Any]:
    return {
        "model_list": [{
            "model_name": MODEL,
            "litellm_params": {"model": f"openai/{MODEL}", "api_base": upstream, "api_key": "sk-fake-upstream",
                               "max_budget": 1000.0, "budget_duration": "1d"},
        }],
        "router_settings": {"provider_budget_config": {"openai": {"budget_limit": 1000.0, "time_period": "1d"}}},
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}, "drop_params": True},
        "general_settings": {"master_key": LITELLM_KEY},
    }


def start_litellm(binary: str, upstream: str, workdir: Path) -> tuple[Proc, str]:
    import yaml

    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(yaml.safe_dump(litellm_config(upstream)))
    # The cost map bundled with litellm (no fetch from GitHub: the bench needs no internet).
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    p = start("litellm", [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                          "--num_workers", "1"], workdir, env)
    wait_http(p, f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
    return p, f"http://127.0.0.1:{port}/v1"


# ---------------------------------------------------------------------------------------------
# The client and the measurements


@dataclasses.dataclass
class Target:
    name: str
    base_url: str  # .../v1
    headers: dict[str, str]
    model: str
    session: aiohttp.ClientSession | None = None
    ledger_dsn: str | None = None  # the AgentFlow gateway's PostgreSQL: calls and spend are read back from it

    async def call(self, body: dict[str, Any]) -> float:
        assert self.session is not None
        t0 = time.perf_counter()
        async with self.session.post(f"{self.base_url}/chat/completions", json={**body, "model": self.model},
                                     headers=self.headers) as r:
            data = await r.read()
            elapsed = time.perf_counter() - t0
            if r.status != 200:
                raise RuntimeError(f"{self.name}: HTTP {r.status}: {data[:500]!r}")
        if b'"usage"' not in data:
            raise RuntimeError(f"{self.name}: an answer without usage: {data[:300]!r}")
        return elapsed


def body_for(tag: str) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": "You answer in one short sentence."},
                         {"role": "user", "content": f"Summarise ticket {tag}: the printer on floor 3 jams."}],
            "max_tokens": 16, "temperature": 0}


async def batch(target: Target, bodies: Sequence[dict[str, Any]], concurrency: int) -> list[float]:
    out = [0.0] * len(bodies)

    async def worker(w: int) -> None:
        for i in range(w, len(bodies), concurrency):
            out[i] = await target.call(bodies[i])

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


@dataclasses.dataclass
class Series:
    latency: list[float] = dataclasses.field(default_factory=list)
    overhead: list[float] = dataclasses.field(default_factory=list)  # minus the same request direct


async def measure(targets: Sequence[Target], direct: Target, n: int, concurrency: int, round_size: int,
                  bodies: Callable[[int, int], list[dict[str, Any]]], warmup: int) -> dict[str, Series]:
    """``n`` requests per target after ``warmup``, in rounds that rotate the targets' order.

    ``bodies(round, size)`` gives a round's requests; every target (and the direct baseline) gets the same.
    """
    everyone = [direct, *targets]
    for t in everyone:
        await batch(t, bodies(-1, warmup), concurrency)
    series = {t.name: Series() for t in everyone}
    rounds = max(1, -(-n // round_size))
    for k in range(rounds):
        size = min(round_size, n - k * round_size)
        reqs = bodies(k, size)
        order = everyone[k % len(everyone):] + everyone[:k % len(everyone)]
        got: dict[str, list[float]] = {}
        for t in order:
            got[t.name] = await batch(t, reqs, concurrency)
        for name, lat in got.items():
            series[name].latency.extend(lat)
            series[name].overhead.extend(a - b for a, b in zip(lat, got[direct.name], strict=True))
    return series


async def upstream_calls(session: aiohttp.ClientSession, upstream_root: str) -> int:
    async with session.get(f"{upstream_root}/stats") as r:
        return int((await r.json())["requests"])


# ---------------------------------------------------------------------------------------------
# Report


def ms(x: float) -> str:
    return f"{x * 1000:8.2f}"


def report(title: str, series: dict[str, Series], direct: str) -> list[str]:
    lines = [title, f"  {'':34} {'latency p50':>11} {'p99':>8} | {'overhead p50':>12} {'p99':>8}  (ms)"]
    for name, s in series.items():
        over = ("", "") if name == direct else (ms(percentile(s.overhead, 0.5)), ms(percentile(s.overhead, 0.99)))
        lines.append(f"  {name:34} {ms(percentile(s.latency, 0.5)):>11} {ms(percentile(s.latency, 0.99)):>8} | "
                     f"{over[0]:>12} {over[1]:>8}")
    return lines


def ratio_line(series: dict[str, Series], ours: str, theirs: str, what: str = "overhead") -> str:
    """``what``: overhead (minus the direct request) or latency (cache hits: the gateway's whole time)."""

    def pick(s: Series) -> list[float]:
        return s.overhead if what == "overhead" else s.latency

    def r(q: float) -> str:
        a, b = percentile(pick(series[ours]), q), percentile(pick(series[theirs]), q)
        return f"{a / b:.2f}" if b > 0 else "n/a"

    return f"  {what} {ours} / {theirs}: p50 {r(0.5)}, p99 {r(0.99)}  (target <= 0.50)"


# ---------------------------------------------------------------------------------------------
# Main


@contextlib.contextmanager
def stopping(procs: list[Proc]) -> Iterator[list[Proc]]:
    try:
        yield procs
    finally:
        for p in reversed(procs):
            p.stop()


async def bench(args: argparse.Namespace, targets: list[Target], upstream_root: str) -> list[str]:
    direct = Target("direct (upstream, no gateway)", f"{upstream_root}/v1", {"Authorization": "Bearer sk-fake"},
                    MODEL)
    everyone = [direct, *targets]
    connector_limit = max(args.concurrency) + 4
    for t in everyone:
        t.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connector_limit),
                                          timeout=aiohttp.ClientTimeout(total=60))
    nonce = os.urandom(4).hex()
    out: list[str] = []
    try:
        for c in args.concurrency:
            def miss_bodies(k: int, size: int, c: int = c) -> list[dict[str, Any]]:
                return [body_for(f"{nonce}-c{c}-r{k}-{i}") for i in range(size)]

            series = await measure(targets, direct, args.requests, c, args.round_size, miss_bodies, args.warmup)
            shown = len(out)
            out += report(f"\ncache miss path, concurrency {c}: {args.requests} requests per target "
                          f"(+{args.warmup} warm-up, excluded)", series, direct.name)
            out += [ratio_line(series, t.name, targets[-1].name) for t in targets[:-1]]
            print("\n".join(out[shown:]), flush=True)

            hot = [body_for(f"{nonce}-hot-c{c}-{j}") for j in range(args.hot_prompts)]
            for t in targets:  # fill both caches
                await batch(t, hot, 1)
            before = await upstream_calls(direct.session, upstream_root)  # type: ignore[arg-type]

            def hit_bodies(k: int, size: int, hot: list[dict[str, Any]] = hot) -> list[dict[str, Any]]:
                return [hot[(k * size + i) % len(hot)] for i in range(size)]

            series = await measure(targets, direct, args.requests, c, args.round_size, hit_bodies, args.warmup)
            shown = len(out)
            calls = await upstream_calls(direct.session, upstream_root)  # type: ignore[arg-type]
            through_gateways = calls - before - (args.requests + args.warmup)  # the direct baseline's own calls
            out += report(f"\ncache hit path, concurrency {c}: {args.requests} requests per target over "
                          f"{args.hot_prompts} prompts (latency = the gateway's own time; upstream calls "
                          f"made by the gateways meanwhile: {through_gateways})", series, direct.name)
            out += [ratio_line(series, t.name, targets[-1].name, "latency") for t in targets[:-1]]
            print("\n".join(out[shown:]), flush=True)
        for t in targets:
            if t.ledger_dsn:
                spent, calls = await ledger_totals(t.ledger_dsn)
                out.append(f"\n{t.name} ledger: {calls} calls recorded, ${spent:.6f} spent (the budget checks ran)")
    finally:
        for t in everyone:
            if t.session is not None:
                await t.session.close()
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="measured requests per target and concurrency")
    p.add_argument("--warmup", type=int, default=200, help="requests per target sent first and not counted")
    p.add_argument("--round-size", type=int, default=250, help="requests per target before the order rotates")
    p.add_argument("--concurrency", default="1,16", help="comma-separated concurrency levels")
    p.add_argument("--upstream-delay-ms", type=float, default=2.0, help="the fake upstream's fixed latency")
    p.add_argument("--hot-prompts", type=int, default=50, help="distinct prompts of the cache-hit phase")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help="gateways to measure: agentflow (thin client), agentflow-litellm, litellm (the proxy)")
    p.add_argument("--litellm", default=DEFAULT_LITELLM,
                   help="the litellm proxy executable (pip install 'litellm[proxy]' into a venv of its own)")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, configs)")
    p.add_argument("--profile-agentflow", action="store_true",
                   help="run the AgentFlow gateway under cProfile (agentflow-gateway.pstats in the kept work dir)")
    p.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    except ValueError:
        p.error(f"--concurrency: expected comma-separated integers, got {args.concurrency!r}")
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency: levels must be >= 1")
    args.keep = args.keep or args.profile_agentflow
    args.targets = [t.strip() for t in str(args.targets).split(",") if t.strip()]
    if not args.targets or set(args.targets) - set(TARGETS):
        p.error(f"--targets: expected a comma-separated subset of {','.join(TARGETS)}, got "
                f"{','.join(args.targets)!r}")
    for name in ("requests", "warmup", "round_size", "hot_prompts"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream, args.upstream_delay_ms)
        return 0
    if "litellm" in args.targets and not Path(args.litellm).exists():
        raise SystemExit(f"--litellm {args.litellm}: not found; install the proxy into a venv of its own:\n"
                         f"  python3 -m venv /var/cache/agentflow/bench-venv && "
                         f"/var/cache/agentflow/bench-venv/bin/pip install 'litellm[proxy]'")
    workdir = Path(tempfile.mkdtemp(prefix="agentflow-gateway-bench-"))
    print(f"gateway bench: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"upstream delay {args.upstream_delay_ms} ms, work dir {workdir}", flush=True)
    procs: list[Proc] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(stopping(procs))
        port = free_port()
        upstream = start("upstream", [sys.executable, str(Path(__file__).resolve()), "--serve-upstream", str(port),
                                      "--upstream-delay-ms", str(args.upstream_delay_ms)], workdir)
        procs.append(upstream)
        upstream_root = f"http://127.0.0.1:{port}"
        wait_http(upstream, f"{upstream_root}/stats")
        targets: list[Target] = []
        setup: list[str] = []
        for name, upstream_kind in (("agentflow", "openai-http"), ("agentflow-litellm", "litellm")):
            if name in args.targets:
                target, lines = start_agentflow(stack, procs, upstream_root, workdir, args.profile_agentflow,
                                                upstream_kind)
                targets.append(target)
                setup += lines
        if "litellm" in args.targets:
            p, url = start_litellm(args.litellm, f"{upstream_root}/v1", workdir)
            procs.append(p)
            targets.append(Target("litellm proxy", url, {"Authorization": f"Bearer {LITELLM_KEY}"}, MODEL))
            setup.append(f"litellm proxy: {litellm_version(args.litellm)}, 1 uvicorn worker, cache: local "
                         f"in-memory; budgets: {LITELLM_BUDGETS}")
        print("\n".join(setup), flush=True)
        lines = asyncio.run(bench(args, targets, upstream_root))
        print("\n===== summary =====")
        print("\n".join(setup))
        print("\n".join(lines))
    if args.keep:
        print(f"kept {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def litellm_version(binary: str) -> str:
    python = Path(binary).parent / "python"
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True, check=False)
    return f"litellm {out.stdout.strip() or '?'}"



NAMESPACE, WORKFLOW, STEP = "bench", "gateway-bench", "ask"
TARGETS = ("agentflow", "agentflow-litellm", "litellm")
"""agentflow: the gateway's thin client for openai/ models (--upstream openai-http); agentflow-litellm: the same
gateway calling through litellm; litellm: the LiteLLM proxy."""
AGENTFLOW_BUDGET_USD = 1000.0


def agentflow_manifests(upstream: str) -> list[dict[str, Any]]:
    """A Workflow with one llm step, its Agent (model at the fake upstream), prompt and hard Budget."""
    api = "agentflow.dev/v1alpha1"
    meta = {"namespace": NAMESPACE}
    return [
        {"apiVersion": api, "kind": "Workflow", "metadata": {"name": WORKFLOW, **meta},
         "spec": {"budgetRef": {"name": "bench-cap"},
                  "steps": [{"name": STEP, "kind": "llm", "agentRef": {"name": "bench-agent"},
                             "promptRef": {"name": "bench-prompt"}}]}},
        {"apiVersion": api, "kind": "Agent", "metadata": {"name": "bench-agent", **meta},
         "spec": {"role": "summarizer", "model": {"name": f"openai/{MODEL}", "apiBase": upstream}}},
        {"apiVersion": api, "kind": "PromptVersion", "metadata": {"name": "bench-prompt", **meta},
         "spec": {"prompt": "bench", "version": "1", "messages": [{"role": "user", "content": "Summarise."}]}},
        {"apiVersion": api, "kind": "Budget", "metadata": {"name": "bench-cap", **meta},
         "spec": {"period": "monthly", "limits": {"usd": AGENTFLOW_BUDGET_USD}, "enforcement": "hard"}},
    ]


async def store_attempt(dsn: str, run_uid: str, manifests: str) -> None:
    """What the operator stores before it starts a step pod: the attempt payload the gateway's token names."""
    from agentflow.engine.values import StepRequest
    from agentflow.executors.payload import attempt_payload
    from agentflow.storage import PostgresStore

    store = await PostgresStore.connect(dsn)
    try:
        await store.migrate()
        request = StepRequest(run_id=run_uid, node=STEP, step=STEP, kind="llm", attempt=1, inputs={})
        await store.put_attempt(run_uid, STEP, 1, attempt_payload(request, manifests, WORKFLOW))
    finally:
        await store.close()


def start_agentflow(stack: contextlib.ExitStack, procs: list[Proc], upstream_root: str, workdir: Path,
                    profile: bool = False, upstream_kind: str = "openai-http") -> tuple[Target, list[str]]:
    """``agentflow gateway --upstream UPSTREAM_KIND`` on a throwaway PostgreSQL (attempts + PostgresLedger),
    Budgets from a file: ``openai-http`` (the thin aiohttp client for openai/ models) or ``litellm``."""
    import base64
    import uuid

    import yaml
    from tests.services.postgres import start_postgres

    from agentflow.security.tokens import AttemptClaims, issue_token

    pg = start_postgres()
    stack.callback(pg.stop)
    docs = agentflow_manifests(f"{upstream_root}/v1")
    manifests = yaml.safe_dump_all(docs, sort_keys=False)
    run_uid = str(uuid.uuid4())
    asyncio.run(store_attempt(pg.dsn, run_uid, manifests))
    key = os.urandom(32)
    key_file = workdir / "token-key"
    key_file.write_text(base64.b64encode(key).decode())
    budgets = workdir / "budgets.yaml"
    budgets.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] == "Budget"], sort_keys=False))
    token = issue_token(key, AttemptClaims(run_uid=run_uid, namespace=NAMESPACE, workflow=WORKFLOW, node=STEP,
                                           attempt=1, expires=time.time() + 86400))
    port = free_port()
    profiler = ["-m", "cProfile", "-o", str(workdir / f"agentflow-{upstream_kind}.pstats")] if profile else []
    p = start(f"agentflow-{upstream_kind}", [sys.executable, *profiler, "-m", "agentflow.cli", "gateway",
                                             "--listen", f"127.0.0.1:{port}", "--postgres-dsn", pg.dsn,
                                             "--token-key-file", str(key_file), "--budgets", str(budgets),
                                             "--model-endpoint", f"{upstream_root}/v1", "--upstream", upstream_kind,
                                             "--metrics-listen", f"127.0.0.1:{free_port()}"],
              workdir, {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                        "OPENAI_API_KEY": "sk-fake-upstream"})
    procs.append(p)
    wait_http(p, f"http://127.0.0.1:{port}/healthz", timeout=120)
    target = Target(f"agentflow gateway ({upstream_kind})", f"http://127.0.0.1:{port}/v1",
                    {"Authorization": f"Bearer {token}"}, f"openai/{MODEL}", ledger_dsn=pg.dsn)
    line = (f"agentflow gateway ({upstream_kind}): `agentflow gateway --upstream {upstream_kind}` (1 process), "
            f"cache: its response cache (in memory, default "
            f"TTL/size); budgets: hard Budget ${AGENTFLOW_BUDGET_USD:.0f}/month (from --budgets FILE) on the "
            f"PostgresLedger (PostgreSQL on loopback): every call reserved before and settled after, in one "
            f"transaction each; auth: attempt token (HMAC) + stored attempt")
    return target, [line]


async def ledger_totals(dsn: str) -> tuple[float, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        spent = await conn.fetchval("SELECT coalesce(sum(spent_usd), 0) FROM agentflow_budget_windows")
        calls = await conn.fetchval("SELECT count(*) FROM agentflow_llm_calls")
    finally:
        await conn.close()
    return float(spent), int(calls)


if __name__ == "__main__":
    sys.exit(main())
