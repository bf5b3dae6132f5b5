"""Reading manifests: YAML text or dicts into typed resources, with located errors.

Every problem is reported as a :class:`Problem` naming the source (file),
the field path (``spec.steps[2].dependsOn[0]``) and, when the input was YAML
text, the line. Parsing never stops at the first problem of a document.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from pydantic import ValidationError

from .agent import Agent
from .base import API_VERSION, Model
from .budget import Budget
from .prompt import PromptVersion
from .toolpolicy import ToolPolicy
from .workflow import Workflow

Resource: TypeAlias = Workflow | Agent | PromptVersion | Budget | ToolPolicy

KINDS: dict[str, type[Model]] = {
    "Workflow": Workflow,
    "Agent": Agent,
    "PromptVersion": PromptVersion,
    "Budget": Budget,
    "ToolPolicy": ToolPolicy,
}

PathPart = str | int


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with the input."""

    source: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.source + (f":{self.line}" if self.line else "")
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "path": self.path, "message": self.message}


class ManifestError(Exception):
    """The input has problems; all of them are in ``problems``."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(parts: Iterable[PathPart]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclasses.dataclass
class Document:
    """One YAML document with a map from field paths to line numbers."""

    source: str
    body: Any
    lines: dict[tuple[PathPart, ...], int]
    index: int = 0

    def line_of(self, path: Sequence[PathPart]) -> int | None:
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)


class _ScalarLoader(yaml.SafeLoader):
    """Resolves scalars (YAML 1.1 ints, floats, bools, nulls); one per document, then dropped."""

    def __init__(self) -> None:
        super().__init__("")


_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _LocatedError(Exception):
    def __init__(self, line: int, path: tuple[PathPart, ...], message: str):
        self.line = line
        self.path = format_path(path)
        self.message = message
        super().__init__(f"line {line}: {self.path}: {message}")


def _construct(
    node: yaml.Node, path: tuple[PathPart, ...], lines: dict[tuple[PathPart, ...], int], loader: _ScalarLoader
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = (
                key_node.value
                if isinstance(key_node, yaml.ScalarNode)
                else _construct(key_node, (*path, "<key>"), {}, loader)
            )
            if key == "<<":
                raise _LocatedError(key_line, path, "YAML merge keys (<<) are not supported; write keys out")
            key = str(key)
            if key in out:
                raise _LocatedError(key_line, (*path, key), f"duplicate key {key!r}")
            out[key] = _construct(value_node, (*path, key), lines, loader)
            lines[(*path, key)] = key_line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, (*path, i), lines, loader) for i, child in enumerate(node.value)]
    # Timestamps stay strings, as with kubectl (the API server sees JSON, where they are strings).
    if node.tag == _TIMESTAMP_TAG and isinstance(node, yaml.ScalarNode):
        return node.value
    # Other scalars: let the safe constructor resolve the tag (int, bool, null, ...).
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else str(exc)
        tag = node.tag.rsplit(":", 1)[-1]
        message = f"bad {tag} value {node.value!r}: {problem}"
        raise _LocatedError(node.start_mark.line + 1, path, message) from None


def parse_yaml(text: str, source: str) -> list[Document]:
    """Split YAML text into documents; raise ManifestError on malformed YAML."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        message = f"malformed YAML: {exc.problem or exc}"
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            # e.g. an unclosed quote: the problem is at the end, the cause where the scalar began.
            message += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise ManifestError([Problem(source, "", message, line)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(source, "", f"malformed YAML: {exc}")]) from None
    docs = []
    for i, node in enumerate(nodes):
        if node is None:
            continue
        lines: dict[tuple[PathPart, ...], int] = {}
        try:
            body = _construct(node, (), lines, _ScalarLoader())
        except _LocatedError as exc:
            problem = Problem(source, exc.path, f"malformed YAML: {exc.message}", exc.line)
            raise ManifestError([problem]) from None
        if body is None:
            continue
        docs.append(Document(source, body, lines, i))
    return docs


def _pydantic_problems(exc: ValidationError, doc: Document) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(Problem(doc.source, format_path(loc), msg, doc.line_of(loc)))
    return problems


def parse_resource(body: Any, doc: Document | None = None) -> Resource:
    """Validate one manifest body into its typed resource.

    The one entry point used by `agentflow validate`, the admission webhook
    and the reconcilers. Raises ManifestError listing every problem.
    """
    if doc is None:
        doc = Document("<input>", body, {})
    if not isinstance(body, Mapping):
        raise ManifestError([Problem(doc.source, "", "a manifest must be a mapping", doc.line_of(()))])
    api_version = body.get("apiVersion")
    kind = body.get("kind")
    if api_version != API_VERSION:
        message = f"expected {API_VERSION!r}, got {api_version!r}"
        raise ManifestError([Problem(doc.source, "apiVersion", message, doc.line_of(["apiVersion"]))])
    model = KINDS.get(str(kind))
    if model is None:
        raise ManifestError(
            [
                Problem(
                    doc.source,
                    "kind",
                    f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}",
                    doc.line_of(["kind"]),
                )
            ]
        )
    try:
        return model.model_validate(body)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ManifestError(_pydantic_problems(exc, doc)) from None


@dataclasses.dataclass
class LoadedResource:
    resource: Resource
    doc: Document


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
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(str(file), "", f"cannot read: {exc}"))
                continue
            try:
                docs.extend(parse_yaml(text, str(file)))
            except ManifestError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    return docs


def parse_each(docs: Sequence[Document]) -> tuple[list[LoadedResource], list[Problem]]:
    """Parse every document: the resources that parsed, and the problems of all the others."""
    problems: list[Problem] = []
    loaded: list[LoadedResource] = []
    for doc in docs:
        try:
            loaded.append(LoadedResource(parse_resource(doc.body, doc), doc))
        except ManifestError as exc:
            problems.extend(exc.problems)
    return loaded, problems


def parse_documents(docs: Sequence[Document]) -> list[LoadedResource]:
    """Parse every document; ManifestError with the problems of all of them."""
    loaded, problems = parse_each(docs)
    if problems:
        raise ManifestError(problems)
    return loaded
