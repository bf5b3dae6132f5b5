"""Run journals, attempt payloads and step results in PostgreSQL (asyncpg).

What the operator keeps here, so that nothing is lost when a pod or the operator goes away::

    agentflow_journal        one row per journal record, PRIMARY KEY (run_uid, seq): the fence that keeps
                             two writers from both extending a run; the record is kept as its canonical
                             JSON text (type json, not jsonb) so that it reads back byte for byte and its
                             hash still verifies
    agentflow_attempts       what a step pod fetches: the request and the manifests it needs (json), and the
                             pod that runs it (namespace, name, uid: how a pod's identity maps to its attempt)
    agentflow_step_results   what a step pod posted, first result wins (json)
    agentflow_outbox         events to publish to NATS (agentflow.events): one row per journal record and per
                             status transition, written in the same transaction as the records when the store
                             was built with ``outbox=True``, deleted once published (agentflow.storage.outbox)
    agentflow_event_runs     the last Workflow phase put in the outbox per run: a transition is a phase that
                             differs from it
    agentflow_runs           the namespace and Workflow of each run, written with its first record (what the
                             startup sweep of agentflow.storage.retention goes by)
    agentflow_evaluations    a PromptVersion's evaluation on the cluster, one row per evaluation Workflow (its run
                             uid): the verdict, rates, cost, tokens, latency (agentflow.services.evaluations)
    agentflow_evaluation_cases  its cases, one row each: passed, score, spend, and the case's whole result (json:
                             output, each assertion's verdict, the pairwise outcome); both go with the Workflow
    agentflow_notifications  the outcome of each approval notification (run, node, key: notify|remind-K|escalate
                             and its channel): sent, or failed for good; what keeps a restarted operator from
                             sending one twice (agentflow.services.notifications)
    agentflow_schema_version the migrations applied (:meth:`PostgresStore.migrate`)

The store is built by the caller (``await PostgresStore.connect(dsn)``) and closed by it; nothing
connects at import time. asyncpg's exceptions never leave this module: :func:`_translate` turns them
into the hierarchy below, in one place::

    StorageError             anything else: the message says what to fix (e.g. run migrate())
     ├── StorageUnavailable  PostgreSQL cannot be reached, refused the login, or the connection broke:
     │                       try again later (the operator's driver retries with capped backoff)
     ├── JournalConflict     another writer appended to the run first (fencing): reload the journal
     │                       with load_journal() and decide again; never retry the same batch
     └── InvalidValue        PostgreSQL refuses a value (e.g. a \\u0000 in a jsonb string, a value
                             that is not JSON): retrying cannot help

Everything is stored as json (text), never jsonb: jsonb reorders object keys and keeps numbers as
decimals (``1e+16`` reads back as an int, ``-0.0`` as ``0.0``). A step's output must read back exactly
as the pod wrote it, or the next step's prompt (and so its result) would differ from the local runner's,
and journal records must read back byte for byte for their hashes to verify.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from ..engine.canonical import to_builtin
from ..engine.journal import GENESIS, JournalError, Record
from .attempts import AttemptPod, StoredRun
from .errors import InvalidValue, JournalConflict, StorageError, StorageUnavailable
from .migrations import Migration, Schema, migrate
from .retention import Collected, RunRef, collect_runs, orphan_candidates

if TYPE_CHECKING:
    from ..prompts.suite import SuiteResult
    from .outbox import EventSource

__all__ = [
    "SCHEMA_VERSION",
    "InvalidValue",
    "JournalConflict",
    "PostgresStore",
    "StorageError",
    "StorageUnavailable",
    "init_connection",
    "redact_dsn",
]


# --------------------------------------------------------------------------- schema

_MIGRATIONS: tuple[Migration, ...] = (
    (
        1,
        "journal, attempts and step results",
        (
            """
            CREATE TABLE IF NOT EXISTS agentflow_journal (
                run_uid text NOT NULL,
                seq bigint NOT NULL CHECK (seq >= 0),
                type text NOT NULL,
                node text,
                hash text NOT NULL,
                record json NOT NULL,
                CONSTRAINT agentflow_journal_pkey PRIMARY KEY (run_uid, seq)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS agentflow_attempts (
                run_uid text NOT NULL,
                node text NOT NULL,
                attempt integer NOT NULL CHECK (attempt >= 0),
                payload json NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                CONSTRAINT agentflow_attempts_pkey PRIMARY KEY (run_uid, node, attempt)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS agentflow_step_results (
                run_uid text NOT NULL,
                node text NOT NULL,
                attempt integer NOT NULL CHECK (attempt >= 0),
                result json NOT NULL,
                stored_at timestamptz NOT NULL DEFAULT now(),
                CONSTRAINT agentflow_step_results_pkey PRIMARY KEY (run_uid, node, attempt)
            )
            """,
        ),
    ),
    (
        2,
        "the events outbox",
        (
            """
            CREATE TABLE IF NOT EXISTS agentflow_outbox (
                id bigserial PRIMARY KEY,
                run_uid text NOT NULL,
                seq bigint NOT NULL CHECK (seq >= 0),
                kind text NOT NULL CHECK (kind IN ('journal', 'phase')),
                namespace text NOT NULL,
                workflow text NOT NULL,
                type text NOT NULL,
                body json NOT NULL,
                traceparent text,
                created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                CONSTRAINT agentflow_outbox_event UNIQUE (run_uid, seq, kind)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS agentflow_event_runs (
                run_uid text PRIMARY KEY,
                phase text NOT NULL
            )
            """,
        ),
    ),
    (
        3,
        "attempts name their pod: the step pod's identity (TokenReview) maps to its attempt",
        (
            "ALTER TABLE agentflow_attempts ADD COLUMN IF NOT EXISTS namespace text",
            "ALTER TABLE agentflow_attempts ADD COLUMN IF NOT EXISTS workflow text",
            "ALTER TABLE agentflow_attempts ADD COLUMN IF NOT EXISTS pod text",
            "ALTER TABLE agentflow_attempts ADD COLUMN IF NOT EXISTS pod_uid text",
            "ALTER TABLE agentflow_attempts ADD COLUMN IF NOT EXISTS pod_fingerprint text",
            "CREATE UNIQUE INDEX IF NOT EXISTS agentflow_attempts_pod ON agentflow_attempts (namespace, pod) "
            "WHERE pod IS NOT NULL",
        ),
    ),
    (
        4,
        "a namespace's runs newest first: an Agent's past runs (episodic memory) are read by namespace",
        (
            "CREATE INDEX IF NOT EXISTS agentflow_attempts_namespace ON agentflow_attempts "
            "(namespace, created_at DESC) WHERE namespace IS NOT NULL",
        ),
    ),
    (
        5,
        "runs name their Workflow: the startup sweep collects only runs of the namespaces it watches",
        (
            """
            CREATE TABLE IF NOT EXISTS agentflow_runs (
                run_uid text PRIMARY KEY,
                namespace text NOT NULL,
                workflow text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            "INSERT INTO agentflow_runs (run_uid, namespace, workflow, created_at) "
            "SELECT DISTINCT ON (run_uid) run_uid, namespace, coalesce(workflow, ''), created_at "
            "FROM agentflow_attempts WHERE namespace IS NOT NULL ORDER BY run_uid, created_at "
            "ON CONFLICT DO NOTHING",
            "INSERT INTO agentflow_runs (run_uid, namespace, workflow, created_at) "
            "SELECT DISTINCT ON (run_uid) run_uid, namespace, workflow, created_at FROM agentflow_outbox "
            "ORDER BY run_uid, created_at ON CONFLICT DO NOTHING",
        ),
    ),
)

_MIGRATIONS += (
    (
        6,
        "PromptVersion evaluations on the cluster: the verdict and its cases",
        (
            """
            CREATE TABLE IF NOT EXISTS agentflow_evaluations (
                run_uid text PRIMARY KEY,
                namespace text NOT NULL,
                prompt text NOT NULL,
                workflow text NOT NULL,
                trigger text NOT NULL,
                passed boolean NOT NULL,
                pass_rate double precision NOT NULL,
                mean_score double precision NOT NULL,
                win_rate double precision,
                cost_usd double precision NOT NULL,
                input_tokens bigint NOT NULL,
                output_tokens bigint NOT NULL,
                latency_p50_ms double precision NOT NULL,
                failures json NOT NULL,
                finished_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX IF NOT EXISTS agentflow_evaluations_prompt ON agentflow_evaluations "
            "(namespace, prompt, finished_at DESC)",
            """
            CREATE TABLE IF NOT EXISTS agentflow_evaluation_cases (
                run_uid text NOT NULL,
                position integer NOT NULL CHECK (position >= 0),
                name text NOT NULL,
                passed boolean NOT NULL,
                score double precision NOT NULL,
                cost_usd double precision NOT NULL,
                input_tokens bigint NOT NULL,
                output_tokens bigint NOT NULL,
                latency_ms double precision NOT NULL,
                pairwise text,
                error text,
                result json NOT NULL,
                CONSTRAINT agentflow_evaluation_cases_pkey PRIMARY KEY (run_uid, position)
            )
            """,
        ),
    ),
)

_MIGRATIONS += (
    (
        7,
        "Approval notifications: the outcome of each send (agentflow.services.notifications)",
        (
            """
            CREATE TABLE IF NOT EXISTS agentflow_notifications (
                run_uid text NOT NULL,
                node text NOT NULL,
                key text NOT NULL,
                outcome text NOT NULL CHECK (outcome IN ('sent', 'failed')),
                detail text NOT NULL DEFAULT '',
                recorded_at timestamptz NOT NULL DEFAULT now(),
                CONSTRAINT agentflow_notifications_pkey PRIMARY KEY (run_uid, node, key)
            )
            """,
        ),
    ),
)

SCHEMA = Schema("journal", "agentflow_schema_version", _MIGRATIONS)
SCHEMA_VERSION = SCHEMA.version
"""The schema version this code reads and writes."""


# --------------------------------------------------------------------------- codecs


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=to_builtin)


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + _dumps(value)  # binary jsonb: a version byte, then the JSON text


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(memoryview(data)[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup (``create_pool(init=...)``): json and jsonb in and out as Python values."""
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )
    await conn.set_type_codec("json", schema="pg_catalog", encoder=_dumps, decoder=orjson.loads, format="binary")


# --------------------------------------------------------------------------- errors, in one place


_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, fit for messages and logs."""
    if "://" not in dsn:  # libpq keyword form: host=... password=...
        return _KEYWORD_PASSWORD.sub(r"\1***", dsn)
    try:
        parts = urllib.parse.urlsplit(dsn)
        if parts.password is None:
            return dsn
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable DSN>"


_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidAuthorizationSpecificationError,  # includes a wrong password
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure: the whole call may be retried
    asyncpg.InsufficientResourcesError,
)


def _translate(exc: BaseException, what: str, where: str, run_uid: str | None, seq: int | None) -> StorageError:
    """The StorageError for an asyncpg / OS error raised while doing ``what`` against ``where``."""
    prefix = f"{what}: PostgreSQL at {where}"
    if isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name == "agentflow_journal_pkey":
        return JournalConflict(run_uid or "?", seq if seq is not None else -1, "a record with that seq exists")
    if isinstance(exc, asyncpg.UndefinedTableError):
        return StorageError(
            f"{prefix}: {exc}; the database has no AgentFlow schema yet: call PostgresStore.migrate() "
            "(the operator does at startup) or check that the DSN names the right database"
        )
    if isinstance(exc, asyncpg.UntranslatableCharacterError | asyncpg.CharacterNotInRepertoireError):
        return InvalidValue(
            f"{prefix} refused a string: {exc}; jsonb cannot hold the character \\u0000: "
            "remove NUL characters from the value (or encode binary data as base64)"
        )
    if isinstance(exc, asyncpg.ProgramLimitExceededError):
        return InvalidValue(f"{prefix}: {exc}; the value is too large for PostgreSQL: store less or split it")
    if isinstance(exc, asyncpg.DataError):  # client side: an argument the codec cannot encode
        return InvalidValue(f"{what}: {exc}; pass only JSON values (dict, list, str, int, float, bool, None)")
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return StorageError(f"{prefix}: {exc}; grant the operator's database user access to the agentflow_* tables")
    if isinstance(exc, _UNAVAILABLE):
        return StorageUnavailable(f"{prefix} is unavailable: {exc}; check that it is running and the DSN; will retry")
    if isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError):
        detail = str(exc) or type(exc).__name__
        return StorageUnavailable(f"{prefix} cannot be reached: {detail}; check that it is running and the DSN")
    return StorageError(f"{prefix} failed: {type(exc).__name__}: {exc}")


_THIRD_PARTY = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
RESULTS_CHANNEL = "agentflow_results"
"""NOTIFY channel of stored results (payload: the run uid), when the store notifies (agentflow.storage.notices)."""


# --------------------------------------------------------------------------- the store


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's ``reset``: a released connection goes back without asyncpg's reset query (``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``), a round trip on every release that was 3 % of
    the operator's samples in a burst of 1,000 Workflows and held each connection out of the pool until PostgreSQL
    answered. asyncpg still rolls back a transaction left open and drops the connection's listeners first.

    The contract that makes it safe: code on these pools keeps session state inside transactions (``SET LOCAL``,
    ``pg_advisory_xact_lock``, cursors) and ``storage.notices`` UNLISTENs before it releases its connection; no
    session-level ``SET``, advisory lock, LISTEN or temporary table outlives a release."""


async def open_pool(dsn: str, application_name: str, what: str, *, min_size: int, max_size: int,
                    timeout: float) -> tuple[asyncpg.Pool, str]:
    """A connection pool (JSON codecs set up) and the DSN without its password, for messages. Raises
    StorageUnavailable when PostgreSQL cannot be reached, StorageError for a DSN that does not parse."""
    where = redact_dsn(dsn)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            init=init_connection,
            reset=keep_session,
            server_settings={"application_name": application_name},
        )
    except _THIRD_PARTY as exc:
        raise _translate(exc, what, where, None, None) from exc
    except ValueError as exc:  # asyncpg's DSN parser
        raise StorageError(
            f"{what}: the DSN {where} is not valid: {exc}; use postgresql://USER@HOST:PORT/DATABASE"
        ) from None
    return pool, where


class PostgresStore:
    """Journal, attempts and results of runs, keyed by the Workflow's uid (``run_uid``).

    Every method is one round of statements on one pooled connection; writes that must be atomic
    run in one transaction. Safe to share between tasks.
    """

    def __init__(self, pool: asyncpg.Pool, *, where: str = "the configured DSN", outbox: bool = False) -> None:
        """Wrap a pool built by the caller with ``init=init_connection``; :meth:`connect` builds one.
        ``outbox``: :meth:`append` also writes the events outbox (only when events are published: nothing
        else drains it)."""
        self._pool = pool
        self._where = where
        self.outbox = outbox
        self.on_outbox: Callable[[], None] | None = None
        """Called after an append that wrote outbox rows committed (the publisher's poke)."""
        self.notify_results = False
        """:meth:`put_result` also NOTIFYs RESULTS_CHANNEL with the run uid when it stored the result, so the
        replica driving the run hears of it whichever replica's callback server took it (--shards auto)."""

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0) -> PostgresStore:
        """Open a connection pool. Raises StorageUnavailable when PostgreSQL cannot be reached."""
        pool, where = await open_pool(dsn, "agentflow", "connect", min_size=min_size, max_size=max_size,
                                      timeout=timeout)
        return cls(pool, where=where)

    async def close(self) -> None:
        """Close every connection (waits for the ones in use). Safe to call twice."""
        await self._pool.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self._where})"

    @contextlib.asynccontextmanager
    async def _connection(
        self, what: str, run_uid: str | None = None, seq: int | None = None
    ) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """A pooled connection; any asyncpg error raised inside becomes a StorageError."""
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _THIRD_PARTY as exc:
            raise _translate(exc, what, self._where, run_uid, seq) from exc

    # ----------------------------------------------------------------------- schema

    async def migrate(self) -> None:
        """Create or upgrade the tables. Idempotent; concurrent callers wait for each other."""
        async with self._connection("migrate the schema") as conn, conn.transaction():
            await migrate(conn, [SCHEMA], self._where)

    # ----------------------------------------------------------------------- journal

    async def load_journal(self, run_uid: str, after_seq: int = -1) -> list[Record]:
        """The run's records with seq > ``after_seq``, oldest first (empty for an unknown run)."""
        async with self._connection(f"load the journal of run {run_uid!r}", run_uid) as conn:
            rows = await conn.fetch(
                "SELECT seq, record FROM agentflow_journal WHERE run_uid = $1 AND seq > $2 ORDER BY seq",
                run_uid,
                after_seq,
            )
        records = []
        for seq, raw in rows:
            try:
                records.append(Record.from_dict(raw))
            except JournalError as e:
                raise StorageError(
                    f"journal of run {run_uid!r}: the row with seq {seq} is not a journal record ({e}); "
                    "it was edited outside AgentFlow: restore it from a backup"
                ) from None
        return records

    async def recent_runs(self, namespace: str, *, limit: int, workflow: str | None = None,
                          exclude_run: str | None = None) -> list[StoredRun]:
        """The namespace's newest runs that started a step pod (newest first, at most ``limit``), with the
        manifests each ran with: the episodic memory's archive (agentflow.memory.episodic.StoredEpisodes)."""
        async with self._connection(f"list the runs of namespace {namespace!r}") as conn:
            rows = await conn.fetch(
                "WITH recent AS ("
                "  SELECT run_uid, min(created_at) AS started FROM agentflow_attempts"
                "  WHERE namespace = $1 AND ($2::text IS NULL OR workflow = $2)"
                "    AND ($3::text IS NULL OR run_uid <> $3)"
                "  GROUP BY run_uid ORDER BY started DESC LIMIT $4) "
                "SELECT r.run_uid, a.workflow, a.payload->>'manifests' FROM recent r "
                "CROSS JOIN LATERAL (SELECT workflow, payload FROM agentflow_attempts f WHERE f.run_uid = r.run_uid "
                "  ORDER BY created_at LIMIT 1) a "
                "ORDER BY r.started DESC",
                namespace, workflow, exclude_run, limit,
            )
        return [StoredRun(str(run_uid), str(name or ""), str(manifests or ""))
                for run_uid, name, manifests in rows]

    async def family_runs(self, namespace: str, family: str, *, since: float, types: Sequence[str],
                          limit: int) -> list[tuple[str, list[Record]]]:
        """The runs of ``namespace`` (runs that started a step pod there) whose RunStarted, at or after ``since``
        (seconds), recorded a choice of prompt family ``family`` (agentflow.prompts.rollout), the newest ``limit``,
        oldest first; each with its records of ``types`` (RunStarted always first): a PromptRollout's evidence
        (agentflow.services.canary), read back after an operator restart like anything else here.

        The records are read as stored and looked into here, not with PostgreSQL's JSON operators: those parse
        the whole text and refuse a record holding ``\\u0000`` (a run's input may), which would let one run stop
        every rollout's look. Candidates are the namespace's runs with an attempt created since ``since`` less
        ``FAMILY_RUNS_SLACK`` seconds (the attempts index; clocks of the operator and PostgreSQL may differ)."""
        what = f"list the runs of prompt family {family!r} in namespace {namespace!r}"
        async with self._connection(what) as conn:
            starts = await conn.fetch(
                "SELECT j.run_uid, j.record FROM agentflow_journal j WHERE j.seq = 0 AND j.run_uid IN ("
                "  SELECT DISTINCT run_uid FROM agentflow_attempts WHERE namespace = $1"
                "    AND created_at >= to_timestamp($2))",
                namespace, since - FAMILY_RUNS_SLACK,
            )
            chosen = sorted(((r.event.at, uid) for uid, r in ((str(u), _record(u, 0, raw)) for u, raw in starts)
                             if r.event.type.value == "RunStarted" and r.event.at >= since
                             and _chose_family(r.event.data, family)), reverse=True)[:limit]
            runs = [uid for _, uid in sorted(chosen)]
            rows = await conn.fetch(
                "SELECT run_uid, seq, record FROM agentflow_journal WHERE run_uid = ANY($1::text[]) "
                "AND (seq = 0 OR type = ANY($2::text[])) ORDER BY run_uid, seq",
                runs, list(types),
            ) if runs else []
        by_run: dict[str, list[Record]] = {uid: [] for uid in runs}
        for run_uid, seq, raw in rows:
            by_run[str(run_uid)].append(_record(run_uid, seq, raw))
        return [(uid, by_run[uid]) for uid in runs]

    async def append(self, run_uid: str, records: Sequence[Record], source: EventSource | None = None) -> None:
        """Append records, all or none, fenced: they must continue exactly the stored head.

        With ``outbox`` on and a ``source`` (the run's namespace, Workflow and phase after these records),
        the same transaction puts one outbox row per record, and one for the status transition when the
        phase differs from the last one recorded: the events are published exactly when the records exist.

        Raises JournalConflict when another writer appended first (the stored head is not
        ``records[0].prev``, or a record with one of these seqs exists) and ValueError when the
        records do not form a chain of their own.
        """
        if not records:
            return
        _check_chain(run_uid, records)
        first = records[0]
        rows = [(run_uid, r.seq, r.event.type.value, r.event.node, r.hash, r.to_json().decode()) for r in records]
        events = source if self.outbox else None
        what = f"append to the journal of run {run_uid!r}"
        async with self._connection(what, run_uid, first.seq) as conn, conn.transaction():
            head = await conn.fetchrow(
                "SELECT seq, hash FROM agentflow_journal WHERE run_uid = $1 ORDER BY seq DESC LIMIT 1", run_uid
            )
            head_seq, head_hash = (head["seq"], head["hash"]) if head is not None else (-1, GENESIS)
            if first.seq != head_seq + 1 or first.prev != head_hash:
                raise JournalConflict(
                    run_uid,
                    first.seq,
                    f"the stored journal ends at record {head_seq} (hash {head_hash[:12]}…) while this batch "
                    f"continues record {first.seq - 1} (hash {first.prev[:12]}…)",
                )
            await conn.executemany(
                "INSERT INTO agentflow_journal (run_uid, seq, type, node, hash, record) "
                "VALUES ($1, $2, $3, $4, $5, $6::text::json)",
                rows,
            )
            if first.seq == 0 and source is not None:
                await conn.execute("INSERT INTO agentflow_runs (run_uid, namespace, workflow) VALUES ($1, $2, $3) "
                                   "ON CONFLICT DO NOTHING", run_uid, source.namespace, source.workflow)
            if events is not None:
                await _write_outbox(conn, run_uid, rows, records[-1], events)
        if events is not None and self.on_outbox is not None:
            self.on_outbox()

    # ----------------------------------------------------------------------- attempts and results

    async def put_attempt(self, run_uid: str, node: str, attempt: int, payload: Mapping[str, Any], *,
                          pod: AttemptPod | None = None) -> None:
        """Store what the step pod of this attempt fetches (and which pod runs it); keeps the first payload."""
        what = f"store attempt {attempt} of node {node!r} of run {run_uid!r}"
        async with self._connection(what, run_uid) as conn:
            await conn.execute(
                "INSERT INTO agentflow_attempts (run_uid, node, attempt, payload, namespace, workflow, pod, "
                "pod_fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                run_uid, node, attempt, payload,
                pod.namespace if pod else None, pod.workflow if pod else None, pod.name if pod else None,
                pod.fingerprint if pod else None,
            )

    async def set_pod_uid(self, run_uid: str, node: str, attempt: int, pod_uid: str) -> None:
        """Record the uid of the attempt's pod once it exists (the first one recorded stays)."""
        what = f"record the pod of attempt {attempt} of node {node!r} of run {run_uid!r}"
        async with self._connection(what, run_uid) as conn:
            await conn.execute(
                "UPDATE agentflow_attempts SET pod_uid = $4 WHERE run_uid = $1 AND node = $2 AND attempt = $3 "
                "AND pod_uid IS NULL", run_uid, node, attempt, pod_uid)

    async def attempt_of_pod(self, namespace: str, pod: str) -> AttemptPod | None:
        """The attempt the pod ``namespace/pod`` was created for (None: no such attempt)."""
        what = f"find the attempt of pod {namespace}/{pod}"
        async with self._connection(what) as conn:
            row = await conn.fetchrow(
                "SELECT a.run_uid, a.node, a.attempt, a.workflow, a.pod_uid, a.pod_fingerprint, "
                "EXISTS (SELECT 1 FROM agentflow_step_results r WHERE r.run_uid = a.run_uid AND r.node = a.node "
                "AND r.attempt = a.attempt) AS ended "
                "FROM agentflow_attempts a WHERE a.namespace = $1 AND a.pod = $2", namespace, pod)
        if row is None:
            return None
        return AttemptPod(namespace, row["workflow"] or "", pod, row["run_uid"], row["node"], row["attempt"],
                          row["pod_uid"], bool(row["ended"]), row["pod_fingerprint"])

    async def attempt_ended(self, run_uid: str, node: str, attempt: int) -> bool:
        """Whether the attempt has a result (it ended: its pod's credential is void)."""
        what = f"read the state of attempt {attempt} of node {node!r} of run {run_uid!r}"
        async with self._connection(what, run_uid) as conn:
            return bool(await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM agentflow_step_results WHERE run_uid = $1 AND node = $2 AND "
                "attempt = $3)", run_uid, node, attempt))

    async def get_attempt(self, run_uid: str, node: str, attempt: int) -> dict[str, Any] | None:
        """The payload stored by :meth:`put_attempt`, or None."""
        what = f"read attempt {attempt} of node {node!r} of run {run_uid!r}"
        async with self._connection(what, run_uid) as conn:
            payload = await conn.fetchval(
                "SELECT payload FROM agentflow_attempts WHERE run_uid = $1 AND node = $2 AND attempt = $3",
                run_uid,
                node,
                attempt,
            )
        return _as_object(payload, what)

    async def put_result(self, run_uid: str, node: str, attempt: int, result: Mapping[str, Any]) -> bool:
        """Store an attempt's result unless one is stored: True when this call stored it (first wins)."""
        what = f"store the result of attempt {attempt} of node {node!r} of run {run_uid!r}"
        async with self._connection(what, run_uid) as conn:
            stored = await conn.fetchval(
                "INSERT INTO agentflow_step_results (run_uid, node, attempt, result) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING RETURNING true",
                run_uid,
                node,
                attempt,
                result,
            )
            if stored is True and self.notify_results:
                await conn.execute("SELECT pg_notify($1, $2)", RESULTS_CHANNEL, run_uid)
        return stored is True

    async def has_result(self, run_uid: str, node: str, attempt: int) -> bool:
        """Whether a result of this attempt is stored."""
        what = f"look for the result of attempt {attempt} of node {node!r} of run {run_uid!r}"
        async with self._connection(what, run_uid) as conn:
            found = await conn.fetchval(
                "SELECT true FROM agentflow_step_results WHERE run_uid = $1 AND node = $2 AND attempt = $3",
                run_uid, node, attempt)
        return found is True

    async def get_results(self, run_uid: str) -> dict[tuple[str, int], dict[str, Any]]:
        """Every stored result of the run, by (node, attempt)."""
        what = f"read the results of run {run_uid!r}"
        async with self._connection(what, run_uid) as conn:
            rows = await conn.fetch(
                "SELECT node, attempt, result FROM agentflow_step_results WHERE run_uid = $1 ORDER BY node, attempt",
                run_uid,
            )
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for node, attempt, result in rows:
            value = _as_object(result, f"{what} (node {node!r}, attempt {attempt})")
            assert value is not None  # the column is NOT NULL
            results[(node, attempt)] = value
        return results

    async def delete_run(self, run_uid: str) -> Collected:
        """Collect the run (its Workflow is gone): journal, attempts, results, call log, in one transaction;
        never its audit records or its Budgets' spend (agentflow.storage.retention). Rows deleted, by table."""
        return await self.collect([run_uid])

    async def collect(self, run_uids: Sequence[str]) -> Collected:
        """Collect the runs ``run_uids`` in one transaction (see :meth:`delete_run`)."""
        what = f"collect {len(run_uids)} run(s)" if len(run_uids) != 1 else f"collect run {run_uids[0]!r}"
        async with self._connection(what) as conn, conn.transaction():
            # Its outbox rows stay: what was recorded is still published (nothing lost), then they go.
            return await collect_runs(conn, run_uids)

    async def runs(self) -> list[RunRef]:
        """Every run with rows, with its namespace when known (the startup sweep's first read)."""
        async with self._connection("list the stored runs") as conn:
            return await orphan_candidates(conn)

    # ----------------------------------------------------------------------- approval notifications

    async def notifications_done(self, run_uid: str) -> set[tuple[str, str]]:
        """The (node, key) of every approval notification of the run whose outcome is recorded."""
        async with self._connection(f"read the notifications of run {run_uid!r}", run_uid) as conn:
            rows = await conn.fetch("SELECT node, key FROM agentflow_notifications WHERE run_uid = $1", run_uid)
        return {(str(r[0]), str(r[1])) for r in rows}

    async def record_notification(self, run_uid: str, node: str, key: str, outcome: str, detail: str = "") -> bool:
        """Record a notification's outcome (``sent`` or ``failed``) once; False when it was already recorded."""
        async with self._connection(f"record notification {key} of {node} in run {run_uid!r}", run_uid) as conn:
            stored = await conn.fetchval(
                "INSERT INTO agentflow_notifications (run_uid, node, key, outcome, detail) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT DO NOTHING RETURNING true", run_uid, node, key, outcome, detail[:2000])
        return stored is True

    # ----------------------------------------------------------------------- evaluations

    async def put_evaluation(self, run_uid: str, namespace: str, workflow: str, trigger: str,
                             result: SuiteResult) -> None:
        """Store an evaluation's verdict and its cases, once (a second call for the same run changes nothing)."""
        what = f"store the evaluation of PromptVersion {result.prompt!r} (Workflow {workflow!r})"
        async with self._connection(what, run_uid) as conn, conn.transaction():
            stored = await conn.fetchval(
                "INSERT INTO agentflow_evaluations (run_uid, namespace, prompt, workflow, trigger, passed, pass_rate,"
                " mean_score, win_rate, cost_usd, input_tokens, output_tokens, latency_p50_ms, failures) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
                "ON CONFLICT DO NOTHING RETURNING true",
                run_uid, namespace, result.prompt, workflow, trigger, result.passed, result.pass_rate,
                result.mean_score, result.win_rate, result.cost_usd, result.input_tokens, result.output_tokens,
                result.latency_p50_ms, list(result.failures),
            )
            if stored is not True:
                return
            await conn.executemany(
                "INSERT INTO agentflow_evaluation_cases (run_uid, position, name, passed, score, cost_usd,"
                " input_tokens, output_tokens, latency_ms, pairwise, error, result) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                [(run_uid, i, c.name, c.passed, c.score, c.cost_usd, c.input_tokens, c.output_tokens, c.latency_ms,
                  c.pairwise, c.error, c.to_dict()) for i, c in enumerate(result.cases)],
            )

    async def evaluations(self, namespace: str, prompt: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """A PromptVersion's stored evaluations, newest first (camelCase keys, as on status.evaluation)."""
        async with self._connection(f"list the evaluations of PromptVersion {namespace}/{prompt}") as conn:
            rows = await conn.fetch(
                "SELECT run_uid, workflow, trigger, passed, pass_rate, mean_score, win_rate, cost_usd, input_tokens,"
                " output_tokens, latency_p50_ms, failures, finished_at FROM agentflow_evaluations "
                "WHERE namespace = $1 AND prompt = $2 ORDER BY finished_at DESC LIMIT $3",
                namespace, prompt, limit,
            )
        return [{"runUid": r[0], "workflow": r[1], "trigger": r[2], "passed": r[3], "passRate": r[4],
                 "meanScore": r[5], "winRate": r[6], "costUsd": r[7], "inputTokens": r[8], "outputTokens": r[9],
                 "latencyP50Ms": r[10], "failures": r[11], "finishedAt": r[12].isoformat()} for r in rows]

    async def evaluation_cases(self, run_uid: str) -> list[dict[str, Any]]:
        """An evaluation's cases in the suite's order: each case's whole result (CaseResult.to_dict())."""
        async with self._connection(f"read the evaluation cases of run {run_uid!r}", run_uid) as conn:
            rows = await conn.fetch(
                "SELECT result FROM agentflow_evaluation_cases WHERE run_uid = $1 ORDER BY position", run_uid)
        return [value for (raw,) in rows if (value := _as_object(raw, "an evaluation case")) is not None]


async def _write_outbox(conn: Any, run_uid: str, rows: Sequence[tuple[Any, ...]], last: Record,
                        source: EventSource) -> None:
    """The outbox rows of one append, on the append's connection and in its transaction: one statement (one round
    trip) for the records' rows and, when the phase after them differs from the last one recorded for the run, the
    status transition's. The publisher orders a run's rows by (seq, kind), not by id."""
    await conn.execute(
        "WITH records AS ("
        "  INSERT INTO agentflow_outbox (run_uid, seq, kind, namespace, workflow, type, body, traceparent) "
        "  SELECT $1, u.seq, 'journal', $2, $3, u.type, u.body::json, $4 "
        "  FROM unnest($5::bigint[], $6::text[], $7::text[]) AS u(seq, type, body)), "
        "old AS (SELECT phase FROM agentflow_event_runs WHERE run_uid = $1), "
        "up AS (INSERT INTO agentflow_event_runs (run_uid, phase) SELECT $1, $8::text WHERE $8::text IS NOT NULL "
        "       ON CONFLICT (run_uid) DO UPDATE SET phase = EXCLUDED.phase "
        "       WHERE agentflow_event_runs.phase IS DISTINCT FROM EXCLUDED.phase) "
        "INSERT INTO agentflow_outbox (run_uid, seq, kind, namespace, workflow, type, body, traceparent) "
        "SELECT $1, $9, 'phase', $2, $3, 'PhaseChanged', "
        "       json_build_object('from', (SELECT phase FROM old), 'to', $8::text, 'at', $10::float8), $4 "
        "WHERE $8::text IS NOT NULL AND (SELECT phase FROM old) IS DISTINCT FROM $8::text",
        run_uid, source.namespace, source.workflow, source.traceparent,
        [r[1] for r in rows], [r[2] for r in rows], [r[5] for r in rows],
        source.phase, last.seq, float(last.event.at),
    )


FAMILY_RUNS_SLACK = 300.0
"""Seconds before a rollout's start whose attempts are still looked at (the PostgreSQL and operator clocks)."""


def _record(run_uid: Any, seq: Any, raw: Any) -> Record:
    try:
        return Record.from_dict(raw)
    except JournalError as e:
        raise StorageError(f"journal of run {run_uid!r}: the row with seq {seq} is not a journal record ({e}); "
                           "it was edited outside AgentFlow: restore it from a backup") from None


def _chose_family(data: Mapping[str, Any], family: str) -> bool:
    prompts = data.get("prompts")
    return isinstance(prompts, Mapping) and any(isinstance(c, Mapping) and c.get("family") == family
                                                for c in prompts.values())


def _check_chain(run_uid: str, records: Sequence[Record]) -> None:
    """The batch must be consecutive seqs, each linked to the one before."""
    for before, after in itertools.pairwise(records):
        if after.seq != before.seq + 1 or after.prev != before.hash:
            raise ValueError(
                f"journal of run {run_uid!r}: record {after.seq} does not follow record {before.seq} in the batch "
                "(seqs must be consecutive and each prev the hash before it); append records from one Journal"
            )


def _as_object(value: Any, what: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise StorageError(
        f"{what}: the stored value is a {type(value).__name__}, not a JSON object; "
        "it was written outside AgentFlow: delete the row"
    )
