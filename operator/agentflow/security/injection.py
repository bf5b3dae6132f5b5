"""Prompt-injection screening of untrusted text: a score, the evidence, the policy's action.

Untrusted text is what an attacker may have written: tool outputs (web pages, retrieved documents,
API answers) and the step inputs an Agent's ``spec.injection.untrustedInputs`` names. The detector is
a documented set of weighted heuristics over known attack patterns (no model: none with shipped
weights is on PyPI that we trust for this), in five categories:

    instruction_override   "ignore all previous instructions", "new instructions:", "do not follow ..."
    exfiltration           "reveal your system prompt", "print the api keys", "what were your instructions"
    role_play              "you are now DAN", "developer mode", "pretend to be an unrestricted AI"
    role_markers           fake chat delimiters: <|im_start|>system, [INST], <<SYS>>, "system:" lines
    tool_coercion          "call the tool ...", "send the data to http://...", "curl http://", transfers
    hidden_text            zero-width or bidi-override characters, Unicode tag characters (ASCII smuggling),
                           HTML comments and CSS-hidden text, base64 blobs that decode to any of the above

Text is NFKC-normalised and stripped of zero-width characters before matching, so "ig\\u200bnore" or
full-width letters do not evade a rule; tag characters and base64 blobs are decoded and scanned too.

Score: ``1 - prod(1 - weight)`` over the distinct rules that matched (0 when none did), so one strong
signal (an instruction override, 0.8) crosses the default threshold 0.5 alone, and weak signals
(a "call the tool" phrase, 0.35) only together. Evidence: each finding's rule, category and a snippet
of at most 80 characters around the match. Pure: no I/O.

Known limits: paraphrased or non-English injections and instructions split across documents can score
low; the detector never sees the model's reasoning. It is a screen, not a guarantee: tool grants,
approvals and egress policies remain the controls that bound what an injected model can do.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Literal

Action = Literal["allow", "flag", "block", "quarantine"]

SNIPPET = 80
_F = re.IGNORECASE | re.MULTILINE


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    name: str
    category: str
    weight: float
    pattern: re.Pattern[str]


def _rule(name: str, category: str, weight: float, pattern: str) -> Rule:
    return Rule(name, category, weight, re.compile(pattern, _F))


RULES: tuple[Rule, ...] = (
    _rule(
        "ignore-instructions", "instruction_override", 0.8,
        r"\b(ignore|disregard|forget|override|bypass|skip|abandon)\b[^.\n]{0,40}\b(previous|prior|above|earlier|"
        r"preceding|all|any|your|the|system|original|initial)\b[^.\n]{0,30}\b(instructions?|prompts?|rules|"
        r"guidelines|directions|directives|context|messages?)\b",
    ),
    _rule(
        "new-instructions", "instruction_override", 0.5,
        r"\b(new|updated|real|actual)\s+(instructions?|rules|task|system prompt)\s*:",
    ),
    _rule("do-not-follow", "instruction_override", 0.5, r"\bdo\s+not\s+(follow|obey|listen\s+to)\b"),
    _rule(
        "from-now-on", "instruction_override", 0.4,
        r"\b(from now on|henceforth|instead)\b,?\s+(you\s+(will|must|should|are\s+to)|respond|answer|reply|"
        r"always|only)\b",
    ),
    _rule(
        "reveal-prompt", "exfiltration", 0.7,
        r"\b(reveal|print|show|output|repeat|leak|disclose|tell\s+me|display|dump|return)\b[^.\n]{0,40}\b(system\s+"
        r"prompt|system\s+message|your\s+instructions|initial\s+prompt|hidden\s+prompt|your\s+prompt|api[_ -]?keys?|"
        r"secrets?|credentials|passwords?|access\s+tokens?)\b",
    ),
    _rule(
        "ask-instructions", "exfiltration", 0.5,
        r"\bwhat\s+(are|were)\s+your\s+(original\s+|initial\s+|system\s+|hidden\s+)?(instructions|rules|prompt)\b",
    ),
    _rule("you-are-now", "role_play", 0.5, r"\byou\s+are\s+(now|no\s+longer)\b"),
    _rule(
        "jailbreak", "role_play", 0.6,
        r"\b((?-i:DAN)|do\s+anything\s+now|developer\s+mode|jailbreak(ed|ing)?|jailbroken|god\s+mode)\b",
    ),
    _rule(
        "pretend", "role_play", 0.5,
        r"\b(pretend|act|behave|roleplay|role-play)\s+(to\s+be|as|like)\s+(an?\s+)?(unrestricted|unfiltered|uncensored|"
        r"evil|different|new|system|admin(istrator)?|developer|root)\b",
    ),
    _rule(
        "chat-delimiters", "role_markers", 0.6,
        r"<\|im_start\|>|<\|im_end\|>|<\|system\|>|<\|endoftext\|>|\[/?INST\]|<</?SYS>>|"
        r"^\s*#{2,}\s*(system|assistant|instruction)s?\s*:?\s*$|^\s*(system|assistant)\s*:",
    ),
    _rule(
        "call-tool", "tool_coercion", 0.35,
        r"\b(call|invoke|use|run|execute|trigger)\b[^.\n]{0,20}\b(the\s+)?(tool|function|command|shell|api)\b",
    ),
    _rule(
        "send-data", "tool_coercion", 0.5,
        r"\b(send|forward|e-?mail|post|upload|exfiltrate|leak)\b[^.\n]{0,60}\b(to|at)\b[^.\n]{0,20}"
        r"(https?://|[\w.+-]+@[\w-]+\.[\w.]+|attacker|this\s+address)",
    ),
    _rule("shell", "tool_coercion", 0.5, r"\b(curl|wget)\s+(-\S+\s+)*https?://|\brm\s+-rf\b|\bsudo\s+\w"),
    _rule(
        "transfer-funds", "tool_coercion", 0.4,
        r"\b(transfer|wire|send|refund)\b[^.\n]{0,30}\d[\d,.]*[^.\n]{0,30}\b(account|wallet|iban)\b",
    ),
    _rule(
        "css-hidden", "hidden_text", 0.3,
        r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(px)?\b|opacity\s*:\s*0(\.0+)?\b",
    ),
)

_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_TAGS = re.compile("[\U000e0000-\U000e007f]+")
_COMMENT = re.compile(r"<!--(.*?)-->", re.DOTALL)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
_HIDDEN_WEIGHTS = {"zero-width": 0.4, "bidi-override": 0.5, "tag-characters": 0.7, "html-comment": 0.2,
                   "base64-instructions": 0.6}


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One matched rule: where (``source``), which rule and category, and a short snippet of the text."""

    rule: str
    category: str
    weight: float
    snippet: str
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "category": self.category, "weight": self.weight, "snippet": self.snippet,
                "source": self.source}


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """The screening of one piece of untrusted context."""

    source: str
    score: float
    findings: tuple[Finding, ...] = ()

    def evidence(self, limit: int = 5) -> str:
        """The strongest findings, for an error message: ``rule (category): "snippet"; ...``."""
        best = sorted(self.findings, key=lambda f: -f.weight)[:limit]
        return "; ".join(f"{f.rule} ({f.category}) in {f.source or self.source}: {f.snippet!r}" for f in best)


def _snippet(text: str, start: int, end: int) -> str:
    pad = max(0, (SNIPPET - (end - start)) // 2)
    lo, hi = max(0, start - pad), min(len(text), end + pad)
    out = " ".join(text[lo:hi].split())
    return out[:SNIPPET]


def _normalise(text: str) -> str:
    return _ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text))


def _match_rules(text: str, source: str, found: dict[str, Finding]) -> None:
    for rule in RULES:
        if rule.name in found:
            continue
        m = rule.pattern.search(text)
        if m is not None:
            snippet = _snippet(text, m.start(), m.end())
            found[rule.name] = Finding(rule.name, rule.category, rule.weight, snippet, source)


def _hidden(name: str, snippet: str, source: str, found: dict[str, Finding]) -> None:
    if name not in found:
        found[name] = Finding(name, "hidden_text", _HIDDEN_WEIGHTS[name], snippet[:SNIPPET], source)


def _scan_text(raw: str, source: str, found: dict[str, Finding], depth: int = 0) -> None:
    if m := _ZERO_WIDTH.search(raw):
        _hidden("zero-width", _snippet(raw, m.start(), m.end()).encode("unicode_escape").decode(), source, found)
    if m := _BIDI.search(raw):
        _hidden("bidi-override", _snippet(raw, m.start(), m.end()).encode("unicode_escape").decode(), source, found)
    for m in _TAGS.finditer(raw):
        smuggled = "".join(chr(ord(c) - 0xE0000) for c in m.group(0))
        _hidden("tag-characters", smuggled, source, found)
        _scan_text(smuggled, source, found, depth + 1)
    text = _normalise(raw)
    _match_rules(text, source, found)
    for m in _COMMENT.finditer(text):
        before = len(found)
        _match_rules(m.group(1), source, found)
        if len(found) > before:
            _hidden("html-comment", _snippet(text, m.start(), m.end()), source, found)
    if depth < 2:
        for m in _BASE64.finditer(text):
            decoded = _decode_base64(m.group(0))
            if decoded is None:
                continue
            inner: dict[str, Finding] = {}
            _scan_text(decoded, source, inner, depth + 1)
            if inner:
                _hidden("base64-instructions", f"{m.group(0)[:40]}... decodes to {decoded[:40]!r}", source, found)
                for name, finding in inner.items():
                    found.setdefault(name, finding)


def _decode_base64(blob: str) -> str | None:
    try:
        data = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        text = data.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    printable = sum(c.isprintable() or c.isspace() for c in text)
    return text if text and printable / len(text) > 0.95 else None


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in _strings(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{path}[{i}]")]
    return []


def scan(value: Any, source: str) -> Report:
    """Screen ``value`` (a string, or every string in a JSON value); ``source`` names it in the evidence."""
    found: dict[str, Finding] = {}
    for path, text in _strings(value, source):
        _scan_text(text, path, found)
    remaining = 1.0
    for finding in found.values():
        remaining *= 1.0 - finding.weight
    return Report(source, round(1.0 - remaining, 4), tuple(found.values()))


def decide(report: Report, threshold: float, action: Action) -> Action:
    """The policy's ``action`` when the score reaches ``threshold``, else allow."""
    return action if report.findings and report.score >= threshold else "allow"
