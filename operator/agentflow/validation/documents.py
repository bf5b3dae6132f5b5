"""Validation of manifests as documents: YAML documents and admission request bodies (files: agentflow.loader).

The ``validate_*`` functions parse each document into a typed resource, build
the catalog of everything given, run :func:`check_resource` on each resource
and turn its findings into :class:`~agentflow.models.manifests.Problem`
values naming the source and, for YAML input, the line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentflow.models import Catalog, Workflow
from agentflow.models.manifests import (
    Document,
    LoadedResource,
    ManifestError,
    Problem,
    format_path,
    parse_each,
    parse_resource,
)

from .findings import Finding
from .resources import check_resource

__all__ = ["validate_body", "validate_documents"]


def _problems(findings: Sequence[Finding], doc: Document) -> list[Problem]:
    return [Problem(doc.source, format_path(path), message, doc.line_of(path)) for path, message in findings]


def validate_documents(
    docs: Sequence[Document], extra_catalog: Catalog | None = None
) -> tuple[list[LoadedResource], list[Problem]]:
    """Parse and check every document: the resources that parsed, and every problem found."""
    loaded, problems = parse_each(docs)
    catalog = Catalog()
    if extra_catalog is not None:
        catalog.agents.update(extra_catalog.agents)
        catalog.prompts.update(extra_catalog.prompts)
        catalog.policies.update(extra_catalog.policies)
        catalog.budgets.update(extra_catalog.budgets)
        catalog.templates.update(extra_catalog.templates)
    seen: dict[tuple[str, str], LoadedResource] = {}
    for item in loaded:
        resource, doc = item.resource, item.doc
        key = (resource.kind, resource.metadata.name)
        if key in seen:
            other = seen[key].doc
            where = other.source + (f":{other.line_of(['metadata', 'name'])}" if other.lines else "")
            message = f"duplicate {resource.kind} name {resource.metadata.name!r} (also in {where})"
            problems.append(Problem(doc.source, "metadata.name", message, doc.line_of(["metadata", "name"])))
            continue
        seen[key] = item
        if not isinstance(resource, Workflow):
            catalog.add(resource)
    for item in loaded:
        problems.extend(_problems(check_resource(item.resource, catalog), item.doc))
    return loaded, problems


def validate_body(body: Mapping[str, Any], catalog: Catalog | None = None) -> list[Problem]:
    """Every problem of one manifest body (an admission request's object); sources read "<kind>/<name>"."""
    metadata = body.get("metadata") if isinstance(body, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    kind = body.get("kind") if isinstance(body, Mapping) else None
    doc = Document(f"{kind or '<unknown kind>'}/{name or '<unnamed>'}", body, {})
    try:
        resource = parse_resource(body, doc)
    except ManifestError as exc:
        return list(exc.problems)
    return _problems(check_resource(resource, catalog), doc)
