"""One aiohttp application served on ``host:port``: the operator's HTTP servers (the callback server, the trigger
server, the gateway) each hold one and answer ``start``/``port``/``stop`` through it.

::

    listener = Listener(app, "the callback server")
    await listener.start("0.0.0.0", 0)     # port 0 picks a free one
    listener.port                          # the port it got
    await listener.stop()                  # finishes in-flight requests; safe to call twice

A port that cannot be bound is an OSError naming the server and the address; starting twice, or asking the port
of a listener not started, is a RuntimeError naming the server.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["Listener"]


class Listener:
    def __init__(self, app: web.Application, what: str, *, access_log: bool = True) -> None:
        """``what``: the server in messages ("the callback server"); ``access_log`` False: no line per request."""
        self.app = app
        self.what = what
        self._access_log = access_log
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free one: read ``port``)."""
        if self._runner is not None:
            raise RuntimeError(f"{self.what} is already started")
        runner = (web.AppRunner(self.app, handle_signals=False) if self._access_log
                  else web.AppRunner(self.app, handle_signals=False, access_log=None))
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(e.errno, f"{self.what} cannot listen on {host}:{port}: {e.strerror}") from e
        self._runner = runner

    @property
    def port(self) -> int:
        """The port it listens on (after start)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError(f"{self.what} is not started: call start() first")
        port: int = self._runner.addresses[0][1]
        return port

    async def stop(self) -> None:
        """Stop listening and finish in-flight requests. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
