"""The errors of agentflow.services, and what the operator does with each::

    ServiceError             base: a request about a resource that cannot be done as asked
    ├── InvalidWorkflow      the Workflow cannot run as written (every problem listed): it is failed with
    │                        Stalled=True, and the driver stops (re-reading it would not help)
    ├── MissingReferences    it refers to Agents, prompts, tools or Budgets not (yet) in its namespace: it
    │                        waits Pending and is checked again (kubectl apply of a folder creates in any order)
    └── ApprovalError        an approval or cancel the Workflow's state does not allow (the message says why)

Errors of the layers below reach the driver as they are (agentflow.storage.StorageError,
agentflow.k8s.kube.KubeError): it retries them with capped backoff, nothing is lost (the journal makes every
reconcile safe to repeat). kopf never sees them: a Workflow's daemon handles its own retries.
"""

from __future__ import annotations

__all__ = ["ApprovalError", "InvalidWorkflow", "MissingReferences", "ServiceError"]


class ServiceError(Exception):
    """Base of the errors of agentflow.services."""


class InvalidWorkflow(ServiceError):
    """The Workflow cannot run as written; the message lists every problem."""


class MissingReferences(ServiceError):
    """The Workflow refers to Agents, PromptVersions, tools or Budgets not (yet) in its namespace.

    Not final: `kubectl apply -f` of a folder creates the Workflow before what it refers to, so the
    run waits and is checked again.
    """


class ApprovalError(ServiceError):
    """The decision cannot be taken: the message says why and what to do instead."""
