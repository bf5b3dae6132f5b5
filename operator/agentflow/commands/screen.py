"""`agentflow screen`: the prompt-injection score of a text, the decision of a policy, the evidence.

::

    agentflow screen [--json] [--jsonl] [--threshold T] [--action allow|flag|block|quarantine] [FILE|-]
        one text (FILE, or stdin when FILE is - or missing), screened as the executor screens a tool output:
        agentflow.security.injection.scan, then decide() under the Agent defaults (spec.injection: threshold
        0.5, action block) or the given --threshold / --action
    --jsonl   one text per line (a JSON string, or an object with a string "text" and an optional "id");
              one JSON result per line, in order; a bad line gets {"line": N, "error": ...}, the others run

Exit codes: 0 every text allowed; 1 at least one was not (the decision is flag, block or quarantine);
2 bad flags or input (a bad --jsonl line too, after every line was printed), with a one-line message.
Pure screening: no model, no network; the rules are loaded with the module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from ..models.agent import InjectionPolicy
from ..security.injection import Action, Report, decide, scan
from .inputs import (
    EXIT_FLAGGED,
    EXIT_OK,
    Parser,
    UsageError,
    print_jsonl,
    read_text,
    records,
    run_filter,
    unit_interval,
)

ACTIONS: tuple[Action, ...] = ("allow", "flag", "block", "quarantine")
SOURCE = "text"


def build_parser() -> Parser:
    policy = InjectionPolicy()
    p = Parser(prog="agentflow screen", description="Score a text for prompt injection and print the decision "
               "of the injection policy with its evidence.",
               epilog="Exit codes: 0 allowed; 1 flagged, blocked or quarantined (any text, with --jsonl); "
               "2 bad flags or input.")
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="the text to screen (default -: stdin)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--jsonl", action="store_true", help="read JSON lines (a string or {\"text\": ...} per line), "
                   "print one JSON result per line (in order; --json is implied)")
    p.add_argument("--threshold", type=unit_interval(open_low=True), default=policy.threshold,
                   help=f"score from which the action applies, in (0, 1] (default {policy.threshold})")
    p.add_argument("--action", choices=ACTIONS, default=policy.action,
                   help=f"what the policy does at the threshold (default {policy.action})")
    return p


def result(report: Report, threshold: float, action: Action) -> dict[str, Any]:
    """The JSON result of one screening."""
    return {"score": report.score, "decision": decide(report, threshold, action), "threshold": threshold,
            "action": action, "findings": [f.to_dict() for f in sorted(report.findings, key=lambda f: -f.weight)],
            "notes": list(report.notes)}


def format_result(data: dict[str, Any]) -> str:
    lines = [f"score {data['score']:.2f}  decision {data['decision']}  (threshold {data['threshold']}, "
             f"action {data['action']})"]
    for f in data["findings"]:
        lines.append(f"  {f['weight']:.2f}  {f['rule']} ({f['category']}): {f['snippet']!r}")
    lines.extend(f"  note: {n}" for n in data["notes"])
    if not data["findings"]:
        lines.append("  no rule matched")
    return "\n".join(lines)


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    text = read_text(args.file)
    if not args.jsonl:
        data = result(scan(text, SOURCE), args.threshold, args.action)
        print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else format_result(data))
        return EXIT_OK if data["decision"] == "allow" else EXIT_FLAGGED
    code = EXIT_OK
    bad = 0
    for record in records(text):
        if record.text is None:
            print_jsonl({**record.head(), "error": record.error})
            bad += 1
            continue
        data = result(scan(record.text, f"line {record.line}"), args.threshold, args.action)
        print_jsonl({**record.head(), **data})
        if data["decision"] != "allow":
            code = EXIT_FLAGGED
    sys.stdout.flush()
    if bad:
        raise UsageError(f"{bad} line(s) could not be screened (see their \"error\")")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return run_filter("screen", run, argv)
