"""Two replicas reconciling one run at once (the split-brain window of --shards auto while ownership moves): the
journal's fence and the pods' deterministic names keep every attempt to one pod and one StepScheduled, and the
replica that lost a race reads the journal again instead of failing forever."""

from __future__ import annotations

import asyncio
import collections

from agentflow.engine.values import EventType
from agentflow.storage.errors import JournalConflict

from .test_reconcile import FANOUT, Cluster, catalog, workflow

UID = "0b5e7c1a-0000-4000-8000-000000000001"


async def test_two_replicas_on_one_run_never_start_a_step_twice() -> None:
    c = Cluster()
    other = c.new_reconciler()  # a second replica: same API server, same journal store
    body = workflow(FANOUT)
    conflicts = 0
    for _ in range(60):
        outcomes = await asyncio.gather(c.reconciler.reconcile(body, catalog()), other.reconcile(body, catalog()),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, JournalConflict):
                conflicts += 1
            elif isinstance(outcome, BaseException):
                raise outcome
        if any(getattr(o, "finished", False) for o in outcomes):
            break
        c.kubelet()
        c.now += 1.0
    journal = c.store.journals[UID]
    assert journal[-1].event.type is EventType.run_finished
    scheduled = collections.Counter((r.event.node, r.event.data["attempt"]) for r in journal
                                    if r.event.type is EventType.step_scheduled)
    assert set(scheduled.values()) == {1} and len(scheduled) == 5, scheduled
    assert sorted(c.executions) == [("first", 1), ("last", 1), ("map[0]", 1), ("map[1]", 1), ("map[2]", 1)]
    assert len(c.kube.created) == len(set(c.kube.created)) == 5
    assert conflicts > 0  # the race happened, and was survived


async def test_a_replica_behind_the_journal_forgets_its_state_and_catches_up() -> None:
    c = Cluster()
    stale = c.new_reconciler()
    body = workflow(FANOUT)
    await stale.reconcile(body, catalog())  # it drove the run once, then lost it to the other replica
    for _ in range(3):
        await c.reconciler.reconcile(body, catalog())
        c.kubelet()
        c.now += 1.0
    try:  # its view is behind: its next append is fenced off, and it drops that view
        await stale.reconcile(body, catalog())
        raced = False
    except JournalConflict:
        raced = True
    assert raced and UID not in stale.runs
    outcome = None
    for _ in range(30):  # reading the journal again, it goes on from where the other replica left the run
        outcome = await stale.reconcile(body, catalog())
        if outcome.finished:
            break
        c.kubelet()
        c.now += 1.0
    assert outcome is not None and outcome.phase == "Succeeded"
    assert len(c.kube.created) == len(set(c.kube.created)) == 5
