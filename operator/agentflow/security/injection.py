"""Prompt-injection screening of untrusted text: a score, the evidence, the policy's action. Pure.

Untrusted text is what an attacker may have written: tool outputs (web pages, retrieved documents,
API answers) and the step inputs an Agent's ``spec.injection.untrustedInputs`` names. The detector is a
documented set of weighted rules (injection_rules.py: instruction overrides, approval bypass, prompt and
secret exfiltration, role play, fake chat turns, tool coercion, text addressed to the AI; in English and
nine other languages) matched on several *views* of the text:

    folded        invisible characters dropped, NFKC (full-width letters), Cyrillic/Greek look-alikes in
                  mixed-script words mapped to Latin (normalise.py)
    de-leeted     the same with digits read as letters inside words ("1gn0r3" -> "ignore")
    hidden parts  Unicode tag characters decoded, HTML comments, markdown comments, CSS-hidden elements
                  (display:none, font-size 0/1px, white text, opacity 0), image alt text, base64 blobs and
                  percent-encoded runs decoded, HTML entities unescaped, rot13 decoded where the text names it

Hiding is evidence of its own (category hidden_text): zero-width characters inside Latin words, bidi
controls, tag characters, mixed-script words, and a hidden part that holds any rule's match.

Score: ``1 - prod(1 - weight)`` over the distinct rules that matched in one segment of the text (a string
of a JSON value, cut at paragraph breaks into pieces of about 1,500 characters), the highest segment's
score for the whole; 0 when no rule matched. A rule and its translation count once. Strong rules
(weight >= 0.5: an override, a fake chat turn, a request for the system prompt) reach the default
threshold 0.5 alone; weak ones (a single "User:" line, "send ... to someone@example.com", "transfer $300
to the account", a line addressed to the AI, "do not tell the user") only together: ordinary business text
gives one of them, an attack usually several. Text that *discusses* prompt injection (it names attacks,
jailbreaks, defences ... and speaks to no one: no "you" outside quotation marks) has its rule weights
multiplied by DISCUSSION_FACTOR, so a security article quoting "ignore previous instructions" passes;
hidden-text evidence is never discounted.

Evidence: each finding's rule, category, (effective) weight and a snippet of at most 80 characters.

Known limits: an attack written as a discussion ("researchers found that the phrase ... works"),
instructions split across documents, languages and paraphrases no rule covers, and anything the model
infers from benign-looking text. It is a screen, not a guarantee: tool grants, approvals and egress
policies remain the controls that bound what an injected model can do.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import html
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from .injection_rules import MULTILINGUAL, RULES, Rule
from .normalise import BIDI, TAGS, fold, invisible_in_words, mixed_script_words

__all__ = ["DISCUSSION_FACTOR", "Action", "Finding", "Report", "decide", "scan"]

Action = Literal["allow", "flag", "block", "quarantine"]

SNIPPET = 80
SEGMENT = 1500
"""Characters per segment: rules combine within a segment; the report's score is the highest segment's."""
DISCUSSION_FACTOR = 0.3
"""Rule weights are multiplied by this in text that discusses prompt injection and speaks to no one."""

ALL_RULES: tuple[Rule, ...] = RULES + MULTILINGUAL
_FAMILY = {rule.name: rule.family for rule in ALL_RULES}

HIDDEN_WEIGHTS = {
    "tag-characters": 0.7, "bidi-override": 0.4, "zero-width": 0.4, "homoglyphs": 0.4,
    "html-comment": 0.3, "markdown-comment": 0.4, "css-hidden": 0.4, "image-alt": 0.3,
    "base64-instructions": 0.6, "percent-encoded": 0.5, "html-entities": 0.3, "rot13": 0.5,
}
"""Evidence of hiding. The containers (comments, hidden elements, encodings) count only when what they hide
matches a rule; invisible characters in words, bidi controls, tag characters and homoglyphs always count."""

_COMMENT = re.compile(r"<!--(.*?)-->", re.DOTALL)
_MD_COMMENT = re.compile(r"^[ \t]*\[[^\]\n]*\]:[ \t]*(?:#|<>)[ \t]*[(\"'](.*?)[)\"'][ \t]*$", re.MULTILINE)
_CSS_HIDDEN = re.compile(
    r"<(\w+)[^>]*?style\s*=\s*[\"'][^\"']*?(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*[01]"
    r"(?:\.\d+)?(?:px|pt|em|rem)?\s*(?:;|[\"'])|opacity\s*:\s*0(?:\.0+)?\s*(?:;|[\"'])|color\s*:\s*(?:#fff(?:fff)?|white)"
    r"\b)[^>]*>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)
_IMAGE_ALT = re.compile(r"!\[([^\]\n]{8,})\]\(")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2}){6,}")
_ROT13_NAMED = re.compile(r"\brot-?13\b", re.IGNORECASE)
_ENTITY = re.compile(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", re.IGNORECASE)
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_FENCE = re.compile(r"```.*?(```|\Z)", re.DOTALL)
_NEGATED = re.compile(r"\b(never|not|no|n't|nor)\s+(\w+\s+){0,2}$", re.IGNORECASE)
_REPORTED = re.compile(
    r"\b(make|makes|made|making|get|gets|got|trick|tricks|tricked|force|forces|forced|cause|causes|let|lets)\s+"
    r"(the|a|an|any)\s+(\w+\s+)?(bot|model|ai|assistant|llm|agent|chatbot)s?\s+(to\s+)?$", re.IGNORECASE)
"""Someone else's request reported ("players make the bot reveal a password"): not a request to the reader."""
_MENTION = re.compile(r"\b(tokens?|templates?|tokenizers?|delimiters?|markers?)\b", re.IGNORECASE)
"""A chat delimiter named as a thing ("wrapped in <|im_start|> tokens") is documentation, not a turn."""
_TURN = re.compile(r"^[ \t]*\**\[?(system|assistant|ai|user|human)\]?\**[ \t]*:", re.IGNORECASE | re.MULTILINE)
_AI_TURNS = frozenset({"system", "assistant", "ai"})
_META = re.compile(
    r"(?<![\w@/-])(?<!\w\.)(prompt[- ]injections?|injections?|jailbreaks?|attacks?|attackers?|malicious|"
    r"red[- ]team(ing|ers)?|researchers?|"
    r"vulnerab\w*|defen[cs]es?|owasp|phishing|exploits?|adversarial|payloads?|example\s+of|test\s+strings?)(?![\w@/-]|\.\w)",
    re.IGNORECASE)
_SECOND_PERSON = re.compile(r"\b(you|your|yours|yourself|you're|you'll|you've|you'd)\b", re.IGNORECASE)
_QUOTED = re.compile(r"(?<!\w)'[^'\n]{2,300}'(?!\w)|\"[^\"\n]{2,300}\"|“[^”\n]{2,300}”|‘[^’\n]{2,300}’|`[^`\n]{2,300}`")


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One matched rule: where (``source``), which rule and category, its weight and a short snippet."""

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
    """The screening of one piece of untrusted context; ``notes`` say how weights were adjusted."""

    source: str
    score: float
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()

    def evidence(self, limit: int = 5) -> str:
        """The strongest findings, for an error message: ``rule (category) in source: "snippet"; ...``."""
        best = sorted(self.findings, key=lambda f: -f.weight)[:limit]
        return "; ".join(f"{f.rule} ({f.category}) in {f.source or self.source}: {f.snippet!r}" for f in best)


def _snippet(text: str, start: int, end: int) -> str:
    pad = max(0, (SNIPPET - (end - start)) // 2)
    lo, hi = max(0, start - pad), min(len(text), end + pad)
    return " ".join(text[lo:hi].split())[:SNIPPET]


def _visible(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")


class _Scan:
    """The findings of one string (by rule name, the first match wins)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: dict[str, Finding] = {}

    def add(self, rule: str, category: str, weight: float, snippet: str) -> None:
        """Record ``rule`` unless it, or the rule it translates, was found already."""
        family = _FAMILY.get(rule, rule)
        if rule not in self.found and (family == rule or family not in self.found):
            self.found[rule] = Finding(rule, category, weight, snippet[:SNIPPET], self.source)

    def rules(self, text: str) -> None:
        """Match every rule on ``text`` (the first match that no negation precedes)."""
        fences = [m.span() for m in _FENCE.finditer(text)] if "```" in text else []
        for rule in ALL_RULES:
            if rule.name in self.found:
                continue
            for m in rule.pattern.finditer(text):
                if rule.negatable and (_NEGATED.search(text, max(0, m.start() - 30), m.start())
                                       or _REPORTED.search(text, max(0, m.start() - 40), m.start())):
                    continue
                weight = rule.weight
                if rule.in_code is not None and any(a <= m.start() < b for a, b in fences):
                    weight = rule.in_code
                if rule.mentioned is not None and _MENTION.search(text, max(0, m.start() - 60), m.end() + 60):
                    weight = min(weight, rule.mentioned)
                self.add(rule.name, rule.category, weight, _snippet(text, m.start(), m.end()))
                break

    def hidden(self, name: str, snippet: str) -> None:
        self.add(name, "hidden_text", HIDDEN_WEIGHTS[name], snippet)


def _hidden_parts(text: str, depth: int) -> Iterator[tuple[str, str]]:
    """(kind, hidden text) of the containers in ``text`` that a reader does not see."""
    for m in _COMMENT.finditer(text):
        yield "html-comment", m.group(1)
    for m in _MD_COMMENT.finditer(text):
        yield "markdown-comment", m.group(1)
    for m in _CSS_HIDDEN.finditer(text):
        yield "css-hidden", m.group(2)
    for m in _IMAGE_ALT.finditer(text):
        yield "image-alt", m.group(1)
    if depth < 2:
        for m in _BASE64.finditer(text):
            decoded = _decode_base64(m.group(0))
            if decoded is not None:
                yield "base64-instructions", decoded
        for m in _PERCENT.finditer(text):
            decoded = urllib.parse.unquote(m.group(0), errors="replace")
            if decoded.isprintable():
                yield "percent-encoded", decoded
        if _ENTITY.search(text):
            yield "html-entities", html.unescape(text)
        if _ROT13_NAMED.search(text):
            yield "rot13", codecs.decode(text, "rot13")


def _scan_string(raw: str, scan: _Scan, depth: int = 0) -> None:
    if m := invisible_in_words(raw):
        scan.hidden("zero-width", _visible(_snippet(raw, m.start(), m.end())))
    if m := BIDI.search(raw):
        scan.hidden("bidi-override", _visible(_snippet(raw, m.start(), m.end())))
    for m in TAGS.finditer(raw):
        if m.start() > 0 and raw[m.start() - 1] == "\U0001f3f4":  # subdivision flags (England, Scotland, Wales)
            continue
        smuggled = "".join(chr(ord(c) - 0xE0000) for c in m.group(0))
        scan.hidden("tag-characters", smuggled)
        _scan_string(smuggled, scan, depth + 1)
    if mixed := mixed_script_words(raw):
        scan.hidden("homoglyphs", " ".join(mixed))
    folded = fold(raw).text
    scan.rules(folded)
    leet = fold(raw, leet=True).text
    if leet != folded:
        scan.rules(leet)
    roles = {m.group(1).lower() for m in _TURN.finditer(folded)}
    if len(roles) >= 2 and roles & _AI_TURNS:
        m = _TURN.search(folded)
        assert m is not None
        scan.add("fake-dialogue", "role_markers", 0.6, _snippet(folded, m.start(), m.end() + 40))
    for kind, hidden in _hidden_parts(folded, depth):
        inner = _Scan(scan.source)
        _scan_string(hidden, inner, depth + 1)
        whole = kind in ("html-entities", "rot13")
        new = {n: f for n, f in inner.found.items() if n not in scan.found} if whole else inner.found
        if new:
            scan.hidden(kind, hidden.strip())
            for name, finding in new.items():
                scan.found.setdefault(name, finding)


def _decode_base64(blob: str) -> str | None:
    try:
        text = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True).decode("utf-8")
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


def discusses_injection(text: str) -> bool:
    """Whether ``text`` talks *about* attacks (names them) without speaking to anyone outside quotations."""
    return _META.search(text) is not None and _SECOND_PERSON.search(_QUOTED.sub(" ", text)) is None


def segments(text: str, size: int = SEGMENT) -> list[str]:
    """``text`` cut at paragraph breaks into pieces of about ``size`` characters (longer paragraphs at line
    or sentence ends, else hard), so weak signals far apart in a long document do not add up."""
    if len(text) <= size:
        return [text]
    pieces: list[str] = []
    for para in _PARAGRAPH.split(text):
        while len(para) > 2 * size:
            cut = max(para.rfind("\n", size // 2, size), para.rfind(". ", size // 2, size))
            cut = cut + 1 if cut > 0 else size
            pieces.append(para[:cut])
            para = para[cut:]
        pieces.append(para)
    out: list[str] = []
    for piece in pieces:
        if out and len(out[-1]) + len(piece) <= size:
            out[-1] += "\n\n" + piece
        else:
            out.append(piece)
    return out


def _combine(findings: Iterator[Finding]) -> float:
    """``1 - prod(1 - weight)`` over rule families (a rule and its translation count once)."""
    strongest: dict[str, float] = {}
    for finding in findings:
        family = _FAMILY.get(finding.rule, finding.rule)
        strongest[family] = max(strongest.get(family, 0.0), finding.weight)
    remaining = 1.0
    for weight in strongest.values():
        remaining *= 1.0 - weight
    return 1.0 - remaining


def scan(value: Any, source: str) -> Report:
    """Screen ``value`` (a string, or every string in a JSON value); ``source`` names it in the evidence.

    Each string is cut into segments (:func:`segments`); the score is the highest segment score, and the
    findings are those of every segment (each rule once, at its highest weight).
    """
    found: dict[str, Finding] = {}
    notes: list[str] = []
    score = 0.0
    for path, text in _strings(value, source):
        discussion = False
        for piece in segments(text):
            one = _Scan(path)
            _scan_string(piece, one)
            if one.found and discusses_injection(fold(piece).text):
                discussion = True
                for name, f in one.found.items():
                    if f.category != "hidden_text":
                        one.found[name] = dataclasses.replace(f, weight=round(f.weight * DISCUSSION_FACTOR, 4))
            score = max(score, _combine(iter(one.found.values())))
            for name, finding in one.found.items():
                if name not in found or finding.weight > found[name].weight:
                    found[name] = finding
        if discussion:
            notes.append(f"{path} discusses prompt injection: rule weights x{DISCUSSION_FACTOR}")
    return Report(source, round(score, 4), tuple(found.values()), tuple(notes))


def decide(report: Report, threshold: float, action: Action) -> Action:
    """The policy's ``action`` when the score reaches ``threshold``, else allow."""
    return action if report.findings and report.score >= threshold else "allow"
