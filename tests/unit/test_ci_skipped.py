""".ci/skipped.py: CI says how many tests were skipped and why, from pytest's own JUnit XML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = '''
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="no helm binary")
def test_a():
    pass

@pytest.mark.skip(reason="no helm binary")
def test_b():
    pass

def test_c():
    pytest.skip("no PostgreSQL")

@pytest.mark.xfail(strict=True, reason="known")
def test_d():
    assert False
'''


def test_counts_skips_by_reason_and_leaves_xfails_out(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    report = tmp_path / "unit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
                    f"--junitxml={report}"], capture_output=True, check=True, cwd=tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "skipped.py"), str(report), str(tmp_path / "none.xml")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "ci: 3 test(s) skipped (unit.xml)"
    assert [line.split(None, 2)[1:] for line in out[1:]] == [["2", "no helm binary"], ["1", "no PostgreSQL"]]


def test_no_reports_no_count() -> None:
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "skipped.py")], capture_output=True, text=True,
                         check=True).stdout
    assert out == "ci: no test reports to count skipped tests in\n"
