"""`agentflow redact`: a text with its PII replaced by tokens, and how many values of each type.

::

    agentflow redact [--json] [--jsonl] [--entities E,...] [--min-score S] [FILE|-]
        one text (FILE, or stdin when FILE is - or missing), redacted as the executor redacts what leaves
        for a model (agentflow.security.pii: Presidio + spaCy, the Agent defaults of spec.pii or the given
        --entities / --min-score). Prints the redacted text on stdout and the counts on stderr; --json
        prints {"text": ..., "counts": {...}} instead
    --jsonl   one text per line (a JSON string, or an object with a string "text" and an optional "id");
              one JSON result per line, in order; a bad line gets {"line": N, "error": ...}, the others run

Tokens are keyed with a key made for this invocation: the same value gets the same token on every line of
one run of the command, and different tokens in the next; nothing is written, nothing can be restored.

Exit codes: 0 done (whether or not anything was found); 2 bad flags or input (a bad --jsonl line too, after
every line was printed), or the PII analyzer cannot be built (the message says which package is missing).
Loading the analyzer takes about 2 s (spaCy).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import get_args

from ..models.agent import PiiEntity, PiiPolicy
from ..security.errors import PiiConfigError
from ..security.pii import PresidioDetector, Redaction
from ..security.vault import RunKeys
from .inputs import (
    EXIT_OK,
    Parser,
    UsageError,
    print_jsonl,
    read_text,
    records,
    run_filter,
    unit_interval,
)

ENTITIES: tuple[str, ...] = get_args(PiiEntity)


def entity_list(text: str) -> list[str]:
    """``--entities``: comma-separated entity types, each one the PII policy knows."""
    names = [n.strip().upper() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("--entities: give at least one entity type, e.g. --entities PERSON,EMAIL_ADDRESS")
    unknown = [n for n in names if n not in ENTITIES]
    if unknown:
        raise UsageError(f"--entities: unknown type(s) {', '.join(unknown)}; known: {', '.join(ENTITIES)}")
    return list(dict.fromkeys(names))


def build_parser() -> Parser:
    policy = PiiPolicy()
    p = Parser(prog="agentflow redact", description="Replace the PII in a text by tokens, as the executor does "
               "before a model call, and count the values replaced per entity type.",
               epilog="Exit codes: 0 done; 2 bad flags or input, or the PII analyzer cannot be built.")
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="the text to redact (default -: stdin)")
    p.add_argument("--json", action="store_true", help='print {"text": ..., "counts": {...}}')
    p.add_argument("--jsonl", action="store_true", help="read JSON lines (a string or {\"text\": ...} per line), "
                   "print one JSON result per line (in order; --json is implied)")
    p.add_argument("--entities", default=",".join(policy.entities), metavar="E,...",
                   help=f"entity types to redact (default {','.join(policy.entities)}; known: {', '.join(ENTITIES)})")
    p.add_argument("--min-score", type=unit_interval(open_low=False), default=policy.min_score,
                   metavar="S", help=f"lowest detector confidence that counts, in [0, 1] (default {policy.min_score})")
    return p


def _counts(redaction: Redaction) -> dict[str, int]:
    return dict(sorted(redaction.counts.items()))


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    entities = entity_list(args.entities)
    text = read_text(args.file)
    detector = PresidioDetector()
    try:
        detector.engine()
    except PiiConfigError as exc:
        raise UsageError(str(exc)) from None
    key = RunKeys.ephemeral().run_key("agentflow-redact")
    if not args.jsonl:
        redaction = Redaction(detector, key, entities, args.min_score)
        out = redaction.redact_text(text)
        counts = _counts(redaction)
        if args.json:
            print(json.dumps({"text": out, "counts": counts}, indent=2, ensure_ascii=False))
        else:
            sys.stdout.write(out if out.endswith("\n") or not out else out + "\n")
            summary = ", ".join(f"{e} {n}" for e, n in counts.items()) or "nothing"
            print(f"redacted: {summary}", file=sys.stderr)
        return EXIT_OK
    bad = 0
    for record in records(text):
        if record.text is None:
            print_jsonl({**record.head(), "error": record.error})
            bad += 1
            continue
        redaction = Redaction(detector, key, entities, args.min_score)
        print_jsonl({**record.head(), "text": redaction.redact_text(record.text), "counts": _counts(redaction)})
    sys.stdout.flush()
    if bad:
        raise UsageError(f"{bad} line(s) could not be redacted (see their \"error\")")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return run_filter("redact", run, argv)
