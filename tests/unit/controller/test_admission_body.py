"""Admission requests nested too deep for kopf's JSON decoder are refused with the limit, not answered with a 500."""

from __future__ import annotations

import json
from typing import Any

import aiohttp.web
import pytest

from agentflow.controller.admission_body import ENVELOPE_DEPTH, refusal, too_deep
from agentflow.controller.certs import ManagedWebhookServer
from agentflow.models.limits import MAX_DEPTH

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"


def review(inputs: Any) -> str:
    body = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
            "spec": {"inputs": {"x": inputs}, "steps": [{"name": "a", "kind": "tool", "tool": "t"}]}}
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": UID, "operation": "CREATE", "object": body,
                                   "userInfo": {"username": "u", "uid": "someone-else"}}})


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_depth_is_measured_without_decoding_and_strings_do_not_count() -> None:
    # the object's root is at depth ENVELOPE_DEPTH; spec.inputs.x adds 3 more levels above the value
    shallow = review(json.loads(nested(MAX_DEPTH - 5)))
    assert not too_deep(shallow)
    deep_text = review("x").replace('"x"', nested(5000))  # json.loads would raise RecursionError on it
    assert too_deep(deep_text)
    assert not too_deep(review("[[[[[[" * 1000 + '\\"{{{{'))  # brackets and escaped quotes inside a string
    assert not too_deep(nested(MAX_DEPTH + ENVELOPE_DEPTH)) and too_deep(nested(MAX_DEPTH + ENVELOPE_DEPTH + 1))


def test_the_refusal_answers_the_request_by_its_uid_with_the_limit() -> None:
    answer = refusal(review("x").replace('"x"', nested(5000)))
    assert answer is not None
    response = answer["response"]
    assert response["uid"] == UID and response["allowed"] is False
    assert response["status"]["code"] == 422 and f"deeper than {MAX_DEPTH} levels" in response["status"]["message"]
    assert refusal(nested(5000)) is None  # nothing to answer: the server says 400


class Request:
    def __init__(self, text: str) -> None:
        self._text = text
        self.headers: dict[str, str] = {}
        self.transport = None
        self.match_info = {"id": "validate-workflows"}

    async def text(self) -> str:
        return self._text


async def test_the_server_refuses_a_deep_request_before_kopf_decodes_it() -> None:
    called: list[Any] = []

    async def fn(data: Any, **_: Any) -> dict[str, Any]:
        called.append(data)
        return {"response": {"allowed": True}}

    deep = Request(review("x").replace('"x"', nested(5000)))
    response = await ManagedWebhookServer._serve(fn, deep)  # type: ignore[arg-type]
    assert called == [] and json.loads(response.text)["response"]["allowed"] is False
    with pytest.raises(aiohttp.web.HTTPBadRequest):
        await ManagedWebhookServer._serve(fn, Request(nested(5000)))  # type: ignore[arg-type]
    ok = await ManagedWebhookServer._serve(fn, Request(review("x")))  # type: ignore[arg-type]
    assert json.loads(ok.text) == {"response": {"allowed": True}} and len(called) == 1


class Undecodable(Request):
    def __init__(self, error: Exception) -> None:
        super().__init__("")
        self._error = error

    async def text(self) -> str:
        raise self._error


@pytest.mark.parametrize("request_", [
    Undecodable(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")),  # bytes that are not UTF-8
    Undecodable(LookupError("unknown encoding: bogus-charset")),  # a charset Python does not know
    Request("{"), Request("[1]"), Request("{}"), Request('{"request": []}'), Request('{"request": {"uid": 7}}'),
], ids=["not-utf8", "bogus-charset", "not-json", "array", "no-request", "request-not-object", "uid-not-string"])
async def test_what_is_not_an_admission_review_is_400_and_never_reaches_kopf(request_: Request) -> None:
    called: list[Any] = []

    async def fn(data: Any, **_: Any) -> dict[str, Any]:
        called.append(data)
        return {"response": {"allowed": True}}

    with pytest.raises(aiohttp.web.HTTPBadRequest):
        await ManagedWebhookServer._serve(fn, request_)  # type: ignore[arg-type]
    assert called == []
