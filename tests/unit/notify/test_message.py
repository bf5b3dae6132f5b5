"""The text of approval notifications: what it names, and user text made harmless for each medium."""

from __future__ import annotations

import shlex

import pytest

from agentflow.notify.delivery import Mailer, SmtpSettings, check_webhook_url
from agentflow.notify.message import Notice, console_link, header_text, mrkdwn_escape, render


def notice(**kw: object) -> Notice:
    base: dict[str, object] = dict(namespace="team", workflow="refund-42", node="review[2]", kind="notify",
                                   number=0, message="Refund 40 EUR?", approvers=("finance",),
                                   since="2026-12-07T03:00:00Z", deadline=None,
                                   console_url="https://console.example.com/")
    base.update(kw)
    return Notice(**base)  # type: ignore[arg-type]


def test_the_message_names_the_run_what_is_asked_the_link_and_the_commands() -> None:
    r = render(notice())
    assert "refund-42" in r.subject and "team" in r.subject and "review[2]" in r.subject
    assert "Refund 40 EUR?" in r.text and "finance" in r.text
    assert "https://console.example.com/#/runs/team%3Arefund-42" in r.text
    approve = "agentflow approve refund-42 'review[2]' --namespace team"
    assert approve in r.text and approve + " --reject" in r.text
    assert shlex.split(approve) == ["agentflow", "approve", "refund-42", "review[2]", "--namespace", "team"]
    assert "https://console.example.com/#/runs/team%3Arefund-42|Open the run" in r.payload["text"]
    assert r.payload["unfurl_links"] is False


def test_reminders_and_escalations_say_so() -> None:
    assert render(notice(kind="remind", number=2)).subject.startswith("[AgentFlow] Reminder:")
    assert render(notice(kind="escalate")).subject.startswith("[AgentFlow] Escalated:")


def test_without_a_console_url_there_is_no_link() -> None:
    r = render(notice(console_url=None))
    assert "not configured" in r.text and "#/runs" not in r.payload["text"]
    assert console_link(None, "a", "b") is None


def test_slack_markup_and_mentions_in_the_approval_text_are_defused() -> None:
    text = render(notice(message="<!channel> pay <https://evil.example|here> & @here now")).payload["text"]
    assert "<!channel>" not in text and "<https://evil" not in text
    assert "&lt;!channel&gt;" in text and "&amp;" in text
    assert "@here" not in text  # a word joiner follows the @
    assert mrkdwn_escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_header_injection_through_user_text_is_impossible() -> None:
    assert "\n" not in header_text("x\r\nBcc: victim@example.com")
    r = render(notice(message="line1\r\nBcc: victim@example.com\x00\x1b[31m"))
    msg = Mailer(SmtpSettings("127.0.0.1", 25, "agentflow@example.com")).message(["a@example.com"], r.subject, r.text)
    assert msg["Bcc"] is None and "\x1b" not in r.text and "\x00" not in r.text
    assert "Bcc: victim@example.com" in msg.get_content()  # body text, not a header


def test_long_approval_text_is_clipped() -> None:
    r = render(notice(message="x" * 10_000))
    assert len(r.text) < 3_500 and "…" in r.text


@pytest.mark.parametrize(("url", "why"), [
    ("https://hooks.slack.com/services/T/B/X", None),
    ("https://HOOKS.slack.com/services/T/B/X", None),
    ("https://evil.example.com/x", "not on the operator's allowlist"),
    ("https://169.254.169.254/latest/meta-data", "not on the operator's allowlist"),
    ("http://hooks.slack.com/services/x", "only https"),
    ("http://127.0.0.1:8080/hook", "not on the operator's allowlist"),
    ("not a url", "no host"),
    ("https://hooks.slack.com:99999/x", "not a valid URL"),
])
def test_webhook_urls_are_checked_against_the_allowlist(url: str, why: str | None) -> None:
    problem = check_webhook_url(url, ["hooks.slack.com"])
    assert (problem is None) if why is None else (problem is not None and why in problem)
    if problem is not None:
        assert "/services/" not in problem and "meta-data" not in problem  # the URL is a secret: not repeated


def test_plain_http_only_to_an_allowlisted_loopback_host() -> None:
    assert check_webhook_url("http://127.0.0.1:8080/hook", ["127.0.0.1"]) is None
    assert check_webhook_url("http://10.0.0.1/hook", ["10.0.0.1"]) is not None
