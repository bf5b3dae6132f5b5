from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from agentflow.llm.litellm_upstream import load as load_litellm

from .fake_openai import FakeOpenAI


@pytest.fixture(scope="session")
def litellm_module() -> ModuleType:
    """litellm imported once per session (it takes seconds), with its bundled price table."""
    return load_litellm()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()
