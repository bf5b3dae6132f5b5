"""The audit chain: records of model calls, tool calls, approvals and policy decisions, hash-chained. Pure.

    records.py   AuditEvent and the AuditSink protocol producers append through
    events.py    checks of events before they are chained (errors name the field), pod events from JSON
    chain.py     linking events into rows (sha256(prev_hash + canonical event)) and the verifier that
                 names the first modified, deleted, inserted or reordered row; anchors (Head)
    files.py     the chain as JSON Lines / CSV (exports, the local runner's audit.jsonl)

Writers: agentflow.storage.audit.PostgresAuditLog (the operator and gateways) and
agentflow.storage.audit_file.JsonlAuditLog (local runs); `agentflow audit verify|export` reads them.
"""
