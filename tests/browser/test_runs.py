"""Watching and steering local runs from the page."""

from __future__ import annotations

import json
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from .conftest import Console, agentflow, agentflow_bg, screenshot
from .manifests import REVIEWED


def _run_id(state: Path) -> str:
    runs = state / "runs"
    for _ in range(600):
        # not a run still being made (.creating-*: renamed into place once complete)
        found = [p.name for p in runs.glob("*") if not p.name.startswith(".") and (p / "meta.json").is_file()
                 ] if runs.is_dir() else []
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no run appeared under {runs}")


def _node(page: Page, node: str):  # type: ignore[no-untyped-def]
    return page.locator(f'[data-testid="node-{node}"]')


def _open_waiting_run(console: Console, page: Page, tmp_path: Path):  # type: ignore[no-untyped-def]
    manifest = tmp_path / "reviewed.yaml"
    manifest.write_text(REVIEWED)
    proc = agentflow_bg("run", str(manifest), "--progress", "lines", state=console.state)
    run_id = _run_id(console.state)
    page.goto(f"{console.url}/#/runs/{run_id}")
    expect(_node(page, "gate")).to_have_attribute("data-phase", "Waiting")
    return proc, run_id


def test_a_live_run_changes_state_on_the_page(console: Console, page: Page, tmp_path: Path) -> None:
    proc, run_id = _open_waiting_run(console, page, tmp_path)
    try:
        # The whole plan is drawn while the run waits at its first step: what has not started is Pending.
        expect(_node(page, "draft")).to_have_attribute("data-phase", "Pending")
        expect(_node(page, "done")).to_have_attribute("data-phase", "Pending")
        page.evaluate("window.__loaded_once = true")
        seq = int(page.locator('[data-testid="run-page"]').get_attribute("data-seq") or -1)
        decided = agentflow("approve", run_id, "gate", "--by", "bob", "--reason", "go ahead", state=console.state)
        assert decided.returncode == 0, decided.stderr
        expect(_node(page, "draft")).to_have_attribute("data-phase", "Succeeded", timeout=180_000)
        expect(_node(page, "done")).to_have_attribute("data-phase", "Waiting")
        expect(_node(page, "gate")).to_have_attribute("data-phase", "Succeeded")
        assert page.evaluate("window.__loaded_once") is True, "updated live, without reloading the page"
        assert int(page.locator('[data-testid="run-page"]').get_attribute("data-seq") or -1) > seq
        expect(page.locator('[data-testid="live"]')).to_have_text("live")
        _node(page, "draft").click()
        expect(page.locator('[data-testid="node-panel"]')).to_contain_text("agentflow/offline")
        screenshot(page, "run-live")
    finally:
        proc.kill()
        proc.wait()


def test_approving_a_waiting_step_from_the_page_finishes_the_run(console: Console, page: Page, tmp_path: Path) -> None:
    proc, run_id = _open_waiting_run(console, page, tmp_path)
    try:
        _node(page, "gate").click()
        page.fill('[data-testid="reason"]', "start it")
        page.click('[data-testid="approve"]')
        expect(_node(page, "done")).to_have_attribute("data-phase", "Waiting", timeout=180_000)
        _node(page, "done").click()
        expect(page.locator('[data-testid="approval"]')).to_contain_text("approvers: alice")
        page.fill('[data-testid="reason"]', "reply reads well")
        page.click('[data-testid="approve"]')
        expect(page.locator('[data-testid="run-page"]')).to_have_attribute("data-phase", "Succeeded", timeout=180_000)
        expect(_node(page, "done")).to_have_attribute("data-phase", "Succeeded")
        screenshot(page, "run")
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shown = json.loads(agentflow("show", run_id, "--json", state=console.state).stdout)
    assert shown["phase"] == "Succeeded"
    lines = (console.state / "runs" / run_id / "journal.jsonl").read_text().splitlines()
    journal = [json.loads(line) for line in lines]
    decisions = [(r["node"], r["data"]) for r in journal if r["type"] == "ApprovalDecided"]
    assert decisions == [("gate", {"approved": True, "by": "alice", "reason": "start it"}),
                         ("done", {"approved": True, "by": "alice", "reason": "reply reads well"})]
    assert agentflow("verify", run_id, state=console.state).returncode == 0


def test_the_runs_list_filters_and_links(console: Console, page: Page, tmp_path: Path) -> None:
    manifest = tmp_path / "reviewed.yaml"
    manifest.write_text(REVIEWED)
    done = agentflow("run", str(manifest), "--no-wait", "--progress", "none", state=console.state)
    assert done.returncode == 3, done.stderr  # waits for approval of gate
    page.goto(f"{console.url}/#/runs")
    rows = page.locator('[data-testid="runs"] tbody tr')
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-phase", "Waiting")  # as kubectl shows a Workflow that waits
    page.select_option('[data-testid="filter-phase"]', "Succeeded")
    expect(page.locator('[data-testid="runs"]')).to_have_count(0)
    page.select_option('[data-testid="filter-phase"]', "Waiting")
    expect(rows).to_have_count(1)
    page.select_option('[data-testid="filter-phase"]', "")
    expect(rows).to_have_count(1)
    screenshot(page, "runs")


def test_a_workflow_steps_child_run_is_one_click_away(console: Console, page: Page, tmp_path: Path) -> None:
    manifest = tmp_path / "team-reports.yaml"
    manifest.write_text((Path(__file__).resolve().parents[2] / "examples/manifests/team-reports.yaml").read_text())
    done = agentflow("run", str(manifest), "--input", "teams=[payments]", state=console.state)
    assert done.returncode == 0, done.stderr
    parents = [p.name for p in (console.state / "runs").glob("team-reports-*") if "." not in p.name]
    assert len(parents) == 1, parents
    page.goto(f"{console.url}/#/runs/{parents[0]}")
    expect(_node(page, "per-team")).to_have_attribute("data-phase", "Succeeded")
    _node(page, "per-team").click()
    panel = page.locator('[data-testid="node-panel"]')
    expect(panel).to_contain_text("1 fan-out items")
    panel.get_by_text("child run").first.click()  # the item's child run: its own page, its own graph
    expect(_node(page, "draft")).to_have_attribute("data-phase", "Succeeded")
    assert "per-team-0-a1-" in page.url
    screenshot(page, "child-run")
