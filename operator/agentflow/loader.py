"""Reading manifests from files and folders (the CLI, the local runner, `agentflow cost`).

    load_documents(paths)                YAML files, and the *.yaml / *.yml files of folders (sorted) -> Documents
    validate_paths(paths, file_roots)    the same, then every document checked together (agentflow.validation),
                                         and the files the manifests name checked to stay where they may

Parsing and checking are pure (agentflow.models.manifests, agentflow.validation); this module is the one
that touches the file system for them. Bounds (agentflow.models.limits): a file larger than
MAX_MANIFEST_BYTES is refused before it is read, anything but a regular file (a FIFO, a device) is refused,
and a file that holds no manifest (empty, only comments or ``---``) is a problem naming it.

Files a manifest names (today: a relative ``wasm.module`` of a ToolPolicy, which the local runner reads and
copies into the run's stored manifests) must resolve, symlinks followed, inside the manifest's own folder or
below it, or under one of the ``file_roots`` the user allowed (``--allow-files-under DIR``, or
``AGENTFLOW_FILE_ROOTS``, a list of folders separated by ``:``), as kustomize's load restrictor does.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from .models import ToolPolicy
from .models.limits import MAX_MANIFEST_BYTES
from .models.manifests import Document, LoadedResource, ManifestError, Problem, parse_yaml
from .validation import validate_documents

__all__ = ["FILE_ROOTS_ENV", "file_roots_from_env", "load_documents", "referenced_file_problems", "validate_paths"]

FILE_ROOTS_ENV = "AGENTFLOW_FILE_ROOTS"
"""Folders (separated by os.pathsep) the files named by manifests may also be in."""


def file_roots_from_env(env: Mapping[str, str]) -> list[Path]:
    """The folders of AGENTFLOW_FILE_ROOTS (empty entries ignored)."""
    return [Path(p) for p in env.get(FILE_ROOTS_ENV, "").split(os.pathsep) if p.strip()]


def _read(file: Path) -> str | Problem:
    try:
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):
            return Problem(str(file), "", "not a regular file (a FIFO, a device or a socket); give a YAML file")
        if info.st_size > MAX_MANIFEST_BYTES:
            return Problem(str(file), "", f"{info.st_size:,} bytes; a manifest file may hold at most "
                           f"{MAX_MANIFEST_BYTES:,} bytes; split it")
        with file.open("rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)  # the file may have grown since stat
        if len(data) > MAX_MANIFEST_BYTES:
            return Problem(str(file), "", f"more than {MAX_MANIFEST_BYTES:,} bytes; split it")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Problem(str(file), "", f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        return Problem(str(file), "", f"cannot read: {exc.strerror or exc}")


def load_documents(paths: Sequence[str | Path]) -> list[Document]:
    """Read YAML files (and *.yaml / *.yml files of folders, sorted)."""
    problems: list[Problem] = []
    docs: list[Document] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            if not files:
                problems.append(Problem(str(path), "", "folder holds no .yaml or .yml file"))
        elif path.exists():
            files = [path]
        else:
            problems.append(Problem(str(path), "", "no such file or folder"))
            continue
        for file in files:
            text = _read(file)
            if isinstance(text, Problem):
                problems.append(text)
                continue
            try:
                found = parse_yaml(text, str(file))
            except ManifestError as exc:
                problems.extend(exc.problems)
                continue
            if not found:
                problems.append(Problem(str(file), "", "holds no manifest (the file is empty, or holds only "
                                        "comments and ---); give a file with at least one resource"))
            docs.extend(found)
    if problems:
        raise ManifestError(problems)
    return docs


def _inside(target: Path, roots: Sequence[Path]) -> bool:
    return any(target == root or target.is_relative_to(root) for root in roots)


def referenced_file_problems(loaded: Sequence[LoadedResource], file_roots: Sequence[str | Path] = ()) -> list[Problem]:
    """Problems of the files the manifests name: each relative ``wasm.module`` must resolve (symlinks followed)
    inside its manifest's folder, or under one of ``file_roots``. Absolute paths name a file in the step image
    and are not read here."""
    roots = [Path(r).resolve() for r in file_roots]
    problems: list[Problem] = []
    for item in loaded:
        resource = item.resource
        if not isinstance(resource, ToolPolicy):
            continue
        for index, tool in enumerate(resource.spec.tools):
            module = tool.wasm.module if tool.wasm is not None else None
            if module is None or Path(module).is_absolute():
                continue
            folder = Path(item.doc.source).resolve().parent
            target = (folder / module).resolve()
            if _inside(target, [folder, *roots]):
                continue
            path: list[str | int] = ["spec", "tools", index, "wasm", "module"]
            allowed = ", ".join(str(r) for r in roots) or "none"
            problems.append(Problem(
                item.doc.source, f"spec.tools[{index}].wasm.module",
                f"{module!r} resolves to {target}, outside the manifest's folder {folder}: files a manifest names "
                f"must be in its folder or below it (roots allowed with --allow-files-under or {FILE_ROOTS_ENV}: "
                f"{allowed})", item.doc.line_of(path)))
    return problems


def validate_paths(
    paths: Sequence[str | Path], file_roots: Sequence[str | Path] = ()
) -> tuple[list[LoadedResource], list[Problem]]:
    """Load YAML files and folders and check everything in them together.

    A file that cannot be read or parsed is a problem; the other files are
    still checked. ``file_roots``: see :func:`referenced_file_problems`.
    """
    docs: list[Document] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        targets = [path]
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            targets = files or [path]  # an empty folder is reported by load_documents
        for target in targets:
            try:
                docs.extend(load_documents([target]))
            except ManifestError as exc:
                problems.extend(exc.problems)
    loaded, found = validate_documents(docs)
    return loaded, problems + found + referenced_file_problems(loaded, file_roots)
