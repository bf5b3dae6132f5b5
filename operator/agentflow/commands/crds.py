"""`python -m agentflow.commands.crds`: write the CRDs generated from the models to files, or check them.

``make crds`` writes crds/*.yaml (then copied into the agentflow-crds chart); ``make crds-check`` and a unit
test fail when the files drift from the models (agentflow.models.crd generates them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..models.base import GROUP
from ..models.crd import DRIFT_HINT, KINDS, CRDError, generate

__all__ = ["drift", "main", "write"]


def drift(out: Path) -> list[str]:
    """What differs between the CRD files in `out` and the models (empty when in sync)."""
    expected = generate()
    problems = []
    for name, text in expected.items():
        path = out / name
        if not path.is_file():
            problems.append(f"{path} is missing; {DRIFT_HINT}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} differs from the models; {DRIFT_HINT}")
    for path in sorted(out.glob(f"*.{GROUP}.yaml")):
        if path.name not in expected:
            problems.append(f"{path} belongs to no model; delete it or add its kind to crd.KINDS")
    return problems


def write(out: Path) -> list[Path]:
    """Write every CRD file to `out`; returns the files whose content changed."""
    out.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in generate().items():
        path = out / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            tmp = path.with_suffix(".yaml.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentflow.commands.crds",
        description="Generate the AgentFlow CRDs (crds/*.yaml) from the pydantic models.",
    )
    parser.add_argument("--out", type=Path, default=Path("crds"), help="CRD folder (default: crds)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the files differ from the models"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = drift(args.out)
            for problem in problems:
                print(problem, file=sys.stderr)
            if not problems:
                print(f"{args.out}: {len(KINDS)} CRDs match the models")
            return 1 if problems else 0
        changed = write(args.out)
        for path in changed:
            print(f"wrote {path}")
        if not changed:
            print(f"{args.out}: {len(KINDS)} CRDs already match the models")
    except CRDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
