"""Folding text that hides what it says, keeping the way back to the original offsets. Pure.

Attackers and careless writers spell the same thing many ways: ``ig\\u200bnore`` (a zero-width space),
``Ｉｇｎｏｒｅ`` (full-width letters), ``Іgnоrе`` (Cyrillic letters that look Latin), ``1gn0r3`` (digits
for letters), ``ann(at)example(dot)com``. A detector that matches the folded text sees through them;
:class:`Folded` remembers where each folded character came from, so a span found in the folded text
names the right span of the original (what PII redaction must replace).

    fold(text, leet=False)   NFKC per character (full-width and compatibility forms), drops invisible
                             characters (zero-width, soft hyphen, bidi controls, tag characters), maps
                             Cyrillic and Greek look-alikes to Latin inside words that mix scripts, and with
                             ``leet`` digits to letters inside words that mix letters and digits
    Folded.span(start, end)  the original span of a folded span
    apply_edits(folded, ...) replace or delete parts of a folded text, keeping the way back
    mixed_script_words(text) the words that mix Latin with look-alike letters (evidence of homoglyphs)
    invisible_in_words(text) zero-width characters between two letters of a Latin-script word

Invisible characters that scripts need (the zero-width non-joiner in Persian, the joiner in emoji
sequences) are dropped from the folded text like any other, but only those inside Latin words count as
evidence of hiding.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable, Iterable

INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                       "\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f]")
"""Characters that render as nothing: zero-width, soft hyphen, bidi controls, variation selectors, tags."""

BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
TAGS = re.compile("[\U000e0000-\U000e007f]+")
_INVISIBLE_IN_WORD = re.compile("(?<=[A-Za-z])[\u00ad\u200b-\u200d\u2060-\u2064\ufeff]+(?=[A-Za-z])")

CONFUSABLES = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ѕ": "s", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ɡ": "g",
    "А": "A", "В": "B", "Е": "E", "Ѕ": "S", "І": "I", "Ј": "J", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X",
    # Greek
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X",
}
LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s", "!": "i"}

_WORD = re.compile(r"[^\W_]+(?:[@$!][^\W_]+)*[@$!]?", re.UNICODE)


@dataclasses.dataclass(frozen=True, slots=True)
class Folded:
    """``text`` folded from ``original``; ``origin[i]`` is the original index of ``text[i]``."""

    original: str
    text: str
    origin: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of ``text[start:end]`` (``end > start``)."""
        return self.origin[start], self.origin[end - 1] + 1 if end > start else self.origin[start]


class _Builder:
    def __init__(self) -> None:
        self.chars: list[str] = []
        self.origin: list[int] = []

    def add(self, text: str, at: int) -> None:
        for ch in text:
            self.chars.append(ch)
            self.origin.append(at)

    def build(self, original: str) -> Folded:
        return Folded(original, "".join(self.chars), tuple(self.origin))


def apply_edits(folded: Folded, edits: Iterable[tuple[int, int, str]]) -> Folded:
    """``folded`` with ``text[start:end]`` replaced by each edit's string (edits sorted, not overlapping).

    A replacement's characters come from the start of what they replace, its last character from the end,
    so a span that begins or ends on an edit still maps to the whole of what was there; a deletion drops
    the characters and their offsets (a span across it covers them).
    """
    out = _Builder()
    at = 0
    for start, end, repl in edits:
        for i in range(at, start):
            out.add(folded.text[i], folded.origin[i])
        for j, ch in enumerate(repl):
            out.add(ch, folded.origin[end - 1] if j == len(repl) - 1 and end > start else folded.origin[start])
        at = end
    for i in range(at, len(folded.text)):
        out.add(folded.text[i], folded.origin[i])
    return out.build(folded.original)


def _nfkc_each(text: str) -> Folded:
    out = _Builder()
    for i, ch in enumerate(text):
        if INVISIBLE.match(ch):
            continue
        out.add(unicodedata.normalize("NFKC", ch) if ord(ch) > 0x7F else ch, i)
    return out.build(text)


def _is_latin(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def _map_words(folded: Folded, pick: Callable[[str], dict[str, str] | None]) -> Folded:
    """Replace characters of the words ``pick`` gives a table for (one character for one: offsets kept)."""
    chars = list(folded.text)
    changed = False
    for m in _WORD.finditer(folded.text):
        table = pick(m.group(0))
        if table is None:
            continue
        for i in range(m.start(), m.end()):
            repl = table.get(chars[i])
            if repl is not None:
                chars[i] = repl
                changed = True
    return Folded(folded.original, "".join(chars), folded.origin) if changed else folded


def _mixed(word: str) -> dict[str, str] | None:
    has_latin = any(_is_latin(c) for c in word)
    has_lookalike = any(c in CONFUSABLES for c in word)
    return CONFUSABLES if has_latin and has_lookalike else None


def _leet(word: str) -> dict[str, str] | None:
    letters = sum(c.isalpha() for c in word)
    leet = sum(c in LEET for c in word)
    return LEET if letters >= 1 and leet >= 1 and len(word) >= 3 and not word.isdigit() else None


def fold(text: str, leet: bool = False) -> Folded:
    """``text`` with invisible characters dropped, NFKC-folded, look-alikes in mixed words mapped to Latin."""
    folded = _map_words(_nfkc_each(text), _mixed)
    return _map_words(folded, _leet) if leet else folded


def mixed_script_words(text: str) -> list[str]:
    """Words of ``text`` that mix Latin letters with Cyrillic or Greek look-alikes."""
    return [m.group(0) for m in _WORD.finditer(text) if _mixed(m.group(0)) is not None]


def invisible_in_words(text: str) -> re.Match[str] | None:
    """The first run of zero-width characters between two Latin letters (hiding, not a script's need)."""
    return _INVISIBLE_IN_WORD.search(text)
