"""Composition: includes of named parts resolved in place, roles kept, and errors (missing PromptVersion,
missing part, cycles) that name the field of the including PromptVersion."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.llm.prompts import PromptRenderError, render_messages
from agentflow.models import Agent, Catalog, PromptVersion
from agentflow.prompts.compose import CompositionError, compose, composition_findings
from agentflow.validation.resources import check_resource


def pv(name: str, messages: list[dict[str, Any]], parts: dict[str, Any] | None = None) -> PromptVersion:
    return PromptVersion.model_validate({"metadata": {"name": name}, "spec": {
        "prompt": name.split("-")[0], "version": "1", "messages": messages, "parts": parts or {}}})


def inc(prompt: str, part: str) -> dict[str, Any]:
    return {"include": {"prompt": prompt, "part": part}}


POLICY = pv("policy-v1", [{"role": "user", "content": "unused"}], {
    "preamble": [{"role": "system", "content": "Never promise refunds."}],
    "fewshot": [{"role": "user", "content": "Ticket: parcel late"}, {"role": "assistant", "content": "shipping"},
                inc("policy-v1", "preamble")],
})
AGENT = Agent.model_validate({"metadata": {"name": "a"}, "spec": {"role": "triage", "model": {"name": "m"}}})


def test_includes_are_resolved_in_place() -> None:
    prompt = pv("triage-v1", [inc("policy-v1", "fewshot"), {"role": "user", "content": "Ticket: ${{ inputs.t }}"}])
    composed = compose(prompt, {"policy-v1": POLICY})
    assert [(m.role, m.content) for m in composed.spec.messages] == [
        ("user", "Ticket: parcel late"), ("assistant", "shipping"), ("system", "Never promise refunds."),
        ("user", "Ticket: ${{ inputs.t }}")]
    messages = render_messages(AGENT, composed, {"t": "refund please"})
    assert "Never promise refunds." in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": "Ticket: refund please"}
    with pytest.raises(PromptRenderError, match="include: not resolved"):
        render_messages(AGENT, prompt, {"t": "x"})


def test_own_parts_and_no_includes() -> None:
    prompt = pv("x-v1", [inc("x-v1", "p")], {"p": [{"role": "user", "content": "hi"}]})
    assert compose(prompt, {}).spec.messages[0].content == "hi"
    plain = pv("y-v1", [{"role": "user", "content": "hi"}])
    assert compose(plain, {}) is plain


@pytest.mark.parametrize(("messages", "parts", "path", "message"), [
    ([inc("nope", "p")], {}, ["spec", "messages", 0, "include", "prompt"], "unknown PromptVersion 'nope'"),
    ([{"role": "user", "content": "x"}, inc("policy-v1", "nope")], {},
     ["spec", "messages", 1, "include", "part"], "PromptVersion 'policy-v1' has no part 'nope'"),
    ([inc("c-v1", "a")], {"a": [inc("c-v1", "b")], "b": [inc("c-v1", "a")]},
     ["spec", "parts", "b", 0, "include"], "include cycle: c-v1:a -> c-v1:b -> c-v1:a"),
])
def test_errors_name_the_field(messages: list[dict[str, Any]], parts: dict[str, Any], path: list[Any],
                               message: str) -> None:
    prompt = pv("c-v1", messages, parts)
    with pytest.raises(CompositionError) as caught:
        compose(prompt, {"policy-v1": POLICY})
    assert caught.value.path == path and caught.value.message.startswith(message)


def test_a_cycle_across_prompt_versions_is_found_by_validation() -> None:
    a = pv("a-v1", [inc("b-v1", "x")], {"y": [inc("b-v1", "x")]})
    b = pv("b-v1", [{"role": "user", "content": "x"}], {"x": [inc("a-v1", "y")]})
    catalog = Catalog(prompts={"a-v1": a, "b-v1": b})
    findings = composition_findings(a, catalog.prompts)
    assert findings[0][0] == ["spec", "messages", 0, "include"]
    assert "include cycle" in findings[0][1] and "b-v1:x -> a-v1:y -> b-v1:x" in findings[0][1]
    assert [p for p, _ in check_resource(a, catalog)][:2] == [["spec", "messages", 0, "include"],
                                                             ["spec", "parts", "y", 0, "include"]]


def test_the_model_refuses_mixed_messages() -> None:
    with pytest.raises(ValueError, match="no role or content"):
        pv("m-v1", [{"role": "user", "content": "x", "include": {"prompt": "p", "part": "q"}}])
    with pytest.raises(ValueError, match="needs role and content"):
        pv("m-v1", [{"role": "user"}])


def test_agentflow_validate_names_the_file_and_field(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from agentflow.cli import main

    manifest = tmp_path / "p.yaml"
    manifest.write_text(
        "apiVersion: agentflow.dev/v1alpha1\nkind: PromptVersion\nmetadata: {name: a-v1}\nspec:\n  prompt: a\n"
        "  version: '1'\n  messages:\n    - include: {prompt: a-v1, part: policy}\n  parts:\n"
        "    rules: [{role: system, content: be kind}]\n")
    assert main(["validate", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "spec.messages[0].include.part" in err and "has no part 'policy'" in err and "its parts: rules" in err
