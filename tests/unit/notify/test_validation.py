"""approval.notify in a manifest: errors name the field."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import parse_resource
from agentflow.models.manifests import ManifestError
from agentflow.models.notify import parse_duration


def workflow(notify: dict[str, Any], **approval: Any) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w", "namespace": "n"},
            "spec": {"steps": [{"name": "ask", "kind": "approval",
                                "approval": {"message": "ok?", "notify": notify, **approval}}]}}


def problems(doc: dict[str, Any]) -> str:
    with pytest.raises(ManifestError) as exc:
        parse_resource(doc)
    return "; ".join(str(p) for p in exc.value.problems)


def test_a_full_notify_spec_parses() -> None:
    wf = parse_resource(workflow({"emails": ["lead@example.com"], "webhookSecretRef": {"name": "slack"},
                                  "remindEvery": "4h", "escalateAfter": "1d",
                                  "escalateTo": {"emails": ["boss@example.com"]}}, timeoutSeconds=172800))
    notify = wf.spec.steps[0].approval.notify  # type: ignore[union-attr]
    assert notify is not None and notify.remind_every_seconds == 4 * 3600
    assert notify.escalate_after_seconds == 86400 and notify.webhook_secret_ref.key == "url"  # type: ignore[union-attr]


def test_approvers_that_are_emails_are_recipients_enough() -> None:
    parse_resource(workflow({"remindEvery": "1h"}, approvers=["lead@example.com"]))


@pytest.mark.parametrize(("notify", "approval", "field", "says"), [
    ({"emails": ["lead"]}, {}, "approval.notify.emails", "not a plain e-mail address"),
    ({"emails": ["a@example.com\nBcc: x@example.com"]}, {}, "approval.notify.emails", "not a plain e-mail"),
    ({"emails": ["a@example.com", "a@example.com"]}, {}, "approval.notify.emails", "twice"),
    ({"emails": ["a@example.com"], "remindEvery": "4 hours"}, {}, "approval.notify.remindEvery", "not a duration"),
    ({"emails": ["a@example.com"], "remindEvery": "30s"}, {}, "approval.notify.remindEvery", "least allowed"),
    ({"emails": ["a@example.com"], "remindEvery": "100d"}, {}, "approval.notify.remindEvery", "longer"),
    ({"emails": ["a@example.com"], "escalateAfter": "1h"}, {}, "approval.notify", "escalateAfter and escalateTo"),
    ({"emails": ["a@example.com"], "escalateAfter": "1h", "escalateTo": {}}, {}, "approval.notify",
     "escalateTo names no recipient"),
    ({}, {"approvers": ["leads"]}, "approval", "notify names no recipient"),
    ({"emails": ["a@example.com"], "escalateAfter": "2h", "escalateTo": {"emails": ["b@example.com"]}},
     {"timeoutSeconds": 3600}, "approval", "notify.escalateAfter (2h) is not before timeoutSeconds"),
    ({"emails": ["a@example.com"], "webhookSecretRef": {"name": ""}}, {}, "webhookSecretRef.name", "at least 1"),
    ({"email": ["a@example.com"]}, {}, "approval.notify.email", "unknown field"),
])
def test_bad_notify_specs_are_refused_naming_the_field(notify: dict[str, Any], approval: dict[str, Any],
                                                       field: str, says: str) -> None:
    text = problems(workflow(notify, **approval))
    assert field in text and says in text, text


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("1m", 60), ("1h30m", 5400), ("2d", 172800),
                                               ("1d2h3m4s", 93784)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "1h1d", "h", "1.5h", "1h\n"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
