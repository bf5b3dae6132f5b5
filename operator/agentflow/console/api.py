"""The console's HTTP API as data: every route with its OpenAPI description, in one table.

The aiohttp app (agentflow.console.app) registers exactly these routes and :func:`openapi` documents
exactly these, so a route cannot exist undocumented (a unit test checks the app's router against the
document). The API is the one the page uses and the one a script or the CLI could use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["ROUTES", "Route", "openapi"]


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str  # the handler's name in agentflow.console.app
    summary: str
    query: tuple[tuple[str, str], ...] = ()  # (name, description)
    body: dict[str, Any] | None = None  # JSON Schema of the request body
    response: str = "application/json"
    mutating: bool = False


_REASON = {"type": "string", "maxLength": 2000, "description": "why (recorded with the action)"}
_YAML = {"type": "object", "required": ["yaml"], "properties": {
    "yaml": {"type": "string", "description": "manifests as YAML text (several documents allowed)"}}}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/info", "info", "Mode (local or cluster), the signed-in user, what this console can do"),
    Route("GET", "/api/runs", "list_runs", "Runs, newest first, with phase, progress, cost and age",
          (("namespace", "only runs in this namespace"), ("label", "KEY or KEY=VALUE on the Workflow"),
           ("phase", "Pending, Running, Waiting, Suspended, Succeeded, Failed or Cancelled"))),
    Route("GET", "/api/runs/{run}", "get_run",
          "A run's whole graph from its compiled plan (pending steps included) with each node's live state"),
    Route("GET", "/api/runs/{run}/nodes/{node}", "get_node",
          "One node: inputs, outputs, errors, attempts, timing, calls (its children), cost, tokens, events"),
    Route("GET", "/api/runs/{run}/events", "events",
          "Server-sent events: `update` {seq, run, nodes} with the graph nodes that changed after record "
          "`after`, then `end` when the run has finished", (("after", "the seq the client already has"),),
          response="text/event-stream"),
    Route("POST", "/api/runs/{run}/nodes/{node}/decision", "decide",
          "Approve or reject a waiting step (recorded as `agentflow approve` records it)",
          body={"type": "object", "required": ["approved"], "properties": {
              "approved": {"type": "boolean"}, "reason": _REASON}}, mutating=True),
    Route("POST", "/api/runs/{run}/cancel", "cancel", "Cancel a run (its exit handlers still run)",
          body={"type": "object", "properties": {"reason": _REASON}}, mutating=True),
    Route("POST", "/api/runs/{run}/resume", "resume", "Continue an interrupted local run from its journal",
          mutating=True),
    Route("POST", "/api/runs/{run}/retry", "retry",
          "Retry a failed local run: a what-if run from its first failed step, earlier results reused",
          mutating=True),
    Route("POST", "/api/runs/{run}/replay", "replay",
          "Replay a run's journal through the engine (no model or tool calls) and report any divergence",
          mutating=True),
    Route("GET", "/api/diff", "diff", "Two runs side by side: path, outputs, cost and timing",
          (("a", "a run id"), ("b", "another run id"))),
    Route("POST", "/api/runs", "start", "Start a local run of manifests (as `agentflow run FILE` does)",
          body={"type": "object", "required": ["yaml"], "properties": {
              "yaml": {"type": "string"}, "workflow": {"type": "string"}}}, mutating=True),
    Route("POST", "/api/template-runs", "start_template",
          "Start a run of a template with inputs (a Workflow naming it, created with your own identity; what "
          "agentflow.client does). 201 {runId, name, namespace}; 404 no such template; 422 inputs the template "
          "refuses ({problems: [[input, why]]}); 403 RBAC or admission; cluster console only",
          body={"type": "object", "required": ["template"], "properties": {
              "namespace": {"type": "string", "description": "where the run is created (cluster: required)"},
              "template": {"type": "string"},
              "kind": {"enum": ["WorkflowTemplate", "ClusterWorkflowTemplate"]},
              "inputs": {"type": "object"},
              "name": {"type": "string", "description": "the run's name (default: the template's and 6 hex "
                                                         "digits)"},
              "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}, mutating=True),
    Route("GET", "/api/runs/{run}/result", "get_result",
          "A run as an application sees it: phase, outputs, cost, tokens, message and each step's phase (what "
          "agentflow.client's RunResult holds)"),
    Route("POST", "/api/validate", "validate",
          "Every problem `agentflow validate` finds, each mapped to its designer node and field", body=_YAML),
    Route("POST", "/api/manifests/parse", "parse_manifests", "YAML text to manifests (JSON objects)",
          body=_YAML),
    Route("POST", "/api/manifests/export", "export_manifests",
          "Manifests (JSON objects) to one YAML text, with the problems `agentflow validate` finds in it",
          body={"type": "object", "required": ["documents"], "properties": {
              "documents": {"type": "array", "items": {"type": "object"}}}}),
    Route("GET", "/api/schemas", "get_schemas", "The openAPIV3Schema of each kind, from the CRDs"),
    Route("GET", "/api/audit", "get_audit", "The audit chain (last rows) and its verification"),
    Route("GET", "/api/openapi.json", "get_openapi", "This document"),
)


def _path_params(path: str) -> list[dict[str, Any]]:
    return [{"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in path.split("/") if part.startswith("{")]


def openapi(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`ROUTES`."""
    paths: dict[str, dict[str, Any]] = {}
    error = {"description": "the error, with what to do", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error"], "properties": {"error": {"type": "string"},
                                                                 "status": {"type": "integer"}}}}}}
    for r in ROUTES:
        op: dict[str, Any] = {
            "operationId": r.name,
            "summary": r.summary,
            "parameters": _path_params(r.path) + [
                {"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
                for n, d in r.query],
            "responses": {"200": {"description": "OK", "content": {r.response: {"schema": {}}}},
                          "400": error, "401": error, "403": error, "404": error, "409": error},
        }
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.body}}}
        if r.mutating:
            op["description"] = ("Local console: send the header X-AgentFlow-Token (in the page's "
                                 "<meta name=agentflow-token>). Cluster console: acts with your bearer token.")
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "AgentFlow console API", "version": version,
                 "description": "Runs, actions on them, and the workflow designer's validation. In a cluster "
                                "every request acts with the caller's own Kubernetes identity "
                                "(Authorization: Bearer TOKEN), so RBAC decides."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                           "localToken": {"type": "apiKey", "in": "header",
                                                          "name": "X-AgentFlow-Token"}}},
        "paths": paths,
    }
