"""What the operator builds at startup and hands to every handler through kopf's memo."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import kopf

from ..callback.server import CallbackServer
from ..factory import Factory
from ..gateway.server import GatewayServer
from ..services.budgets import BudgetStatusSync
from ..services.canary import RolloutSync
from ..services.driver import WorkflowDriver
from ..services.evaluations import EvaluationSync
from ..services.retention import RunRetention
from ..services.shards import Everything, Ownership, ShardMembership
from ..triggers.server import TriggerServer


class Memo(kopf.Memo):
    """The operator's memo, typed: set at startup (``None`` until then), closed at cleanup."""

    factory: Factory | None
    driver: WorkflowDriver
    callback: CallbackServer | None
    gateway: GatewayServer | None
    triggers: TriggerServer | None
    budget_sync: BudgetStatusSync | None
    evaluations: EvaluationSync | None
    rollouts: RolloutSync | None
    """PromptRollouts' decisions (None: no PostgreSQL journal to count runs from, e.g. some tests)."""
    budget_sync_task: asyncio.Task[None] | None
    budget_sync_stopped: asyncio.Event
    events_task: asyncio.Task[None] | None
    events_stopped: asyncio.Event
    event_triggers_task: asyncio.Task[None] | None
    """With --nats-url: WorkflowTriggers with spec.events, fed from the events stream (agentflow.events.triggers)."""
    event_triggers_stopped: asyncio.Event
    retention: RunRetention
    sweep_task: asyncio.Task[None] | None
    sweep_stopped: asyncio.Event
    wakeups: dict[str, asyncio.Event]
    seen: dict[str, tuple[object, ...]]
    """Per Workflow uid, what of it was last seen that may wake its run (handlers.workflow_wake_key)."""
    clock: Callable[[], float]
    shards: Ownership
    """Which Workflows (and schedules, rollouts) this replica acts on: all (Everything) unless --shards auto."""
    membership: ShardMembership | None
    notices_task: asyncio.Task[None] | None
    """--shards auto: results stored by other replicas poke the runs here (agentflow.storage.notices)."""
    notices_stopped: asyncio.Event

    def poke_all(self) -> None:
        """Wake every Workflow's daemon in this process (the shard membership changed)."""
        for event in self.wakeups.values():
            event.set()

    def poke(self, run_uid: str) -> None:
        """Wake the daemon driving this run, if there is one in this process."""
        event = self.wakeups.get(run_uid)
        if event is not None:
            event.set()


def new_memo() -> Memo:
    memo = Memo()
    memo.factory = None
    memo.callback = None
    memo.gateway = None
    memo.triggers = None
    memo.budget_sync = None
    memo.evaluations = None
    memo.rollouts = None
    memo.budget_sync_task = None
    memo.events_task = None
    memo.event_triggers_task = None
    memo.sweep_task = None
    memo.budget_sync_stopped = asyncio.Event()
    memo.events_stopped = asyncio.Event()
    memo.event_triggers_stopped = asyncio.Event()
    memo.sweep_stopped = asyncio.Event()
    memo.wakeups = {}
    memo.seen = {}
    memo.clock = time.time
    memo.shards = Everything()
    memo.membership = None
    memo.notices_task = None
    memo.notices_stopped = asyncio.Event()
    return memo


async def stop_task(task: asyncio.Task[None] | None, stopped: asyncio.Event, what: str, timeout: float = 10.0) -> None:
    """At cleanup: set ``stopped`` and wait for the background ``task`` (cancelled past ``timeout``); no task: a
    no-op."""
    if task is None:
        return
    stopped.set()
    try:
        await asyncio.wait_for(task, timeout)
    except TimeoutError:  # wait_for cancelled it
        logging.getLogger("agentflow.operator").warning("%s did not stop within %.0fs; cancelled", what, timeout)
