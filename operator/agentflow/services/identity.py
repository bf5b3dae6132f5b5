"""A step pod's identity: its projected service-account token -> the pod -> the one attempt it runs.

Step pods hold no AgentFlow credential in their Pod object (anyone allowed to `get pods` could read an env
value). Each gets a service-account token projected into a file (agentflow.k8s.podspec: audience
``agentflow``, the namespace's ``default`` service account, which needs no RBAC at all) and sends it as its
bearer token to the callback server and the gateway. :class:`PodIdentity` checks it:

    TokenReview (audience agentflow)   authentic, unexpired, and bound to a pod that still exists; it names
                                       the pod's namespace, name and uid (deleting the pod voids the token)
    the attempt of that pod            recorded by the reconciler when it created the pod (agentflow_attempts);
                                       the uid must be the one it recorded, so a pod made later under the same
                                       name by someone else is refused
    still running                      an attempt with a result has ended: its token is refused from then on

Answers, refusals included, are cached per token for ``ttl`` seconds (a TokenReview per request would load
the API server, and a pod replaying a refused token must not);
the ended check is re-read at most every ``ended_ttl`` seconds, and an ended attempt stays refused.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ..k8s.kube import Kube, KubeError
from ..security.identity import AttemptEnded, AuthError
from ..security.tokens import AttemptClaims
from ..storage.attempts import AttemptPod

__all__ = ["TOKEN_AUDIENCE", "PodIdentity"]

TOKEN_AUDIENCE = "agentflow"


class PodAttempts(Protocol):
    async def attempt_of_pod(self, namespace: str, pod: str) -> AttemptPod | None: ...
    async def attempt_ended(self, run_uid: str, node: str, attempt: int) -> bool: ...


class PodIdentity:
    def __init__(self, kube: Kube, attempts: PodAttempts, *, audiences: Sequence[str] = (TOKEN_AUDIENCE,),
                 clock: Callable[[], float] = time.time, ttl: float = 30.0, ended_ttl: float = 2.0,
                 cache_size: int = 4096) -> None:
        self._kube = kube
        self._attempts = attempts
        self._audiences = tuple(audiences)
        self._clock = clock
        self._ttl = ttl
        self._ended_ttl = ended_ttl
        self._size = cache_size
        self._cache: collections.OrderedDict[str, tuple[float, AttemptClaims]] = collections.OrderedDict()
        self._refused: collections.OrderedDict[str, tuple[float, AuthError]] = collections.OrderedDict()
        self._checked: dict[tuple[str, str, int], float] = {}
        self._ended: set[tuple[str, str, int]] = set()

    async def __call__(self, token: str) -> AttemptClaims:
        now = self._clock()
        cached = self._cache.get(token)
        refused = self._refused.get(token)
        if refused is not None and now < refused[0]:
            raise refused[1]
        if cached is not None and now < cached[0]:
            claims = cached[1]
        else:
            try:
                claims = await self._resolve(token, now)
            except AuthError as exc:
                if exc.retry_after is None:  # a final no: the same token is not reviewed again for a while
                    self._refused[token] = (now + self._ttl, exc)
                    while len(self._refused) > self._size:
                        self._refused.popitem(last=False)
                raise
            self._cache[token] = (now + self._ttl, claims)
            self._cache.move_to_end(token)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        await self._check_running(claims, now)
        return claims

    async def _resolve(self, token: str, now: float) -> AttemptClaims:
        try:
            review = await self._kube.review_token(token, self._audiences)
        except KubeError as exc:
            raise AuthError(f"cannot check the token with the API server: {exc}", retry_after=5) from None
        if not review.authenticated:
            raise AuthError(f"the token was refused by the API server ({review.error or 'not authenticated'}): "
                            "a step pod's token is void once its pod is gone")
        if not review.pod_name:
            raise AuthError(f"the token of {review.username or 'an unknown user'} is not bound to a pod: only a "
                            "step pod's projected token is accepted")
        found = await self._attempts.attempt_of_pod(review.namespace, review.pod_name)
        if found is None:
            raise AuthError(f"pod {review.namespace}/{review.pod_name} runs no AgentFlow attempt")
        if found.pod_uid is None:
            raise AuthError(f"the operator has not recorded pod {review.namespace}/{review.pod_name} yet",
                            retry_after=2)
        if found.pod_uid != review.pod_uid:
            raise AuthError(f"pod {review.namespace}/{review.pod_name} is not the pod the operator created for "
                            f"attempt {found.attempt} of node {found.node!r} (another pod of the same name)")
        return AttemptClaims(found.run_uid, found.namespace, found.workflow, found.node, found.attempt,
                             now + self._ttl)

    async def _check_running(self, claims: AttemptClaims, now: float) -> None:
        key = (claims.run_uid, claims.node, claims.attempt)
        if key not in self._ended and now >= self._checked.get(key, 0.0):
            if await self._attempts.attempt_ended(*key):
                self._ended.add(key)
            self._checked[key] = now + self._ended_ttl
            if len(self._checked) > self._size:
                self._checked.clear()
        if key in self._ended:
            raise AttemptEnded(f"{claims.describe()} has ended (its result is stored): its token is revoked",
                               claims)
