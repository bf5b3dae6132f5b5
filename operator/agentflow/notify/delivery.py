"""Sending a notification: e-mail over SMTP (aiosmtplib) and a Slack-compatible incoming webhook (aiohttp).

The only module importing aiosmtplib. Every failure of either client becomes a :class:`DeliveryError` here, in
one place, saying whether trying again can help::

    DeliveryError(retryable=True)    the relay or the webhook's host cannot be reached, timed out, answered 5xx,
                                     429, or a temporary SMTP code (4xx): retried with backoff by the caller
    DeliveryError(retryable=False)   refused for good: a webhook host not on the allowlist, a URL that is not
                                     https (plain http only to an allowlisted loopback host: tests, a local
                                     relay), 4xx from the webhook, a permanent SMTP code (5xx), bad credentials

SSRF: the webhook URL is a tenant's (from a Secret of the Workflow's namespace), so the operator posts only to
hosts its allowlist names (exact host names, case-insensitive; ``--notify-webhook-hosts``), never follows a
redirect, and reads at most 64 KiB of an answer.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiohttp

__all__ = ["DeliveryError", "Mailer", "SmtpSettings", "WebhookPoster", "check_webhook_url"]

TIMEOUT_SECONDS = 20.0
MAX_ANSWER_BYTES = 64 * 1024


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    sender: str = ""
    """The From address."""
    starttls: bool = False
    """Upgrade the connection with STARTTLS (required then: a relay that does not offer it is an error)."""
    tls: bool = False
    """Implicit TLS from the first byte (port 465)."""
    username: str | None = None
    password: str | None = None
    timeout: float = TIMEOUT_SECONDS


class Mailer:
    """Sends text/plain e-mail through one SMTP relay."""

    def __init__(self, settings: SmtpSettings) -> None:
        if not settings.sender:
            raise ValueError("the SMTP relay needs a From address (--smtp-from)")
        self.settings = settings

    def message(self, recipients: Sequence[str], subject: str, text: str) -> EmailMessage:
        """The e-mail; header values are already clean (agentflow.notify.message.header_text), and EmailMessage
        refuses a header value with a line break anyway."""
        msg = EmailMessage()
        msg["From"] = self.settings.sender
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.settings.sender.rpartition("@")[2] or None)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        return msg

    async def send(self, recipients: Sequence[str], subject: str, text: str) -> None:
        import aiosmtplib  # on first use: an operator without --smtp-host never loads it

        s = self.settings
        msg = self.message(recipients, subject, text)
        try:
            await aiosmtplib.send(msg, hostname=s.host, port=s.port, username=s.username, password=s.password,
                                  start_tls=s.starttls, use_tls=s.tls, timeout=s.timeout)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"the SMTP relay {s.host}:{s.port} refused the login: {exc.code} {exc.message}",
                                retryable=False) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise DeliveryError(f"the SMTP relay {s.host}:{s.port} refused the recipients: "
                                + "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients),
                                retryable=all(400 <= c < 500 for c in codes)) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"the SMTP relay {s.host}:{s.port} answered {exc.code} {exc.message}",
                                retryable=400 <= exc.code < 500) from None
        except (aiosmtplib.SMTPException, OSError) as exc:  # connect, timeout, TLS, a dropped connection
            raise DeliveryError(f"the SMTP relay {s.host}:{s.port} could not be reached: {type(exc).__name__}: "
                                f"{exc}", retryable=True) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str, allowed_hosts: Sequence[str]) -> str | None:
    """Why the operator will not post to ``url`` (None: it will). Never says the URL itself (a secret)."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        return "the webhook URL is not a valid URL"
    if not host:
        return "the webhook URL has no host"
    allowed = {h.lower() for h in allowed_hosts}
    if host not in allowed:
        shown = ", ".join(sorted(allowed)) or "none"
        return (f"the webhook's host {host!r} is not on the operator's allowlist (--notify-webhook-hosts: {shown}); "
                "ask the platform team to allow it")
    if parts.scheme == "https" or (parts.scheme == "http" and _loopback(host)):
        return None
    return f"the webhook URL's scheme is {parts.scheme!r}: only https is used (plain http only to a loopback host)"


class WebhookPoster:
    """Posts JSON to Slack-compatible incoming webhooks on allowlisted hosts. One aiohttp session, closed by
    :meth:`close`."""

    def __init__(self, allowed_hosts: Sequence[str], *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.allowed_hosts = tuple(allowed_hosts)
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, payload: dict[str, Any]) -> None:
        problem = check_webhook_url(url, self.allowed_hosts)
        if problem is not None:
            raise DeliveryError(problem, retryable=False)
        host = urllib.parse.urlsplit(url.strip()).hostname
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        try:
            async with self._session.post(url.strip(), json=payload, allow_redirects=False) as resp:
                answer = (await resp.content.read(MAX_ANSWER_BYTES)).decode("utf-8", "replace")[:200]
                if resp.status < 300:
                    return
                retryable = resp.status >= 500 or resp.status == 429
                raise DeliveryError(f"the webhook at {host} answered HTTP {resp.status}: {answer.strip()}",
                                    retryable=retryable)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"the webhook at {host} could not be reached: {type(exc).__name__}",
                                retryable=True) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
