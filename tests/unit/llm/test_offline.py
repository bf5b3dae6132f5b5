"""The offline model: deterministic, schema-conforming, and roughly sensible. Not a real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import jsonschema
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentflow.llm import OFFLINE_MODEL_NAME, ChatRequest, OfflineModel, parse_output
from agentflow.llm.prompts import REPAIR_PREFIX

from .resources import CLASSIFY_SCHEMA


def _messages(user: str) -> tuple[dict[str, str], ...]:
    return ({"role": "system", "content": "You classify tickets."}, {"role": "user", "content": user})


async def test_answer_conforms_to_the_schema_and_is_named_offline() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": CLASSIFY_SCHEMA}}
    request = ChatRequest(model="openai/gpt-4o-mini", messages=_messages("hello"), response_format=fmt)
    response = await OfflineModel().complete(request)
    assert response.model == OFFLINE_MODEL_NAME
    assert response.cost_usd == 0.0
    assert response.input_tokens > 0 and response.output_tokens > 0
    jsonschema.validate(json.loads(response.text), CLASSIFY_SCHEMA)


def test_pii_tokens_of_different_runs_get_the_same_answer() -> None:
    # Tokens are keyed per run: the same visible input must not change the offline answer from run to run.
    model = OfflineModel()
    a = model.answer(_messages("Refund <PERSON_0a1b2c3d4e> at <EMAIL_ADDRESS_9f8e7d6c5b>"), CLASSIFY_SCHEMA)
    b = model.answer(_messages("Refund <PERSON_5a5a5a5a5a> at <EMAIL_ADDRESS_1234567890>"), CLASSIFY_SCHEMA)
    assert a == b


def test_same_messages_same_answer_different_messages_differ() -> None:
    model = OfflineModel()
    texts = {model.answer(_messages(f"ticket number {i}"), CLASSIFY_SCHEMA) for i in range(12)}
    assert model.answer(_messages("ticket number 3"), CLASSIFY_SCHEMA) in texts
    assert len(texts) > 1


def test_deterministic_across_processes_and_hash_seeds() -> None:
    code = (
        "import json; from agentflow.llm import OfflineModel;"
        "m=OfflineModel(); msgs=({'role':'user','content':'my parcel never arrived'},);"
        f"print(m.answer(msgs, {CLASSIFY_SCHEMA!r})); print(m.answer(msgs, None))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "12345")
    }
    assert len(outputs) == 1
    in_process = OfflineModel().answer(({"role": "user", "content": "my parcel never arrived"},), CLASSIFY_SCHEMA)
    assert outputs.pop().splitlines()[0] == in_process


def test_without_schema_a_labelled_text_reply_quoting_the_user() -> None:
    text = OfflineModel().answer(_messages("Please summarise the quarterly report"), None)
    assert text.startswith("[offline model]")
    assert "Please summarise the quarterly report" in text


def test_keywords_steer_enums_and_risk_like_numbers() -> None:
    model = OfflineModel()
    refund = json.loads(model.answer(_messages("I want a refund, I was charged twice!"), CLASSIFY_SCHEMA))
    assert refund["category"] == "billing"
    parcel = json.loads(model.answer(_messages("My package delivery is late, tracking shows nothing"), CLASSIFY_SCHEMA))
    assert parcel["category"] == "shipping"
    urgent = json.loads(model.answer(_messages("URGENT: fraud on my account, stolen card"), CLASSIFY_SCHEMA))
    assert urgent["urgency"] == "high"

    risk_schema = {
        "type": "object",
        "required": ["risk"],
        "properties": {"risk": {"type": "number", "minimum": 0, "maximum": 1}},
    }
    high = json.loads(model.answer(_messages("unauthorized transfer, looks like fraud"), risk_schema))["risk"]
    low = json.loads(model.answer(_messages("weekly grocery purchase at the usual shop"), risk_schema))["risk"]
    assert high > 0.8 and low < 0.4


def test_confidence_is_high_for_a_known_topic_and_low_for_a_vague_request() -> None:
    """examples/manifests/customer-support.yaml escalates below 0.7: the README's walkthrough relies on both."""
    model = OfflineModel()
    for text in ("I was charged twice", "My parcel never arrived", "I forgot my password", "the app crashes"):
        for customer in ("Dana", "<PERSON_0123456789>", "<PERSON_abcdefabcd>"):
            answer = json.loads(model.answer(_messages(f"Ticket from {customer}: {text}"), CLASSIFY_SCHEMA))
            assert 0.72 <= answer["confidence"] <= 0.98, (text, answer)
    for text in ("Something is off, please help", "Hello?", "hmm", "Please call me back"):
        answer = json.loads(model.answer(_messages(f"Ticket from Dana: {text}"), CLASSIFY_SCHEMA))
        assert 0.35 <= answer["confidence"] <= 0.65, (text, answer)
    scored = {"type": "object", "required": ["score"], "properties": {"score": {"type": "integer", "minimum": 1,
                                                                                 "maximum": 10}}}
    assert json.loads(model.answer(_messages("hmm"), scored))["score"] >= 6  # a quality score: unchanged


def test_strings_are_marked_and_derived_from_the_prompt() -> None:
    schema = {"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}}
    out = json.loads(OfflineModel().answer(_messages("Quarterly revenue grew by ten percent"), schema))
    assert out["summary"].startswith("[offline] Quarterly revenue grew")


def test_repair_requests_do_not_change_what_the_user_said() -> None:
    schema = {"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}}
    base = list(_messages("Explain photosynthesis"))
    repaired = [
        *base,
        {"role": "assistant", "content": "{}"},
        {"role": "user", "content": f"{REPAIR_PREFIX} x"},
    ]
    out = json.loads(OfflineModel().answer(repaired, schema))
    assert REPAIR_PREFIX not in out["summary"] and "photosynthesis" in out["summary"]


def test_refs_arrays_unique_items_and_formats() -> None:
    schema = {
        "$defs": {"tag": {"type": "string", "enum": ["a", "b", "c"]}},
        "type": "object",
        "required": ["tags", "when", "count", "maybe"],
        "properties": {
            "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 3, "uniqueItems": True},
            "when": {"type": "string", "format": "date-time"},
            "count": {"type": "integer", "minimum": 3, "maximum": 9, "multipleOf": 3},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 5}]},
        },
    }
    out = parse_output(OfflineModel().answer(_messages("x"), schema), schema)
    assert sorted(out["tags"]) == ["a", "b", "c"]
    assert out["count"] in (3, 6, 9)


# --- schema conformance over generated schemas --------------------------------------------------------

_names = st.sampled_from(["title", "confidence", "risk", "summary", "count", "tags", "score", "x_y"])


def _scalar() -> st.SearchStrategy[dict[str, Any]]:
    def number(draw_kind: str, lo: float | None, width: float | None, exclusive: bool) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": draw_kind}
        if lo is not None:
            schema["exclusiveMinimum" if exclusive else "minimum"] = lo
            if width is not None:
                schema["maximum"] = lo + width
        return schema

    numbers = st.builds(
        number,
        st.sampled_from(["number", "integer"]),
        st.one_of(st.none(), st.integers(-50, 50).map(float), st.sampled_from([0.0, 0.5])),
        st.one_of(st.none(), st.sampled_from([1.0, 2.0, 10.0, 1000.0])),
        st.booleans(),
    )
    strings = st.builds(
        lambda lo, hi: {"type": "string", "minLength": lo, "maxLength": lo + hi},
        st.integers(0, 30),
        st.integers(0, 60),
    )
    enums = st.lists(
        st.sampled_from(["low", "high", "billing", "fraud", 1, 2.5, True, None]),
        min_size=1,
        max_size=5,
        unique_by=lambda v: json.dumps(v),
    ).map(lambda v: {"enum": v})
    return st.one_of(
        numbers,
        strings,
        enums,
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.just({"const": "fixed"}),
        st.just({}),
    )


def _schema() -> st.SearchStrategy[dict[str, Any]]:
    def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        objects = st.dictionaries(_names, children, max_size=4).flatmap(
            lambda props: st.builds(
                lambda required, closed: {
                    "type": "object",
                    "properties": props,
                    "required": required,
                    **({"additionalProperties": False} if closed else {}),
                },
                st.lists(st.sampled_from(sorted(props)), unique=True) if props else st.just([]),
                st.booleans(),
            )
        )
        arrays = st.builds(
            lambda items, lo, unique: {
                "type": "array",
                "items": items,
                "minItems": lo,
                "maxItems": lo + 3,
                **({"uniqueItems": True} if unique else {}),
            },
            children,
            st.integers(0, 3),
            st.booleans(),
        )
        return st.one_of(objects, arrays)

    return st.recursive(_scalar(), extend, max_leaves=12)


def _finite(schema: Any) -> bool:
    """Whether the generator may run out of distinct values for this item schema (uniqueItems)."""
    if not isinstance(schema, dict) or not schema:
        return True
    if "enum" in schema or "const" in schema or schema.get("type") in ("boolean", "null"):
        return True
    if schema.get("type") == "string":
        return bool(schema.get("maxLength", 99) < 8)
    if schema.get("type") == "integer":
        return bool(schema.get("maximum", 1e9) - schema.get("minimum", schema.get("exclusiveMinimum", -1e9)) < 20)
    if schema.get("type") == "object":
        return all(_finite(p) for p in schema.get("properties", {}).values())
    if schema.get("type") == "array":
        return schema.get("maxItems", 1) == 0 or _finite(schema.get("items"))
    return False


def _unique_items_may_be_unsatisfiable(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("uniqueItems") and _finite(schema.get("items")):
        return True
    children = [*schema.get("properties", {}).values(), schema.get("items")]
    return any(_unique_items_may_be_unsatisfiable(c) for c in children)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_schema(), user=st.text(max_size=80))
# found by hypothesis: unique arrays of arrays (and of objects) whose members all came out alike
@example(schema={"type": "object", "required": [], "properties": {"confidence": {
    "type": "array", "minItems": 2, "maxItems": 5, "uniqueItems": True,
    "items": {"type": "array", "items": {"type": "integer"}, "minItems": 0, "maxItems": 3}}}}, user="")
@example(schema={"type": "array", "minItems": 3, "maxItems": 6, "uniqueItems": True, "items": {
    "type": "object", "required": ["confidence", "b"],
    "properties": {"confidence": {"type": "integer"}, "b": {"const": 1}}}}, user="")
def test_generated_answers_validate_against_generated_schemas(schema: dict[str, Any], user: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    answer = json.loads(OfflineModel().answer(_messages(user), schema))
    errors = [e for e in validator.iter_errors(answer)]
    tolerated = all(e.validator == "uniqueItems" for e in errors) and _unique_items_may_be_unsatisfiable(schema)
    assert not errors or tolerated, (schema, answer, [e.message for e in errors])


def test_the_users_own_words_outweigh_pasted_context() -> None:
    schema = {
        "type": "object",
        "required": ["action"],
        "properties": {"action": {"enum": ["send-replacement", "issue-refund"]}},
    }
    context = " ".join(["filler"] * 50) + " we send a replacement parcel for free"
    answer = json.loads(OfflineModel().answer(_messages(f"Please refund my payment. {context}"), schema))
    assert answer["action"] == "issue-refund"


def test_string_list_items_are_successive_sentences() -> None:
    schema = {"type": "array", "minItems": 3, "items": {"type": "string"}}
    out = json.loads(OfflineModel().answer(_messages("Revenue grew. Churn rose! Hiring slowed?"), schema))
    assert out == ["[offline] Revenue grew.", "[offline] Churn rose!", "[offline] Hiring slowed?"]


async def test_a_summary_is_mechanical_and_tools_it_quotes_count_as_called() -> None:
    from agentflow.engine.conversation import summary_message
    from agentflow.llm.prompts import summary_messages, transcript_line

    model = OfflineModel()
    compacted = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 1}'}}]},
                 {"role": "tool", "tool_call_id": "c1", "content": "order 1 shipped"}]
    asked = ChatRequest(model="agentflow/offline", messages=tuple(summary_messages("before", compacted, 64)),
                        max_tokens=64)
    text = (await model.complete(asked)).text
    assert text == (await model.complete(asked)).text
    assert text == "[offline summary] earlier summary: before | assistant: called lookup({\"id\": 1}) | " \
                   "tool result: order 1 shipped"
    assert transcript_line(compacted[0]) == 'assistant: called lookup({"id": 1})'
    tools = ({"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},)
    directed = {"role": "system", "content": "Look it up [[call lookup]]."}
    fresh = ChatRequest(model="agentflow/offline", messages=(directed, {"role": "user", "content": "where?"}),
                        tools=tools)
    assert [c["function"]["name"] for c in model.tool_calls(fresh)] == ["lookup"]
    after = ChatRequest(model="agentflow/offline", messages=(directed, summary_message(text),
                                                              {"role": "user", "content": "where?"}), tools=tools)
    assert model.tool_calls(after) == []  # the summary says it was called: it answers instead
    short = ChatRequest(model="agentflow/offline", messages=asked.messages, max_tokens=5)
    assert len((await model.complete(short)).text) <= 20


async def test_an_answer_directive_is_its_answer_turn_by_turn() -> None:
    """[[answer]]TEXT[[/answer]]: what it answers, whatever the schema; the n-th for the n-th turn, then the last."""
    system = {"role": "system",
              "content": "Plan.\n[[answer]]{\"steps\": [\n]]}[[/answer]]\n[[answer]] second [[/answer]]"}
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": CLASSIFY_SCHEMA}}
    first = ChatRequest(model="m", messages=(system, {"role": "user", "content": "go"}), response_format=fmt)
    assert (await OfflineModel().complete(first)).text == '{"steps": [\n]]}'
    repair = ChatRequest(model="m", messages=(*first.messages, {"role": "assistant", "content": "x"},
                                              {"role": "user", "content": "fix it"}))
    assert (await OfflineModel().complete(repair)).text == "second"
    third = ChatRequest(model="m", messages=(*repair.messages, {"role": "assistant", "content": "y"}))
    assert (await OfflineModel().complete(third)).text == "second"
    plain = ChatRequest(model="m", messages=_messages("no directive"), response_format=fmt)
    jsonschema.validate(json.loads((await OfflineModel().complete(plain)).text), CLASSIFY_SCHEMA)
