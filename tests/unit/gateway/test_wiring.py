"""The operator's side of the gateway: the attempt-token authenticator and the gateway URL of step pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentflow.controller.main import build_parser, gateway_url
from agentflow.engine.values import StepRequest
from agentflow.gateway.server import AuthError
from agentflow.security.identity import SignedTokens
from agentflow.security.tokens import AttemptClaims, issue_token, new_key
from agentflow.services.gateway import AttemptAuthenticator

QUICKSTART = Path(__file__).parents[3] / "examples" / "manifests" / "quickstart.yaml"
NOW = 1_800_000_000.0


class Attempts:
    def __init__(self) -> None:
        self.payloads: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.reads = 0

    async def get_attempt(self, run_uid: str, node: str, attempt: int) -> dict[str, Any] | None:
        self.reads += 1
        return self.payloads.get((run_uid, node, attempt))


async def test_a_token_becomes_the_attribution_of_its_attempt() -> None:
    key, attempts = new_key(), Attempts()
    request = StepRequest(run_id="uid-1", node="respond", step="respond", kind="llm", attempt=2, inputs={})
    attempts.payloads[("uid-1", "respond", 2)] = {"request": request.to_dict(),
                                                  "manifests": QUICKSTART.read_text(), "workflow": "quickstart"}
    auth = AttemptAuthenticator(SignedTokens(key, clock=lambda: NOW), attempts)
    token = issue_token(key, AttemptClaims("uid-1", "team-a", "quickstart", "respond", 2, NOW + 60))
    who = await auth(token)
    assert (who.namespace, who.workflow, who.run_uid, who.node, who.attempt, who.step, who.prompt) == (
        "team-a", "quickstart", "uid-1", "respond", 2, "respond", "quickstart-respond-v1")
    assert who.agent is not None and who.agent.metadata.name == "quickstart-agent" and who.cache
    await auth(token)
    assert attempts.reads == 1  # the payload is read once per attempt
    with pytest.raises(AuthError, match="signature"):
        await AttemptAuthenticator(SignedTokens(new_key(), clock=lambda: NOW), attempts)(token)
    with pytest.raises(AuthError, match="expired"):
        await AttemptAuthenticator(SignedTokens(key, clock=lambda: NOW + 61), attempts)(token)
    other = issue_token(key, AttemptClaims("uid-1", "team-a", "quickstart", "respond", 3, NOW + 60))
    with pytest.raises(AuthError, match="no attempt is stored"):
        await auth(other)


def test_step_pods_get_the_gateway_url() -> None:
    parse = build_parser().parse_args
    assert gateway_url(parse(["--callback-url", "http://10.0.0.5:8081", "--gateway-listen", "0.0.0.0:8082"])) == (
        "http://10.0.0.5:8082")
    assert gateway_url(parse(["--callback-url", "http://10.0.0.5:8081"])) is None
    assert gateway_url(parse(["--callback-url", "http://h:1", "--gateway-url", "http://gw:8082"])) == "http://gw:8082"
