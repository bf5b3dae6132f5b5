"""The trigger server over HTTP, against the shipped FakeKube: a signed delivery starts one run, a replay none;
every failure to authenticate looks the same; errors name the field."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import multidict
import orjson
import pytest

from agentflow.k8s.kube import Forbidden, KubeError
from agentflow.k8s.trigger import workflow_name
from agentflow.testing import FakeKube
from agentflow.triggers.auth import sign_hmac, sign_slack, sign_standard
from agentflow.triggers.server import NOT_AUTHENTICATED, TriggerServer

KEY = "s3cret-key"
NOW = 1_800_000_000.0
TEMPLATE: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate",
    "metadata": {"name": "triage", "namespace": "team"},
    "spec": {"inputs": {"title": "", "number": 0},
             "inputSchema": {"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                                              "number": {"type": "integer"}},
                             "additionalProperties": False},
             "steps": [{"name": "s", "kind": "tool", "tool": "echo"}]},
}


def trigger_body(name: str = "issues", namespace: str = "team", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTrigger",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 2},
            "spec": {"workflowTemplateRef": {"name": "triage"},
                     "auth": {"hmac": {"secretRef": {"name": "gh", "key": "secret"}}},
                     "inputs": {"title": "body.issue.title", "number": "body.issue.number"},
                     "when": "body.action == 'opened'", **spec}}


def secret(name: str = "gh", namespace: str = "team", labelled: bool = True, **data: str) -> dict[str, Any]:
    labels = {"agentflow.dev/trigger": "true"} if labelled else {}
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels},
            "stringData": data or {"secret": KEY + "\n"}}  # a file's trailing newline is not part of the key


def cluster() -> FakeKube:
    return FakeKube(TEMPLATE, trigger_body(), secrets=[secret()])


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeKube, str, TriggerServer]]:
    kube = cluster()
    server = TriggerServer(kube, clock=lambda: NOW, max_body_bytes=4096, cache_seconds=0)
    await server.start("127.0.0.1", 0)
    try:
        yield kube, f"http://127.0.0.1:{server.port}", server
    finally:
        await server.stop()
        await server.stop()


ISSUE = {"action": "opened", "issue": {"number": 7, "title": "It crashes"}}


def signed(body: Any, delivery: str = "d-1", key: str = KEY, **headers: str) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return raw, {"X-Hub-Signature-256": sign_hmac(key.encode(), raw), "X-GitHub-Delivery": delivery,
                 "Content-Type": "application/json", **headers}


async def post(url: str, raw: bytes, headers: dict[str, str], path: str = "/v1/triggers/team/issues"
               ) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(url + path, data=raw, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


def workflows(kube: FakeKube) -> list[dict[str, Any]]:
    return [o for (plural, _, _), o in kube.resources.items() if plural == "workflows"]


async def test_a_signed_delivery_starts_one_run_and_its_replay_none(served: Any) -> None:
    kube, url, _ = served
    status, answer = await post(url, *signed(ISSUE))
    name = workflow_name("issues", "d-1")
    assert (status, answer) == (201, {"started": True, "workflow": name, "deliveryId": "d-1"})
    [run] = workflows(kube)
    assert run["spec"] == {"workflowTemplateRef": {"name": "triage"}, "inputs": {"title": "It crashes", "number": 7}}
    assert run["metadata"]["labels"]["agentflow.dev/trigger"] == "issues"
    assert run["metadata"]["ownerReferences"][0]["uid"] == "uid-issues"
    status, answer = await post(url, *signed(ISSUE))
    assert status == 200 and answer["duplicate"] is True and answer["workflow"] == name
    assert len(workflows(kube)) == 1 and kube.resources_created == [f"workflows/{name}"]
    last = kube.resources[("workflowtriggers", "team", "issues")]["status"]
    assert last["path"] == "/v1/triggers/team/issues"
    assert last["lastDelivery"] == {"id": "d-1", "time": "2027-01-15T08:00:00Z", "outcome": "Duplicate",
                                    "workflow": name, "message": ""}
    assert (await post(url, *signed(ISSUE, delivery="d-2")))[0] == 201
    assert len(workflows(kube)) == 2


def standard_webhooks(kube: FakeKube) -> str:
    """The trigger switched to Standard Webhooks with a whsec_ secret of its own: that secret."""
    spec = kube.resources[("workflowtriggers", "team", "issues")]["spec"]
    spec["auth"] = {"standard": {"secretRef": {"name": "gh", "key": "secret"}}}
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    kube.add_secret({"metadata": {"name": "gh", "namespace": "team", "labels": {"agentflow.dev/trigger": "true"}},
                     "stringData": {"secret": secret}})
    return secret


async def test_a_standard_webhooks_delivery_starts_one_run_and_cannot_be_replayed_under_another_id(
        served: Any) -> None:
    kube, url, _ = served
    secret = standard_webhooks(kube)
    raw = orjson.dumps(ISSUE)

    def headers(msg_id: str, stamp: int = int(NOW)) -> dict[str, str]:
        return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "Content-Type": "application/json",
                "webhook-signature": sign_standard(secret.encode(), msg_id, stamp, raw)}

    status, answer = await post(url, raw, headers("msg_1"))
    assert (status, answer["deliveryId"]) == (201, "msg_1")  # the signed id is the delivery id
    assert (await post(url, raw, headers("msg_1")))[0] == 200  # a retry: the same run
    captured = headers("msg_1")
    assert (await post(url, raw, {**captured, "webhook-id": "msg_2"}))[0] == 401  # replayed under another id
    assert (await post(url, raw, headers("msg_3", int(NOW) - 301)))[0] == 401  # too old
    assert len(workflows(kube)) == 1


async def test_a_replay_after_an_operator_restart_starts_nothing(served: Any) -> None:
    kube, url, _ = served
    assert (await post(url, *signed(ISSUE)))[0] == 201
    again = TriggerServer(kube, clock=lambda: NOW)  # a new process: the dedupe lives in the API server
    await again.start("127.0.0.1", 0)
    try:
        status, answer = await post(f"http://127.0.0.1:{again.port}", *signed(ISSUE))
    finally:
        await again.stop()
    assert status == 200 and answer["duplicate"] and len(workflows(kube)) == 1


@pytest.mark.parametrize("case", ["bad signature", "other key", "no signature", "unknown trigger",
                                  "unknown namespace", "no secret", "unlabelled secret", "no key in secret",
                                  "invalid trigger", "not a name", "forbidden", "event trigger"])
async def test_every_failure_to_authenticate_looks_the_same(served: Any, case: str) -> None:
    kube, url, _ = served
    raw, headers = signed(ISSUE)
    path = "/v1/triggers/team/issues"
    if case == "bad signature":
        headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    elif case == "other key":
        raw, headers = signed(ISSUE, key="guess")
    elif case == "no signature":
        headers.pop("X-Hub-Signature-256")
    elif case == "unknown trigger":
        path = "/v1/triggers/team/nope"
    elif case == "unknown namespace":
        path = "/v1/triggers/other/issues"
    elif case == "no secret":
        kube.secrets.clear()
    elif case == "unlabelled secret":
        kube.add_secret(secret(labelled=False))
    elif case == "no key in secret":
        kube.add_secret(secret(token=KEY))
    elif case == "invalid trigger":
        kube.resources[("workflowtriggers", "team", "issues")]["spec"]["auth"] = {}
    elif case == "not a name":
        path = "/v1/triggers/Team/issues%2F..%2Fx"
    elif case == "event trigger":  # spec.events: it hears AgentFlow events, takes no HTTP delivery
        spec = kube.resources[("workflowtriggers", "team", "issues")]["spec"]
        del spec["auth"]
        spec["events"] = {"types": ["RunFinished"]}
    elif case == "forbidden":  # RBAC: a namespace the operator's Role does not cover
        async def refused(*args: Any) -> Any:
            raise Forbidden("get workflowtriggers/issues: 403 (check the operator's RBAC)", 403)

        kube.get_resource = refused
    status, answer = await post(url, raw, headers, path)
    assert (status, answer) == (401, {"error": NOT_AUTHENTICATED})
    assert workflows(kube) == []


@pytest.mark.parametrize("cache_seconds", [0, 60])
async def test_a_secret_problem_goes_on_the_triggers_status_once(cache_seconds: float) -> None:
    kube = cluster()
    server = TriggerServer(kube, clock=lambda: NOW, cache_seconds=cache_seconds)
    await server.start("127.0.0.1", 0)
    try:
        await secret_problem_once(kube, f"http://127.0.0.1:{server.port}", cache_seconds)
    finally:
        await server.stop()


async def secret_problem_once(kube: FakeKube, url: str, cache_seconds: float) -> None:
    kube.add_secret(secret(labelled=False))
    for _ in range(3):
        assert (await post(url, *signed(ISSUE)))[0] == 401
    message = kube.resources[("workflowtriggers", "team", "issues")]["status"]["message"]
    assert message.startswith("spec.auth: Secret team/gh is not a trigger key: it lacks the label")
    assert kube.statuses == [{"message": message}]  # not a write per unauthenticated request
    if cache_seconds:
        return  # the Secret is remembered for a while: a fixed one counts after cache_seconds
    kube.add_secret(secret())
    assert (await post(url, *signed(ISSUE)))[0] == 201
    assert kube.resources[("workflowtriggers", "team", "issues")]["status"]["message"] is None


async def test_a_secret_of_another_namespace_is_never_read(served: Any) -> None:
    kube, url, _ = served
    kube.add_secret(secret(namespace="kube-system"))
    kube.add_resource(trigger_body(namespace="tenant"))
    kube.add_resource({**TEMPLATE, "metadata": {"name": "triage", "namespace": "tenant"}})
    assert (await post(url, *signed(ISSUE), path="/v1/triggers/tenant/issues"))[0] == 401
    assert ("kube-system", "gh") not in kube.secret_reads and ("tenant", "gh") in kube.secret_reads


async def test_only_the_watched_namespaces_are_served() -> None:
    kube = cluster()
    server = TriggerServer(kube, namespaces=["prod-*"], clock=lambda: NOW)
    await server.start("127.0.0.1", 0)
    try:
        status, _ = await post(f"http://127.0.0.1:{server.port}", *signed(ISSUE))
    finally:
        await server.stop()
    assert status == 401 and kube.secret_reads == []


async def test_a_body_over_the_cap_is_413_before_anything_is_read(served: Any) -> None:
    kube, url, _ = served
    big = {"action": "opened", "issue": {"title": "x" * 5000, "number": 1}}
    status, answer = await post(url, *signed(big))
    assert status == 413 and "4096 bytes" in answer["error"]
    assert kube.secret_reads == [] and workflows(kube) == []

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(10):
            yield b"x" * 1000

    async with aiohttp.ClientSession() as s, s.post(url + "/v1/triggers/team/issues", data=chunks()) as r:
        assert r.status == 413


@pytest.mark.parametrize("body, delivery, status, fragment", [
    (b"{not json", "d", 400, "the body is not JSON"),
    ({"action": "opened", "issue": {"number": 7}}, "d", 400, "spec.inputs.title: invalid expression "
                                                             "'body.issue.title': no such key: 'title'"),
    ({"action": "opened", "issue": {"number": "7", "title": "t"}}, "d", 422, "inputs.number: '7' is not of type "
                                                                            "'integer'"),
    ({"action": "opened", "issue": {"number": 7, "title": "t" * 41}}, "d", 422, "inputs.title: "),
    (ISSUE, "", 400, "spec.deliveryId: the delivery has no id"),
])
async def test_bad_deliveries_name_the_field(served: Any, body: Any, delivery: str, status: int,
                                             fragment: str) -> None:
    kube, url, _ = served
    raw, headers = signed(body, delivery=delivery)
    if not delivery:
        headers.pop("X-GitHub-Delivery")
    got, answer = await post(url, raw, headers)
    assert got == status and fragment in answer["error"], answer
    assert workflows(kube) == []


async def test_when_false_is_202_without_a_run(served: Any) -> None:
    kube, url, _ = served
    status, answer = await post(url, *signed({**ISSUE, "action": "closed"}))
    assert status == 202 and answer["started"] is False and workflows(kube) == []
    assert kube.resources[("workflowtriggers", "team", "issues")]["status"]["lastDelivery"]["outcome"] == "Filtered"


async def test_a_form_body_and_a_slack_signature(served: Any) -> None:
    kube, url, _ = served
    kube.add_resource(trigger_body(
        "slash", auth={"slack": {"secretRef": {"name": "gh"}}}, when=None, deliveryId="body.trigger_id",
        inputs={"title": "body.text"}))
    raw = b"command=%2Ftriage&text=It+crashes&trigger_id=398738.4744"
    headers = {"X-Slack-Signature": sign_slack(KEY.encode(), raw, int(NOW) - 30),
               "X-Slack-Request-Timestamp": str(int(NOW) - 30), "Content-Type": "application/x-www-form-urlencoded"}
    status, answer = await post(url, raw, headers, "/v1/triggers/team/slash")
    assert status == 201 and answer["deliveryId"] == "398738.4744"
    [run] = workflows(kube)
    assert run["spec"]["inputs"] == {"title": "It crashes"}
    stale = {**headers, "X-Slack-Signature": sign_slack(KEY.encode(), raw, int(NOW) - 3600),
             "X-Slack-Request-Timestamp": str(int(NOW) - 3600)}
    assert (await post(url, raw, stale, "/v1/triggers/team/slash"))[0] == 401


async def test_bearer_suspend_and_an_unknown_template(served: Any) -> None:
    kube, url, _ = served
    kube.add_resource(trigger_body("tok", auth={"bearer": {"secretRef": {"name": "gh"}}}))
    raw = orjson.dumps(ISSUE)
    headers = {"Authorization": f"Bearer {KEY}", "X-Request-Id": "r-1"}
    assert (await post(url, raw, headers, "/v1/triggers/team/tok"))[0] == 201
    kube.resources[("workflowtriggers", "team", "tok")]["spec"]["suspend"] = True
    status, answer = await post(url, raw, {**headers, "X-Request-Id": "r-2"}, "/v1/triggers/team/tok")
    assert status == 503 and "spec.suspend" in answer["error"]
    kube.resources[("workflowtriggers", "team", "tok")]["spec"]["suspend"] = False
    kube.resources.pop(("workflowtemplates", "team", "triage"))
    status, answer = await post(url, raw, {**headers, "X-Request-Id": "r-3"}, "/v1/triggers/team/tok")
    assert (status, answer) == (422, {"error": "spec.workflowTemplateRef.name: WorkflowTemplate team/triage does "
                                               "not exist"})


async def test_a_name_collision_is_refused_not_taken_for_a_replay(served: Any) -> None:
    kube, url, _ = served
    name = workflow_name("issues", "d-1")
    kube.add_resource({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
                       "metadata": {"name": name, "namespace": "team"}, "spec": {"steps": []}})
    status, answer = await post(url, *signed(ISSUE))
    assert status == 409 and "was not started by this delivery" in answer["error"]


async def test_the_api_server_away_is_503(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    kube, url, _ = served

    async def away(*args: Any) -> Any:
        raise KubeError("get: cannot reach the API server")

    monkeypatch.setattr(kube, "get_resource", away)
    status, answer = await post(url, *signed(ISSUE))
    assert status == 503 and "post the delivery again" in answer["error"]


async def test_too_many_in_flight_is_429() -> None:
    kube = cluster()
    server = TriggerServer(kube, clock=lambda: NOW, max_in_flight=1)
    await server.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}/v1/triggers/team/issues"
    release = asyncio.Event()
    read = kube.get_resource

    async def slow_read(*args: Any, **kwargs: Any) -> dict[str, Any]:  # holds the one slot until released
        await release.wait()
        return await read(*args, **kwargs)

    kube.get_resource = slow_read  # type: ignore[method-assign]
    try:
        async with aiohttp.ClientSession() as s:
            raw, headers = signed(ISSUE)
            first = asyncio.ensure_future(s.post(url, data=raw, headers=headers))
            for _ in range(100):
                if server._slots.locked():
                    break
                await asyncio.sleep(0.01)
            async with s.post(url, data=raw, headers=headers) as r:
                assert r.status == 429 and r.headers["Retry-After"] == "5"
            release.set()
            response = await first
            assert response.status == 201  # it had the slot
            response.release()
    finally:
        await server.stop()


async def _stalled(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sends its headers and one byte of a 100-byte body, then nothing (slowloris)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/triggers/x/y HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    return reader, writer


async def test_clients_that_stop_sending_hold_no_deliverys_place_and_time_out() -> None:
    kube = cluster()
    server = TriggerServer(kube, clock=lambda: NOW, max_in_flight=1, body_seconds=1.0)  # 4 readers at once
    await server.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}/v1/triggers/team/issues"
    stalled = [await _stalled(server.port) for _ in range(3)]
    try:
        await asyncio.sleep(0.2)
        assert (await post(url.removesuffix("/v1/triggers/team/issues"), *signed(ISSUE)))[0] == 201  # not 429
        stalled.append(await _stalled(server.port))  # the four readers are taken: a fifth waits its turn
        await asyncio.sleep(0.2)
        assert (await post(url.removesuffix("/v1/triggers/team/issues"), *signed(ISSUE, delivery="d-2")))[0] == 429
        answers = [await asyncio.wait_for(reader.read(400), 10) for reader, _ in stalled]
        assert all(a.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 seconds" in a for a in answers)
        assert (await post(url.removesuffix("/v1/triggers/team/issues"), *signed(ISSUE, delivery="d-2")))[0] == 201
    finally:
        for _, writer in stalled:
            writer.close()
        await server.stop()
    assert len(workflows(kube)) == 2


async def test_a_header_sent_twice_is_read_as_one_joined_value_by_auth_and_mapping(served: Any) -> None:
    kube, url, _ = served
    secret = standard_webhooks(kube)
    raw = orjson.dumps(ISSUE)
    captured = [("webhook-id", "msg_1"), ("webhook-timestamp", str(int(NOW))), ("Content-Type", "application/json"),
                ("webhook-signature", sign_standard(secret.encode(), "msg_1", int(NOW), raw))]
    async with aiohttp.ClientSession() as s:
        for extra in ("evil-2", "msg_1"):  # a second id line: the signature covers neither "msg_1, evil-2" nor it
            async with s.post(url + "/v1/triggers/team/issues", data=raw,
                              headers=multidict.CIMultiDict([*captured, ("webhook-id", extra)])) as r:
                assert r.status == 401, await r.text()
        async with s.post(url + "/v1/triggers/team/issues", data=raw, headers=multidict.CIMultiDict(captured)) as r:
            assert r.status == 201 and (await r.json())["deliveryId"] == "msg_1"
    assert len(workflows(kube)) == 1


async def test_a_delivery_id_that_is_not_utf8_is_400_naming_the_field(served: Any) -> None:
    _, _, server = served
    raw, headers = signed(ISSUE)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k != "X-GitHub-Delivery")
    writer.write(b"POST /v1/triggers/team/issues HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                 + head.encode() + b"X-GitHub-Delivery: \xff\xfe-bytes\r\n"
                 + f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ") and b"spec.deliveryId: a delivery id is UTF-8 text" in answer, answer


async def test_unknown_names_are_cached_briefly() -> None:
    kube = cluster()
    server = TriggerServer(kube, clock=time.time, cache_seconds=60)
    await server.start("127.0.0.1", 0)
    reads: list[str] = []
    real = kube.get_resource

    async def counted(plural: str, namespace: str, name: str) -> dict[str, Any]:
        reads.append(name)
        return await real(plural, namespace, name)

    kube.get_resource = counted  # type: ignore[method-assign]
    try:
        for _ in range(5):
            status, _ = await post(f"http://127.0.0.1:{server.port}", *signed(ISSUE), "/v1/triggers/team/nope")
            assert status == 401
    finally:
        await server.stop()
    assert reads == ["nope"]


async def test_every_input_the_schema_refuses_is_named(served: Any) -> None:
    kube, url, _ = served
    status, answer = await post(url, *signed({"action": "opened", "issue": {"number": "7", "title": "t" * 41}}))
    assert status == 422 and "inputs.number: " in answer["error"] and "inputs.title: " in answer["error"]
    last = kube.resources[("workflowtriggers", "team", "issues")]["status"]["lastDelivery"]
    assert last["outcome"] == "Refused" and last["message"] == answer["error"]
