"""The errors of the secure context layer.

::

    SecurityError
      PiiConfigError         the PII analyzer cannot be built (missing NLP pipeline); names the package
      PiiTextTooLarge        a text past what is screened for PII (pii.MAX_SCREENED_CHARS): refused, not passed on
      TokenMapError          a sealed token map cannot be read (wrong key, tampered, bad key material)
      InjectionDetected      untrusted text scored at or above the Agent's threshold, action block
        InjectionQuarantined the same with action quarantine: held for human review (the step fails today)

The executor turns each into a StepError of the same type name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .injection import Finding


class SecurityError(Exception):
    """Base of the security layer's errors."""


class PiiConfigError(SecurityError):
    """The PII analyzer cannot be built; the message names the missing package and how to install it."""


class PiiTextTooLarge(SecurityError):
    """A text is larger than PII detection screens; it is refused rather than passed on unscreened."""


class TokenMapError(SecurityError):
    """A sealed token map cannot be opened or a key is malformed; the message says which and why."""


class InjectionDetected(SecurityError):
    """Untrusted text looks like a prompt injection; ``source`` names where it came from."""

    def __init__(self, source: str, score: float, findings: Sequence[Finding], message: str) -> None:
        super().__init__(message)
        self.source = source
        self.score = score
        self.findings = tuple(findings)


class InjectionQuarantined(InjectionDetected):
    """As InjectionDetected, but the policy asks for a human review before the step may go on."""
