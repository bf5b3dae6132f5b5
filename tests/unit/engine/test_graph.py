"""Graph helpers used by validation (agentflow.engine.graph)."""

from __future__ import annotations

import graphlib
import itertools

from hypothesis import given
from hypothesis import strategies as st

from agentflow.engine.graph import can_reach, find_cycles, format_cycle, reachable, reverse


def test_acyclic_graph_has_no_cycle() -> None:
    assert find_cycles({"a": [], "b": ["a"], "c": ["a", "b"]}) == []


def test_cycle_is_reported_once_from_its_first_node() -> None:
    graph = {"a": ["c"], "b": ["a"], "c": ["b"], "d": ["c"]}
    assert find_cycles(graph) == [["a", "c", "b", "a"]]


def test_cycle_entered_from_a_later_root_still_starts_at_its_first_node() -> None:
    graph = {"x": ["y"], "y": ["z"], "z": ["y"], "w": []}
    assert find_cycles(graph) == [["y", "z", "y"]]


def test_self_loop_and_separate_cycles() -> None:
    graph = {"a": ["a"], "b": ["c"], "c": ["b"], "d": []}
    assert find_cycles(graph) == [["a", "a"], ["b", "c", "b"]]


def test_two_cycles_through_one_node() -> None:
    graph = {"a": ["b", "c"], "b": ["a"], "c": ["a"]}
    assert find_cycles(graph) == [["a", "b", "a"], ["a", "c", "a"]]


def test_unknown_successors_are_ignored() -> None:
    assert find_cycles({"a": ["nope"], "b": ["a", "ghost"]}) == []
    assert reachable({"a": ["ghost", "b"], "b": []}, ["a", "ghost"]) == {"a", "b"}


def test_long_chain_does_not_recurse() -> None:
    n = 5000
    graph = {f"s{i}": [f"s{i + 1}"] if i + 1 < n else ["s0"] for i in range(n)}
    (cycle,) = find_cycles(graph)
    assert len(cycle) == n + 1 and cycle[0] == cycle[-1] == "s0"


def test_reachable_includes_the_starts() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": [], "d": ["a"]}
    assert reachable(graph, ["a"]) == {"a", "b", "c"}
    assert reachable(graph, []) == set()


def test_reverse_and_can_reach() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": [], "d": ["d"]}
    assert reverse(graph) == {"a": [], "b": ["a"], "c": ["b"], "d": ["d"]}
    assert can_reach(graph, ["c"]) == {"a", "b", "c"}
    assert "d" not in can_reach(graph, ["c"])


def test_format_cycle() -> None:
    assert format_cycle(["a", "b", "a"]) == "a -> b -> a"


@given(
    st.dictionaries(st.sampled_from("abcdefg"), st.lists(st.sampled_from("abcdefgh"), max_size=3), max_size=7)
)
def test_cycles_exist_exactly_when_graphlib_finds_one(graph: dict[str, list[str]]) -> None:
    known = {node: [n for n in successors if n in graph] for node, successors in graph.items()}
    try:
        graphlib.TopologicalSorter(known).prepare()
        has_cycle = False
    except graphlib.CycleError:
        has_cycle = True
    cycles = find_cycles(graph)
    assert bool(cycles) is has_cycle
    for cycle in cycles:
        assert cycle[0] == cycle[-1]
        assert all(b in graph[a] for a, b in itertools.pairwise(cycle))
