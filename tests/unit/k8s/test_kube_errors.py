"""agentflow.k8s.kube's error translation: what a refused call says, to the operator and to a person."""

from __future__ import annotations

import json

from agentflow.k8s.kube import RBAC_HINT, Forbidden, Invalid, NotFound, _translate, status_message, user_words

DENIED = ('admission webhook "approve-workflows.agentflow.dev" denied the request: system:serviceaccount:'
          'team-a:runner may not approve or reject steps of workflow team-a/release: RBAC does not grant the verb '
          "'approve' on workflows/approval (agentflow.dev) in namespace team-a. A cluster admin grants it with ...")


class ApiException(Exception):
    """What kubernetes.client raises: status, reason and the response body."""

    def __init__(self, status: int, reason: str, message: str | None) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.body = json.dumps({"kind": "Status", "message": message, "code": status}) if message is not None else ""


def test_the_status_message_is_kept_whole_and_unescaped() -> None:
    error = _translate(ApiException(403, "Forbidden", DENIED), "patch workflows/release")
    assert isinstance(error, Forbidden) and error.status == 403
    assert str(error) == f"patch workflows/release: 403 Forbidden: {DENIED}{RBAC_HINT}"
    assert user_words(error) == f"patch workflows/release: 403 Forbidden: {DENIED}"


def test_other_statuses_and_bodies_that_are_not_a_status() -> None:
    gone = _translate(ApiException(404, "Not Found", 'workflows.agentflow.dev "x" not found'), "get workflows/x")
    assert isinstance(gone, NotFound)
    assert str(gone) == 'get workflows/x: 404 Not Found: workflows.agentflow.dev "x" not found'
    bare = _translate(ApiException(422, "Unprocessable Entity", None), "create x")
    assert isinstance(bare, Invalid) and str(bare) == "create x: 422 Unprocessable Entity"
    assert status_message("<html>bad gateway</html>") == "<html>bad gateway</html>"
    assert status_message('["not", "a status"]') == '["not", "a status"]'
    assert len(status_message(json.dumps({"message": "m" * 5000}))) == 1000


class _Response:
    def __init__(self) -> None:
        self.read_calls = self.released = 0

    def read(self) -> bytes:
        self.read_calls += 1
        return b"{}"

    def release_conn(self) -> None:
        self.released += 1


async def test_a_call_whose_answer_is_not_needed_is_not_decoded_and_gives_its_connection_back() -> None:
    import threading

    from agentflow.k8s.kube import KubeClient

    client = KubeClient(api_client=None)
    response, seen = _Response(), {}

    def fn(*args: object, **kwargs: object) -> _Response:
        seen.update(args=args, kwargs=kwargs, thread=threading.current_thread().name)
        return response

    await client._send("patch workflows/w status", fn, "ns", body={"status": {}})
    assert seen["args"] == ("ns",) and seen["kwargs"] == {"body": {"status": {}}, "_preload_content": False}
    assert str(seen["thread"]).startswith("kube") and (response.read_calls, response.released) == (1, 1)

    def refused(**_: object) -> _Response:
        from kubernetes.client.exceptions import ApiException as Real

        raise Real(status=403, reason="Forbidden")

    try:
        await client._send("create event", refused)
    except Forbidden as exc:
        assert str(exc).startswith("create event: 403 Forbidden")
    else:
        raise AssertionError("a 403 must be Forbidden")
    assert client._executor is not None
    client._executor.shutdown()
