"""The executor's part of memory.kind conversation: a summary node's call (redacted, through the gateway as the
loop's Agent) and a turn sent its Agent's earlier exchanges after the instructions."""

from __future__ import annotations

from agentflow.engine.conversation import exchange, history_messages

from .test_executors import GOOD, Scripted, executor, request

EMAIL = "maria.gonzalez@example.org"
MESSAGES = [{"role": "user", "content": f'(step classify) inputs: {{"ticket": "write to {EMAIL}"}}'},
            {"role": "assistant", "content": "billing"}]


async def test_a_summary_is_one_redacted_transcript_through_the_gateway_as_the_agent() -> None:
    model = Scripted("  The customer asked about billing.  ")
    context = {"agent": "triage", "depth": 0, "summary": {"previous": "Earlier: a refund.", "messages": MESSAGES,
                                                          "maxTokens": 100}}
    result = await executor(model).execute(request("classify", node="classify/s1", inputs={}, context=context))
    assert result.ok, result.error
    assert result.output == {"summary": "The customer asked about billing."}
    [sent] = model.requests
    assert sent.model == "openai/primary" and sent.max_tokens == 100 and sent.tools == ()
    assert sent.idempotency_key == "run-1/classify/s1/1"
    system, user = sent.messages
    assert system["role"] == "system" and system["content"].startswith("You compact a conversation:")
    lines = user["content"].splitlines()
    assert lines[0] == "earlier summary: Earlier: a refund." and lines[2] == "assistant: billing"
    assert lines[1].startswith("user: (step classify) inputs:") and EMAIL not in user["content"]
    assert "<EMAIL_ADDRESS_" in lines[1]
    [call] = result.calls
    assert call.kind == "llm" and call.response == "  The customer asked about billing.  "


async def test_a_turn_is_sent_the_earlier_exchanges_after_the_instructions() -> None:
    model = Scripted(GOOD)
    history = history_messages("a refund was asked for", [exchange("first", {"ticket": "hi"}, "billing")])
    context = {"agent": "triage", "turn": 1, "maxTurns": 3, "messages": [], "tools": [], "mcp": [],
               "parallelToolCalls": True, "finalTool": False, "task": None, "depth": 0, "history": history}
    result = await executor(model).execute(request("classify", node="classify/t1", context=context))
    assert result.ok, result.error
    [sent] = model.requests
    roles = [m["role"] for m in sent.messages]
    assert roles == ["system", "user", "user", "assistant", "user"]
    assert sent.messages[1]["content"].endswith("a refund was asked for")
    assert sent.messages[2]["content"] == '(step first) inputs: {"ticket": "hi"}'
    assert sent.messages[4]["content"] == "Ticket: I was charged twice, please refund"
