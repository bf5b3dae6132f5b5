"""The console in a real browser: Debian's Chromium driven by Playwright for Python (nothing downloaded).

Chromium comes from Debian (`make browser`, which `make test` runs first: apt-get install chromium); Playwright is
pointed at /usr/bin/chromium and never runs `playwright install`. Each test gets a fresh state directory and its
own `agentflow ui --port 0`. Screenshots of the main pages go to .reports/screenshots/ (CI keeps .reports/).
A missing browser fails these tests (it is installed by the Makefile), it never skips them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".reports" / "screenshots"
CHROMIUM = os.environ.get("AGENTFLOW_CHROMIUM", "/usr/bin/chromium")
# What this machine's closed network needs: no sandbox (root), no GPU, no QUIC, nothing phoned home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "operator"), "AGENTFLOW_MODEL_MODE": "offline",
            "AGENTFLOW_USER": "alice"}


def agentflow(*args: str, state: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentflow.cli", "--state-dir", str(state), *args],
                          capture_output=True, text=True, env=env(), timeout=timeout)


def agentflow_bg(*args: str, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "agentflow.cli", "--state-dir", str(state), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())


@dataclass
class Console:
    url: str
    state: Path


@contextlib.contextmanager
def serve_console(state: Path) -> Iterator[Console]:
    proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "ui", "--state-dir", str(state), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("agentflow console on "):
            raise AssertionError(f"agentflow ui did not start: {line} {proc.stderr.read() if proc.stderr else ''}")
        yield Console(line.rsplit(" ", 1)[1], state)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with serve_console(tmp_path / "state") as c:
        yield c


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (apt-get install chromium), which `make test` does")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="agentflow-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                       args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 860})
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    from playwright.sync_api import BrowserContext

    assert isinstance(browser, BrowserContext)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(90_000)  # waits, not speed checks: the machine is shared
    from playwright.sync_api import expect

    expect.set_options(timeout=90_000)  # expect's own default is 5 s, whatever the page's is
    yield page
    page.close()
    assert not errors, f"the page raised: {errors}"


def screenshot(page: object, name: str) -> Path:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


@contextlib.contextmanager
def serve_app(app: object) -> Iterator[str]:
    """An aiohttp app on 127.0.0.1 (a free port) in a thread of its own; its URL."""
    import asyncio
    import threading

    from aiohttp import web

    assert isinstance(app, web.Application)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()
    port: list[int] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30), "the console app did not start"
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
