"""What the operator builds at startup and hands to every handler through kopf's memo."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import kopf

from ..services.driver import WorkflowDriver


class Memo(kopf.Memo):
    """Typed view of the operator memo (clients are attached at startup, closed at cleanup)."""

    driver: WorkflowDriver
    store: Any
    wakeups: dict[str, asyncio.Event]
    clock: Callable[[], float]

    def poke(self, run_uid: str) -> None:
        """Wake the daemon driving this run, if there is one in this process."""
        event = self.wakeups.get(run_uid)
        if event is not None:
            event.set()


def new_memo() -> Memo:
    memo = Memo()
    memo.wakeups = {}
    memo.clock = time.time
    return memo
