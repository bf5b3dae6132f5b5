"""Pod names, label values and approval annotations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.k8s import names
from agentflow.k8s.names import (
    APPROVE_ANNOTATION,
    REJECT_ANNOTATION,
    ApprovalAnnotation,
    is_dns_label,
    is_label_value,
    label_value,
    node_label,
    parse_decision,
    pod_name,
)

WORKFLOW = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,120}[a-z0-9])?", fullmatch=True)
STEP = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
NODE = st.one_of(
    STEP,
    st.builds(lambda s, i: f"{s}[{i}]", STEP, st.integers(0, 100_000)),
    st.builds(lambda s, i: f"{s}#{i}", STEP, st.integers(1, 1000)),
)


def test_readable_names_of_the_three_node_kinds() -> None:
    assert pod_name("triage", "classify", 1).startswith("triage-classify-a1-")
    assert pod_name("triage", "map[3]", 2).startswith("triage-map-3-a2-")
    assert pod_name("triage", "score#2", 1).startswith("triage-score-v2-a1-")


def test_the_name_is_deterministic() -> None:
    assert pod_name("wf", "map[3]", 1) == pod_name("wf", "map[3]", 1)
    assert pod_name("wf", "map[3]", 1) != pod_name("wf", "map[3]", 2)


def test_nodes_that_sanitize_alike_do_not_collide() -> None:
    assert names.sanitize_node("map[3]") == names.sanitize_node("map-3")
    assert pod_name("wf", "map[3]", 1) != pod_name("wf", "map-3", 1)
    assert pod_name("wf", "score#2", 1) != pod_name("wf", "score-v2", 1)


def test_long_names_keep_the_node_its_index_and_the_attempt() -> None:
    name = pod_name("w" * 200, "summarize-every-single-subsidiary-statement-of-the-group[12]", 7)
    assert len(name) <= 63 and is_dns_label(name)
    assert "-summarize-" in name and "-12-a7-" in name


def test_long_names_that_share_a_prefix_differ() -> None:
    long_step = "x" * 63
    assert pod_name("wf", f"{long_step}[1]", 1) != pod_name("wf", f"{long_step}[2]", 1)
    assert pod_name("a" * 80 + "1", "s", 1) != pod_name("a" * 80 + "2", "s", 1)


@given(WORKFLOW, NODE, st.integers(1, 10_000))
def test_every_pod_name_is_a_dns_label(workflow: str, node: str, attempt: int) -> None:
    name = pod_name(workflow, node, attempt)
    assert is_dns_label(name), name
    assert f"-a{attempt}-" in name


@pytest.mark.parametrize("value", ["classify", "6f1c2d3e-0000-4000-8000-000000000001", "a.b_c", ""])
def test_valid_label_values_are_kept(value: str) -> None:
    assert label_value(value) == value


@given(st.text(max_size=300))
def test_any_text_gives_a_valid_label_value(text: str) -> None:
    assert is_label_value(label_value(text))


def test_label_values_of_different_texts_differ() -> None:
    assert label_value("map[3]") != label_value("map-3")
    assert label_value("x" * 64) != label_value("x" * 65)
    assert label_value("x" * 64) != label_value("x" * 63)


def test_node_labels_are_readable_and_distinct() -> None:
    assert node_label("classify") == "classify"
    assert node_label("map[3]").startswith("map-3-")
    assert node_label("score#2").startswith("score-v2-")
    assert node_label("map[3]") != node_label("map-3")


@given(NODE)
def test_every_node_label_is_valid(node: str) -> None:
    assert is_label_value(node_label(node))


def test_a_node_id_alone_approves() -> None:
    assert parse_decision(APPROVE_ANNOTATION, " review ") == ApprovalAnnotation("review", True)


def test_json_carries_who_and_why() -> None:
    got = parse_decision(REJECT_ANNOTATION, '{"node": "map[2]", "by": "alice", "reason": "too risky"}')
    assert got == ApprovalAnnotation("map[2]", False, "alice", "too risky")


@pytest.mark.parametrize(("value", "says"), [
    ("", "is empty"),
    ("{not json", "not valid JSON"),
    ('{"by": "alice"}', "names no node"),
    ('{"node": ["review"]}', "names no node"),
    ('{"node": "review", "by": 3}', "must be strings"),
])
def test_malformed_decisions_say_the_expected_form(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as info:
        parse_decision(APPROVE_ANNOTATION, value)
    assert "expected agentflow.dev/approve=NODE" in str(info.value)


def test_other_annotations_are_not_decisions() -> None:
    with pytest.raises(ValueError, match="is not"):
        parse_decision("agentflow.dev/node", "x")
