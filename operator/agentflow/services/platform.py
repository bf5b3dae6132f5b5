"""What the platform allows a namespace, checked at admission: the operator's settings, not the tenant's.

``agentflow validate`` checks a manifest against itself; a cluster also checks it against the platform's
decisions, which a namespace tenant cannot change (agentflow operator flags, chart values)::

    Agent        spec.model.apiBase must be an endpoint the platform lists for the namespace
                 (agentflow.gateway.endpoints); spec.model.credentialsSecretRef must name a Secret that opts
                 in with the label agentflow.dev/credential: "true" (read by the webhook when ``check_secrets``)
    ToolPolicy   every egress grant (an http tool's url and allowedHosts, an mcp tool's url,
                 permissions.egressHosts) must stay
                 clear of the egress deny-list (agentflow.k8s.egress: metadata, the API server, the cluster's
                 ranges), naming the field

The same decisions hold at run time without the webhook: the gateway refuses unlisted endpoints and
unlabelled Secrets, and the reconciler fails a step whose grant the deny-list refuses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..gateway.endpoints import EndpointPolicy
from ..k8s.egress import EgressDenyList
from ..k8s.profile import parse_host
from ..models import Agent, ToolPolicy
from ..models.manifests import Problem, Resource
from .gateway import credential_problem

__all__ = ["PlatformPolicy"]


@dataclasses.dataclass(frozen=True)
class PlatformPolicy:
    endpoints: EndpointPolicy = dataclasses.field(default_factory=EndpointPolicy)
    egress: EgressDenyList = dataclasses.field(default_factory=EgressDenyList)
    check_secrets: bool = True
    """Whether admission reads the Secret an Agent names to check its label (``--webhook-check-secrets``)."""

    def problems(self, resource: Resource, namespace: str, source: str) -> list[Problem]:
        """Every way ``resource`` in ``namespace`` goes beyond what the platform allows."""
        if isinstance(resource, Agent):
            problem = self.endpoints.problem(namespace, resource.spec.model.api_base)
            return [Problem(source, "spec.model.apiBase", problem)] if problem else []
        if isinstance(resource, ToolPolicy):
            return self._tool_problems(resource, source)
        return []

    def _tool_problems(self, policy: ToolPolicy, source: str) -> list[Problem]:
        out = []
        for i, tool in enumerate(policy.spec.tools):
            where = f"spec.tools[{i}]"
            grants: list[tuple[str, str]] = []
            if tool.http is not None:
                grants.append((f"{where}.http.url", tool.http.url))
                grants.extend((f"{where}.http.allowedHosts[{j}]", h) for j, h in enumerate(tool.http.allowed_hosts))
            if tool.mcp is not None and tool.mcp.url is not None:
                grants.append((f"{where}.mcp.url", tool.mcp.url))
            grants.extend((f"{where}.permissions.egressHosts[{j}]", h)
                          for j, h in enumerate(tool.permissions.egress_hosts))
            for path, entry in grants:
                host, port = parse_host(entry)
                problem = self.egress.problem(host, port)
                if problem is not None:
                    out.append(Problem(source, path, problem))
        return out

    @staticmethod
    def secret_problem(agent: Agent, namespace: str, secret: Mapping[str, Any] | None) -> Problem | None:
        """Why the Secret an Agent names may not be its model credential (``secret`` None: it does not exist)."""
        ref = agent.spec.model.credentials_secret_ref
        if ref is None:
            return None
        source = f"Agent/{agent.metadata.name}"
        if secret is None:
            return Problem(source, "spec.model.credentialsSecretRef.name",
                           f"Secret {namespace}/{ref.name} does not exist; create it with the label "
                           'agentflow.dev/credential: "true"')
        problem = credential_problem(secret, namespace, ref.name)
        return Problem(source, "spec.model.credentialsSecretRef.name", problem) if problem else None
