"""What is collected of a run when its Workflow is deleted, and what is kept (issue 17).

One transaction per batch of runs (:func:`collect_runs`, called by ``PostgresStore.delete_run`` and
``PostgresStore.collect_orphans``)::

    table                           collected                               why
    agentflow_journal               every row of the run                    the run's record while it exists
    agentflow_attempts              every row                               what its step pods fetched
    agentflow_step_results          every row                               what they posted
    agentflow_event_runs            its row                                 the last phase put in the outbox
    agentflow_runs                  its row                                 which namespace/Workflow it was
    agentflow_evaluations,          the verdict and cases of an evaluation  they describe that Workflow's run
    agentflow_evaluation_cases      Workflow (agentflow.services.evaluations)
    agentflow_notifications         every row                               what its approvals' notifications did
    agentflow_llm_calls             every row of the run                    the call log (cost reports, calibration
                                                                            read it: they cover the runs kept)
    agentflow_budget_reservations   the run's settled, released, expired    a held one still holds money: it is
                                                                            settled or expires (reclaim_expired)
    agentflow_outbox                nothing: published rows are deleted by the publisher, rows not yet published
                                    are published first (nothing recorded is lost), then deleted the same way
    agentflow_budget_windows        kept: spent/reserved per Budget and window; a period's spend is this counter,
                                    never a sum over the call log, so collecting a run never lowers a Budget's spend
    agentflow_audit                 kept: the audit chain is the record (hash chained: deleting a row breaks it)
    agentflow_memories              kept: long-term memory is per (namespace, Agent), with its own TTLs
                                    (an Agent's past runs, episodic memory, read agentflow_attempts: collected)

The ledger's tables are collected when they exist (a store migrated alone has only the journal's).

Orphans (:func:`orphan_candidates`): runs that have rows but whose Workflow is gone, because it was deleted
while the operator was down, or because the collection on its deletion failed, or a step pod posted after it.
The caller reads the candidates FIRST and lists the Workflows AFTER: any run with rows at the first instant
belongs to a Workflow created before it, so it is in the list unless deleted. A run's namespace is in
``agentflow_runs`` (written with the run's first record; filled from the attempts and the outbox for runs older
than that table): an operator watching some namespaces collects only the runs it knows to be in them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

__all__ = ["Collected", "RunRef", "collect_runs", "orphan_candidates"]

RUN_TABLES = ("agentflow_journal", "agentflow_attempts", "agentflow_step_results", "agentflow_event_runs",
              "agentflow_runs", "agentflow_evaluations", "agentflow_evaluation_cases", "agentflow_notifications")
"""The journal schema's tables keyed by run uid: a run with a row in any of them is the operator's."""


@dataclasses.dataclass(frozen=True)
class RunRef:
    """A run that has rows, and the namespace its Workflow was in (None: not known)."""

    run_uid: str
    namespace: str | None


@dataclasses.dataclass
class Collected:
    """Rows deleted, by table."""

    rows: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def add(self, other: Collected) -> None:
        for table, n in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + n


def _count(tag: str) -> int:
    """Rows of a command tag such as ``DELETE 12``."""
    try:
        return int(tag.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


async def collect_runs(conn: Any, run_uids: Sequence[str]) -> Collected:
    """Delete what the runs ``run_uids`` left (see the table above) on ``conn``, which is in a transaction."""
    uids = list(run_uids)
    out = Collected()
    if not uids:
        return out
    for table in RUN_TABLES:
        out.rows[table] = _count(await conn.execute(f"DELETE FROM {table} WHERE run_uid = ANY($1::text[])", uids))
    if await conn.fetchval("SELECT to_regclass('agentflow_llm_calls') IS NOT NULL"):
        out.rows["agentflow_llm_calls"] = _count(await conn.execute(
            "DELETE FROM agentflow_llm_calls WHERE run_uid = ANY($1::text[])", uids))
        # The reference of a reservation is RUN/NODE/ATTEMPT (the attempt's idempotency key): indexed by its run.
        out.rows["agentflow_budget_reservations"] = _count(await conn.execute(
            "DELETE FROM agentflow_budget_reservations WHERE split_part(reference, '/', 1) = ANY($1::text[]) "
            "AND state <> 'held'", uids))
    return out


async def orphan_candidates(conn: Any) -> list[RunRef]:
    """Every run with rows in the journal schema's tables, with its namespace when known."""
    union = " UNION ".join(f"SELECT run_uid FROM {table}" for table in RUN_TABLES)
    rows = await conn.fetch(
        f"SELECT u.run_uid, coalesce(r.namespace, a.namespace) AS namespace FROM ({union}) u "
        "LEFT JOIN agentflow_runs r ON r.run_uid = u.run_uid "
        "LEFT JOIN LATERAL (SELECT namespace FROM agentflow_attempts f WHERE f.run_uid = u.run_uid "
        "  AND f.namespace IS NOT NULL LIMIT 1) a ON true "
        "ORDER BY u.run_uid")
    return [RunRef(str(uid), None if namespace is None else str(namespace)) for uid, namespace in rows]
