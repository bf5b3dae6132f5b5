"""Rendering prompts into messages and parsing answers back into validated values."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from agentflow.llm import (
    OutputValidationError,
    PromptRenderError,
    parse_output,
    render_messages,
    validate_inputs,
)
from agentflow.llm.prompts import REPAIR_PREFIX, extract_json, repair_messages

from .resources import CLASSIFY_SCHEMA, agent, prompt


class TestRenderMessages:
    def test_system_message_holds_role_instructions_and_prompt_system(self) -> None:
        pv = prompt(
            [
                {"role": "system", "content": "Tickets come from ${{ inputs.channel }}."},
                {"role": "user", "content": "Ticket: ${{ inputs.ticket }}"},
            ]
        )
        messages = render_messages(agent(), pv, {"ticket": "my card was charged twice", "channel": "email"})
        assert [m["role"] for m in messages] == ["system", "user"]
        system = messages[0]["content"]
        assert "support triage specialist" in system
        assert "Be precise." in system
        assert "Tickets come from email." in system
        assert messages[1]["content"] == "Ticket: my card was charged twice"

    def test_output_schema_adds_a_json_instruction_with_the_schema(self) -> None:
        pv = prompt([{"role": "user", "content": "x"}], CLASSIFY_SCHEMA)
        system = render_messages(agent(), pv, {})[0]["content"]
        assert "JSON" in system
        assert '"billing"' in system and '"confidence"' in system

    def test_no_schema_no_json_instruction(self) -> None:
        system = render_messages(agent(), prompt([{"role": "user", "content": "x"}]), {})[0]["content"]
        assert "JSON" not in system

    def test_typed_values_are_rendered_inside_text(self) -> None:
        pv = prompt([{"role": "user", "content": "Items: ${{ inputs.items }}, n=${{ size(inputs.items) }}"}])
        content = render_messages(agent(), pv, {"items": ["a", "b"]})[1]["content"]
        assert "n=2" in content and "a" in content and "b" in content

    def test_bad_template_names_the_message_and_says_what_to_do(self) -> None:
        pv = prompt([{"role": "user", "content": "hi"}, {"role": "user", "content": "${{ inputs.missing.deep }}"}])
        with pytest.raises(PromptRenderError, match=r"messages\[1\]\.content") as info:
            render_messages(agent(), pv, {})
        assert "inputs" in str(info.value)

    def test_input_schema_violations_name_the_path(self) -> None:
        pv = prompt(
            [{"role": "user", "content": "x"}],
            inputSchema={
                "type": "object",
                "properties": {"ticket": {"type": "string"}},
                "required": ["ticket"],
            },
        )
        validate_inputs(pv, {"ticket": "ok"})
        with pytest.raises(PromptRenderError, match=r"\$\.ticket.*'type'"):
            validate_inputs(pv, {"ticket": 42})
        with pytest.raises(PromptRenderError, match="required"):
            validate_inputs(pv, {})


class TestParseOutput:
    GOOD: ClassVar[dict[str, Any]] = {"category": "billing", "urgency": "high", "confidence": 0.9}

    def test_without_schema_the_text_is_the_output(self) -> None:
        assert parse_output("just words", None) == "just words"

    @pytest.mark.parametrize(
        "text",
        [
            json.dumps(GOOD),
            "```json\n" + json.dumps(GOOD) + "\n```",
            "Sure! Here it is:\n```\n" + json.dumps(GOOD) + "\n```\nAnything else?",
            "The answer is " + json.dumps(GOOD) + " as requested.",
        ],
    )
    def test_json_is_found_plain_fenced_or_in_prose(self, text: str) -> None:
        assert parse_output(text, CLASSIFY_SCHEMA) == self.GOOD

    def test_not_json_at_all(self) -> None:
        with pytest.raises(OutputValidationError) as info:
            parse_output("I think it is billing.", CLASSIFY_SCHEMA)
        assert (info.value.path, info.value.rule) == ("$", "json")

    def test_enum_violation_names_path_and_rule(self) -> None:
        bad = {**self.GOOD, "category": "refunds"}
        with pytest.raises(OutputValidationError) as info:
            parse_output(json.dumps(bad), CLASSIFY_SCHEMA)
        assert (info.value.path, info.value.rule) == ("$.category", "enum")
        assert "$.category" in str(info.value) and "'enum'" in str(info.value)

    def test_nested_path_and_range_rule(self) -> None:
        schema = {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"score": {"type": "number", "maximum": 1}}},
                }
            },
        }
        with pytest.raises(OutputValidationError) as info:
            parse_output('{"items": [{"score": 0.5}, {"score": 3}]}', schema)
        assert (info.value.path, info.value.rule) == ("$.items[1].score", "maximum")

    def test_missing_required_field(self) -> None:
        with pytest.raises(OutputValidationError) as info:
            parse_output('{"category": "billing", "urgency": "low"}', CLASSIFY_SCHEMA)
        assert info.value.rule == "required" and "confidence" in str(info.value)

    def test_invalid_schema_is_reported_as_such(self) -> None:
        with pytest.raises(OutputValidationError) as info:
            parse_output("{}", {"type": "nonsense"})
        assert info.value.rule == "schema" and "outputSchema" in str(info.value)

    def test_extract_json_prefers_the_whole_text(self) -> None:
        assert extract_json(" [1, 2] ") == [1, 2]


def test_repair_conversation_appends_answer_and_error() -> None:
    base = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    error = OutputValidationError("$.category", "enum", "the answer at $.category breaks schema rule 'enum'")
    messages = repair_messages(base, '{"category": "x"}', error)
    assert messages[:2] == base
    assert messages[2] == {"role": "assistant", "content": '{"category": "x"}'}
    assert messages[3]["role"] == "user"
    assert messages[3]["content"].startswith(REPAIR_PREFIX)
    assert "$.category" in messages[3]["content"]
