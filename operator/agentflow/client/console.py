"""AsyncConsoleClient: runs of templates on a cluster through the console's HTTP API, for an application that has
a console URL and a bearer token rather than a kubeconfig.

The cluster console acts with the caller's own token (agentflow.console.cluster), so what this client may do is
what that identity may do (RBAC, the admission webhook), exactly as with :class:`~agentflow.client.AsyncClient`;
the console starts the run with that same client, so inputs are checked the same way and errors are the same
kinds::

    POST /api/template-runs       {namespace, template, kind, inputs, name, labels} -> 201 {runId, name}
                                   404 TemplateNotFound, 422 InputError (problems), 403 RunRefused, 409 RunExists
    GET  /api/runs/NS:NAME/result  RunResult (phase, outputs, cost, tokens, message, steps)     404 RunNotFound
    POST /api/runs/NS:NAME/cancel  {reason}

A local console does not start templates (it runs manifests): use :class:`~agentflow.client.AsyncLocalClient`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from ..models import TemplateKind
from .bodies import template_ref
from .errors import ClientError, InputError, RunExists, RunNotFound, RunRefused, TemplateNotFound
from .handle import RunHandle
from .runs import RunResult

__all__ = ["AsyncConsoleClient"]


class AsyncConsoleClient:
    """Start runs of templates through a cluster console and follow them.

    ``url``: the console (``https://agentflow.example.com``); ``token``: a bearer token the API server accepts
    (a service account's, an OIDC id token); ``namespace``: where runs are created and looked up;
    ``poll_seconds``: how often a run is read while waiting or streaming; ``timeout``: seconds per HTTP request.
    """

    def __init__(self, url: str, token: str, namespace: str, *, poll_seconds: float = 1.0,
                 timeout: float = 30.0, session: aiohttp.ClientSession | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url: expected the console's http(s):// address, got {url!r}")
        if not token or any(c in token for c in "\r\n"):
            raise ValueError("token: a bearer token is required (one line)")
        if not namespace:
            raise ValueError("namespace: required (where runs are created)")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds: expected a positive number of seconds, got {poll_seconds!r}")
        self.url = url.rstrip("/")
        self.namespace = namespace
        self.poll_seconds = poll_seconds
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> AsyncConsoleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session it made (not one it was given)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def start(self, template: str, inputs: Mapping[str, Any] | None = None, *, name: str | None = None,
                    kind: TemplateKind = "WorkflowTemplate", labels: Mapping[str, str] | None = None) -> RunHandle:
        """Start a run of ``template`` (of ``kind``) with ``inputs``; its handle. TemplateNotFound, InputError (the
        field named), RunRefused (RBAC, the webhook, or a run of that name exists), ClientError."""
        ref = template_ref(template, kind)
        body: dict[str, Any] = {"namespace": self.namespace, "template": ref.name, "kind": ref.kind,
                                "inputs": dict(inputs or {}), "labels": dict(labels or {})}
        if name is not None:
            body["name"] = name
        status, answer = await self._call("POST", "/api/template-runs", body)
        if status == 201:
            return RunHandle(str(answer["name"]), self)
        if status == 404 and "template" in answer:
            raise TemplateNotFound(str(answer["template"]), str(answer.get("kind", ref.kind)), answer["error"])
        if status == 422 and isinstance(answer.get("problems"), list):
            raise InputError([(str(field), str(message)) for field, message in answer["problems"]])
        if status == 409 and answer.get("name"):
            raise RunExists(str(answer["name"]), answer["error"])
        if status in (403, 409) or answer.get("refused"):
            raise RunRefused(answer["error"])
        raise self._failed(status, answer, "start a run")

    async def get(self, name: str) -> RunHandle:
        """The handle of an existing run of the namespace; RunNotFound."""
        await self.look(name)
        return RunHandle(name, self)

    # -- Source

    async def look(self, run: str) -> RunResult:
        status, answer = await self._call("GET", f"/api/runs/{self._ref(run)}/result")
        if status == 200:
            try:
                return RunResult.from_dict(answer)
            except ValueError as exc:
                raise ClientError(f"the console answered a result that is not one: {exc}") from None
        if status == 404:
            raise RunNotFound(f"no Workflow {run!r} in namespace {self.namespace}: {answer['error']}")
        raise self._failed(status, answer, f"read run {run}")

    async def cancel(self, run: str, reason: str) -> None:
        status, answer = await self._call("POST", f"/api/runs/{self._ref(run)}/cancel", {"reason": reason})
        if status != 200:
            raise self._failed(status, answer, f"cancel run {run}")

    # -- HTTP

    def _ref(self, run: str) -> str:
        return urllib.parse.quote(f"{self.namespace}:{run}", safe=":")

    @staticmethod
    def _failed(status: int, answer: Mapping[str, Any], what: str) -> ClientError:
        return ClientError(f"the console could not {what} ({status}): {answer.get('error', 'no reason given')}")

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None
                    ) -> tuple[int, dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        data = orjson.dumps(body) if body is not None else None
        headers = {**self._headers, **({"Content-Type": "application/json"} if data is not None else {})}
        try:
            async with self._session.request(method, self.url + path, data=data, headers=headers,
                                             timeout=self._timeout) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientError(f"cannot reach the console at {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            answer = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            answer = {"error": raw[:300].decode("utf-8", "replace")}
        if not isinstance(answer, dict):
            answer = {"error": f"an answer that is not a JSON object: {str(answer)[:200]}"}
        if status == 401:
            raise ClientError(f"the console refused the token (401): {answer.get('error', '')}")
        return status, answer
