"""Events: every journal record and status transition of the operator's runs, on NATS JetStream.

    subjects.py    agentflow.<namespace>.<workflow>.<type>: validated, escaped (pure)
    wire.py        the message: JSON body, Nats-Msg-Id (run:seq), traceparent (pure)
    settings.py    flags of `agentflow operator` (--nats-url, --events-*) and what they make
    errors.py      EventsError and its kinds
    jetstream.py   THE module importing nats-py: connect, ensure the stream, publish, read, consume (durable)
    publisher.py   OutboxPublisher: drains the PostgreSQL outbox (agentflow.storage.outbox) to JetStream in order,
                   one replica at a time, with backoff and lag metrics
    process.py     PublisherProcess: the operator runs the publisher in a child process (off the reconciler's loop),
                   woken down a pipe, its metrics reported back; child.py is that child's entry point
    triggers.py    EventTriggers: WorkflowTriggers with spec.events start runs from the stream's events (a durable
                   consumer shared by the replicas; runs started by agentflow.triggers.runs, as HTTP deliveries)

The outbox rows are written by the journal append itself (agentflow.storage.postgres), in its transaction,
when the store was built with ``outbox=True``; `agentflow events` (agentflow.commands.events) reads the stream,
or local runs' journals. Off without ``--nats-url``. Nothing here connects at import, and only jetstream.py
needs nats-py (the ``operator`` extra).
"""
