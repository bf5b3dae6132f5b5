"""wasm tools in wasmtime: the example tool works, and a module gets nothing it was not granted.

The modules under test are written in WAT inline here; each one tries one thing (open a file,
take a socket, read the environment, loop, grow memory, sleep, flood stdout) and reports what
it got, so every test can fail if the sandbox grants too much or too little.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentflow.loader import load_documents
from agentflow.models import Catalog, ToolSpec, Workflow
from agentflow.models.limits import MAX_WASM_FUEL
from agentflow.models.manifests import parse_documents
from agentflow.runner.session import Bundle, create_run, drive, make_executor
from agentflow.runner.store import RunStore
from agentflow.tools import ToolError, ToolRunner
from agentflow.tools.wasm import WasmError, WasmRunner, inline_module_files

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "manifests" / "wasm-textstats.yaml"

# Helpers every test module starts with: WASI imports and $exit_json(n), which prints {"n":N}.
PRELUDE = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 900) "{\\"n\\":")
  (func $write (param $fd i32) (param $p i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $print_n (param $v i32)
    (local $p i32)
    (local.set $p (i32.const 960))
    (i32.store8 (i32.const 960) (i32.const 125))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (local.get $v)))
    (call $write (i32.const 1) (i32.const 900) (i32.const 5))
    (call $write (i32.const 1) (local.get $p) (i32.sub (i32.const 961) (local.get $p))))
"""


def module(body: str, imports: str = "") -> str:
    return f"(module {imports} {PRELUDE} {body})"


def wasm_tool(wat: str, **fields: Any) -> ToolSpec:
    wasm = {"wat": wat, **fields.pop("wasm", {})}
    return ToolSpec.model_validate({"name": "probe", "wasm": wasm, **fields})


async def call(tool: ToolSpec, inputs: dict[str, Any] | None = None, runner: ToolRunner | None = None) -> Any:
    outcome = await (runner or ToolRunner()).call(tool, inputs or {}, idempotency_key="run/probe/1", deadline=None)
    return outcome.output


async def failure(tool: ToolSpec, inputs: dict[str, Any] | None = None, runner: ToolRunner | None = None) -> ToolError:
    with pytest.raises(ToolError) as info:
        await call(tool, inputs, runner)
    assert info.value.tool == tool.name and repr(tool.name) in str(info.value)
    return info.value


# --- the example tool -------------------------------------------------------------------------


def example_policy_tool() -> ToolSpec:
    loaded, problems = inline_module_files(parse_documents(load_documents([EXAMPLE])))
    assert problems == []
    tools = [t for r in loaded if r.resource.kind == "ToolPolicy" for t in r.resource.spec.tools]  # type: ignore[union-attr]
    (tool,) = [t for t in tools if t.name == "textstats"]
    return tool


def reference_stats(text: str) -> dict[str, int]:
    text = json.loads(json.dumps(text))  # what the tool sees: a surrogate pair in JSON is one character
    return {
        "bytes": len(text.encode("utf-8", "surrogatepass")),
        "chars": len(text),
        "words": len(re.findall(r"[^ \t\n\v\f\r]+", text)),
        "lines": text.count("\n") + (1 if text and not text.endswith("\n") else 0),
    }


async def test_the_example_tool_counts_like_python() -> None:
    tool = example_policy_tool()
    assert tool.wasm is not None and tool.wasm.module is None and tool.wasm.wat is not None  # inlined at load
    runner = ToolRunner()
    rng = random.Random(6)
    alphabet = "ab Z\t\n\r\"\\/é€😀\u2028\x00\x1f\ud800"
    texts = ["", "two words\n", "a\n\nb", " lead and trail ", "😀" * 3, "\udc00\ud83d\ude00"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))) for _ in range(40)]
    texts.append("word " * 30_000)  # 150 kB: the input buffer grows past its first page
    for text in texts:
        # other fields around "text", including nested ones holding a "text" key, are skipped
        inputs = {"meta": {"text": ["}", 1]}, "n": -1.5e3, "ok": True, "text": text, "after": None}
        assert await call(tool, inputs, runner) == reference_stats(text), repr(text[:60])
    assert runner.wasm.compiled == 1  # compiled once, then served from the cache


async def test_the_example_tool_rejects_bad_input_with_its_stderr() -> None:
    tool = example_policy_tool().model_copy(update={"input_schema": None})
    error = await failure(tool, {"words": "no text field"})
    assert error.type == "ToolProcessFailed" and "status 2" in error.message
    assert 'has no "text" field' in error.message and not error.retryable
    error = await failure(tool, {"text": 42})
    assert '"text" must be a string' in error.message


async def test_the_example_tool_stops_at_its_memory_grant() -> None:
    tool = example_policy_tool()
    assert tool.wasm is not None
    small = tool.model_copy(update={"wasm": tool.wasm.model_copy(update={"memory_mb": 1})})
    error = await failure(small, {"text": "x" * 2_000_000})
    assert error.type == "ToolProcessFailed" and "status 3" in error.message and "wasm.memoryMb" in error.message


async def test_the_example_workflow_runs_locally(tmp_path: Path) -> None:
    loaded, problems = inline_module_files(parse_documents(load_documents([EXAMPLE])))
    assert problems == []
    catalog = Catalog()
    for r in loaded:
        if not isinstance(r.resource, Workflow):
            catalog.add(r.resource)
    (workflow,) = [r.resource for r in loaded if isinstance(r.resource, Workflow)]
    text = yaml.safe_dump_all([r.resource.dump() for r in loaded], sort_keys=False)
    bundle = Bundle(workflow, catalog, text)
    run_dir = create_run(RunStore(tmp_path / "runs"), bundle, [EXAMPLE])
    run = await drive(run_dir, bundle, make_executor(bundle, "inprocess", env={}))
    assert run.phase == "Succeeded", run.phase
    draft = workflow.spec.inputs["draft"]
    stats = reference_stats(draft)
    outputs = run.outputs or {}
    assert (outputs["words"], outputs["chars"], outputs["lines"]) == (stats["words"], stats["chars"], stats["lines"])
    assert outputs["withinLimit"] is True


# --- nothing granted by default ---------------------------------------------------------------

# path_open(fd 3, "secret.json") then copy the file to stdout; exit with the errno when refused.
# With O_CREAT|O_TRUNC in oflags and write rights it tries to create "planted.json" instead.
OPEN_FILE = """
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
"""


def file_reader(name: str, oflags: int = 0, rights: int = 2) -> str:  # rights 2 = fd_read, 64 = fd_write
    return module(
        f"""
  (data (i32.const 1000) "{name}")
  (func (export "_start") (local $err i32) (local $n i32)
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 1000) (i32.const {len(name)})
                                     (i32.const {oflags}) (i64.const {rights}) (i64.const 0) (i32.const 0)
                                     (i32.const 16)))
    (if (local.get $err) (then (call $proc_exit (local.get $err))))
    (i32.store (i32.const 0) (i32.const 2048))
    (i32.store (i32.const 4) (i32.const 4096))
    (local.set $err (call $fd_read (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 20)))
    (if (local.get $err) (then (call $proc_exit (local.get $err))))
    (call $write (i32.const 1) (i32.const 2048) (i32.load (i32.const 20))))
""",
        OPEN_FILE,
    )


async def test_a_module_cannot_open_a_file_without_a_grant(tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text('{"secret": 42}')
    error = await failure(wasm_tool(file_reader("secret.json")))
    assert error.type == "ToolProcessFailed" and "status 8" in error.message  # EBADF: fd 3 is not a preopen


async def test_a_read_paths_grant_opens_that_folder_read_only(tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text('{"secret": 42}')
    granted = {"permissions": {"readPaths": [str(tmp_path)]}}
    assert await call(wasm_tool(file_reader("secret.json"), **granted)) == {"secret": 42}
    # the same grant does not let it create or truncate a file there
    refused = re.compile(r"exited with status (63|76)$")  # EPERM / ENOTCAPABLE
    error = await failure(wasm_tool(file_reader("planted.json", oflags=1 | 8, rights=2 | 64), **granted))
    assert error.type == "ToolProcessFailed" and refused.search(error.message), error.message
    assert not (tmp_path / "planted.json").exists()
    error = await failure(wasm_tool(file_reader("secret.json", oflags=8, rights=2 | 64), **granted))
    assert refused.search(error.message) and (tmp_path / "secret.json").read_text() == '{"secret": 42}'
    # nor escape the folder
    (tmp_path.parent / "outside.json").write_text("{}")
    error = await failure(wasm_tool(file_reader("../outside.json"), **granted))
    assert refused.search(error.message), error.message


async def test_read_paths_must_be_absolute_directories(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    error = await failure(wasm_tool(file_reader("f"), permissions={"readPaths": ["relative/dir"]}))
    assert error.type == "InvalidToolConfig" and "permissions.readPaths[0]" in error.message
    error = await failure(wasm_tool(file_reader("f"), permissions={"readPaths": [str(tmp_path), str(tmp_path / "f")]}))
    assert "permissions.readPaths[1]" in error.message and "not a directory" in error.message


async def test_a_module_gets_no_socket() -> None:
    # sock_accept on every descriptor a module could name; any success exits 99
    accept_all = module(
        """
  (func (export "_start") (local $fd i32)
    (loop $next
      (if (i32.eqz (call $sock_accept (local.get $fd) (i32.const 0) (i32.const 16)))
        (then (call $proc_exit (i32.const 99))))
      (if (i32.eqz (call $sock_recv (local.get $fd) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 16)
                                     (i32.const 20)))
        (then (call $proc_exit (i32.const 98))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $fd) (i32.const 64))))
    (call $print_n (local.get $fd)))
""",
        """
  (import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
""",
    )
    assert await call(wasm_tool(accept_all)) == {"n": 64}
    # there is no way to open one: WASI preview1 has no sock_open, and nothing else may be imported
    opener = '(module (import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32))) ' \
        '(memory (export "memory") 1) (func (export "_start")))'
    error = await failure(wasm_tool(opener))
    assert error.type == "InvalidToolModule" and "sock_open" in error.message
    host = '(module (import "env" "connect" (func)) (func (export "_start")))'
    error = await failure(wasm_tool(host))
    assert error.type == "InvalidToolModule" and "env::connect" in error.message
    # and an egress grant is refused rather than silently meaningless
    error = await failure(wasm_tool(accept_all, permissions={"egressHosts": ["example.com"]}))
    assert error.type == "InvalidToolConfig" and "permissions.egressHosts" in error.message


ENV_COUNT = module(
    """
  (func (export "_start")
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (call $print_n (i32.load (i32.const 16))))
""",
    '(import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))',
)


async def test_the_environment_is_only_what_is_granted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_TEST_SECRET", "hunter2")
    assert await call(wasm_tool(ENV_COUNT)) == {"n": 0}
    assert await call(wasm_tool(ENV_COUNT, permissions={"env": {"A": "1", "B": "2"}})) == {"n": 2}
    args = module(
        """
  (func (export "_start")
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (call $print_n (i32.load (i32.const 16))))
""",
        '(import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))',
    )
    assert await call(wasm_tool(args)) == {"n": 1}  # argv[0] only


# --- limits -----------------------------------------------------------------------------------

LOOP = module('(func (export "_start") (loop $forever (br $forever)))')


async def test_an_endless_loop_stops_at_the_fuel_limit() -> None:
    # no wall time passes at all (manual epochs): only fuel can stop it
    runner = ToolRunner(wasm=WasmRunner(manual_epochs=True))
    error = await failure(wasm_tool(LOOP, wasm={"fuel": 5_000_000}), runner=runner)
    assert (error.type, error.retryable) == ("ResourceExhausted", False)
    assert "fuel" in error.message and "5000000" in error.message


async def test_memory_grow_fails_past_the_limit() -> None:
    # grow one page at a time until refused, then print the size in pages
    grow = module(
        """
  (func (export "_start")
    (loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (call $print_n (memory.size)))
"""
    )
    assert await call(wasm_tool(grow, wasm={"memoryMb": 2})) == {"n": 32}  # 2 MiB of 64 KiB pages
    assert await call(wasm_tool(grow, wasm={"memoryMb": 3})) == {"n": 48}
    # a module that gives up (traps) once refused is reported as out of memory
    greedy = module(
        """
  (func (export "_start")
    (loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable)
"""
    )
    error = await failure(wasm_tool(greedy, wasm={"memoryMb": 2}))
    assert (error.type, error.retryable) == ("ResourceExhausted", False) and "memory" in error.message
    # one that needs more than the limit from the start does not even instantiate
    big = '(module (memory (export "memory") 100) (func (export "_start")))'
    error = await failure(wasm_tool(big, wasm={"memoryMb": 1}))
    assert error.type == "ResourceExhausted" and "wasm.memoryMb" in error.message


def _run_in_thread(runner: WasmRunner, timeout: float) -> tuple[threading.Thread, list[BaseException]]:
    raised: list[BaseException] = []

    def work() -> None:
        try:
            runner.run(wasm_tool(LOOP, wasm={"fuel": MAX_WASM_FUEL}), b"{}", timeout=timeout)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, raised


def test_the_epoch_deadline_interrupts_the_module_itself() -> None:
    """Virtual time: the module runs until the epochs of its timeout have passed, then stops by itself."""
    runner = WasmRunner(manual_epochs=True, tick=0.01)
    thread, raised = _run_in_thread(runner, timeout=0.3)
    deadline = runner.deadline_ticks(0.3)
    while runner.active == 0 and thread.is_alive():
        time.sleep(0.001)  # wait for the call to start (no wall time passes for it meanwhile)
    runner.advance(deadline - 2)
    thread.join(0.2)
    assert thread.is_alive(), "interrupted before its timeout's epochs passed"
    runner.advance(2)
    thread.join(10)
    assert not thread.is_alive()
    [error] = raised
    assert isinstance(error, WasmError) and error.type == "ToolTimeout"
    assert runner.active == 0, "the worker thread is stopped by the epoch deadline, not abandoned"


async def test_an_endless_loop_with_huge_fuel_stops_at_the_timeout() -> None:
    runner = ToolRunner(wasm=WasmRunner(manual_epochs=True))
    tool = wasm_tool(LOOP, wasm={"fuel": MAX_WASM_FUEL}, timeoutSeconds=0.5)
    task = asyncio.create_task(failure(tool, runner=runner))
    while runner.wasm.active == 0:
        await asyncio.sleep(0.001)
    runner.wasm.advance(runner.wasm.deadline_ticks(0.5))
    error = await asyncio.wait_for(task, 10)
    assert (error.type, error.retryable) == ("ToolTimeout", True)
    assert runner.wasm.active == 0


async def test_a_module_cannot_block_in_a_sleep() -> None:
    # poll_oneoff on a 60 s relative clock: answered ENOTSUP (58) at once instead of blocking a thread
    sleeper = module(
        """
  (func (export "_start") (local $err i32)
    (i32.store8 (i32.const 72) (i32.const 0))
    (i32.store (i32.const 80) (i32.const 1))
    (i64.store (i32.const 88) (i64.const 60000000000))
    (local.set $err (call $poll_oneoff (i32.const 64) (i32.const 256) (i32.const 1) (i32.const 24)))
    (call $print_n (local.get $err)))
""",
        '(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))',
    )
    # no wall time passes (manual epochs): a sleep that blocked would hang this test, not fail it slowly
    runner = ToolRunner(wasm=WasmRunner(manual_epochs=True))
    assert await call(wasm_tool(sleeper, timeoutSeconds=10), runner=runner) == {"n": 58}


async def test_a_stdout_flood_is_bounded() -> None:
    # 64 KiB writes, 1000 of them (64 MiB), ignoring write errors
    flood = module(
        """
  (func (export "_start") (local $i i32)
    (loop $more
      (call $write (i32.const 1) (i32.const 0) (i32.const 65536))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 1000)))))
"""
    )
    runner = ToolRunner()
    error = await failure(wasm_tool(flood, wasm={"fuel": 10**10}), runner=runner)
    assert error.type == "InvalidToolOutput" and f"{runner.wasm.max_stdout} bytes" in error.message


async def test_exit_status_and_stderr_tail_become_the_error() -> None:
    failing = module(
        """
  (data (i32.const 1000) "cannot parse the input: expected a list")
  (func (export "_start")
    (call $write (i32.const 2) (i32.const 1000) (i32.const 39))
    (call $proc_exit (i32.const 7)))
"""
    )
    error = await failure(wasm_tool(failing))
    assert (error.type, error.retryable) == ("ToolProcessFailed", False)
    assert "status 7" in error.message and "expected a list" in error.message
    tempfail = module('(func (export "_start") (call $proc_exit (i32.const 75)))')
    assert (await failure(wasm_tool(tempfail))).retryable is True
    trap = module('(func (export "_start") unreachable)')
    error = await failure(wasm_tool(trap))
    assert error.type == "ToolTrapped" and "unreachable" in error.message


async def test_stdin_carries_the_inputs_and_stdout_must_be_json() -> None:
    # cat: copy stdin to stdout
    cat = module(
        """
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 2048))
    (i32.store (i32.const 4) (i32.const 8192))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 20)))
    (call $write (i32.const 1) (i32.const 2048) (i32.load (i32.const 20))))
""",
        '(import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))',
    )
    inputs = {"query": "ünïcode", "n": [1, 2, {"deep": None}]}
    assert await call(wasm_tool(cat), inputs) == inputs
    text = module(
        '(data (i32.const 1000) "not json") (func (export "_start") (call $write (i32.const 1) (i32.const 1000) '
        "(i32.const 8)))"
    )
    error = await failure(wasm_tool(text))
    assert error.type == "InvalidToolOutput" and "not JSON" in error.message


async def test_concurrent_calls_have_their_own_stores() -> None:
    runner = ToolRunner()
    tool = example_policy_tool()
    texts = [f"{'w ' * i}" for i in range(1, 9)]
    outs = await asyncio.gather(*(call(tool, {"text": t}, runner) for t in texts))
    assert [o["words"] for o in outs] == list(range(1, 9))
    assert json.dumps(outs)  # plain JSON values
