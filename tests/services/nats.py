"""A real, throwaway NATS server with JetStream for tests.

``start_nats()`` finds Debian's ``nats-server`` (on PATH or ``/usr/sbin``), installs the ``nats-server``
package with apt-get when it is missing (as root), and starts it on 127.0.0.1 on a free port with JetStream
and a temporary store directory; ``NatsServer.url`` connects to it. ``kill()`` stops it at once (SIGKILL,
what an outage looks like), ``start()`` brings it back on the same port with the same store (the stream's
messages survive), ``stop()`` stops it and removes the directory.

``config`` (nats-server configuration text, without ``listen``/``jetstream``, which are added) runs it with
accounts and users: the tests of per-namespace permissions.

Set ``AGENTFLOW_TEST_NATS_URL`` to use a server you run yourself instead (nothing is started or stopped;
``kill``/``start`` then fail: the tests that need them skip).

Errors::

    NatsUnavailable   nats-server is not installed and cannot be installed here (no apt-get, not root, the
                      install failed): the caller may skip (CI installs it first and fails instead)
    RuntimeError      it is installed but did not start (the message holds its log)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ENV_URL = "AGENTFLOW_TEST_NATS_URL"
PACKAGE = "nats-server"
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


class NatsUnavailable(Exception):
    """nats-server is not installed and cannot be installed on this machine."""


def find_nats_server() -> str | None:
    """The nats-server binary: on PATH, else Debian's /usr/sbin/nats-server; None when neither."""
    found = shutil.which("nats-server")
    if found:
        return found
    return "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None


def install_nats_server() -> str:
    """Install Debian's ``nats-server`` package; the binary. Raises NatsUnavailable."""
    if shutil.which("apt-get") is None:
        raise NatsUnavailable("nats-server is not installed and there is no apt-get to install it with")
    if os.geteuid() != 0:
        raise NatsUnavailable(
            "nats-server is not installed and installing it needs root: run "
            f"`sudo apt-get install -y --no-install-recommends {PACKAGE}`, or set {ENV_URL} to a server of your own"
        )
    install = ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE]
    done = subprocess.run(install, env=_APT_ENV, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # most often: the package lists were never fetched
        subprocess.run(["apt-get", "update"], env=_APT_ENV, capture_output=True, text=True, check=False)
        done = subprocess.run(install, env=_APT_ENV, capture_output=True, text=True, check=False)
    binary = find_nats_server()
    if done.returncode != 0 or binary is None:
        raise NatsUnavailable(f"`{' '.join(install)}` failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclasses.dataclass
class NatsServer:
    url: str
    binary: str | None = None  # None: an external server we did not start
    base_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    config: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path | None:
        return self.base_dir / "server.log" if self.base_dir is not None else None

    def _config_file(self) -> Path:
        assert self.base_dir is not None
        path = self.base_dir / "server.conf"
        store = self.base_dir / "jetstream"
        path.write_text(f'listen: "{self.host}:{self.port}"\n'
                        f'jetstream {{ store_dir: "{store}" }}\n'
                        f"{self.config}\n")
        return path

    def start(self, timeout: float = 30.0) -> None:
        """Start (or restart) the server on its port with its store; returns once it accepts connections."""
        if self.binary is None or self.base_dir is None:
            raise RuntimeError(f"{ENV_URL} names a server this test did not start: it cannot be restarted")
        if self.proc is not None and self.proc.poll() is None:
            return
        assert self.log is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([self.binary, "-c", str(self._config_file())], stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.base_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited ({self.proc.returncode}); log:\n{self.log.read_text()[-4000:]}")
            if b"Server is ready" in self.log.read_bytes():
                try:
                    with socket.create_connection((self.host, self.port), timeout=1):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"nats-server did not become ready in {timeout}s; log:\n{self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL the server (an outage with no goodbye); ``start()`` brings it back with its store."""
        if self.binary is None:
            raise RuntimeError(f"{ENV_URL} names a server this test did not start: it cannot be killed")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Stop the server and remove its files. Does nothing for an external server."""
        if self.binary is None:
            return
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.kill()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)


def start_nats(*, host: str = "127.0.0.1", config: str = "", attempts: int = 3) -> NatsServer:
    """Start a throwaway server with JetStream; see the module docstring. ``host``: the address to listen on
    (an address pods reach, for the e2e tests)."""
    external = os.environ.get(ENV_URL)
    if external and not config:
        return NatsServer(url=external)
    binary = find_nats_server() or install_nats_server()
    base = Path(tempfile.mkdtemp(prefix="agentflow-nats-"))
    last: Exception | None = None
    for _ in range(attempts):  # the free port can be taken between choosing and binding it
        port = free_port(host)
        shown = f"[{host}]" if ":" in host else host
        server = NatsServer(url=f"nats://{shown}:{port}", binary=binary, base_dir=base, host=host, port=port,
                            config=config)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            last = exc
    shutil.rmtree(base, ignore_errors=True)
    raise RuntimeError(f"nats-server did not start after {attempts} attempts: {last}")


@contextlib.contextmanager
def running_nats(*, host: str = "127.0.0.1", config: str = "") -> Iterator[NatsServer]:
    """``start_nats()`` ... ``stop()``."""
    server = start_nats(host=host, config=config)
    try:
        yield server
    finally:
        server.stop()
