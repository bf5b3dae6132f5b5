"""Builtin tools: BM25 text search, echo, json-extract."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from agentflow.models import BuiltinTool
from agentflow.tools import Builtins, BuiltinToolError, TextSearchIndex, extract, parse_path

DOCS = [
    {"id": "refunds", "title": "Refund policy", "text": "Refunds are issued within 5 days to the original card."},
    {"id": "shipping", "title": "Shipping times", "text": "Parcels ship in 2 days. Tracking links arrive by email."},
    {"id": "password", "title": "Reset your password", "text": "Use the reset link on the login page."},
    {"id": "double", "title": "Double charges", "text": "A double charge is refunded automatically; refund refund."},
]


class TestTextSearch:
    def test_ranks_by_bm25_and_only_returns_matches(self) -> None:
        hits = TextSearchIndex(DOCS).search("refund for a double charge", top_k=5)
        assert [h["id"] for h in hits] == ["double", "refunds"]
        assert hits[0]["score"] > hits[1]["score"] > 0
        assert set(hits[0]) == {"id", "title", "score", "snippet"}

    def test_rare_terms_weigh_more_than_common_ones(self) -> None:
        docs = [{"id": str(i), "title": "", "text": "common words here"} for i in range(5)]
        docs.append({"id": "rare", "title": "", "text": "common words and zebra"})
        hits = TextSearchIndex(docs).search("zebra common", top_k=1)
        assert hits[0]["id"] == "rare"

    def test_top_k_and_case_insensitivity(self) -> None:
        hits = TextSearchIndex(DOCS).search("REFUND", top_k=1)
        assert [h["id"] for h in hits] == ["double"]

    def test_snippet_is_around_the_match(self) -> None:
        long = {"id": "x", "title": "t", "text": "filler " * 60 + "the answer is tracking numbers" + " tail" * 60}
        [hit] = TextSearchIndex([long]).search("tracking", top_k=1)
        assert "tracking" in hit["snippet"] and hit["snippet"].startswith("...")
        assert len(hit["snippet"]) < 200

    def test_config_and_input_errors(self) -> None:
        builtins = Builtins()
        tool = BuiltinTool(name="text-search", config={"documents": DOCS, "topK": 2})
        assert len(builtins.run(tool, {"query": "refund charge password"})) == 2
        assert len(builtins.run(tool, {"query": "refund charge password", "topK": 1})) == 1
        with pytest.raises(BuiltinToolError, match=r"inputs\.query") as info:
            builtins.run(tool, {})
        assert info.value.type == "InvalidToolInput"
        with pytest.raises(BuiltinToolError, match=r"documents\[0\]"):
            builtins.run(BuiltinTool(name="text-search", config={"documents": [{"id": 1}]}), {"query": "x"})
        with pytest.raises(BuiltinToolError, match=r"config\.documents"):
            builtins.run(BuiltinTool(name="text-search"), {"query": "x"})


def test_echo_returns_inputs() -> None:
    assert Builtins().run(BuiltinTool(name="echo"), {"a": [1, 2]}) == {"a": [1, 2]}


class TestJsonExtract:
    DOC: ClassVar[dict[str, Any]] = {"a": {"b": [{"c": 1}, {"c": 2}]}, "odd key": True}

    def test_paths(self) -> None:
        assert extract(self.DOC, "a.b[1].c") == 2
        assert extract(self.DOC, "$.a.b[0]") == {"c": 1}
        assert extract(self.DOC, "a.b.0.c") == 1
        assert extract(self.DOC, '["odd key"]') is True
        assert parse_path("a.b[0]") == ["a", "b", 0]

    def test_missing_part_is_named(self) -> None:
        with pytest.raises(BuiltinToolError, match=r"\$\.a\.b\[5\] does not exist") as info:
            extract(self.DOC, "a.b[5]")
        assert info.value.type == "JsonPathNotFound"

    def test_malformed_path(self) -> None:
        with pytest.raises(BuiltinToolError, match="malformed at character"):
            parse_path("a..b")

    def test_through_builtins_with_json_string_document(self) -> None:
        tool = BuiltinTool(name="json-extract", config={"path": "result.total"})
        assert Builtins().run(tool, {"document": '{"result": {"total": 42}}'}) == 42
        with pytest.raises(BuiltinToolError, match=r"inputs\.document"):
            Builtins().run(tool, {})


def test_word_forms_meet_through_light_stemming() -> None:
    docs = [{"id": "r", "title": "", "text": "Refunds are processed after the parcel is shipped."}]
    [hit] = TextSearchIndex(docs).search("refund shipping", top_k=3)
    assert hit["id"] == "r" and hit["snippet"].startswith("Refunds")
