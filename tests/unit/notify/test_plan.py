"""The pure planner of approval notifications: notify once, remind per period, escalate once, nothing twice."""

from __future__ import annotations

from agentflow.notify.plan import Wait, due

HOUR = 3600.0


def keys(plan: object) -> list[str]:
    return [s.key for s in plan.sends]  # type: ignore[attr-defined]


def test_the_first_notice_goes_out_at_once_on_every_channel_of_the_first_group() -> None:
    w = Wait("ask", 1000.0, ("email", "webhook"), remind_every=HOUR)
    plan = due(w, 1000.0, set())
    assert keys(plan) == ["notify:email", "notify:webhook"]
    assert plan.next_at is None  # the reminder's time is known once the notice is done


def test_a_reminder_per_period_only_after_the_notice_and_only_once() -> None:
    w = Wait("ask", 1000.0, ("email",), remind_every=HOUR)
    assert due(w, 1000.0 + HOUR - 1, {"notify:email"}).sends == ()
    assert due(w, 1000.0 + HOUR - 1, {"notify:email"}).next_at == 1000.0 + HOUR
    assert keys(due(w, 1000.0 + HOUR, {"notify:email"})) == ["remind-1:email"]
    assert due(w, 1000.0 + HOUR + 5, {"notify:email", "remind-1:email"}).sends == ()
    assert due(w, 1000.0 + HOUR + 5, {"notify:email", "remind-1:email"}).next_at == 1000.0 + 2 * HOUR


def test_periods_missed_while_down_give_one_reminder_the_current_one() -> None:
    w = Wait("ask", 0.0, ("email",), remind_every=HOUR)
    plan = due(w, 3.5 * HOUR, {"notify:email", "remind-1:email"})
    assert keys(plan) == ["remind-3:email"]
    assert plan.next_at == 4 * HOUR


def test_no_notice_done_means_no_reminder_even_late() -> None:
    w = Wait("ask", 0.0, ("email",), remind_every=HOUR)
    assert keys(due(w, 5 * HOUR, set())) == ["notify:email"]


def test_escalation_once_at_escalate_after_to_the_second_group() -> None:
    w = Wait("ask", 0.0, ("email",), escalate_after=2 * HOUR, escalation=("webhook",))
    early = due(w, HOUR, {"notify:email"})
    assert early.sends == () and early.next_at == 2 * HOUR
    assert keys(due(w, 2 * HOUR, {"notify:email"})) == ["escalate:webhook"]
    done = due(w, 3 * HOUR, {"notify:email", "escalate:webhook"})
    assert done.sends == () and done.next_at is None


def test_channels_are_independent_a_failed_webhook_does_not_resend_the_email() -> None:
    w = Wait("ask", 0.0, ("email", "webhook"))
    assert keys(due(w, 10.0, {"notify:email"})) == ["notify:webhook"]


def test_without_remind_or_escalate_nothing_follows_the_notice() -> None:
    plan = due(Wait("ask", 0.0, ("email",)), 100 * HOUR, {"notify:email"})
    assert plan.sends == () and plan.next_at is None


def test_a_clock_before_the_wait_counts_as_no_time_waited() -> None:
    w = Wait("ask", 100.0, ("email",), remind_every=HOUR)
    plan = due(w, 50.0, {"notify:email"})
    assert plan.sends == () and plan.next_at == 100.0 + HOUR
