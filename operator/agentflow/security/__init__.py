"""The secure context layer: PII redaction with reversible tokens, prompt-injection detection.

    pii.py        Presidio detection (spaCy NER + pattern recognizers), HMAC tokens, redact and restore
    vault.py      the master and per-run keys, the run's token map sealed with AES-GCM
    injection.py  heuristic prompt-injection screening: score, evidence, the policy's action
    injection_rules.py  the weighted rules it matches (categories, languages)
    normalise.py  folding hidden spellings (zero-width, full-width, look-alikes) with a map back to offsets
    context.py    SecurityContext for executors, and the audit events they record
    errors.py     SecurityError and its subclasses
"""

from .context import SecurityContext, injection_event, redaction_event
from .errors import (
    InjectionDetected,
    InjectionQuarantined,
    PiiConfigError,
    PiiTextTooLarge,
    SecurityError,
    TokenMapError,
)
from .injection import Finding, Report, decide, scan
from .pii import Detection, Detector, PresidioDetector, Redaction, TokenMap, token_for
from .vault import PII_KEY_ENV, LocalTokenMapStore, RunKeys, TokenMapStore

__all__ = [
    "PII_KEY_ENV", "Detection", "Detector", "Finding", "InjectionDetected", "InjectionQuarantined",
    "LocalTokenMapStore", "PiiConfigError", "PiiTextTooLarge", "PresidioDetector", "Redaction", "Report", "RunKeys",
    "SecurityContext", "SecurityError", "TokenMap", "TokenMapError", "TokenMapStore", "decide",
    "injection_event", "redaction_event", "scan", "token_for",
]
