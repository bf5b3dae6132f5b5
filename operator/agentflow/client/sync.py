"""Blocking wrappers of the async clients, for code without an event loop (scripts, Flask, Django, notebooks).

Each blocking client owns one event loop in a thread of its own (a portal, like anyio's BlockingPortal) and runs
every call of its async client there: runs the local client starts are driven in that thread whether or not the
caller is waiting, and a cluster client's calls never block the caller's own event loop beyond the call. Calling
a blocking client from inside a running event loop works but blocks that loop: there, use the async client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..k8s.kube import Kube
from ..models import AnyTemplate, TemplateKind
from .cluster import AsyncClient
from .console import AsyncConsoleClient
from .errors import ClientError
from .handle import RunHandle
from .local import AsyncLocalClient
from .runs import RunEvent, RunResult

__all__ = ["Client", "ConsoleClient", "LocalClient", "SyncRunHandle"]

T = TypeVar("T")


class _Portal:
    """An event loop in a daemon thread; ``call`` runs a coroutine there and blocks until it is done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="agentflow-client", daemon=True)
        self._thread.start()
        self.closed = False

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        if self.closed:
            raise ClientError("the client is closed")

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result()

    def iterate(self, events: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.call(lambda: anext(events))
                except StopAsyncIteration:
                    return
        finally:
            if not self.closed:
                self.call(lambda: _aclose(events))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _aclose(events: AsyncIterator[Any]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


class SyncRunHandle:
    """A run, blocking: ``handle.wait(timeout)``, ``for event in handle.events()``, ``handle.result()``."""

    def __init__(self, handle: RunHandle, portal: _Portal) -> None:
        self._handle = handle
        self._portal = portal
        self.name = handle.name
        """The run's name (what ``client.get`` takes)."""

    def __repr__(self) -> str:
        return f"SyncRunHandle({self.name!r})"

    def result(self) -> RunResult:
        """The run now (finished or not)."""
        return self._portal.call(self._handle.result)

    def events(self, *, timeout: float | None = None) -> Iterator[RunEvent]:
        """Its progress until it finishes (see RunHandle.events)."""
        return self._portal.iterate(self._handle.events(timeout=timeout))

    def wait(self, timeout: float | None = None) -> RunResult:
        """The finished run; RunFailed, Timeout (see RunHandle.wait)."""
        return self._portal.call(lambda: self._handle.wait(timeout))

    def outputs(self, timeout: float | None = None) -> Mapping[str, Any]:
        """The outputs once it Succeeded (wait's errors otherwise)."""
        return self._portal.call(lambda: self._handle.outputs(timeout))

    def cancel(self, reason: str = "") -> None:
        """Cancel the run."""
        self._portal.call(lambda: self._handle.cancel(reason))


class _Blocking:
    _async: AsyncClient | AsyncConsoleClient | AsyncLocalClient

    def __init__(self) -> None:
        self._portal = _Portal()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client (the local client stops driving its runs; their journals stay)."""
        if not self._portal.closed:
            self._portal.call(self._async.aclose)
            self._portal.close()

    def get(self, name: str) -> SyncRunHandle:
        """The handle of an existing run; RunNotFound."""
        return SyncRunHandle(self._portal.call(lambda: self._async.get(name)), self._portal)


class Client(_Blocking):
    """Blocking :class:`~agentflow.client.AsyncClient`: runs of templates on a cluster (same arguments)."""

    def __init__(self, namespace: str | None = None, *, kubeconfig: str | None = None, kube: Kube | None = None,
                 poll_seconds: float = 1.0) -> None:
        self._cluster = AsyncClient(namespace, kubeconfig=kubeconfig, kube=kube, poll_seconds=poll_seconds)
        self._async = self._cluster
        super().__init__()
        self.namespace = self._cluster.namespace

    def __enter__(self) -> Client:
        return self

    def template(self, name: str, kind: TemplateKind = "WorkflowTemplate") -> AnyTemplate:
        """The template a run would be made from; TemplateNotFound."""
        client = self._cluster
        return self._portal.call(lambda: client.template(name, kind))

    def start(self, template: str, inputs: Mapping[str, Any] | None = None, *, name: str | None = None,
              kind: TemplateKind = "WorkflowTemplate", labels: Mapping[str, str] | None = None) -> SyncRunHandle:
        """Start a run of ``template`` with ``inputs`` (see AsyncClient.start)."""
        client = self._cluster
        handle = self._portal.call(lambda: client.start(template, inputs, name=name, kind=kind, labels=labels))
        return SyncRunHandle(handle, self._portal)


class ConsoleClient(_Blocking):
    """Blocking :class:`~agentflow.client.AsyncConsoleClient`: runs of templates on a cluster through its
    console's HTTP API (same arguments)."""

    def __init__(self, url: str, token: str, namespace: str, *, poll_seconds: float = 1.0,
                 timeout: float = 30.0) -> None:
        self._console = AsyncConsoleClient(url, token, namespace, poll_seconds=poll_seconds, timeout=timeout)
        self._async = self._console
        super().__init__()
        self.namespace = namespace

    def __enter__(self) -> ConsoleClient:
        return self

    def start(self, template: str, inputs: Mapping[str, Any] | None = None, *, name: str | None = None,
              kind: TemplateKind = "WorkflowTemplate", labels: Mapping[str, str] | None = None) -> SyncRunHandle:
        """Start a run of ``template`` with ``inputs`` (see AsyncConsoleClient.start)."""
        client = self._console
        handle = self._portal.call(lambda: client.start(template, inputs, name=name, kind=kind, labels=labels))
        return SyncRunHandle(handle, self._portal)


class LocalClient(_Blocking):
    """Blocking :class:`~agentflow.client.AsyncLocalClient`: runs of templates with the local runner (same
    arguments). Its runs are driven in the client's thread while the client is open."""

    def __init__(self, manifests: Sequence[str | Path], *, state_dir: str | Path = ".agentflow",
                 executor: str = "inprocess", env: Mapping[str, str] | None = None,
                 poll_seconds: float = 0.05) -> None:
        self._local = AsyncLocalClient(manifests, state_dir=state_dir, executor=executor, env=env,
                                       poll_seconds=poll_seconds)
        self._async = self._local
        super().__init__()

    def __enter__(self) -> LocalClient:
        return self

    def start(self, template: str, inputs: Mapping[str, Any] | None = None, *, name: str | None = None,
              kind: TemplateKind = "WorkflowTemplate") -> SyncRunHandle:
        """Start a run of ``template`` with ``inputs`` (see AsyncLocalClient.start)."""
        client = self._local
        handle = self._portal.call(lambda: client.start(template, inputs, name=name, kind=kind))
        return SyncRunHandle(handle, self._portal)
