"""Reading manifests: every problem names the file, the field path and the line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agentflow.loader import load_documents
from agentflow.models import Agent, Budget, ManifestError, Problem, Workflow, parse_resource
from agentflow.models.manifests import Document, parse_documents, parse_yaml

AGENT = """\
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata:
  name: triage
spec:
  role: support triage
  model:
    name: openai/gpt-4o-mini
"""

WORKFLOW = """\
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata:
  name: support
spec:
  inputs:
    day: 2024-01-02
  steps:
    - name: classify
      kind: tool
      tool: echo
"""


def problems(text: str, source: str = "m.yaml") -> list[Problem]:
    """The problems of YAML text, whether the YAML or a resource is wrong."""
    try:
        parse_documents(parse_yaml(textwrap.dedent(text), source))
    except ManifestError as exc:
        return exc.problems
    return []


def only(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# --- good input ---------------------------------------------------------------------------------


def test_a_valid_manifest_parses_into_its_model() -> None:
    (loaded,) = parse_documents(parse_yaml(AGENT, "agent.yaml"))
    assert isinstance(loaded.resource, Agent)
    assert loaded.resource.spec.model.name == "openai/gpt-4o-mini"
    assert loaded.doc.source == "agent.yaml"


def test_timestamps_stay_strings_as_with_kubectl() -> None:
    (loaded,) = parse_documents(parse_yaml(WORKFLOW, "wf.yaml"))
    assert isinstance(loaded.resource, Workflow)
    assert loaded.resource.spec.inputs == {"day": "2024-01-02"}


def test_multi_document_files_keep_order_skip_empty_documents_and_count_lines_per_file() -> None:
    text = f"---\n{AGENT}---\n# only a comment\n---\n{WORKFLOW}"
    docs = parse_yaml(text, "all.yaml")
    assert [d.body["kind"] for d in docs] == ["Agent", "Workflow"]
    assert [d.index for d in docs] == [0, 2]
    # Lines are those of the file, not of the document: 3 separators, a comment, the agent's lines,
    # then "tool: echo" is line 11 of WORKFLOW.
    assert docs[1].line_of(["spec", "steps", 0, "tool"]) == 3 + 1 + AGENT.count("\n") + 11


# --- malformed YAML -----------------------------------------------------------------------------


def test_malformed_yaml_names_file_and_line() -> None:
    problem = only(
        """\
        apiVersion: agentflow.dev/v1alpha1
        kind: Agent
        metadata: {name: [a, b}
        """
    )
    assert problem.source == "m.yaml"
    assert problem.line == 3
    assert problem.message.startswith("malformed YAML")


def test_unclosed_quote_points_at_where_it_was_opened() -> None:
    problem = only("a: 'never closed\nb: 1\n")
    assert "quoted scalar on line 1" in problem.message


def test_tab_indentation_is_reported_on_its_line() -> None:
    problem = only("a: 1\n\tb: 2\n")
    assert (problem.line, "malformed YAML" in problem.message) == (2, True)


def test_duplicate_key_names_path_and_line() -> None:
    problem = only(
        """\
        apiVersion: agentflow.dev/v1alpha1
        kind: Agent
        metadata:
          name: a
          name: b
        spec: {}
        """
    )
    assert (problem.path, problem.line) == ("metadata.name", 5)
    assert "duplicate key 'name'" in problem.message


def test_merge_keys_are_refused() -> None:
    problem = only("base: &b {x: 1}\nother:\n  <<: *b\n")
    assert (problem.path, problem.line) == ("other", 3)
    assert "merge keys" in problem.message


def test_a_bad_tagged_scalar_is_a_problem_not_a_crash() -> None:
    problem = only("spec:\n  n: !!int twelve\n")
    assert (problem.path, problem.line) == ("spec.n", 2)
    assert "bad int value 'twelve'" in problem.message


# --- wrong content ------------------------------------------------------------------------------


def test_unknown_field_names_path_and_line() -> None:
    problem = only(AGENT + "    temprature: 0.2\n")
    assert (problem.path, problem.line, problem.message) == ("spec.model.temprature", 9, "unknown field")
    assert str(problem) == "m.yaml:9: spec.model.temprature: unknown field"


def test_every_wrong_type_is_reported_at_once() -> None:
    found = problems(
        """\
        apiVersion: agentflow.dev/v1alpha1
        kind: Budget
        metadata: {name: team}
        spec:
          period: hourly
          limits:
            usd: cheap
        """
    )
    by_path = {p.path: p for p in found}
    assert set(by_path) == {"spec.period", "spec.limits.usd"}
    assert by_path["spec.period"].line == 5
    assert by_path["spec.limits.usd"].line == 7
    assert "valid number" in by_path["spec.limits.usd"].message


def test_errors_inside_lists_carry_the_index_and_the_item_line() -> None:
    found = problems(
        WORKFLOW
        + """\
    - name: second
      kind: python
"""
    )
    (problem,) = found
    assert (problem.path, problem.line) == ("spec.steps[1].kind", 13)


def test_model_rules_read_like_the_rule_not_like_pydantic() -> None:
    problem = only(WORKFLOW.replace("kind: tool\n      tool: echo", "kind: llm"))
    assert problem.path == "spec.steps[0]"
    assert problem.message == "an llm step needs agentRef and promptRef"
    assert problem.line == 9


def test_missing_required_field() -> None:
    problem = only(AGENT.replace("  role: support triage\n", ""))
    assert (problem.path, problem.message) == ("spec.role", "required field is missing")
    assert problem.line == 5, "a missing field is reported on the line of its parent"


@pytest.mark.parametrize(
    ("text", "path", "needle"),
    [
        ("- just\n- a list\n", "", "must be a mapping"),
        ("apiVersion: v1\nkind: Agent\n", "apiVersion", "expected 'agentflow.dev/v1alpha1', got 'v1'"),
        ("apiVersion: agentflow.dev/v1alpha1\nkind: Pod\n", "kind", "unknown kind 'Pod'"),
    ],
)
def test_what_is_not_an_agentflow_resource(text: str, path: str, needle: str) -> None:
    problem = only(text)
    assert problem.path == path and needle in problem.message


def test_problems_of_every_document_are_collected() -> None:
    bad_agent = AGENT.replace("name: triage", "name: Not_A_DNS_Name")
    bad_workflow = WORKFLOW.replace("tool: echo", "tool: echo\n      bogus: 1")
    found = problems(f"{bad_agent}---\n{bad_workflow}")
    assert [p.path for p in found] == ["metadata.name", "spec.steps[0].bogus"]
    assert found[1].line == AGENT.count("\n") + 1 + 12


def test_parse_resource_without_a_document_has_no_line() -> None:
    body = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Budget", "metadata": {"name": "b"}}
    with pytest.raises(ManifestError) as info:
        parse_resource(body)
    (problem,) = info.value.problems
    expected = {"source": "<input>", "line": None, "path": "spec", "message": "required field is missing"}
    assert problem.to_dict() == expected
    assert isinstance(parse_resource({**body, "spec": {"limits": {"usd": 1}}}), Budget)


def test_line_of_falls_back_to_the_nearest_parent() -> None:
    doc = Document("x", {}, {(): 1, ("spec",): 4, ("spec", "steps", 0): 7})
    assert doc.line_of(["spec", "steps", 0, "inputs", "deep"]) == 7
    assert doc.line_of(["spec", "other"]) == 4
    assert doc.line_of(["status"]) == 1


# --- files and folders --------------------------------------------------------------------------


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_documents([tmp_path / "nope.yaml"])
    (problem,) = info.value.problems
    assert problem.source.endswith("nope.yaml") and problem.message == "no such file or folder"


def test_folder_loading_is_recursive_sorted_and_skips_other_files(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(WORKFLOW, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yml").write_text(AGENT, encoding="utf-8")
    (tmp_path / "README.md").write_text("not yaml: [", encoding="utf-8")
    docs = load_documents([tmp_path])
    assert [Path(d.source).name for d in docs] == ["b.yaml", "a.yml"]
    kinds = [type(loaded.resource).__name__ for loaded in parse_documents(docs)]
    assert kinds == ["Workflow", "Agent"]


def test_folder_without_yaml_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"folder holds no \.yaml or \.yml file"):
        load_documents([tmp_path])


def test_problems_of_all_files_are_collected(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("a: [\n", encoding="utf-8")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ManifestError) as info:
        load_documents([tmp_path, tmp_path / "missing.yaml"])
    found = {Path(p.source).name: p.message for p in info.value.problems}
    assert found.keys() == {"bad.yaml", "binary.yaml", "missing.yaml"}
    assert found["bad.yaml"].startswith("malformed YAML")
    assert found["binary.yaml"].startswith("cannot read")
