"""Model credentials come only from Secrets that opt in; an Agent cannot read any other Secret through the
gateway (a database password say) by naming it in spec.model.credentialsSecretRef."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.gateway.service import GatewayError
from agentflow.models import Agent
from agentflow.services.gateway import CREDENTIAL_LABEL, KubeCredentials
from agentflow.testing import FakeKube


def agent(secret: str, key: str = "api-key") -> Agent:
    return Agent.model_validate({"metadata": {"name": "triage", "namespace": "team"}, "spec": {
        "role": "r", "model": {"name": "openai/gpt-4o-mini", "credentialsSecretRef": {"name": secret, "key": key}}}})


def secret(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team", "labels": labels or {}}, "stringData": data}


KUBE = FakeKube(secrets=[
    secret("openai", {CREDENTIAL_LABEL: "true"}, **{"api-key": "sk-tenant"}),
    secret("payments-db", password="hunter2"),
    secret("half", {CREDENTIAL_LABEL: "yes"}, **{"api-key": "sk-x"}),
])


async def test_a_labelled_secret_gives_its_key() -> None:
    assert await KubeCredentials(KUBE)("team", agent("openai")) == "sk-tenant"


@pytest.mark.parametrize(("name", "key", "kind", "words"), [
    ("payments-db", "password", "CredentialsNotAllowed", "lacks the label agentflow.dev/credential"),
    ("half", "api-key", "CredentialsNotAllowed", "lacks the label"),
    ("missing", "api-key", "CredentialsNotFound", "not found"),
    ("openai", "other", "CredentialsNotFound", "has no key 'other'"),
])
async def test_any_other_secret_is_refused_by_name(name: str, key: str, kind: str, words: str) -> None:
    with pytest.raises(GatewayError) as caught:
        await KubeCredentials(KUBE)("team", agent(name, key))
    assert caught.value.type == kind and words in caught.value.message and caught.value.status == 403
    assert "hunter2" not in caught.value.message


async def test_no_reference_means_no_secret_is_read() -> None:
    kube = FakeKube()
    none = Agent.model_validate({"metadata": {"name": "a"}, "spec": {"role": "r", "model": {"name": "m"}}})
    assert await KubeCredentials(kube)("team", none) is None and kube.secret_reads == []
