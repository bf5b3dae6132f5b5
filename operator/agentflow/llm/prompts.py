"""Turning an Agent and a PromptVersion into chat messages, and model answers into values.

``render_messages`` builds the system message (the Agent's role and
instructions, the prompt's own system messages, and, when the prompt has an
outputSchema, the instruction to answer with JSON matching it), then renders
the prompt's messages with ``${{ expr }}`` over ``{"inputs": inputs}``.

``parse_output`` reads the answer back: plain text without a schema; with a
schema, the JSON value (also from a fenced ```json block or surrounded by
prose), validated against the schema. :class:`OutputValidationError` names the
JSON path of the failing field and the schema rule it broke.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from agentflow.engine.expressions import ExpressionError
from agentflow.engine.schemas import schema_errors
from agentflow.engine.templates import render_text
from agentflow.models import Agent, PromptVersion

from .chat import LLMError

REPAIR_PREFIX = "Your previous answer was rejected:"
"""How a repair request starts (the offline model recognises and skips it)."""

SUMMARY_PREFIX = "You compact a conversation:"
"""How the system message of a summary request starts (memory.kind conversation; the offline model recognises it)."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)


class PromptRenderError(LLMError):
    """The prompt could not be rendered, or its inputs do not match its inputSchema."""


class OutputValidationError(LLMError):
    """The model's answer is not JSON, or does not satisfy the outputSchema.

    ``path`` is the JSON path of the failing value (``$`` for the whole answer,
    ``$.items[2].name``), ``rule`` the schema keyword it broke (``enum``,
    ``required``, ``type``, ... or ``json`` when the answer is not JSON at all).
    """

    def __init__(self, path: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.rule = rule


def json_path(parts: Sequence[str | int]) -> str:
    """``$.a.b[0]`` for ['a', 'b', 0]; odd keys are quoted (``$["a b"]``)."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def schema_violation(schema: dict[str, Any], value: Any) -> tuple[str, str, str] | None:
    """(JSON path, rule, message) of the most relevant violation of ``schema``, or None if valid.

    Raises jsonschema.SchemaError when the schema itself is invalid or has a $ref from outside it (never fetched).
    """
    errors = schema_errors(schema, value)
    if not errors:
        return None
    error = best_match(errors)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return json_path(list(error.absolute_path)), str(error.validator), error.message + more


def _system_text(agent: Agent, prompt: PromptVersion, context: Mapping[str, Any]) -> str:
    parts = [f"Your role: {agent.spec.role}"]
    if agent.spec.instructions.strip():
        parts.append(_render(agent.spec.instructions, context, f"Agent {agent.metadata.name} spec.instructions"))
    for i, message in enumerate(prompt.spec.messages):
        if message.role == "system":
            parts.append(_render(_content(prompt, i), context, f"{_where(prompt)}.messages[{i}].content"))
    if prompt.spec.output_schema is not None:
        parts.append(json_instruction(prompt.spec.output_schema))
    return "\n\n".join(parts)


def json_instruction(schema: Mapping[str, Any]) -> str:
    """The instruction appended to the system message when an answer must be JSON."""
    return (
        "Answer with a single JSON value and nothing else (no prose, no comments). "
        "It must be valid against this JSON Schema:\n```json\n" + json.dumps(schema, indent=2, sort_keys=True) + "\n```"
    )


def _where(prompt: PromptVersion) -> str:
    return f"PromptVersion {prompt.metadata.name} spec"


def _content(prompt: PromptVersion, i: int) -> str:
    message = prompt.spec.messages[i]
    if message.content is None:
        raise PromptRenderError(f"{_where(prompt)}.messages[{i}].include: not resolved; compose the PromptVersion "
                                "with agentflow.prompts.compose before rendering it")
    return message.content


def _render(text: str, context: Mapping[str, Any], where: str) -> str:
    try:
        return render_text(text, context)
    except ExpressionError as exc:
        raise PromptRenderError(f"{where}: {exc}; fix the template or give the step the inputs it refers to") from exc


def validate_inputs(prompt: PromptVersion, inputs: Mapping[str, Any]) -> None:
    """Check the step's inputs against the prompt's inputSchema (no-op without one)."""
    schema = prompt.spec.input_schema
    if schema is None:
        return
    try:
        violation = schema_violation(schema, dict(inputs))
    except jsonschema.SchemaError as exc:
        raise PromptRenderError(f"{_where(prompt)}.inputSchema is not a valid JSON Schema: {exc.message}") from exc
    if violation is not None:
        path, rule, message = violation
        raise PromptRenderError(
            f"{_where(prompt)}.inputSchema: inputs at {path} break rule {rule!r}: {message}; fix the step's inputs"
        )


def render_messages(agent: Agent, prompt: PromptVersion, inputs: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages of one call: one system message, then the prompt's other messages."""
    context = {"inputs": dict(inputs)}
    messages = [{"role": "system", "content": _system_text(agent, prompt, context)}]
    for i, message in enumerate(prompt.spec.messages):
        if message.role != "system":
            content = _render(_content(prompt, i), context, f"{_where(prompt)}.messages[{i}].content")
            messages.append({"role": str(message.role), "content": content})
    return messages


def repair_messages(
    messages: Sequence[Mapping[str, str]], answer: str, error: OutputValidationError
) -> list[dict[str, str]]:
    """The conversation asking the model to correct an answer that failed validation."""
    return [
        *(dict(m) for m in messages),
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": f"{REPAIR_PREFIX} {error} Reply again with only the corrected JSON value, "
            "valid against the JSON Schema given in the system message.",
        },
    ]


def transcript_line(message: Mapping[str, Any]) -> str:
    """One message of a conversation as a line of the transcript a summary request is given."""
    role = str(message.get("role", ""))
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    calls = [c.get("function") or {} for c in message.get("tool_calls") or () if isinstance(c, Mapping)]
    called = "; ".join(f"called {f.get('name', '')}({f.get('arguments', '')})" for f in calls)
    if role == "tool":
        return f"tool result: {text}"
    return f"{role}: " + " ".join(t for t in (text, called) if t)


def summary_messages(previous: str | None, messages: Sequence[Mapping[str, Any]],
                     max_tokens: int) -> list[dict[str, str]]:
    """The request that compacts ``messages`` (and the summary before them) into one summary."""
    system = (f"{SUMMARY_PREFIX} summarize it for yourself, to carry on from the summary alone. Keep every fact, "
              "decision, number, name and open question; what tools answered; drop pleasantries. Plain text, at "
              f"most about {max_tokens} tokens.")
    lines = ([f"earlier summary: {previous}"] if previous else []) + [transcript_line(m) for m in messages]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def extract_json(text: str) -> Any:
    """The JSON value in a model answer: the whole text, a fenced block, or the first {...}/[...]."""
    stripped = text.strip()
    candidates = [stripped, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        return value
    preview = " ".join(stripped.split())[:120]
    raise OutputValidationError("$", "json", f"the answer is not JSON (it starts with {preview!r})")


def parse_output(text: str, output_schema: Mapping[str, Any] | None) -> Any:
    """The step output of an answer: the text itself without a schema, else the validated JSON."""
    if output_schema is None:
        return text
    value = extract_json(text)
    try:
        violation = schema_violation(dict(output_schema), value)
    except jsonschema.SchemaError as exc:
        raise OutputValidationError(
            "$", "schema", f"the PromptVersion's outputSchema is not a valid JSON Schema: {exc.message}"
        ) from exc
    if violation is not None:
        path, rule, message = violation
        raise OutputValidationError(path, rule, f"the answer at {path} breaks schema rule {rule!r}: {message}")
    return value
