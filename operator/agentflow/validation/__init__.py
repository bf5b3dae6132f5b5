"""Every check of a set of AgentFlow manifests, reporting all problems at once.

The one validation used by ``agentflow validate``, the admission webhook and
the reconcilers::

      validate_documents(docs)      YAML documents -> (resources, problems)
        check_resource(r, catalog)  one typed resource -> [(path, message)]
          check_workflow(spec, ...) a Workflow spec -> [(path, message)]
    validate_body(body, catalog)    one admission request body -> [Problem]

``check_*`` return ``(path parts, message)`` pairs with paths relative to the
resource body (``["spec", "steps", 2, "dependsOn", 0]``); the ``validate_*``
functions turn them into :class:`~agentflow.models.manifests.Problem` values
naming the source file and, for YAML input, the line. Problems of the input
are returned, never raised. A catalog of None skips the checks of references
to other resources (Agents, PromptVersions, ToolPolicies, Budgets).

Modules::

    documents.py   validate_documents, validate_body (files and folders: agentflow.loader.validate_paths)
    resources.py   check_resource: PromptVersion, ToolPolicy and Agent checks
    workflow.py    check_workflow: expressions, DAG, state machine, references
    schemas.py     JSON Schemas in manifests: the schema itself, and instances against it
    findings.py    Finding and the wording the checks share
"""

from __future__ import annotations

from .documents import validate_body, validate_documents
from .findings import Finding, PathParts, StepCheck
from .resources import check_resource
from .workflow import check_workflow

__all__ = [
    "Finding",
    "PathParts",
    "StepCheck",
    "check_resource",
    "check_workflow",
    "validate_body",
    "validate_documents",
]
