"""The designer: build a workflow by drag and drop, export it, validate and run it; import what exists."""

from __future__ import annotations

from pathlib import Path

import yaml
from playwright.sync_api import Page, expect

from .conftest import ROOT, Console, agentflow, screenshot

EXAMPLES = ROOT / "examples" / "manifests"


def _connect(page: Page, source: str, target: str) -> None:
    page.locator(f'[data-testid="dnode-{source}"] .react-flow__handle.source').drag_to(
        page.locator(f'[data-testid="dnode-{target}"] .react-flow__handle.target'))


def test_build_three_steps_by_drag_and_drop_export_validate_and_run(console: Console, page: Page,
                                                                     tmp_path: Path) -> None:
    page.goto(f"{console.url}/#/designer")
    page.click('[data-testid="starter"]')
    canvas = page.locator('[data-testid="canvas"]')
    for x in (30, 290, 550):
        page.locator('[data-testid="palette-llm"]').drag_to(canvas, target_position={"x": x, "y": 200})
    for name in ("llm-1", "llm-2", "llm-3"):
        expect(page.locator(f'[data-testid="dnode-{name}"]')).to_be_visible()
    _connect(page, "llm-1", "llm-2")
    _connect(page, "llm-2", "llm-3")
    _connect(page, "llm-3", "llm-1")  # would close a cycle: refused on the spot
    expect(page.locator('[data-testid="alert-error"]')).to_contain_text("would make a cycle")
    # The prompt reads inputs.question: each step must give it (validation says so until it does).
    for name in ("llm-1", "llm-2", "llm-3"):
        page.locator(f'[data-testid="dnode-{name}"]').click()
        field = page.locator('[data-testid="field-inputs"]')
        field.fill('{"question": "Where is my parcel?"}')
        field.blur()
    expect(page.locator('[data-testid="validity"]')).to_have_text("valid", timeout=90_000)
    screenshot(page, "designer")
    page.click('[data-testid="export-open"]')
    text = page.locator('[data-testid="yaml"]').input_value()
    docs = list(yaml.safe_load_all(text))
    steps = docs[0]["spec"]["steps"]
    assert [(s["name"], s.get("dependsOn")) for s in steps] == [
        ("llm-1", None), ("llm-2", ["llm-1"]), ("llm-3", ["llm-2"])]
    exported = tmp_path / "designed.yaml"
    exported.write_text(text)
    validated = agentflow("validate", str(exported), state=console.state)
    assert validated.returncode == 0, validated.stderr
    ran = agentflow("run", str(exported), "--progress", "none", "--json", state=console.state)
    assert ran.returncode == 0, ran.stderr
    page.click('[data-testid="run-local"]')
    expect(page.locator('[data-testid="run-page"]')).to_have_attribute("data-phase", "Succeeded", timeout=180_000)
    expect(page.locator('[data-testid="node-llm-3"]')).to_have_attribute("data-phase", "Succeeded")


def test_import_export_round_trips_an_example(console: Console, page: Page) -> None:
    source = (EXAMPLES / "customer-support.yaml").read_text()
    page.goto(f"{console.url}/#/designer")
    page.click('[data-testid="import-open"]')
    page.fill('[data-testid="import-text"]', source)
    page.click('[data-testid="import"]')
    expect(page.locator('[data-testid="dnode-escalate"]')).to_be_visible()
    expect(page.locator('[data-testid="validity"]')).to_have_text("valid", timeout=90_000)
    page.click('[data-testid="export-open"]')
    expect(page.locator('[data-testid="yaml"]')).not_to_have_value("")
    exported = page.locator('[data-testid="yaml"]').input_value()
    assert list(yaml.safe_load_all(exported)) == [d for d in yaml.safe_load_all(source) if d]


def test_malformed_manifests_and_invalid_fields_are_shown_where_they_are(console: Console, page: Page) -> None:
    page.goto(f"{console.url}/#/designer")
    page.click('[data-testid="import-open"]')
    page.fill('[data-testid="import-text"]', "apiVersion: agentflow.dev/v1alpha1\nkind: Workflow\nspec: {steps: [\n")
    page.click('[data-testid="import"]')
    expect(page.locator('[data-testid="alert-error"]')).to_contain_text("malformed YAML")
    expect(page.locator('[data-testid="alert-error"]')).to_contain_text("designer.yaml:")
    broken = (EXAMPLES / "quickstart.yaml").read_text().replace("promptRef: {name: quickstart-respond-v1}",
                                                              "promptRef: {name: no-such-prompt}")
    page.fill('[data-testid="import-text"]', broken)
    page.click('[data-testid="import"]')
    badge = page.locator('[data-testid="problems-respond"]')
    expect(badge).to_be_visible(timeout=90_000)
    page.locator('[data-testid="dnode-respond"]').click()
    expect(page.locator('[data-testid="field-error"]').first).to_contain_text("no-such-prompt")
    expect(page.locator('[data-testid="run-local"]')).to_be_disabled()
    screenshot(page, "designer-findings")
