"""Input/expected YAML pairs: every file in cases/ is one builder call and its exact result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from .cases import build


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (workflow manifests) as | blocks, so rewritten cases stay readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

CASES = Path(__file__).parent / "cases"
FILES = sorted(CASES.glob("*.yaml"))


def test_there_are_cases_of_every_kind() -> None:
    kinds = {yaml.safe_load(f.read_text())["kind"] for f in FILES}
    assert kinds == {"pod", "profile", "networkPolicy", "status", "events", "statusPatch", "driftPatch",
                     "childWorkflow"}


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_case(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    got = build(case["kind"], case["input"])
    if os.environ.get("AGENTFLOW_UPDATE_CASES") == "1":
        case["expected"] = got
        path.write_text(yaml.dump(case, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True))
    assert got == case["expected"]
