"""What the gateway needs from the platform, built for the operator and `agentflow gateway`.

The gateway layer knows no tokens, no Kubernetes and no PostgreSQL of its own; this module gives it::

    AttemptAuthenticator   token -> Attribution: verify the attempt token (agentflow.security.tokens, the
                           operator's key), read the attempt payload the operator stored (PostgreSQL), find
                           the step, its Agent and prompt, the Workflow's labels and budgetRef. Cached per
                           token until it expires (a payload never changes once stored).
    KubeBudgets            the Budgets of the call's namespace, read from the cluster (cached ``ttl`` seconds),
                           turned into ledger lines by agentflow.cost.scope.lines_for. When the cluster cannot
                           be read, the last list read (if any) is used; with none, the call is refused (503)
                           rather than run unbudgeted.
    KubeCredentials        the provider key an Agent's model.credentialsSecretRef names, read from its Secret
                           (cached ``ttl`` seconds), only if the Secret opts in with the label
                           ``agentflow.dev/credential: "true"`` (any other Secret of the namespace, a
                           database password say, is refused by name); the step pods never see it

The local runner's counterparts (Budgets from its manifests, attribution from the request) are in
agentflow.gateway.local and agentflow.gateway.budgets.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..executors.payload import PayloadError, load_payload
from ..gateway.budgets import budget_lines
from ..gateway.service import Attribution, GatewayError, attribution_for
from ..k8s.kube import Kube, KubeError, NotFound
from ..models import Agent, Budget
from ..security.identity import Authenticate, AuthError
from ..storage.ledger import BudgetLine

__all__ = ["CREDENTIAL_LABEL", "AttemptAuthenticator", "KubeBudgets", "KubeCredentials", "credential_problem"]

log = logging.getLogger(__name__)


class AttemptSource(Protocol):
    """Where attempt payloads are stored (PostgresStore has it)."""

    async def get_attempt(self, run_uid: str, node: str, attempt: int) -> dict[str, Any] | None: ...


class AttemptAuthenticator:
    """``await authenticator(token) -> Attribution``; AuthError (HTTP 401) for a token it cannot accept."""

    def __init__(self, authenticate: Authenticate, attempts: AttemptSource, *, cache_size: int = 4096) -> None:
        self._authenticate = authenticate
        self._attempts = attempts
        self._size = cache_size
        self._cache: collections.OrderedDict[tuple[str, str, int], Attribution] = collections.OrderedDict()

    async def __call__(self, token: str) -> Attribution:
        claims = await self._authenticate(token)
        key = (claims.run_uid, claims.node, claims.attempt)
        cached = self._cache.get(key)
        if cached is not None and cached.namespace == claims.namespace:
            return dataclasses.replace(cached, expires=claims.expires)
        payload = await self._attempts.get_attempt(claims.run_uid, claims.node, claims.attempt)
        if payload is None:
            raise AuthError(f"no attempt is stored for {claims.describe()}; the token names no call to charge")
        try:
            request, catalog, workflow = load_payload(payload)
        except PayloadError as exc:
            raise AuthError(f"the stored attempt for {claims.describe()} is unusable: {exc}") from None
        who = attribution_for(
            namespace=claims.namespace,
            run_uid=claims.run_uid,
            node=claims.node,
            attempt=claims.attempt,
            workflow=workflow,
            step=workflow.spec.find_step(request.step),
            agents=catalog.agents,
            expires=claims.expires,
            agent_name=request.agent,
        )
        self._cache[key] = who
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return who


class KubeBudgets:
    """Budget lines from the Budgets in the call's namespace, listed through the API (cached ``ttl``)."""

    def __init__(self, kube: Kube, *, ttl_seconds: float = 5.0, monotonic: Callable[[], float] = time.monotonic):
        self._kube = kube
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, list[Budget]]] = {}

    async def budgets(self, namespace: str) -> list[Budget]:
        now = self._monotonic()
        cached = self._cache.get(namespace)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            bodies = await self._kube.list_resources("budgets", namespace)
        except KubeError as exc:
            if cached is not None:
                log.warning("gateway: listing Budgets in %s failed (%s); using the list from %.0fs ago",
                            namespace, exc, now - cached[0])
                return cached[1]
            raise GatewayError("BudgetsUnavailable", f"cannot read the Budgets of namespace {namespace!r}: {exc}; "
                               "the call is refused rather than run unbudgeted", retryable=True, status=503) from exc
        budgets = []
        for body in bodies:
            try:
                budgets.append(Budget.model_validate(body))
            except ValueError as exc:  # the webhook should have refused it; never let one bad object stop all
                name = (body.get("metadata") or {}).get("name")
                log.warning("gateway: Budget %s/%s does not parse, ignored: %s", namespace, name, exc)
        self._cache[namespace] = (now, budgets)
        return budgets

    async def __call__(self, who: Attribution, now: dt.datetime) -> Sequence[BudgetLine]:
        return budget_lines(await self.budgets(who.namespace), who, now)


CREDENTIAL_LABEL = "agentflow.dev/credential"
"""A Secret must carry ``agentflow.dev/credential: "true"`` for an Agent to use a key of it."""


def credential_problem(secret: Mapping[str, Any], namespace: str, name: str) -> str | None:
    """Why Secret ``namespace/name`` may not serve as a model credential (None: it may)."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(CREDENTIAL_LABEL) != "true":
        return (f"Secret {namespace}/{name} is not a model credential: it lacks the label "
                f'{CREDENTIAL_LABEL}: "true" (only Secrets that opt in may be named by '
                "spec.model.credentialsSecretRef; label it if it holds a provider key)")
    return None


class KubeCredentials:
    """The API key of an Agent's ``model.credentialsSecretRef`` (None when it names none), cached ``ttl``."""

    def __init__(self, kube: Kube, *, ttl_seconds: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._cache: dict[tuple[str, str, str], tuple[float, str]] = {}

    async def __call__(self, namespace: str, agent: Agent) -> str | None:
        ref = agent.spec.model.credentials_secret_ref
        if ref is None:
            return None
        key = (namespace, ref.name, ref.key)
        now = self._monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        where = f"Agent {agent.metadata.name!r}: model.credentialsSecretRef"
        try:
            secret = await self._kube.read_secret(namespace, ref.name)
        except NotFound as exc:
            raise GatewayError("CredentialsNotFound", f"{where}: {exc}; create the Secret or fix the reference",
                               retryable=False, status=403, param="model") from exc
        except KubeError as exc:
            raise GatewayError("CredentialsUnavailable", f"{where}: cannot read Secret {namespace}/{ref.name}: "
                               f"{exc}", retryable=exc.retryable, status=503 if exc.retryable else 500) from exc
        problem = credential_problem(secret, namespace, ref.name)
        if problem is not None:
            raise GatewayError("CredentialsNotAllowed", f"{where}: {problem}", retryable=False, status=403,
                               param="model")
        data = secret.get("data") or {}
        if ref.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise GatewayError("CredentialsNotFound", f"{where}: Secret {namespace}/{ref.name} has no key "
                               f"{ref.key!r} (its keys: {keys})", retryable=False, status=403, param="model")
        value = str(data[ref.key]).strip()
        self._cache[key] = (now, value)
        return value
