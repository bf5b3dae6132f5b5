"""The attribute names spans carry: OpenTelemetry's GenAI semantic conventions, pinned, and AgentFlow's own.

Pinned: **semantic conventions v1.44.0** (schema URL below; the ``gen_ai.*`` names are at Development status
there, so a later version may rename them: change them here, in one place). What AgentFlow records::

    invoke_workflow NAME     the run                 gen_ai.operation.name invoke_workflow
    invoke_agent AGENT       an agent loop, an llm   gen_ai.operation.name invoke_agent, gen_ai.agent.name,
                             step's attempt          gen_ai.usage.* (an attempt's calls)
    step NODE                a loop's model turn     agentflow.* only (the gateway's chat span is its child)
    execute_tool TOOL        a tool step's attempt,  gen_ai.operation.name execute_tool, gen_ai.tool.name,
                             a loop's tool call      gen_ai.tool.type
    chat MODEL               one model call          gen_ai.operation.name chat, gen_ai.provider.name,
                             (the gateway)           gen_ai.request.model, gen_ai.response.model,
                                                     gen_ai.usage.input_tokens / output_tokens, gen_ai.agent.name;
                                                     opt-in: gen_ai.input.messages / gen_ai.output.messages
    embeddings MODEL         an embedding call       gen_ai.operation.name embeddings, gen_ai.request.model,
                             (the gateway)           gen_ai.usage.input_tokens
    budget.reserve           a budget reservation    agentflow.budget.*
    memory FUNCTION          a memory operation      gen_ai.operation.name retrieval (searches), agentflow.memory.*
    approval NODE            a wait for a human      agentflow.approval.*
    every failed span        error.type              the AgentFlow error type (BudgetExceeded, ModelTimeout, ...)
"""

from __future__ import annotations

from typing import Final

SEMCONV_VERSION: Final = "1.44.0"
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
SCOPE: Final = "agentflow"

# gen_ai.* (semantic conventions v1.44.0, Development)
OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_ID: Final = "gen_ai.response.id"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
AGENT_NAME: Final = "gen_ai.agent.name"
TOOL_NAME: Final = "gen_ai.tool.name"
TOOL_TYPE: Final = "gen_ai.tool.type"
TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
CONVERSATION_ID: Final = "gen_ai.conversation.id"
INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
ERROR_TYPE: Final = "error.type"

# gen_ai.operation.name values
CHAT: Final = "chat"
INVOKE_AGENT: Final = "invoke_agent"
INVOKE_WORKFLOW: Final = "invoke_workflow"
EXECUTE_TOOL: Final = "execute_tool"
EMBEDDINGS: Final = "embeddings"
RETRIEVAL: Final = "retrieval"

# AgentFlow's own (no convention covers them)
WORKFLOW: Final = "agentflow.workflow"
NAMESPACE: Final = "agentflow.namespace"
RUN_ID: Final = "agentflow.run_id"
PHASE: Final = "agentflow.phase"
NODE: Final = "agentflow.node"
STEP: Final = "agentflow.step"
ATTEMPT: Final = "agentflow.attempt"
EXECUTOR: Final = "agentflow.executor"
COST_USD: Final = "agentflow.cost_usd"
CACHE: Final = "agentflow.cache"
ERROR_MESSAGE: Final = "agentflow.error.message"
LOOP_TURNS: Final = "agentflow.loop.turns"
LOOP_TOOL_CALLS: Final = "agentflow.loop.tool_calls"
LOOP_DEPTH: Final = "agentflow.loop.depth"
APPROVED: Final = "agentflow.approval.approved"
APPROVED_BY: Final = "agentflow.approval.by"
BUDGET_LINES: Final = "agentflow.budget.lines"
BUDGET_ESTIMATE_USD: Final = "agentflow.budget.estimate_usd"
BUDGET_ESTIMATE_TOKENS: Final = "agentflow.budget.estimate_tokens"
MEMORY_FUNCTION: Final = "agentflow.memory.function"
MEMORY_RESULTS: Final = "agentflow.memory.results"
