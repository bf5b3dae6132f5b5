"""A step pod's identity: its projected token, checked by a TokenReview, names the pod; the pod names the one
attempt it may act for; the token is void once the pod is gone or the attempt ended."""

from __future__ import annotations

import pytest

from agentflow.security.identity import AttemptEnded, AuthError
from agentflow.services.identity import PodIdentity
from agentflow.storage.attempts import AttemptPod
from agentflow.testing import FakeKube, MemoryStore

NOW = 1_800_000_000.0
POD = "wf-classify-a1-abcd1234"


async def started(kube: FakeKube, store: MemoryStore, pod: str = POD) -> None:
    """What the reconciler does: store the attempt with its pod, create the pod, record the pod's uid."""
    await store.put_attempt("run-1", "classify", 1, {"request": {}}, pod=AttemptPod("team", "wf", pod))
    uid = await kube.create_pod("team", {"metadata": {"name": pod, "labels": {}}})
    assert uid is not None
    await store.set_pod_uid("run-1", "classify", 1, uid)


def identity(kube: FakeKube, store: MemoryStore, now: list[float]) -> PodIdentity:
    return PodIdentity(kube, store, clock=lambda: now[0])


async def test_the_pods_token_names_its_attempt_and_is_cached() -> None:
    kube, store, now = FakeKube(), MemoryStore(), [NOW]
    await started(kube, store)
    auth = identity(kube, store, now)
    token = kube.pod_token(POD)
    claims = await auth(token)
    assert (claims.run_uid, claims.namespace, claims.workflow, claims.node, claims.attempt) == (
        "run-1", "team", "wf", "classify", 1)
    await auth(token)
    assert kube.reviews == 1, "a TokenReview per request would load the API server"
    now[0] += 31
    await auth(token)
    assert kube.reviews == 2, "the cache expires"


async def test_a_token_of_another_service_account_or_no_pod_is_refused() -> None:
    kube, store, now = FakeKube(), MemoryStore(), [NOW]
    await started(kube, store)
    auth = identity(kube, store, now)
    with pytest.raises(AuthError, match="refused by the API server"):
        await auth("forged")
    other = kube.pod_token("someone-elses-pod")  # a pod the operator never made for an attempt
    await kube.create_pod("team", {"metadata": {"name": "someone-elses-pod"}})
    with pytest.raises(AuthError, match="runs no AgentFlow attempt"):
        await auth(other)


async def test_a_pod_recreated_under_the_same_name_is_not_the_attempts_pod() -> None:
    kube, store, now = FakeKube(), MemoryStore(), [NOW]
    await started(kube, store)
    await kube.delete_pod("team", POD)
    await kube.create_pod("team", {"metadata": {"name": POD}})  # same name, new uid: made by someone else
    with pytest.raises(AuthError, match="not the pod the operator created"):
        await identity(kube, store, now)(kube.pod_token(POD))


async def test_a_deleted_pods_token_is_void() -> None:
    kube, store, now = FakeKube(), MemoryStore(), [NOW]
    await started(kube, store)
    token = kube.pod_token(POD)
    await kube.delete_pod("team", POD)
    with pytest.raises(AuthError, match="void once its pod is gone"):
        await identity(kube, store, now)(token)


async def test_the_token_is_revoked_once_the_attempt_has_a_result() -> None:
    kube, store, now = FakeKube(), MemoryStore(), [NOW]
    await started(kube, store)
    auth = identity(kube, store, now)
    token = kube.pod_token(POD)
    await auth(token)
    await store.put_result("run-1", "classify", 1, {"output": 1, "error": None, "calls": []})
    now[0] += 3  # past the short re-check interval of the ended state
    with pytest.raises(AttemptEnded, match="has ended") as ended:
        await auth(token)
    assert ended.value.claims.node == "classify"


async def test_an_unrecorded_pod_is_told_to_retry() -> None:
    kube, store, now = FakeKube(), MemoryStore(), [NOW]
    await store.put_attempt("run-1", "classify", 1, {}, pod=AttemptPod("team", "wf", POD))
    await kube.create_pod("team", {"metadata": {"name": POD}})  # the operator stopped before recording the uid
    with pytest.raises(AuthError, match="has not recorded") as caught:
        await identity(kube, store, now)(kube.pod_token(POD))
    assert caught.value.retry_after is not None


async def test_a_refused_token_is_not_reviewed_again_while_the_refusal_is_cached() -> None:
    kube, store, now = FakeKube(), MemoryStore(), [NOW]
    await started(kube, store)
    auth = identity(kube, store, now)
    for _ in range(50):  # a pod replaying a forged token does not load the API server
        with pytest.raises(AuthError, match="refused by the API server"):
            await auth("forged")
    assert kube.reviews == 1
