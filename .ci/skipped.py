"""Print how many tests were skipped, and why, from pytest's JUnit XML reports (make test writes them).

    python .ci/skipped.py .reports/*.xml

One line with the count, then one line per reason with how many tests it skipped (most first). Reads only
the files that exist; prints nothing but a note when there are none (the tests did not get that far).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def skipped(paths: list[Path]) -> tuple[int, Counter[str]]:
    reasons: Counter[str] = Counter()
    for path in paths:
        for case in ET.parse(path).getroot().iter("testcase"):
            for skip in case.findall("skipped"):
                if skip.get("type") == "pytest.xfail":
                    continue  # an expected failure ran; it is not a skip
                reason = (skip.get("message") or skip.text or "no reason given").strip().splitlines()[0]
                reasons[reason.removeprefix("Skipped: ")[:200]] += 1
    return sum(reasons.values()), reasons


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv if Path(p).is_file()]
    if not paths:
        print("ci: no test reports to count skipped tests in")
        return 0
    total, reasons = skipped(paths)
    print(f"ci: {total} test(s) skipped ({', '.join(p.name for p in paths)})")
    for reason, count in reasons.most_common():
        print(f"ci:   {count:4d}  {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
