"""What status and Events may show of a run's data: bounded previews with personal data patterns masked. Pure.

Anyone allowed to `get events` in a namespace (often every viewer of the cluster, and monitoring) reads
Events, and anyone allowed to `get workflows` reads their status; neither is where customer data belongs.
Step inputs and outputs stay in the journal (PostgreSQL, read through `agentflow show` and the console). What
status and Events do show (an output preview, an approval's question, an error message) goes through
:func:`scrub`, which masks what patterns can find without a model:

    e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IBANs, US social security
    numbers, IPv4 and IPv6 addresses, and any other run of 9 or more digits

and is cut to a preview. Names are not found this way (that needs the NER of the step pods' redaction,
agentflow.security.pii, too heavy for the operator): an approval question should not quote what it need
not. `agentflow operator --status-previews none` leaves previews out of status altogether.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = ["EVENT_PREVIEW_CHARS", "STATUS_PREVIEW_CHARS", "bounded", "scrub"]

STATUS_PREVIEW_CHARS: Final = 120
EVENT_PREVIEW_CHARS: Final = 480

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d{1,4}\)?(?:[ .\-]?\(?\d{2,4}\)?){2,5}(?![\w.])")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:])[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:]*(?![\w:])")
_DIGITS = re.compile(r"\d{9,}")


def _luhn(digits: str) -> bool:
    total, odd = 0, False
    for ch in reversed(digits):
        n = int(ch)
        if odd:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
        odd = not odd
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "<CARD>" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}[./-]\d{2}[./-]\d{4}")


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if _DATE.fullmatch(text.strip()):
        return text  # a date, not a number to hide
    if not text.lstrip().startswith("+") and not re.search(r"[ .\-()]", text.strip()):
        return text  # one plain run of digits: a count or a limit (long runs are <NUMBER> below)
    digits = re.sub(r"\D", "", text)
    return "<PHONE>" if 7 <= len(digits) <= 15 else text


def _ipv6(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(match.group(0))
    except ValueError:
        return match.group(0)
    return "<IP>"


def scrub(text: str) -> str:
    """``text`` with e-mail addresses, phone and card numbers, IBANs, SSNs, IP addresses and long digit runs
    replaced by ``<EMAIL>``, ``<PHONE>``, ``<CARD>``, ``<IBAN>``, ``<SSN>``, ``<IP>``, ``<NUMBER>``."""
    text = _EMAIL.sub("<EMAIL>", text)
    text = _IBAN.sub("<IBAN>", text)
    text = _SSN.sub("<SSN>", text)
    text = _CARD.sub(_card, text)
    text = _IPV6_CANDIDATE.sub(_ipv6, text)
    text = _IPV4.sub("<IP>", text)
    text = _PHONE.sub(_phone, text)
    return _DIGITS.sub("<NUMBER>", text)


def bounded(text: str, limit: int) -> str:
    """``text`` scrubbed and cut to ``limit`` characters (… marks a cut)."""
    clean = " ".join(scrub(text).split())
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
