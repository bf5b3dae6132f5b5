"""WorkflowTrigger: starts a run of a WorkflowTemplate for each authenticated HTTP delivery or AgentFlow event.

A trigger has exactly one source::

    auth      HTTP: the operator serves it at ``POST /v1/triggers/NAMESPACE/NAME`` on its trigger port
              (``--trigger-listen``, off by default; :mod:`agentflow.triggers.server`)
    events    NATS: AgentFlow's own events of the trigger's namespace on the JetStream stream (the operator with
              ``--nats-url``; :mod:`agentflow.events.triggers`): a run's journal records and phase changes, by type

An HTTP delivery is authenticated with a key kept in a Secret of the trigger's own namespace (one of four
schemes, exactly one per trigger)::

    auth.hmac     GitHub style: HEADER = PREFIX + hex(HMAC(key, body)), e.g. X-Hub-Signature-256: sha256=...
    auth.slack    Slack style (signing secret v0): X-Slack-Signature = v0= + hex(HMAC-SHA256(key,
                  "v0:" + X-Slack-Request-Timestamp + ":" + body)), the timestamp within maxSkewSeconds of now
    auth.standard Standard Webhooks (Svix and others): webhook-signature = v1,base64(HMAC-SHA256(key,
                  webhook-id + "." + webhook-timestamp + "." + body)), the timestamp within maxSkewSeconds
    auth.bearer   Authorization: Bearer KEY

then mapped to the run's inputs with CEL over ``body`` (the parsed JSON, or the fields of a form-encoded body) and
``headers`` (names lower-cased). An event is mapped the same way: ``body`` is the event message
(agentflow.events.wire: ``workflow``, ``namespace``, ``record`` or ``from``/``to``) and ``headers`` has
``nats-msg-id``, the event's id. An event trigger hears only its own namespace's events (the subject
``agentflow.NAMESPACE.>`` is the only one read for it), never the events of the runs it started itself, and a
chain of event-started runs stops at :data:`MAX_EVENT_CHAIN`.

The run's Workflow is named from the delivery id (``NAME-HASH``; an event's id by default), so a delivery posted
again (a retry, a replay of a captured request, an event delivered twice) finds its Workflow and starts nothing;
that holds across operator restarts and replicas because it lives in the API server, for as long as the
Workflow exists.

A Secret used by a trigger must carry the label ``agentflow.dev/trigger: "true"`` (as model credentials carry
``agentflow.dev/credential``): whoever may create a WorkflowTrigger cannot make the operator use any other Secret
of the namespace, and never one of another namespace (a reference has no namespace).

Not implemented: subjects other than AgentFlow's own events (messages published by applications) as a source.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import API_VERSION, DNS_SUBDOMAIN, SECRET_KEY, Model, ObjectMeta, ResourceStatus
from .workflow import TemplateRef

TRIGGER_LABEL = "agentflow.dev/trigger"
"""On a Workflow a WorkflowTrigger created: the trigger's name. On a Secret: "true" lets triggers use it."""
DELIVERY_ANNOTATION = "agentflow.dev/delivery-id"
"""On a Workflow a WorkflowTrigger created: the delivery id it was started for."""

TRIGGER_NAME_MAX = 46
"""A WorkflowTrigger's name is at most 46 characters: its Workflows are named NAME-HASH (17 more, 63 in all)."""
DEFAULT_DELIVERY_HEADERS = ("webhook-id", "x-github-delivery", "x-gitlab-event-uuid", "x-request-id",
                            "idempotency-key", "nats-msg-id")
"""Where a delivery's id is looked for, in order, when spec.deliveryId is not set (an event's: nats-msg-id)."""
EVENT_DEPTH_LABEL = "agentflow.dev/event-depth"
"""On a Workflow an event trigger created: how many event-started runs led to it (1: started by the event of a
run no event trigger started)."""
MAX_EVENT_CHAIN = 8
"""The longest chain of runs started by events of runs started by events (a loop between triggers ends here)."""
EVENT_TYPES = frozenset({
    "RunStarted", "StepScheduled", "StepStarted", "StepSucceeded", "StepFailed", "StepSkipped", "StepTimedOut",
    "StepCancelled", "RetryScheduled", "ApprovalRequested", "ApprovalDecided", "CostRecorded", "StateEntered",
    "FanOut", "LoopStarted", "LoopFinished", "PlanStarted", "PlanAccepted", "PlanRefused", "PlanFinished",
    "CancelRequested", "Suspended", "Resumed", "RunTimedOut", "RunFinished", "PhaseChanged"})
"""The event types a trigger may name: the journal's, and PhaseChanged (a Workflow's status.phase changed)."""


class TriggerSecretRef(Model):
    """A key of a Secret in the trigger's namespace (labelled agentflow.dev/trigger: "true")."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Secret name."""
    key: str = Field(default="secret", min_length=1, max_length=253, pattern=SECRET_KEY)
    """Key inside the Secret."""


class HmacAuth(Model):
    """GitHub-style signatures: a header holding PREFIX + hex(HMAC(key, raw body))."""

    secret_ref: TriggerSecretRef
    """The shared key."""
    header: str = Field(default="X-Hub-Signature-256", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9-]+$")
    """The header carrying the signature."""
    algorithm: Literal["sha256", "sha512"] = "sha256"
    """The HMAC's hash."""
    prefix: str = Field(default="sha256=", max_length=32)
    """What comes before the hex digest in the header (empty: the digest alone)."""


class SlackAuth(Model):
    """Slack-style signatures (signing secret, version v0): the body signed with a timestamp that must be recent,
    so that a captured request cannot be replayed after maxSkewSeconds even with a new delivery id."""

    secret_ref: TriggerSecretRef
    """The signing secret."""
    signature_header: str = Field(default="X-Slack-Signature", min_length=1, max_length=128,
                                  pattern=r"^[A-Za-z0-9-]+$")
    """The header carrying v0=HEX."""
    timestamp_header: str = Field(default="X-Slack-Request-Timestamp", min_length=1, max_length=128,
                                  pattern=r"^[A-Za-z0-9-]+$")
    """The header carrying the Unix time the request was signed at."""
    max_skew_seconds: int = Field(default=300, ge=1, le=3600)
    """How far the timestamp may be from the operator's clock."""


class StandardWebhooksAuth(Model):
    """Standard Webhooks signatures (standardwebhooks.com; Svix and the senders built on it): webhook-signature =
    v1,base64(HMAC-SHA256(key, webhook-id + "." + webhook-timestamp + "." + body)), the timestamp recent. The
    signature covers the delivery id, so a captured request cannot be posted again under another id, and the
    timestamp bounds its replay under the same one. The key is the sender's secret as it gives it (whsec_BASE64)."""

    secret_ref: TriggerSecretRef
    """The signing secret (whsec_ followed by base64, or the base64 alone)."""
    max_skew_seconds: int = Field(default=300, ge=1, le=3600)
    """How far webhook-timestamp may be from the operator's clock."""


class BearerAuth(Model):
    """A shared token: Authorization: Bearer TOKEN."""

    secret_ref: TriggerSecretRef
    """The token."""


class TriggerEvents(Model):
    """AgentFlow events of the trigger's namespace that start a run (the operator reads them from the JetStream
    stream: it needs --nats-url)."""

    types: list[str] = Field(min_length=1, max_length=len(EVENT_TYPES))
    """The event types that start a run, e.g. RunFinished or PhaseChanged (the journal's types and
    PhaseChanged); narrow them with spec.when, e.g. body.to == "Failed"."""

    @model_validator(mode="after")
    def _known(self) -> TriggerEvents:
        unknown = [t for t in self.types if t not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"types: {unknown[0]!r} is not an event type (one of {', '.join(sorted(EVENT_TYPES))})")
        if len(set(self.types)) != len(self.types):
            raise ValueError("types: each type at most once")
        return self


class TriggerAuth(Model):
    """How a delivery is authenticated: exactly one of hmac, slack, standard, bearer."""

    hmac: HmacAuth | None = None
    """GitHub-style HMAC of the body."""
    slack: SlackAuth | None = None
    """Slack-style v0 signature with a timestamp."""
    standard: StandardWebhooksAuth | None = None
    """Standard Webhooks signature over the delivery id, a timestamp and the body."""
    bearer: BearerAuth | None = None
    """A bearer token."""

    @model_validator(mode="after")
    def _exactly_one(self) -> TriggerAuth:
        given = [name for name in ("hmac", "slack", "standard", "bearer") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of hmac, slack, standard, bearer (got {', '.join(given) or 'none'})")
        return self

    @property
    def secret_ref(self) -> TriggerSecretRef:
        scheme = self.hmac or self.slack or self.standard or self.bearer
        assert scheme is not None  # the validator above
        return scheme.secret_ref


class WorkflowTriggerSpec(Model):
    """What a delivery starts, and how it is authenticated and read."""

    workflow_template_ref: TemplateRef
    """The template each run is made from: a WorkflowTemplate of the trigger's namespace (the default kind) or a
    ClusterWorkflowTemplate (kind); its Agents, PromptVersions and Budgets are the trigger's namespace's."""
    auth: TriggerAuth | None = None
    """An HTTP trigger: how a delivery is authenticated (checked before the body is parsed). Exactly one of auth
    and events."""
    events: TriggerEvents | None = None
    """An event trigger: the AgentFlow events of this namespace that start a run. Exactly one of auth and
    events."""
    inputs: dict[str, str] = Field(default_factory=dict, max_length=100)
    """Input name -> CEL expression over ``body`` and ``headers`` giving its value; the inputs are then checked
    against the template's inputSchema (its defaults fill the rest)."""
    when: str | None = Field(default=None, max_length=4096)
    """CEL condition over ``body`` and ``headers``; false: the delivery is accepted (202) and starts no run."""
    delivery_id: str | None = Field(default=None, max_length=4096)
    """CEL expression over ``body`` and ``headers`` giving the delivery's id (a string or a number; a replay
    gives the same). Default: the first of the headers X-GitHub-Delivery, X-Gitlab-Event-UUID, X-Request-Id,
    Idempotency-Key. A delivery without an id is refused (400): it could not be told from its replays."""
    suspend: bool = False
    """True: deliveries are refused (503) and start nothing; events are passed over (not kept for later)."""

    @model_validator(mode="after")
    def _one_source(self) -> WorkflowTriggerSpec:
        given = [name for name in ("auth", "events") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of auth (HTTP deliveries) and events (AgentFlow events) (got "
                             f"{', '.join(given) or 'none'})")
        return self


class LastDelivery(Model):
    """The last authenticated delivery."""

    id: str
    """Its delivery id."""
    time: str
    """RFC 3339 time it was received."""
    outcome: Literal["Started", "Duplicate", "Filtered", "Refused"]
    """Started a run, found the run of an earlier post, was filtered out by ``when``, or was refused (bad
    mapping or inputs)."""
    workflow: str | None = None
    """The run it started or found."""
    message: str = ""
    """Why it was refused."""


class WorkflowTriggerStatus(ResourceStatus):
    """Observed state of a WorkflowTrigger (written by the trigger server)."""

    path: str | None = None
    """The URL path deliveries are posted to: /v1/triggers/NAMESPACE/NAME (an HTTP trigger's)."""
    last_delivery: LastDelivery | None = None
    """The last authenticated delivery (an event trigger's: the last event that started a run or was refused)."""
    message: str | None = None
    """A configuration problem that makes every delivery fail (its Secret missing or not labelled)."""


class WorkflowTrigger(Model):
    """Creates Workflows from a WorkflowTemplate for authenticated HTTP deliveries or AgentFlow events."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["WorkflowTrigger"] = "WorkflowTrigger"
    metadata: ObjectMeta
    spec: WorkflowTriggerSpec
    status: WorkflowTriggerStatus | None = None

    @model_validator(mode="after")
    def _short_name(self) -> WorkflowTrigger:
        if len(self.metadata.name) > TRIGGER_NAME_MAX:
            raise ValueError(f"metadata.name: at most {TRIGGER_NAME_MAX} characters (its Workflows are named "
                             "NAME-HASH)")
        return self
