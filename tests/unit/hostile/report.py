"""The table of the issue: what the corpus ends in, by class, for a code base.

    python -m unit.hostile.report [--pythonpath operator] [--verbose]     (from tests/)

Run it on the code before a change (``--pythonpath /path/to/old/operator``) and after, to compare. Hang and
memory come from the watchdog of harness.py (HANG_SECONDS without a result, RSS over RSS_LIMIT_KB).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from .corpus import CASES
from .harness import run_corpus

COLUMNS = ("ok", "accepted", "traceback", "hang", "memory", "unclear", "wrong", "skipped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pythonpath", default=str(Path(__file__).resolve().parents[3] / "operator"))
    parser.add_argument("--verbose", action="store_true", help="every command that is not ok, with its output")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_corpus(CASES, Path(tmp) / "corpus", pythonpath=args.pythonpath)
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        table[r.case.kind][r.outcome] += 1
        table["all"][r.outcome] += 1
    print(f"corpus: {len(CASES)} cases, {len(results)} commands; code: {args.pythonpath}")
    print(f"{'class':<10} {'commands':>8} " + " ".join(f"{c:>9}" for c in COLUMNS))
    for kind in [*sorted(k for k in table if k != "all"), "all"]:
        row = table[kind]
        print(f"{kind:<10} {sum(row.values()):>8} " + " ".join(f"{row[c]:>9}" for c in COLUMNS))
    print(f"largest RSS of a worker: {max(r.maxrss_kb for r in results) / 1024:.0f} MiB; "
          f"slowest command: {max(r.seconds for r in results):.1f}s")
    if args.verbose:
        for r in results:
            if r.outcome != "ok":
                print(f"\n[{r.outcome}] {r.case.id}: agentflow {' '.join(a[:60] for a in r.argv)} -> {r.code}\n"
                      f"{r.text.strip()[-600:]}")


if __name__ == "__main__":
    main()
