"""Every case of the corpus through the real CLI: refused with a message naming what is wrong, or a clean run.

Never a traceback, a hang (harness.HANG_SECONDS without a result: a hang detector, not a speed limit) or a
worker past 1 GiB of memory (it stays near 150 MiB; a billion-laughs document took 6.7 GiB before the bounds).
`python -m unit.hostile.report` (from tests/) prints the table.
"""

from __future__ import annotations

from pathlib import Path

from .corpus import CASES, Refused
from .harness import run_corpus

OPERATOR = Path(__file__).resolve().parents[3] / "operator"


def test_the_corpus_covers_every_class_of_the_issue() -> None:
    kinds = {case.kind for case in CASES}
    assert kinds >= {"numbers", "yaml", "empty", "structure", "sizes", "files", "urls", "progress", "inputs"}
    assert len({case.id for case in CASES}) == len(CASES)
    refusals = [c for case in CASES for c in case.commands if isinstance(c.expect, Refused)]
    assert all(c.expect.names for c in refusals)  # a refusal must say something checkable


def test_every_hostile_manifest_is_refused_clearly_or_runs_cleanly(tmp_path: Path) -> None:
    results = run_corpus(CASES, tmp_path / "corpus", pythonpath=str(OPERATOR), rss_limit_kb=1024 * 1024)
    bad = [f"[{r.outcome}] {r.case.id}: agentflow {' '.join(a[:40] for a in r.argv)} -> {r.code}\n"
           f"{r.text.strip()[-800:]}" for r in results if r.outcome != "ok"]
    assert not bad, "\n\n".join(bad)
    assert len(results) == sum(len(c.commands) for c in CASES)
