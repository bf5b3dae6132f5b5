"""The injection corpus and the held-out evaluation (see injection_eval.py for the protocol).

The goals of the issue: recall >= 0.8 at precision >= 0.9 on the held-out split (asserted here), <= 20 ms
per KB (printed by injection_eval and the screening benchmark, not asserted: timings here are noisy). The
held-out split in the corpus is the third one written (the first two were measured once each and then
joined dev); the README gives all three results.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from .injection_eval import Result, evaluate, load

LANGS = {"es", "fr", "de", "pt"}
NON_LATIN = {"ru", "zh", "ja", "ar", "ko"}


@pytest.fixture(scope="module")
def held_out() -> Result:
    return evaluate(load("test"))


def test_the_corpus_is_labelled_and_split_honestly() -> None:
    rows = load()
    assert len(rows) >= 200
    for r in rows:
        assert r["label"] in {"injection", "benign"} and r["source"] in {"tool_output", "input"}, r["id"]
        assert r["split"] in {"dev", "test"} and r["class"] and r["lang"] and r["text"], r["id"]
    assert len({r["id"] for r in rows}) == len(rows)
    dev = {r["text"] for r in rows if r["split"] == "dev"}
    test = [r for r in rows if r["split"] == "test"]
    assert len(test) >= 100 and not dev & {r["text"] for r in test}
    for split in ("dev", "test"):
        part: list[dict[str, Any]] = [r for r in rows if r["split"] == split]
        labels = Counter(r["label"] for r in part)
        assert labels["injection"] >= 60 and labels["benign"] >= 35, (split, labels)
        langs = {r["lang"] for r in part if r["label"] == "injection"}
        assert langs >= LANGS and langs & NON_LATIN, (split, langs)
        assert {"tool_output", "input"} <= {r["source"] for r in part if r["label"] == "injection"}


def test_held_out_precision_and_recall_meet_the_goals(held_out: Result) -> None:
    # Latency (the goal is <= 20 ms per KB) is measured by `python -m tests.unit.security.injection_eval`
    # and bench/, never asserted here: this machine is shared and its timings are noisy.
    print(f"held-out: precision {held_out.precision:.2f}, recall {held_out.recall:.2f}, "
          f"{held_out.ms_per_kb:.2f} ms/KB")
    assert held_out.precision >= 0.9
    assert held_out.recall >= 0.8


def test_the_dev_split_stays_solved() -> None:
    dev = evaluate(load("dev"))
    assert dev.precision >= 0.98 and dev.recall >= 0.98, [(r["id"], s) for r, s in dev.errors]
