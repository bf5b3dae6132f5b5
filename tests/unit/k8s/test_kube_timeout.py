"""An API server that accepts a connection and never answers: a call fails with KubeError after the client's read
timeout (the official client sends no timeout of its own) instead of holding a worker thread for ever."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from agentflow.k8s.kube import REQUEST_TIMEOUT, ApiServer, KubeClient, KubeError


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback listener that reads requests and never writes a byte back."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def client(host: str, timeout: tuple[float, float]) -> KubeClient:
    from kubernetes import client as k8s

    cfg = k8s.Configuration()
    cfg.host = host
    return KubeClient(k8s.ApiClient(cfg), request_timeout=timeout)


def test_a_call_to_a_server_that_never_answers_fails_after_the_read_timeout(silent_server: str) -> None:
    kube = client(silent_server, (1.0, 0.5))
    began = time.monotonic()
    with pytest.raises(KubeError, match="cannot reach the API server"):
        asyncio.run(kube.whoami())
    assert time.monotonic() - began < 10  # 0.5 s to read (urllib3 may retry the read once or twice)


def test_every_way_of_building_a_client_gets_the_default(silent_server: str) -> None:
    kube = KubeClient.for_bearer_token(ApiServer(silent_server, verify=False), "token")
    assert kube.api_client.rest_client._agentflow_timeout == REQUEST_TIMEOUT


def test_the_default_timeout_is_set_once_and_a_call_s_own_wins() -> None:
    seen: list[object] = []

    class Rest:
        def request(self, method: str, url: str, **kwargs: object) -> None:
            seen.append(kwargs.get("_request_timeout"))

    class Api:
        rest_client = Rest()

    api = Api()
    KubeClient(api)
    KubeClient(api)  # a second client on the same ApiClient: not wrapped twice
    api.rest_client.request("GET", "/x")
    api.rest_client.request("GET", "/x", _request_timeout=(1, 2))
    assert seen == [REQUEST_TIMEOUT, (1, 2)]
