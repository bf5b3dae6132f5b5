"""The text of an approval notification: an e-mail and a Slack-compatible webhook payload. PURE.

What it says: the Workflow, its namespace, the step (node id), what is asked (the approval's message, as the
Workflow's status already shows it), who may decide, since when it waits and until when, a link to the run's
console page (when the operator knows the console's URL) and the exact commands that approve or reject it.
Nothing else of the run: no inputs, no step outputs, no Secret.

User-controlled text (the approval's message is rendered from inputs and step outputs) is made harmless for
each medium, in one place each:

    e-mail headers     control characters (CR, LF, ...) removed, clipped; the Subject carries only the Workflow,
                       namespace and node (names Kubernetes validated) and the kind of notice
    e-mail body        text/plain; control characters other than newlines and tabs removed, clipped
    Slack mrkdwn       & < > escaped (no links, no <!channel>-style mentions can be forged), @ followed by a
                       zero-width joiner (no @channel/@here in Mattermost-style servers), quoted line by line
    shell command      node ids quoted for a POSIX shell (shlex.quote): ``review[2]`` is a glob otherwise
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import urllib.parse
from collections.abc import Sequence
from typing import Any

from .plan import Kind

__all__ = ["MAX_MESSAGE_CHARS", "Notice", "Rendered", "approve_command", "console_link", "header_text",
           "mrkdwn_escape", "plain_text", "render", "slack_payload"]

MAX_MESSAGE_CHARS = 2000
"""The approval's message is clipped to this in a notification (the console shows the whole)."""
MAX_HEADER_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ZWJ = "\u2060"  # word joiner: "@\u2060channel" renders as @channel but mentions no one


@dataclasses.dataclass(frozen=True)
class Notice:
    """One notification about one waiting approval."""

    namespace: str
    workflow: str
    node: str
    kind: Kind
    number: int
    message: str
    """The approval's message (what is asked), as the run rendered it."""
    approvers: Sequence[str]
    since: str
    """When it started waiting (RFC 3339)."""
    deadline: str | None
    """When it is rejected automatically (RFC 3339), if ever."""
    console_url: str | None
    """The console's base URL (the operator's --console-url), None when not configured."""


@dataclasses.dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    """The e-mail's text/plain body."""
    payload: dict[str, Any]
    """The webhook's JSON body."""


def header_text(value: str, limit: int = MAX_HEADER_CHARS) -> str:
    """``value`` fit for an e-mail header: no control characters (no line break to inject a header with), clipped."""
    cleaned = _HEADER_CONTROL.sub(" ", value).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def plain_text(value: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``value`` fit for a text/plain body: newlines and tabs kept, other control characters removed, clipped."""
    cleaned = _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n")).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def mrkdwn_escape(value: str) -> str:
    """``value`` as literal text in Slack mrkdwn: & < > escaped (Slack's rule), mentions defused."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("@", "@" + _ZWJ)


def approve_command(notice: Notice, *, reject: bool = False) -> str:
    words = ["agentflow", "approve", notice.workflow, notice.node, "--namespace", notice.namespace]
    if reject:
        words.append("--reject")
    return shlex.join(words)


def console_link(base: str | None, namespace: str, workflow: str) -> str | None:
    """The console page of the run (its hash route ``#/runs/NAMESPACE:NAME``), None without a base URL."""
    if not base:
        return None
    return f"{base.rstrip('/')}/#/runs/{urllib.parse.quote(f'{namespace}:{workflow}', safe='')}"


def _headline(notice: Notice) -> str:
    where = f"{notice.namespace}/{notice.workflow}"
    if notice.kind == "remind":
        return f"Reminder: approval still needed for step {notice.node} of {where}"
    if notice.kind == "escalate":
        return f"Escalated: approval needed for step {notice.node} of {where}"
    return f"Approval needed for step {notice.node} of {where}"


def render(notice: Notice) -> Rendered:
    link = console_link(notice.console_url, notice.namespace, notice.workflow)
    asked = plain_text(notice.message) or "(the step gives no message)"
    who = ", ".join(notice.approvers) if notice.approvers else "anyone allowed to approve in the namespace"
    lines = [
        _headline(notice) + ".",
        "",
        f"Workflow:  {notice.workflow}",
        f"Namespace: {notice.namespace}",
        f"Step:      {notice.node}",
        f"Waiting since {notice.since}" + (f"; rejected automatically at {notice.deadline}" if notice.deadline
                                           else ""),
        f"Who may decide: {who}",
        "",
        "What is asked:",
        *("  " + line for line in asked.splitlines()),
        "",
        f"Open the run: {link}" if link else "Open the run in the AgentFlow console (its URL is not configured).",
        "",
        "Approve:  " + approve_command(notice),
        "Reject:   " + approve_command(notice, reject=True),
        "",
        "(Your Kubernetes user must be among the approvers; add --reason TEXT to say why.)",
    ]
    return Rendered(header_text(f"[AgentFlow] {_headline(notice)}"), "\n".join(lines) + "\n",
                    slack_payload(notice, link))


def slack_payload(notice: Notice, link: str | None) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body: ``text`` in mrkdwn (what Mattermost, Rocket.Chat and others read
    too), link unfurling off."""
    asked = plain_text(notice.message) or "(the step gives no message)"
    quoted = "\n".join("> " + mrkdwn_escape(line) for line in asked.splitlines())
    who = ", ".join(notice.approvers) if notice.approvers else "anyone allowed to approve in the namespace"
    parts = [
        f"*{mrkdwn_escape(_headline(notice))}*",
        quoted,
        f"Waiting since {notice.since}" + (f", rejected automatically at {notice.deadline}" if notice.deadline
                                           else "") + f". Who may decide: {mrkdwn_escape(who)}",
    ]
    if link:
        parts.append(f"<{link.replace('|', '%7C').replace('>', '%3E')}|Open the run in the console>")
    parts.append(f"Approve: `{mrkdwn_escape(approve_command(notice))}`")
    parts.append(f"Reject: `{mrkdwn_escape(approve_command(notice, reject=True))}`")
    return {"text": "\n".join(parts), "unfurl_links": False, "unfurl_media": False}
