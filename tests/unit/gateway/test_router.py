from __future__ import annotations

import random

import pytest

from agentflow.gateway.router import Outcome, RewardWeights, Router, candidates_for, provider_of


def test_candidates_keep_declared_order_without_duplicates_and_filter_providers() -> None:
    assert candidates_for("openai/a", ["anthropic/b", "openai/a", "c"], []) == ["openai/a", "anthropic/b", "c"]
    assert candidates_for("openai/a", ["anthropic/b", "c"], ["anthropic"]) == ["anthropic/b"]
    assert candidates_for("openai/a", [], ["anthropic"]) == []
    assert provider_of("gpt-4o") == "openai"


def test_fallback_mode_keeps_the_declared_order() -> None:
    router = Router()
    decision = router.decide("ns/agent", ["m1", "m2", "m3"], "fallback", 0.0, random.Random(1))
    assert decision.order == ("m1", "m2", "m3")
    assert decision.pick == "m1"
    assert "first declared" in decision.why
    assert decision.to_dict()["candidates"] == ["m1", "m2", "m3"]


def test_cooldown_after_consecutive_failures_then_recovery() -> None:
    router = Router(cooldown_after=3, cooldown_seconds=30.0)
    rng = random.Random(0)
    for t in range(2):
        router.observe("a", "m1", Outcome(False, retryable=True), float(t))
    assert router.decide("a", ["m1", "m2"], "fallback", 2.0, rng).order == ("m1", "m2")  # 2 < 3: not yet
    router.observe("a", "m1", Outcome(False, retryable=True), 3.0)
    decision = router.decide("a", ["m1", "m2"], "fallback", 4.0, rng)
    assert decision.order == ("m2", "m1")
    assert decision.cooling == {"m1": pytest.approx(29.0)}
    assert "cooling down" in decision.why
    # Cooldown over: it is first again; one more failure cools it down at once.
    assert router.decide("a", ["m1", "m2"], "fallback", 33.5, rng).order == ("m1", "m2")
    router.observe("a", "m1", Outcome(False, retryable=True), 34.0)
    assert router.decide("a", ["m1", "m2"], "fallback", 35.0, rng).order == ("m2", "m1")
    # A success clears it.
    router.observe("a", "m1", Outcome(True), 70.0)
    router.observe("a", "m1", Outcome(False, retryable=True), 71.0)
    assert router.decide("a", ["m1", "m2"], "fallback", 72.0, rng).order == ("m1", "m2")


def test_non_retryable_failures_do_not_cool_a_model_down() -> None:
    router = Router(cooldown_after=1)
    router.observe("a", "m1", Outcome(False, retryable=False, error="BadModelRequest"), 0.0)
    assert router.cooling("m1", 1.0) == 0.0
    assert router.posterior("a", "m1") == (1.0, 1.0)


def test_every_candidate_cooling_is_still_tried_soonest_first() -> None:
    router = Router(cooldown_after=1, cooldown_seconds=10.0)
    router.observe("a", "m1", Outcome(False), 0.0)
    router.observe("a", "m2", Outcome(False), 5.0)
    decision = router.decide("a", ["m2", "m1"], "fallback", 6.0, random.Random(0))
    assert decision.order == ("m1", "m2")
    assert "every candidate is cooling down" in decision.why


def test_bandit_converges_to_the_cheaper_healthy_model() -> None:
    router = Router()
    rng = random.Random(42)
    env = random.Random(7)
    # m-dear: reliable, expensive. m-cheap: as reliable, 20x cheaper. m-flaky: cheap but fails 60%.
    cost = {"m-dear": 0.01, "m-cheap": 0.0005, "m-flaky": 0.0005}
    failing = {"m-dear": 0.02, "m-cheap": 0.02, "m-flaky": 0.6}
    picks: list[str] = []
    now = 0.0
    for _ in range(600):
        now += 1.0
        decision = router.decide("ns/agent", ["m-dear", "m-cheap", "m-flaky"], "bandit", now, rng)
        assert set(decision.samples) == {"m-dear", "m-cheap", "m-flaky"}
        for model in decision.order:  # fallback on error, like the gateway does
            ok = env.random() >= failing[model]
            router.observe("ns/agent", model, Outcome(ok, cost_usd=cost[model], latency_ms=500.0), now)
            if ok:
                picks.append(model)
                break
    last = picks[-200:]
    assert last.count("m-cheap") / len(last) > 0.8, {m: last.count(m) for m in cost}
    assert picks[:50].count("m-dear") > 0  # it explored the others at first


def test_bandit_moves_away_from_a_model_that_starts_failing() -> None:
    router = Router(cooldown_after=1000)  # the posterior alone, no cooldown
    rng = random.Random(3)
    for t in range(200):
        router.observe("a", "m1", Outcome(True, cost_usd=0.0001), float(t))
        router.observe("a", "m2", Outcome(True, cost_usd=0.001), float(t))
    first = [router.decide("a", ["m1", "m2"], "bandit", 200.0, rng).pick for _ in range(100)]
    assert first.count("m1") > 80
    for t in range(300):
        router.observe("a", "m1", Outcome(False), 300.0 + t)
    later = [router.decide("a", ["m1", "m2"], "bandit", 700.0, rng).pick for _ in range(100)]
    assert later.count("m2") > 80


def test_reward_mixes_quality_cost_and_latency() -> None:
    w = RewardWeights()
    assert w.reward(Outcome(False)) == 0.0
    cheap_fast = w.reward(Outcome(True, cost_usd=0.0, latency_ms=0.0))
    assert cheap_fast == pytest.approx(1.0)
    assert w.reward(Outcome(True, cost_usd=0.001, latency_ms=0.0)) < cheap_fast
    assert w.reward(Outcome(True, cost_usd=0.0, latency_ms=2000.0)) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="quality, cost and latency"):
        RewardWeights(quality=0, cost=0, latency=0)


def test_decide_refuses_empty_candidates_and_unknown_modes() -> None:
    with pytest.raises(ValueError, match="no candidates"):
        Router().decide("a", [], "fallback", 0.0, random.Random())
    with pytest.raises(ValueError, match="not fallback or bandit"):
        Router().decide("a", ["m"], "roundrobin", 0.0, random.Random())  # type: ignore[arg-type]
