"""The units a run is made of: nodes (a DAG step, a fan-out item, a state visit) and the aggregate of a DAG step.

Phases of a node: Pending -> Running | Waiting (an approval, a tool's approval gate, the review of a quarantined
attempt) -> Succeeded | Failed | Skipped | Cancelled, with Retrying between a failed attempt and the next one.
Only :class:`agentflow.engine.run.Run` changes them.
"""

from __future__ import annotations

from typing import Any

from .conversation import Unit
from .plan import AgentLoop, StepPlan, ToolGate
from .planner import PlanPolicy
from .values import StepError, StepRequest

__all__ = [
    "CANCELLED", "FAILED", "PENDING", "QUARANTINED", "RETRYING", "RUNNING", "SKIPPED", "SUCCEEDED", "TERMINAL",
    "WAITING", "LoopState", "Node", "PlanningState", "StepState",
]

PENDING = "Pending"
RUNNING = "Running"
WAITING = "Waiting"
RETRYING = "Retrying"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SKIPPED = "Skipped"
CANCELLED = "Cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})
QUARANTINED = "InjectionQuarantined"
"""The StepError type of an attempt whose untrusted input was quarantined: the node waits for a review."""


class Node:
    """One schedulable unit: a DAG step, a fan-out item or a state visit."""

    __slots__ = (
        "approved", "attempt", "call", "cost_usd", "deadline", "error", "finished_at", "gate", "id", "index",
        "inputs", "item", "loop", "message", "output", "parent", "phase", "plan", "planned", "planning", "request",
        "review", "screening", "started_at", "state", "summary", "tokens", "turn",
    )

    def __init__(self, node_id: str, plan: StepPlan, index: int | None = None, item: Any = None,
                 state: str | None = None) -> None:
        self.id = node_id
        self.plan = plan
        self.index = index
        self.item = item
        self.state = state
        self.phase = PENDING
        self.attempt = 0
        self.deadline: float | None = None
        self.inputs: Any = None
        self.output: Any = None
        self.error: StepError | None = None
        self.message: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.cost_usd = 0.0
        self.tokens = 0
        self.request: StepRequest | None = None
        self.approved = False  # an approval gate of its tool was passed
        self.review = False  # waits for a human to review a quarantined attempt
        self.screening: str | None = None  # the next attempt's screening override ("flag" after a review)
        # Agent loops (agentflow.engine.run): a loop's parent holds ``loop``; its model turns (``turn``) and
        # tool calls (``call``) are nodes of their own whose ``parent`` is the loop's node id.
        self.parent: str | None = None
        self.turn: int | None = None
        self.call: dict[str, Any] | None = None
        self.gate: ToolGate | None = None  # a loop's tool call waiting for a human before it runs
        self.loop: LoopState | None = None
        self.summary: int | None = None  # a loop's summary node (``NODE/sN``): how many of the oldest units it compacts
        # Plan steps (agentflow.engine.planner): the plan step's node holds ``planning``; a step of its plan (or of
        # its fallback) holds ``planned``, its StepSpec body, which its attempts carry to the executor.
        self.planned: dict[str, Any] | None = None
        self.planning: PlanningState | None = None

    @property
    def key(self) -> str:
        """What StepRequest.step says: the state's name for a state visit, else the DAG step's."""
        return self.state or self.plan.name


class LoopState:
    """The agent loop a node runs: its plan, what it was asked, the conversation so far and the open turn.

    ``messages`` is what the model is sent after the prompt: each turn's assistant message, then one ``tool``
    message per call of that turn, in the model's order, added once every call of the turn has ended.
    With a carried conversation (agentflow.engine.conversation): ``history`` is the Agent's earlier exchanges
    (with their sequence numbers) sent before the prompt, after ``summary``; ``seen`` the Agent conversation's
    next sequence number when the loop started; ``summaries`` how many summary nodes it made.
    """

    __slots__ = ("calls", "depth", "history", "max_depth", "messages", "open", "plan", "seen", "summaries", "summary",
                 "task", "turns", "waiting")

    def __init__(self, plan: AgentLoop, depth: int, task: str | None, max_depth: int | None = None) -> None:
        self.plan = plan
        self.depth = depth  # 0: the step's own Agent; n: a delegate n calls down
        self.max_depth = plan.max_depth if max_depth is None else max_depth  # the step's Agent's, all the way down
        self.task = task  # a delegate's task (its prompt); None for the step's own loop
        self.turns = 0
        self.calls = 0
        self.messages: list[dict[str, Any]] = []
        self.open: list[Node] = []  # the calls of the current turn
        self.waiting: list[Node] = []  # calls of the current turn not started yet (one at a time)
        self.history: list[tuple[int, Unit]] = []
        self.summary: str | None = None
        self.seen = 0
        self.summaries = 0


class StepState:
    """Aggregate state of one DAG step (one node, or many fan-out items)."""

    __slots__ = ("admitted", "blocked", "count", "done", "failing", "items", "next_item", "output",
                 "phase", "plan", "remaining")

    def __init__(self, plan: StepPlan) -> None:
        self.plan = plan
        self.phase = PENDING
        self.remaining = len(plan.deps)
        self.admitted = False
        self.blocked = False
        self.items: list[Node] | None = None
        self.count = 0
        self.next_item = 0
        self.done = 0
        self.failing = False
        self.output: Any = None


class PlanningState:
    """The plan a plan step's node runs: its policy, the planning attempts (``STEP/planN``), the accepted
    revisions' steps by name (``STEP/pN/NAME``), what waits for its dependencies, and the fallback."""

    __slots__ = (
        "asking",
        "asks",
        "due",
        "fallback",
        "holding",
        "inputs",
        "machine",
        "path",
        "policy",
        "replans",
        "revision",
        "since",
        "steps",
        "visits",
        "waiting",
    )

    def __init__(self, policy: PlanPolicy, inputs: Any) -> None:
        self.policy = policy
        self.inputs = inputs  # the goal: the step's rendered inputs
        self.asks = 0  # planning attempts so far
        self.asking: Node | None = None  # the planning attempt running
        self.due: Node | None = None  # a planning attempt that ended: decide() accepts or refuses its plan
        self.revision = 0  # accepted plans
        self.replans = 0
        self.since = 0  # steps finished since the last checkpoint
        self.holding = False  # a checkpoint: no step of the plan starts until the planner has answered
        self.steps: dict[str, Node] = {}  # every step of every revision, by name (the latest of a name)
        self.waiting: dict[str, set[str]] = {}  # steps not started: the dependencies they still wait for
        self.fallback: Node | None = None  # the fallback's node running (a state visit or the approval)
        self.machine: str | None = None
        self.visits: dict[str, int] = {}
        self.path: list[str] = []
