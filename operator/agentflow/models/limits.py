"""Every bound a manifest is held to, in one place. Pure constants: no I/O.

The models put the numeric ones in their fields (so they are in the CRDs as ``minimum``/``maximum``
and ``maxItems``, and the API server enforces them before the webhook or the operator sees a body);
:mod:`agentflow.models.manifests` applies the parsing ones to YAML text and JSON bodies;
:mod:`agentflow.validation` the size ones; :mod:`agentflow.engine` the run-time ones. Each bound is
far above what a real workflow needs and far below what makes the runner or the operator fall over
(a ValueError deep in a driver, a pod the API server refuses, a parse that eats gigabytes).

Every float field also refuses NaN and infinity (``allow_inf_nan=False`` on every model): YAML reads
``.inf``, ``.nan`` and ``1e400`` as floats, and JSON, the journal and the API server cannot hold them.
"""

from __future__ import annotations

from typing import Final

DAY: Final = 24 * 3600

# Time, in seconds.
MAX_ATTEMPT_TIMEOUT_SECONDS: Final = 7 * DAY
"""A step attempt's or a tool call's deadline (spec.steps[].timeoutSeconds): a week."""
MAX_RUN_TIMEOUT_SECONDS: Final = 90 * DAY
"""A whole run's deadline (spec.timeoutSeconds), and an approval's: 90 days."""
MAX_TOOL_TIMEOUT_SECONDS: Final = DAY
"""One tool call (ToolPolicy spec.tools[].timeoutSeconds): a day."""
MAX_BACKOFF_SECONDS: Final = DAY
"""Retry backoff: initialSeconds and maxSeconds."""
MAX_BACKOFF_FACTOR: Final = 10.0
"""Retry backoff: the multiplier per attempt."""
MAX_RETRIES: Final = 100
"""retry.limit."""
MAX_TTL_SECONDS: Final = 3650 * DAY
"""How long a finished Workflow is kept (spec.ttlSecondsAfterFinished, the operator's default): ten years."""

# Sizes of a Workflow.
MAX_STEPS: Final = 2_000
"""DAG steps of one Workflow (spec.steps). Data parallelism is forEach's job, not thousands of steps."""
MAX_STATES: Final = 500
"""States of one state machine."""
MAX_DEPENDS_ON: Final = MAX_STEPS
"""Entries of one step's dependsOn."""
MAX_VISITS: Final = 10_000
MAX_PLAN_STEPS: Final = 50
"""Steps of one plan a plan step's planner gives (planner.limits.maxSteps, maxDepth; replan.every)."""
MAX_REPLANS: Final = 10
"""Revisions of one plan (planner.replan.max)."""
MAX_PLAN_REPAIRS: Final = 5
"""Repair requests of one planning call (planner.repairs)."""
MAX_PLAN_FALLBACKS: Final = 20
"""State machines a Workflow declares for its plan steps to fall back to (spec.fallbackMachines)."""
DEFAULT_WORKFLOW_DEPTH: Final = 5
"""How deep workflow steps nest by default: a run at depth 5 (its parent's parent's ... parent at depth 0) may
start no child (agentflow operator --max-workflow-depth, agentflow run --max-workflow-depth)."""
MAX_WORKFLOW_DEPTH: Final = 50
"""The most either flag may allow."""


def workflow_depth(text: str) -> int:
    """--max-workflow-depth's value: a whole number from 0 to MAX_WORKFLOW_DEPTH; ValueError saying what is wrong."""
    try:
        depth = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number of levels, got {text!r}") from None
    if not 0 <= depth <= MAX_WORKFLOW_DEPTH:
        raise ValueError(f"{depth} is out of range; give 0 to {MAX_WORKFLOW_DEPTH}")
    return depth
"""maxVisits of a state (and the state machine's default)."""
MAX_FANOUT_ITEMS: Final = 10_000
"""Items one forEach may fan out to (checked when the list is known, at run time) and spec.parallelism."""
MAX_RUN_NODES: Final = 100_000
"""Nodes (steps, fan-out items, state visits) one run may create; a state machine's maxVisits summed over
its states must fit (checked by validation), and a fan-out that would pass it fails its step."""
MAX_INPUTS_BYTES: Final = 256 * 1024
"""spec.inputs (with --input applied) and each step's inputs, as compact JSON."""
MAX_TRANSITIONS: Final = 100
"""Transitions of one state."""
MAX_TREE_NODES: Final = 2_000
"""Nodes of one behavior tree (spec.behaviorTree: composites, decorators and leaves), like MAX_STEPS."""
MAX_TREE_DEPTH: Final = 32
"""Nesting of one behavior tree (the root is depth 1)."""
MAX_TREE_CHILDREN: Final = 500
"""Children of one sequence, selector or parallel node."""
MAX_TREE_REPEAT: Final = MAX_VISITS
"""count of a repeat decorator; the leaf runs a tree may make (repeat and retry multiplied down the tree) must
fit in MAX_RUN_NODES (checked by validation)."""

# Model calls and tools.
MAX_OUTPUT_TOKENS: Final = 1_000_000
"""maxTokens of a model call."""
MAX_WASM_FUEL: Final = 10**12
"""A wasm tool's fuel (about one unit per WebAssembly instruction: minutes of CPU)."""
MAX_RATE_PER_MINUTE: Final = 1_000_000
"""A tool's rateLimit.perMinute."""
MAX_COST_PER_CALL_USD: Final = 10_000.0
"""A tool's costPerCallUsd."""

# Budgets.
MAX_BUDGET_USD: Final = 1e12
"""A Budget's limits.usd."""
MAX_BUDGET_TOKENS: Final = 10**15
"""A Budget's limits.tokens."""
MAX_CONCURRENCY_QUOTA: Final = 100_000
"""A Budget's maxConcurrentWorkflows and maxConcurrentSteps."""
MAX_ALERT_THRESHOLDS: Final = 20
"""Entries of a Budget's alertThresholds."""

# Parsing: YAML text (agentflow validate, agentflow run) and JSON bodies (the webhook, the reconciler).
MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
"""One manifest file (the API server takes at most 3 MiB per request, etcd 1.5 MiB per object)."""
MAX_DOCUMENTS: Final = 1_000
"""YAML documents in one file."""
MAX_DEPTH: Final = 100
"""Nesting of mappings and sequences in one manifest, aliases expanded."""
MAX_NODES: Final = 100_000
"""Scalars, mappings and sequences in one file or body, aliases expanded (a billion-laughs document
expands 9 aliases into 10^9 nodes; a Workflow of 2,000 steps has about 30,000)."""

# Agent loops
MAX_LOOP_TURNS: Final = 100
"""Model turns of one agent loop."""
MAX_LOOP_TOOL_CALLS: Final = 1_000
"""Tool calls of one agent loop."""
MAX_DELEGATION_DEPTH: Final = 5
"""Agents calling agents calling agents..."""
MIN_CONVERSATION_TOKENS: Final = 256
"""An Agent's memory.maxTokens: below this a conversation is all summary."""
MAX_CONVERSATION_TOKENS: Final = 1_000_000
"""An Agent's memory.maxTokens (a model's whole context window at most)."""
