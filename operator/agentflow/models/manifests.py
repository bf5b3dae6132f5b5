"""Reading manifests: YAML text or dicts into typed resources, with located errors.

Every problem is reported as a :class:`Problem` naming the source (file),
the field path (``spec.steps[2].dependsOn[0]``) and, when the input was YAML
text, the line. Parsing never stops at the first problem of a document.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import yaml
from pydantic import ValidationError

from . import limits
from .agent import Agent
from .base import API_VERSION, Model
from .budget import Budget
from .prompt import PromptVersion
from .rollout import PromptRollout
from .template import ClusterWorkflowTemplate, WorkflowSchedule, WorkflowTemplate
from .toolpolicy import ToolPolicy
from .trigger import WorkflowTrigger
from .workflow import Workflow

Resource: TypeAlias = (Workflow | Agent | PromptVersion | Budget | ToolPolicy | WorkflowTemplate | WorkflowSchedule
                       | WorkflowTrigger | PromptRollout
                       | ClusterWorkflowTemplate)

KINDS: dict[str, type[Model]] = {
    "Workflow": Workflow,
    "Agent": Agent,
    "PromptVersion": PromptVersion,
    "Budget": Budget,
    "ToolPolicy": ToolPolicy,
    "WorkflowTemplate": WorkflowTemplate,
    "WorkflowSchedule": WorkflowSchedule,
    "WorkflowTrigger": WorkflowTrigger,
    "PromptRollout": PromptRollout,
    "ClusterWorkflowTemplate": ClusterWorkflowTemplate,
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


# libyaml's parser and composer when PyYAML was built with it (the wheels are): about three times faster.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _line(mark: Any) -> int:
    return int(mark.line) + 1 if mark is not None else 0


def _check_events(text: str) -> None:
    """Walk the parser's events (iterative, nothing is built) and refuse, before composing anything, nesting past
    MAX_DEPTH, more than MAX_NODES nodes or more than MAX_DOCUMENTS documents. A node inside ``d`` collections is
    at level ``d + 1``. Aliases count once here (they are not expanded); :func:`_construct` counts what they
    expand to and refuses an alias inside its own anchor. Raises yaml.YAMLError on malformed text."""
    depth = nodes = documents = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            level = depth + 1
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
            if level > limits.MAX_DEPTH:
                raise _LocatedError(_line(event.start_mark), (),
                                    f"nested deeper than {limits.MAX_DEPTH} levels; flatten it")
            if nodes > limits.MAX_NODES:
                raise _LocatedError(_line(event.start_mark), (),
                                    f"more than {limits.MAX_NODES:,} values in one file (a Workflow of "
                                    f"{limits.MAX_STEPS:,} steps, the most it may have, takes about 30,000); "
                                    "split it")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > limits.MAX_DOCUMENTS:
                raise _LocatedError(_line(event.start_mark), (),
                                    f"more than {limits.MAX_DOCUMENTS} YAML documents in one file; split it")


_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _LocatedError(Exception):
    def __init__(self, line: int, path: tuple[PathPart, ...], message: str):
        self.line = line
        self.path = format_path(path)
        self.message = message
        super().__init__(f"line {line}: {self.path}: {message}")


@dataclasses.dataclass
class _Budget:
    """What building one file's documents may still expand to (aliases included)."""

    nodes: int = limits.MAX_NODES
    building: set[int] = dataclasses.field(default_factory=set)
    """ids of the collection nodes being built: an alias to one of them is a value that contains itself."""


def _construct(
    node: yaml.Node, path: tuple[PathPart, ...], lines: dict[tuple[PathPart, ...], int], loader: _ScalarLoader,
    budget: _Budget,
) -> Any:
    line = node.start_mark.line + 1
    budget.nodes -= 1
    if budget.nodes < 0:
        raise _LocatedError(line, path, f"the file expands to more than {limits.MAX_NODES:,} values (YAML aliases "
                            "repeating large parts, a 'billion laughs' document?); write the values out")
    if len(path) >= limits.MAX_DEPTH:  # the root's path is (): a node's level is len(path) + 1
        raise _LocatedError(line, path, f"nested deeper than {limits.MAX_DEPTH} levels once YAML aliases are "
                            "expanded; flatten it")
    lines[path] = line
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        if id(node) in budget.building:
            raise _LocatedError(line, path, "a YAML alias refers to a value that contains it (a recursive anchor); "
                                "JSON has no cycles: write the value out")
        budget.building.add(id(node))
        try:
            return _construct_collection(node, path, lines, loader, budget)
        finally:
            budget.building.discard(id(node))
    # Timestamps stay strings, as with kubectl (the API server sees JSON, where they are strings).
    if node.tag == _TIMESTAMP_TAG and isinstance(node, yaml.ScalarNode):
        return node.value
    # Other scalars: let the safe constructor resolve the tag (int, bool, null, ...).
    try:
        value = loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else str(exc)
        tag = node.tag.rsplit(":", 1)[-1]
        message = f"bad {tag} value {node.value!r}: {problem}"
        raise _LocatedError(line, path, message) from None
    if value is not None and not isinstance(value, str | int | float | bool):  # !!binary: bytes
        tag = node.tag.rsplit(":", 1)[-1]
        raise _LocatedError(line, path, f"a !!{tag} value is not JSON, which is all Kubernetes stores; write it as a "
                                        "string (base64 for bytes)")
    return value


def _construct_collection(
    node: yaml.MappingNode | yaml.SequenceNode, path: tuple[PathPart, ...], lines: dict[tuple[PathPart, ...], int],
    loader: _ScalarLoader, budget: _Budget,
) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, (*path, i), lines, loader, budget) for i, child in enumerate(node.value)]
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        key = (
            key_node.value
            if isinstance(key_node, yaml.ScalarNode)
            else _construct(key_node, (*path, "<key>"), {}, loader, budget)
        )
        if key == "<<":
            raise _LocatedError(key_line, path, "YAML merge keys (<<) are not supported; write keys out")
        key = str(key)
        if key in out:
            raise _LocatedError(key_line, (*path, key), f"duplicate key {key!r}")
        out[key] = _construct(value_node, (*path, key), lines, loader, budget)
        lines[(*path, key)] = key_line
    return out


def parse_yaml(text: str, source: str) -> list[Document]:
    """Split YAML text into documents; raise ManifestError on malformed YAML.

    Bounded (agentflow.models.limits): at most MAX_MANIFEST_BYTES of text, MAX_DOCUMENTS documents,
    nesting of MAX_DEPTH and MAX_NODES values with aliases expanded; a recursive alias is refused.
    Past a bound the one problem names it, and nothing more is read.
    """
    if len(text) > limits.MAX_MANIFEST_BYTES:
        message = f"{len(text):,} characters; a manifest file may hold at most {limits.MAX_MANIFEST_BYTES:,} bytes"
        raise ManifestError([Problem(source, "", message + "; split it")])
    try:
        _check_events(text)
        nodes: list[yaml.Node | None] = list(yaml.compose_all(text, Loader=_LOADER))
    except _LocatedError as exc:
        raise ManifestError([Problem(source, exc.path, f"malformed YAML: {exc.message}", exc.line)]) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        message = f"malformed YAML: {exc.problem or exc}"
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own limit, met while it scans ahead
            message = f"malformed YAML: nested deeper than {limits.MAX_DEPTH} levels; flatten it"
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            # e.g. an unclosed quote: the problem is at the end, the cause where the scalar began.
            message += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise ManifestError([Problem(source, "", message, line)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(source, "", f"malformed YAML: {exc}")]) from None
    docs = []
    budget = _Budget()
    for i, node in enumerate(nodes):
        if node is None:
            continue
        lines: dict[tuple[PathPart, ...], int] = {}
        try:
            body = _construct(node, (), lines, _ScalarLoader(), budget)
        except _LocatedError as exc:
            problem = Problem(source, exc.path, f"malformed YAML: {exc.message}", exc.line)
            raise ManifestError([problem]) from None
        if body is None:
            continue
        docs.append(Document(source, body, lines, i))
    return docs


def parse_yaml_value(text: str, source: str) -> Any:
    """One YAML value (``--input KEY=VALUE``) under the bounds of :func:`parse_yaml`; None for empty text."""
    docs = parse_yaml(text, source)
    if len(docs) > 1:
        raise ManifestError([Problem(source, "", "expected one YAML value, got several documents")])
    return docs[0].body if docs else None


def body_problem(body: Any, source: str) -> Problem | None:
    """Why a JSON body (an admission request's object, a body read from the cluster) is too big or too deep to
    check, or None. Iterative, so a hostile body cannot exhaust the stack before it is refused."""
    stack: list[tuple[Any, int]] = [(body, 1)]  # levels as in YAML: the root is at 1
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > limits.MAX_NODES:
            return Problem(source, "", f"more than {limits.MAX_NODES:,} values; split the resource")
        if depth > limits.MAX_DEPTH:
            return Problem(source, "", f"nested deeper than {limits.MAX_DEPTH} levels; flatten it")
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)
    return None


def _pydantic_problems(exc: ValidationError, doc: Document) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "finite_number":
            msg = f"must be a finite number, got {err['input']!r} (YAML reads .inf, .nan and 1e400 as infinite)"
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
    if not doc.lines:  # a JSON body (YAML text was bounded as it was parsed)
        too_big = body_problem(body, doc.source)
        if too_big is not None:
            raise ManifestError([too_big])
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
