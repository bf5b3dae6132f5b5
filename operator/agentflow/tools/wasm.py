"""WASI tools: a ``wasm`` ToolSpec run in wasmtime with nothing granted by default.

Calling convention: the module is a WASI (preview1) command. Its ``function`` (``_start``) is
called with the tool inputs as JSON on stdin; it prints one JSON value on stdout. Exit status
0 (or returning from the function) is success; any other status is a failure whose message
carries the tail of stderr.

What a module gets, and nothing else:

argv       only argv[0], the tool's name.
env        only ``permissions.env`` (the idempotency key is not passed: a module cannot
           reach anything it could repeat a side effect on).
files      only the directories of ``permissions.readPaths``, preopened read-only under
           their own absolute paths. No preopen means every path_open fails (EBADF).
stdio      stdin is the inputs, stdout/stderr are captured in memory and bounded; nothing of
           the host process's stdio is inherited.
sockets    none. WASI preview1 cannot open sockets (there is no sock_open), and none is
           preopened, so sock_accept/sock_recv/sock_send see EBADF. ``permissions.egressHosts``
           therefore means nothing for a wasm tool and is refused.
sleeping   ``poll_oneoff`` is replaced by one answering ENOTSUP: a host call is not
           interruptible, so a module must not be able to block its thread past the timeout.
imports    only ``wasi_snapshot_preview1``; any other import is refused before instantiation.

Limits, per call (one Store per call): ``fuel`` (wasmtime fuel, about one unit per
instruction) -> ResourceExhausted "fuel"; ``memoryMb`` caps linear memory (memory.grow
returns -1 past it; a module needing more at instantiation, or trapping at the cap, is
ResourceExhausted "memory"); wall time by epoch interruption (a ticker thread advances the
engine's epoch every ``tick`` seconds while calls run) -> ToolTimeout.

Sources: ``wat`` (inline text), ``base64`` (inline binary) or ``module`` (a file: .wat text or
a .wasm binary; absolute, or relative to the manifest's folder: :func:`inline_module_files`
replaces a relative path by its content when manifests are loaded from files, so a run never
depends on the folder it was started from). Modules are compiled once per process, cached by
the SHA-256 of their source.

Errors are :class:`WasmError` (``type``, ``retryable``); the ToolRunner turns them into
ToolErrors naming the tool. Every call blocks: run it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import dataclasses
import hashlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import wasmtime

from agentflow.models import ToolPolicy, ToolSpec, WasmTool
from agentflow.models.manifests import LoadedResource, Problem

WASI_MODULE = "wasi_snapshot_preview1"
MAX_MODULE_FILE_BYTES = 16 * 1024 * 1024
MAX_INLINE_CHARS = 1024 * 1024
MAX_STDOUT_BYTES = 1024 * 1024
STDERR_TAIL_BYTES = 4096
MIB = 1024 * 1024
WASM_PAGE = 64 * 1024
EX_TEMPFAIL = 75
ERRNO_NOTSUP = 58  # WASI preview1 errno "notsup"
ERRNO_FBIG = 22  # host errno returned to a write past the stdout bound (EFBIG)


class WasmError(Exception):
    """A wasm call failed. ``type`` is the ToolError type; ``retryable`` False: retrying cannot help."""

    def __init__(self, type: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.retryable = retryable


# --- sources ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ModuleSource:
    """The bytes of a module and how to compile them."""

    data: bytes
    is_text: bool
    where: str  # the field it came from, for messages

    @property
    def digest(self) -> str:
        return hashlib.sha256(b"wat:" + self.data if self.is_text else b"wasm:" + self.data).hexdigest()


def _classify(data: bytes, where: str) -> ModuleSource:
    if data.startswith(b"\0asm"):
        return ModuleSource(data, False, where)
    return ModuleSource(data, True, where)


def read_source(spec: WasmTool) -> ModuleSource:
    """The module of ``spec`` (reads the file of ``module``); WasmError InvalidToolConfig naming the field."""
    if spec.wat is not None:
        if len(spec.wat) > MAX_INLINE_CHARS:
            raise WasmError("InvalidToolConfig", f"wasm.wat is longer than {MAX_INLINE_CHARS} characters")
        return ModuleSource(spec.wat.encode("utf-8"), True, "wasm.wat")
    if spec.base64 is not None:
        if len(spec.base64) > MAX_INLINE_CHARS:
            raise WasmError("InvalidToolConfig", f"wasm.base64 is longer than {MAX_INLINE_CHARS} characters")
        try:
            data = base64.b64decode("".join(spec.base64.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WasmError("InvalidToolConfig", f"wasm.base64 is not valid base64: {exc}") from exc
        if not data.startswith(b"\0asm"):
            raise WasmError("InvalidToolConfig", "wasm.base64 does not decode to a WebAssembly binary (no magic)")
        return ModuleSource(data, False, "wasm.base64")
    assert spec.module is not None
    path = Path(spec.module)
    if not path.is_absolute():
        raise WasmError(
            "InvalidToolConfig",
            f"wasm.module {spec.module!r} is a relative path, and nothing resolved it against a manifest's folder "
            "(the local runner does so when it loads manifests from files); give an absolute path inside the step "
            "image, or the module inline as wasm.wat or wasm.base64",
        )
    return _classify(_read_file(path, "wasm.module"), "wasm.module")


def _read_file(path: Path, field: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_MODULE_FILE_BYTES:
            raise WasmError("InvalidToolConfig", f"{field} {str(path)!r} is {size} bytes; at most "
                            f"{MAX_MODULE_FILE_BYTES} are read")
        return path.read_bytes()
    except OSError as exc:
        raise WasmError("InvalidToolConfig", f"{field}: cannot read {str(path)!r}: {exc.strerror or exc}") from exc


def inline_module_files(loaded: Sequence[LoadedResource]) -> tuple[list[LoadedResource], list[Problem]]:
    """Replace each relative ``wasm.module`` path by the module itself (``wat`` or ``base64``).

    A relative path is relative to the folder of the manifest file declaring it. Inlined, the
    ToolPolicy is self-contained: the run's stored manifests, a resume from another folder, the
    subprocess executor and a step pod all see the same module. Returns the resources and the
    problems (unreadable or oversized files), each naming the field.
    """
    out: list[LoadedResource] = []
    problems: list[Problem] = []
    for item in loaded:
        resource = item.resource
        if not isinstance(resource, ToolPolicy):
            out.append(item)
            continue
        tools = list(resource.spec.tools)
        changed = False
        for index, tool in enumerate(tools):
            if tool.wasm is None or tool.wasm.module is None or Path(tool.wasm.module).is_absolute():
                continue
            field = f"spec.tools[{index}].wasm.module"
            path = Path(item.doc.source).resolve().parent / tool.wasm.module
            try:
                source = _classify(_read_file(path, field), field)
                inline = _inline_fields(source, field)
            except WasmError as exc:
                problems.append(Problem(item.doc.source, field, exc.message, item.doc.line_of(_parts(field))))
                continue
            wasm = tool.wasm.model_copy(update={"module": None, **inline})
            tools[index] = tool.model_copy(update={"wasm": wasm})
            changed = True
        if changed:
            spec = resource.spec.model_copy(update={"tools": tools})
            item = LoadedResource(resource.model_copy(update={"spec": spec}), item.doc)
        out.append(item)
    return out, problems


def _parts(field: str) -> list[str | int]:
    parts: list[str | int] = []
    for name in field.split("."):
        if "[" in name:
            key, _, index = name.partition("[")
            parts += [key, int(index.rstrip("]"))]
        else:
            parts.append(name)
    return parts


def _inline_fields(source: ModuleSource, field: str) -> dict[str, str]:
    if source.is_text:
        try:
            text = source.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WasmError("InvalidToolConfig", f"{field}: neither a WebAssembly binary nor UTF-8 text") from exc
        if len(text) > MAX_INLINE_CHARS:
            raise WasmError("InvalidToolConfig", f"{field}: {len(text)} characters of text; at most "
                            f"{MAX_INLINE_CHARS} can be inlined (build it to .wasm, or use an absolute path)")
        return {"wat": text}
    encoded = base64.b64encode(source.data).decode("ascii")
    if len(encoded) > MAX_INLINE_CHARS:
        raise WasmError("InvalidToolConfig", f"{field}: the binary is {len(source.data)} bytes; at most "
                        f"{MAX_INLINE_CHARS * 3 // 4} can be inlined (use an absolute path in the step image)")
    return {"base64": encoded}


# --- running ------------------------------------------------------------------------------------


class _EpochTicker:
    """Advances the engine's epoch every ``tick`` seconds while at least one call runs."""

    def __init__(self, engine: wasmtime.Engine, tick: float) -> None:
        self._engine = engine
        self._tick = tick
        self._lock = threading.Lock()
        self._users = 0
        self._thread: threading.Thread | None = None

    def __enter__(self) -> None:
        with self._lock:
            self._users += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentflow-wasm-epoch", daemon=True)
                self._thread.start()

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1

    def _run(self) -> None:
        while True:
            time.sleep(self._tick)
            self._engine.increment_epoch()
            with self._lock:
                if self._users == 0:
                    self._thread = None
                    return


class _Capture:
    """A bounded stdout/stderr sink (keeps the head up to ``limit``, or the tail of ``keep``)."""

    def __init__(self, limit: int | None = None, keep: int | None = None) -> None:
        self.data = bytearray()
        self.overflowed = False
        self._limit = limit
        self._keep = keep

    def write(self, chunk: bytes) -> int | None:
        if self._limit is not None:
            room = self._limit - len(self.data)
            if len(chunk) > room:
                self.data += chunk[: max(room, 0)]
                self.overflowed = True
                return -ERRNO_FBIG
            self.data += chunk
            return None
        self.data += chunk
        if self._keep is not None and len(self.data) > 2 * self._keep:
            del self.data[: -self._keep]
        return None

    def tail(self, size: int = 500) -> str:
        return self.data[-size:].decode("utf-8", "replace").strip()


def _deny_poll(*_: Any) -> int:
    return ERRNO_NOTSUP


class WasmRunner:
    """Runs wasm tools. One wasmtime Engine and a bounded module cache; thread-safe; built by a ToolRunner."""

    def __init__(self, *, tick: float = 0.01, cache_size: int = 32, max_stdout: int = MAX_STDOUT_BYTES,
                 manual_epochs: bool = False) -> None:
        """``manual_epochs``: no ticker thread; wall time passes only when :meth:`advance` is called (tests
        drive the timeout in virtual time)."""
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        self._engine = wasmtime.Engine(config)
        self._tick = tick
        self._ticker: _EpochTicker | contextlib.nullcontext[None] = (
            contextlib.nullcontext() if manual_epochs else _EpochTicker(self._engine, tick))
        self._cache: collections.OrderedDict[str, wasmtime.Module] = collections.OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._active = 0
        self.max_stdout = max_stdout
        self.compiled = 0  # how many modules were compiled (cache misses)

    @property
    def active(self) -> int:
        """Calls running now (a call whose awaiting task was cancelled runs on until its timeout)."""
        return self._active

    def advance(self, ticks: int = 1) -> None:
        """Let ``ticks`` ticks of wall time pass for running calls (the ticker thread's job, unless manual)."""
        for _ in range(ticks):
            self._engine.increment_epoch()

    def deadline_ticks(self, timeout: float) -> int:
        """Ticks after which a call with ``timeout`` is interrupted."""
        return max(1, math.ceil(timeout / self._tick)) + 1

    def compile(self, source: ModuleSource, function: str) -> wasmtime.Module:
        """The compiled module (cached by content hash); checks imports and the called function."""
        key = source.digest
        with self._lock:
            module = self._cache.get(key)
            if module is not None:
                self._cache.move_to_end(key)
        if module is None:
            try:
                if source.is_text:
                    module = wasmtime.Module(self._engine, source.data.decode("utf-8"))
                else:
                    module = wasmtime.Module(self._engine, source.data)
            except UnicodeDecodeError as exc:
                raise WasmError("InvalidToolModule", f"{source.where}: neither a WebAssembly binary nor UTF-8 "
                                "WebAssembly text") from exc
            except wasmtime.WasmtimeError as exc:
                raise WasmError("InvalidToolModule", f"{source.where} does not compile: {_first_line(exc)}") from exc
            with self._lock:
                self._cache[key] = module
                self.compiled += 1
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        _check_interface(module, function, source.where)
        return module

    def run(self, tool: ToolSpec, stdin: bytes, timeout: float) -> bytes:
        """Run ``tool`` once with ``stdin``; its stdout. Blocks for at most about ``timeout`` seconds."""
        spec = tool.wasm
        assert spec is not None
        if tool.permissions.egress_hosts:
            raise WasmError(
                "InvalidToolConfig",
                "permissions.egressHosts has no meaning for a wasm tool: WASI preview1 gives a module no way to open "
                "a socket; remove it (or declare the tool as a container or http tool)",
            )
        module = self.compile(read_source(spec), spec.function)
        store = wasmtime.Store(self._engine)
        store.set_fuel(spec.fuel)
        store.set_limits(memory_size=spec.memory_mb * MIB, table_elements=100_000, instances=4, memories=1)
        store.set_epoch_deadline(self.deadline_ticks(timeout))
        stdout = _Capture(limit=self.max_stdout)
        stderr = _Capture(keep=STDERR_TAIL_BYTES)
        self._configure_wasi(store, tool, stdin, stdout, stderr)
        linker = wasmtime.Linker(self._engine)
        linker.define_wasi()
        linker.allow_shadowing = True
        i32 = wasmtime.ValType.i32()
        linker.define_func(WASI_MODULE, "poll_oneoff", wasmtime.FuncType([i32] * 4, [i32]), _deny_poll)
        with self._lock:
            self._active += 1
        try:
            with self._ticker:
                started = time.monotonic()
                error, memory = self._call(linker, store, module, spec.function)
        finally:
            with self._lock:
                self._active -= 1
        if stdout.overflowed:
            raise WasmError("InvalidToolOutput", f"stdout exceeds {self.max_stdout} bytes (the module's writes past "
                            "it failed)")
        if error is not None:
            raise self._failure(error, memory, spec, stderr, time.monotonic() - started, timeout)
        return bytes(stdout.data)

    def _configure_wasi(self, store: wasmtime.Store, tool: ToolSpec, stdin: bytes, stdout: _Capture,
                        stderr: _Capture) -> None:
        wasi = wasmtime.WasiConfig()
        wasi.argv = [tool.name]
        wasi.env = sorted(tool.permissions.env.items())
        for index, raw in enumerate(tool.permissions.read_paths):
            path = Path(raw)
            field = f"permissions.readPaths[{index}]"
            if not path.is_absolute():
                raise WasmError("InvalidToolConfig", f"{field} {raw!r}: a wasm tool's read paths must be absolute")
            if not path.is_dir():
                raise WasmError("InvalidToolConfig", f"{field} {raw!r} is not a directory (WASI preopens directories)")
            try:
                wasi.preopen_dir(str(path), str(path), False)
            except wasmtime.WasmtimeError as exc:
                raise WasmError("InvalidToolConfig", f"{field} {raw!r}: cannot preopen: {exc}") from exc
        wasi.stdout_custom = stdout.write
        wasi.stderr_custom = stderr.write
        fd, name = tempfile.mkstemp(prefix="agentflow-wasm-stdin-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(stdin)
            wasi.stdin_file = name  # opened here; the name is not needed afterwards
        finally:
            os.unlink(name)
        store.set_wasi(wasi)

    @staticmethod
    def _call(linker: wasmtime.Linker, store: wasmtime.Store, module: wasmtime.Module,
              function: str) -> tuple[Exception | None, int | None]:
        """Run the function: the error (None on success) and the memory size in bytes when known."""
        memory: wasmtime.Memory | None = None
        try:
            try:
                instance = linker.instantiate(store, module)
            except wasmtime.WasmtimeError as exc:
                if "unknown import" not in str(exc):
                    raise
                raise WasmError("InvalidToolModule", f"{_first_line(exc)}: WASI preview1 does not define it, and "
                                "nothing else is granted to a wasm tool") from exc
            exports = instance.exports(store)
            found = {name: exports[name] for name in ("memory", "_initialize", function) if name in exports}
            exported = found.get("memory")
            memory = exported if isinstance(exported, wasmtime.Memory) else None
            init = found.get("_initialize")
            if function not in ("_start", "_initialize") and isinstance(init, wasmtime.Func):
                init(store)  # a WASI reactor initializes itself first
            call = found[function]
            assert isinstance(call, wasmtime.Func)  # checked by _check_interface
            call(store)
            error: Exception | None = None
        except wasmtime.ExitTrap as exc:
            error = None if exc.code == 0 else exc
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            error = exc
        return error, (memory.data_len(store) if memory is not None else None)

    def _failure(self, error: BaseException, memory: int | None, spec: WasmTool, stderr: _Capture, elapsed: float,
                 timeout: float) -> WasmError:
        tail = stderr.tail()
        said = f"; stderr: {tail}" if tail else ""
        if isinstance(error, wasmtime.ExitTrap):
            return WasmError("ToolProcessFailed", f"the module exited with status {error.code}{said}",
                             retryable=error.code == EX_TEMPFAIL)
        code = error.trap_code if isinstance(error, wasmtime.Trap) else None
        if code is wasmtime.TrapCode.OUT_OF_FUEL:
            return WasmError("ResourceExhausted", f"the module used all its fuel ({spec.fuel} units, wasm.fuel){said}")
        if code is wasmtime.TrapCode.INTERRUPT:
            return WasmError("ToolTimeout", f"the module ran past its timeout of {timeout:.3g}s (stopped after "
                             f"{elapsed:.3g}s){said}", retryable=True)
        message = _first_line(error)
        if "exceeds memory limits" in message:
            return WasmError("ResourceExhausted", f"the module needs more memory than wasm.memoryMb "
                             f"({spec.memory_mb} MiB): {message}")
        if memory is not None and memory + WASM_PAGE > spec.memory_mb * MIB:
            return WasmError("ResourceExhausted", f"the module failed ({message}) with its memory at the "
                             f"wasm.memoryMb limit ({spec.memory_mb} MiB; memory.grow past it fails){said}")
        return WasmError("ToolTrapped", f"the module failed: {message}{said}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _check_interface(module: wasmtime.Module, function: str, where: str) -> None:
    foreign = sorted({f"{imp.module}::{imp.name}" for imp in module.imports if imp.module != WASI_MODULE})
    if foreign:
        raise WasmError(
            "InvalidToolModule",
            f"{where} imports {', '.join(foreign)}; a wasm tool may import only {WASI_MODULE} (nothing else is "
            "granted)",
        )
    for export in module.exports:
        if export.name == function:
            kind = export.type
            if not isinstance(kind, wasmtime.FuncType) or kind.params or kind.results:
                raise WasmError("InvalidToolModule", f"wasm.function {function!r} of {where} must be a function "
                                "taking and returning nothing (a WASI command's _start)")
            return
    names = ", ".join(e.name for e in module.exports if isinstance(e.type, wasmtime.FuncType)) or "none"
    raise WasmError("InvalidToolModule", f"{where} exports no function {function!r} (wasm.function); it exports: "
                    f"{names}")
