"""The console's aiohttp app: the API of agentflow.console.api over a RunSource, and the page.

::

    build_app(source, settings) -> web.Application
      guard middleware   local: the Host must be this machine (no DNS rebinding), and a mutating request
                         needs the per-process token of the page (X-AgentFlow-Token) and no foreign Origin;
                         cluster: every API call needs the caller's bearer token, passed on to the API server
      errors middleware  ConsoleError -> {"error": message, **details} with its status, never a traceback
      handlers           one call into the RunSource or agentflow.console.designer each

The page is the built React app in ``static/`` (built by `make console`, shipped in the package).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import html
import ipaddress
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from .. import __version__
from . import designer
from .api import ROUTES, openapi
from .errors import BadRequest, ConsoleError, Forbidden, Unauthorized
from .source import Caller, RunFilter, RunSource

__all__ = ["SOURCE_KEY", "Settings", "build_app", "static_dir"]

log = logging.getLogger(__name__)
SOURCE_KEY = web.AppKey("source", RunSource)
SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings")
HEARTBEAT_SECONDS = 15.0
MAX_BODY = designer.MAX_MANIFEST_BYTES + 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_dir() -> Path:
    """Where the built page is (inside the installed package)."""
    return Path(str(resources.files("agentflow.console") / "static"))


def local_user() -> str:
    try:
        return os.environ.get("AGENTFLOW_USER") or getpass.getuser()
    except Exception:
        return "unknown"


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: str  # "local" | "cluster"
    token: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(24))
    loopback_only: bool = True  # local: accept only Host names of this machine
    user: str = dataclasses.field(default_factory=local_user)
    static: Path = dataclasses.field(default_factory=static_dir)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, default=str), status=status, content_type="application/json")


def _error(status: int, message: str, details: Mapping[str, Any] | None = None) -> web.Response:
    return _json({**(details or {}), "error": message, "status": status}, status)


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ConsoleError as exc:
        return _error(exc.status, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            if exc.status == 413:
                return _error(413, f"the request body is larger than the console accepts ({MAX_BODY} bytes)")
            return _error(exc.status, exc.reason if exc.status != 404 else f"no such API route: {request.path}")
        raise
    except Exception:
        log.exception("console: %s %s failed", request.method, request.path)
        return _error(500, "the console failed to answer; its log has the details")


_MUTATING = frozenset(r.name for r in ROUTES if r.mutating)


def _guard(settings: Settings) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if settings.mode == "local":
            if settings.loopback_only and not _loopback_host(request.host):
                raise Forbidden(f"Host {request.host!r} is not this machine: open the console at "
                                "http://127.0.0.1:PORT (a page of another site may not reach it)")
            if request.method not in ("GET", "HEAD", "OPTIONS") and request.match_info.route.name in _MUTATING:
                origin = request.headers.get("Origin")
                if origin is not None and origin not in (f"http://{request.host}", f"https://{request.host}"):
                    raise Forbidden(f"Origin {origin} may not act on this console: use the console's own page")
                sent = request.headers.get("X-AgentFlow-Token", "").encode("utf-8", "surrogateescape")
                if not secrets.compare_digest(sent, settings.token.encode()):
                    raise Forbidden("missing or wrong X-AgentFlow-Token: act from the console's page, or read the "
                                    "token from its <meta name=agentflow-token> (it changes at each start)")
        elif request.path.startswith("/api/") and request.path not in ("/api/openapi.json", "/api/info"):
            auth = request.headers.get("Authorization", "")
            token = auth[7:].strip()
            if not auth.lower().startswith("bearer ") or not token:
                raise Unauthorized("sign in: send your Kubernetes bearer token (a ServiceAccount token or your "
                                   "OIDC id token) as Authorization: Bearer TOKEN")
            if not (token.isascii() and token.isprintable() and " " not in token):
                raise Unauthorized("the bearer token is not a Kubernetes token (printable ASCII without spaces)")
        return await handler(request)

    return guard


def _caller(request: web.Request) -> Caller:
    settings = request.app[SETTINGS_KEY]
    if settings.mode == "cluster":
        auth = request.headers.get("Authorization", "")
        return Caller(user="", token=auth[7:].strip() or None)
    return Caller(user=settings.user)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _string(body: dict[str, Any], key: str, *, required: bool = False, limit: int = 2000) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{key}: expected a string" + (" (required)" if required else ""))
    if len(value) > limit:
        raise BadRequest(f"{key}: at most {limit} characters")
    return value


def _source(request: web.Request) -> RunSource:
    return request.app[SOURCE_KEY]


# ---------------------------------------------------------------------------------------------- handlers


async def info(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    local = settings.mode == "local"
    return _json({"mode": settings.mode, "version": __version__, "user": settings.user if local else None,
                  "canStart": local, "canResume": local, "signIn": not local})


async def list_runs(request: web.Request) -> web.Response:
    q = request.query
    where = RunFilter(q.get("namespace") or None, q.get("label") or None, q.get("phase") or None)
    return _json(await _source(request).list_runs(_caller(request), where))


async def get_run(request: web.Request) -> web.Response:
    snap = await _source(request).snapshot(_caller(request), request.match_info["run"])
    return _json({**snap.graph, "seq": snap.seq})


async def get_node(request: web.Request) -> web.Response:
    return _json(await _source(request).node(_caller(request), request.match_info["run"], request.match_info["node"]))


async def events(request: web.Request) -> web.StreamResponse:
    raw = request.query.get("after", "-1")
    try:
        if not raw.isascii():  # int() reads other scripts' digits too
            raise ValueError(raw)
        after = int(raw)
    except ValueError:
        raise BadRequest(f"after={raw!r}: expected the seq of the last record the page has (an integer)") from None
    updates = await _source(request).watch(_caller(request), request.match_info["run"], after)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    iterator = updates.__aiter__()
    try:
        while True:
            try:
                update = await asyncio.wait_for(anext(iterator), HEARTBEAT_SECONDS)
            except StopAsyncIteration:
                await response.write(b"event: end\ndata: {}\n\n")
                break
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            payload = orjson.dumps(update, default=str)
            await response.write(b"id: %d\nevent: update\ndata: %s\n\n" % (update["seq"], payload))
    except ConsoleError as exc:  # after the stream started: say so in it
        await response.write(b"event: failure\ndata: %s\n\n" % orjson.dumps({"error": exc.message}))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    return response


async def decide(request: web.Request) -> web.Response:
    body = await _body(request)
    approved = body.get("approved")
    if not isinstance(approved, bool):
        raise BadRequest("approved: expected true (approve) or false (reject)")
    result = await _source(request).decide(_caller(request), request.match_info["run"], request.match_info["node"],
                                           approved, _string(body, "reason"))
    return _json(result)


async def cancel(request: web.Request) -> web.Response:
    body = await _body(request)
    return _json(await _source(request).cancel(_caller(request), request.match_info["run"], _string(body, "reason")))


async def resume(request: web.Request) -> web.Response:
    return _json(await _source(request).resume(_caller(request), request.match_info["run"]))


async def retry(request: web.Request) -> web.Response:
    return _json(await _source(request).retry(_caller(request), request.match_info["run"]))


async def replay(request: web.Request) -> web.Response:
    return _json(await _source(request).replay(_caller(request), request.match_info["run"]))


async def diff(request: web.Request) -> web.Response:
    a, b = request.query.get("a"), request.query.get("b")
    if not a or not b:
        raise BadRequest("give two runs: /api/diff?a=RUN_A&b=RUN_B")
    return _json(await _source(request).diff(_caller(request), a, b))


async def start(request: web.Request) -> web.Response:
    body = await _body(request)
    text = _string(body, "yaml", required=True, limit=designer.MAX_MANIFEST_BYTES)
    workflow = _string(body, "workflow", limit=253) or None
    return _json(await _source(request).start(_caller(request), text, workflow))


async def start_template(request: web.Request) -> web.Response:
    body = await _body(request)
    inputs = body.get("inputs", {})
    if not isinstance(inputs, dict):
        raise BadRequest("inputs: expected a JSON object (input name -> value)")
    labels = body.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadRequest("labels: expected a JSON object of strings")
    kind = _string(body, "kind", limit=64) or "WorkflowTemplate"
    if kind not in ("WorkflowTemplate", "ClusterWorkflowTemplate"):
        raise BadRequest(f"kind: expected WorkflowTemplate or ClusterWorkflowTemplate, got {kind!r}")
    started = await _source(request).start_template(
        _caller(request), _string(body, "namespace", limit=63), _string(body, "template", required=True, limit=253),
        kind, inputs, _string(body, "name", limit=253) or None, labels)
    return _json(started, 201)


async def get_result(request: web.Request) -> web.Response:
    return _json(await _source(request).result(_caller(request), request.match_info["run"]))


async def validate(request: web.Request) -> web.Response:
    body = await _body(request)
    text = _string(body, "yaml", required=True, limit=designer.MAX_MANIFEST_BYTES)
    return _json(await asyncio.to_thread(designer.findings, text))


async def parse_manifests(request: web.Request) -> web.Response:
    body = await _body(request)
    documents, problems = designer.parse(_string(body, "yaml", required=True, limit=designer.MAX_MANIFEST_BYTES))
    return _json({"documents": documents, "problems": problems})


async def export_manifests(request: web.Request) -> web.Response:
    body = await _body(request)
    documents = body.get("documents")
    if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
        raise BadRequest("documents: expected a list of manifests (JSON objects)")
    try:
        text = designer.export(documents)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    report = await asyncio.to_thread(designer.findings, text)
    return _json({"yaml": text, **report})


async def get_schemas(request: web.Request) -> web.Response:
    return _json(designer.schemas())


async def get_audit(request: web.Request) -> web.Response:
    return _json(await _source(request).audit(_caller(request)))


async def get_openapi(request: web.Request) -> web.Response:
    return _json(openapi(__version__))


_HANDLERS: dict[str, Handler] = {
    "info": info, "list_runs": list_runs, "get_run": get_run, "get_node": get_node, "events": events,
    "decide": decide, "cancel": cancel, "resume": resume, "retry": retry, "replay": replay, "diff": diff,
    "start": start, "start_template": start_template, "get_result": get_result, "validate": validate,
    "parse_manifests": parse_manifests,
    "export_manifests": export_manifests, "get_schemas": get_schemas, "get_audit": get_audit,
    "get_openapi": get_openapi,
}


# ---------------------------------------------------------------------------------------------- the page


def _index(settings: Settings) -> Handler:
    async def index(request: web.Request) -> web.Response:
        page = settings.static / "index.html"
        try:
            text = page.read_text(encoding="utf-8")
        except FileNotFoundError:
            return web.Response(status=503, content_type="text/html", text=(
                "<h1>AgentFlow console</h1><p>The page is not built into this installation: run "
                "<code>make console</code> (Node 20 and npm), or use the API at /api/openapi.json.</p>"))
        meta = (f'<meta name="agentflow-token" content="{html.escape(settings.token)}">'
                f'<meta name="agentflow-mode" content="{html.escape(settings.mode)}">')
        return web.Response(text=text.replace("<head>", "<head>" + meta, 1), content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self' "
                                     "'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"})

    return index


def build_app(source: RunSource, settings: Settings) -> web.Application:
    app = web.Application(middlewares=[_errors, _guard(settings)], client_max_size=MAX_BODY)
    app[SOURCE_KEY] = source
    app[SETTINGS_KEY] = settings
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _HANDLERS[route.name], name=route.name)
    index = _index(settings)
    app.router.add_get("/", index)
    assets = settings.static / "assets"
    if assets.is_dir():
        app.router.add_static("/assets", assets, append_version=False)

    async def close(_: web.Application) -> None:
        await source.close()

    app.on_cleanup.append(close)
    return app
