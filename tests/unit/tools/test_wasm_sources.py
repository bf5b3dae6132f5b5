"""Where a wasm tool's module comes from: inline text, inline base64, a file; and the model's rules."""

from __future__ import annotations

import base64
import itertools
from pathlib import Path
from typing import Any

import celpy
import pytest
import wasmtime
import yaml

from agentflow.models import ToolPolicy, ToolSpec, WasmTool, crd
from agentflow.models.manifests import ManifestError, parse_documents, parse_yaml
from agentflow.tools import ToolError, ToolRunner
from agentflow.tools.wasm import MAX_INLINE_CHARS, inline_module_files

HELLO = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\\"hello\\":1}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 11))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""


def tool(**wasm: Any) -> ToolSpec:
    return ToolSpec.model_validate({"name": "hello", "wasm": wasm})


async def run(spec: ToolSpec, runner: ToolRunner | None = None) -> Any:
    return (await (runner or ToolRunner()).call(spec, {}, idempotency_key="k", deadline=None)).output


async def refused(spec: ToolSpec) -> ToolError:
    with pytest.raises(ToolError) as info:
        await run(spec)
    return info.value


async def test_every_source_runs_the_same_module_and_compiles_once(tmp_path: Path) -> None:
    binary = wasmtime.wat2wasm(HELLO)
    (tmp_path / "hello.wasm").write_bytes(binary)
    (tmp_path / "hello.wat").write_text(HELLO)
    runner = ToolRunner()
    sources = [
        {"wat": HELLO},
        {"base64": base64.b64encode(binary).decode()},
        {"module": str(tmp_path / "hello.wasm")},
        {"module": str(tmp_path / "hello.wat")},
    ]
    for source in sources:
        assert await run(tool(**source), runner) == {"hello": 1}
        assert await run(tool(**source), runner) == {"hello": 1}
    assert runner.wasm.compiled == 2  # text and binary: one compilation each, by content hash


async def test_bad_sources_name_the_field(tmp_path: Path) -> None:
    error = await refused(tool(module="relative/hello.wasm"))
    assert error.type == "InvalidToolConfig" and "wasm.module" in error.message and "relative" in error.message
    error = await refused(tool(module=str(tmp_path / "missing.wasm")))
    assert error.type == "InvalidToolConfig" and "wasm.module" in error.message and "missing.wasm" in error.message
    error = await refused(tool(base64=base64.b64encode(b"not a module").decode()))
    assert error.type == "InvalidToolConfig" and "wasm.base64" in error.message
    error = await refused(tool(wat="(module (func $oops"))
    assert error.type == "InvalidToolModule" and "wasm.wat does not compile" in error.message
    error = await refused(tool(wat=HELLO, function="main"))
    assert error.type == "InvalidToolModule" and "'main'" in error.message and "_start" in error.message
    takes_args = '(module (func (export "_start") (param i32)))'
    error = await refused(tool(wat=takes_args))
    assert error.type == "InvalidToolModule" and "taking and returning nothing" in error.message


def test_exactly_one_source_and_size_limits() -> None:
    for fields in ({}, {"module": "a.wasm", "wat": HELLO}, {"wat": HELLO, "base64": "AGFzbQ=="}):
        with pytest.raises(ValueError, match="exactly one of module, wat, base64"):
            WasmTool.model_validate(fields)
    text = "apiVersion: agentflow.dev/v1alpha1\nkind: ToolPolicy\nmetadata: {name: p}\nspec:\n  tools:\n" \
        f"    - name: big\n      wasm: {{wat: '{'x' * (MAX_INLINE_CHARS + 1)}'}}\n"
    with pytest.raises(ManifestError) as info:
        parse_documents(parse_yaml(text, "big.yaml"))
    assert any(p.path == "spec.tools[0].wasm.wat" for p in info.value.problems), info.value


def wasm_schema() -> dict[str, Any]:
    (kind,) = [k for k in crd.KINDS if k.kind == "ToolPolicy"]
    schema = crd.build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node: dict[str, Any] = schema["properties"]["spec"]["properties"]["tools"]["items"]["properties"]["wasm"]
    return node


def test_the_crd_rule_accepts_exactly_what_the_model_accepts() -> None:
    (rule,) = wasm_schema()["x-kubernetes-validations"]
    env = celpy.Environment()
    program = env.program(env.compile(rule["rule"]))
    values = {"module": "/m.wasm", "wat": HELLO, "base64": "AGFzbQ=="}
    for picks in itertools.product([False, True], repeat=3):
        case = {k: v for (k, v), pick in zip(values.items(), picks, strict=True) if pick}
        try:
            WasmTool.model_validate(case)
            model_ok = True
        except ValueError:
            model_ok = False
        assert model_ok == bool(program.evaluate({"self": celpy.json_to_cel(case)})), case


def policy_yaml(module: str) -> str:
    return f"""apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: p}}
spec:
  tools:
    - name: echo
      builtin: {{name: echo}}
    - name: hello
      wasm:
        module: {module}
"""


async def test_relative_module_paths_are_inlined_from_the_manifests_folder(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    (tmp_path / "manifests").mkdir()
    (tmp_path / "tools" / "hello.wat").write_text(HELLO)
    (tmp_path / "tools" / "hello.wasm").write_bytes(wasmtime.wat2wasm(HELLO))
    source = str(tmp_path / "manifests" / "p.yaml")
    for name, field in (("hello.wat", "wat"), ("hello.wasm", "base64")):
        loaded, problems = inline_module_files(parse_documents(parse_yaml(policy_yaml(f"../tools/{name}"), source)))
        assert problems == []
        policy = loaded[0].resource
        assert isinstance(policy, ToolPolicy)
        wasm = policy.spec.tools[1].wasm
        assert wasm is not None and wasm.module is None and getattr(wasm, field) is not None
        assert await run(policy.spec.tools[1]) == {"hello": 1}
        # the inlined policy is a plain manifest again: it dumps and parses back unchanged
        again = parse_documents(parse_yaml(yaml.safe_dump(policy.dump()), "again.yaml"))
        assert again[0].resource == policy
    # absolute paths stay paths; a missing file is a problem naming the field and its line
    absolute = str(tmp_path / "tools" / "hello.wat")
    loaded, problems = inline_module_files(parse_documents(parse_yaml(policy_yaml(absolute), source)))
    assert problems == [] and loaded[0].resource.spec.tools[1].wasm.module == absolute  # type: ignore[union-attr]
    loaded, problems = inline_module_files(parse_documents(parse_yaml(policy_yaml("../tools/gone.wat"), source)))
    (problem,) = problems
    assert problem.path == "spec.tools[1].wasm.module" and problem.line == 10 and "gone.wat" in problem.message
