"""README.md's commands work as written: the local runner's walkthrough, run line by line through the CLI in a
fresh folder, and the out-of-cluster operator command, parsed by the operator's own parser."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from agentflow.cli import EXIT_OK, EXIT_WAITING, main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def sh_block(after: str) -> list[str]:
    """The commands of the first ```sh block after the text ``after``: comments dropped, continuations joined."""
    start = README.index(after)
    body = README[README.index("```sh\n", start) + len("```sh\n"):]
    body = body[:body.index("```")]
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        command = shlex.split(line, comments=True)
        if command:
            commands.append(command)
    return commands


def test_the_local_runner_walkthrough_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    commands = sh_block("## Using the local runner")
    assert commands[0] == ["source", ".venv/bin/activate"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")
    monkeypatch.delenv("AGENTFLOW_STATE_DIR", raising=False)
    head = None
    for command in commands[1:]:
        assert command[0] == "agentflow", command
        argv = command[1:]
        if argv[0] == "diff":  # RUN_A RUN_B: two runs `agentflow runs` lists
            runs = sorted(p.name for p in (tmp_path / ".agentflow" / "runs").iterdir())
            argv = ["diff", runs[0], runs[1]]
        if "--expect-head" in argv:  # the head the verify before printed
            assert head is not None
            argv[argv.index("--expect-head") + 1] = head
        if argv[0] in ("run", "resume", "replay"):
            argv += ["--progress", "lines"]
        code = main(argv)
        out, err = capsys.readouterr()
        expected = EXIT_WAITING if "--no-wait" in argv else EXIT_OK
        assert code == expected, (command, out[-2000:], err[-2000:])
        if argv[0] == "run" and "--no-wait" in argv:
            assert "escalate" in out and "waits for approval" in out, out
        if argv[0] == "resume":
            assert "Succeeded" in out and '"action": "handoff-to-human"' in out, out
        if argv[:2] == ["replay", "latest"] and "--from-step" in argv:
            assert "what-if" in out and "~ respond.output:" in out, out
        match = re.search(r"^head: (\S+)$", out, re.M)
        head = match.group(1) if match else head
    for command in sh_block("Both read the local runs'"):  # the audit chain the walkthrough's runs wrote
        assert command[:2] == ["agentflow", "audit"], command
        code = main(command[1:])
        out, err = capsys.readouterr()
        assert code == EXIT_OK and "Traceback" not in err, (command, out, err)
    assert "audit chain intact" in out


def test_starting_a_project_from_a_template_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")
    monkeypatch.delenv("AGENTFLOW_STATE_DIR", raising=False)
    commands = sh_block("### Starting a project from a template")
    assert any(c[:2] == ["agentflow", "init"] for c in commands)
    for command in commands:
        assert command[0] == "agentflow", command
        argv = command[1:]
        if argv[0] in ("run", "resume"):
            argv += ["--progress", "lines"]
        code = main(argv)
        out, err = capsys.readouterr()
        expected = EXIT_WAITING if "--no-wait" in argv else EXIT_OK
        assert code == expected, (command, out[-2000:], err[-2000:])
        if argv[0] == "resume":
            assert "Succeeded" in out and "triage/t4/call-1" in out, out


def test_the_out_of_cluster_operator_command_has_what_it_needs() -> None:
    pytest.importorskip("kopf")
    from agentflow.controller.main import build_parser, gateway_url

    [command] = [c for c in sh_block("For development the operator also runs outside") if c[:2] == ["agentflow",
                                                                                                   "operator"]]
    args = build_parser().parse_args(command[2:])
    assert args.kubeconfig and args.postgres_dsn
    assert args.callback_listen == "0.0.0.0:8081" and args.callback_url == "http://ADDRESS:8081"
    assert args.gateway_listen and gateway_url(args) == "http://address:8082"
    assert args.webhook_host == "ADDRESS" and args.webhook_listen
    assert args.signing_key_file == "signing.key"


async def test_the_trigger_curl_example_works_as_written() -> None:
    """The README's signed delivery, run by bash with openssl and curl against the trigger server (FakeKube holds
    the example's template and trigger in team-a and the labelled Secret): 201 and a run, then the same command
    again: 200, duplicate, still one run."""
    import asyncio
    import json
    import shutil

    from agentflow.loader import load_documents
    from agentflow.testing import FakeKube
    from agentflow.triggers.server import TriggerServer

    if not (shutil.which("curl") and shutil.which("openssl") and shutil.which("bash")):
        pytest.skip("needs bash, curl and openssl")
    start = README.index("A delivery, signed as GitHub signs one")
    body = README[README.index("```sh\n", start) + len("```sh\n"):]
    script = body[:body.index("```")]
    kube = FakeKube(secrets=[{"metadata": {"name": "digest-webhook", "namespace": "team-a",
                                           "labels": {"agentflow.dev/trigger": "true"}},
                              "stringData": {"secret": "it's a secret"}}])
    for doc in load_documents([ROOT / "examples" / "manifests" / "scheduled-digest.yaml"]):
        if doc.body["kind"] in ("WorkflowTemplate", "WorkflowTrigger"):
            kube.add_resource({**doc.body, "metadata": {**doc.body["metadata"], "namespace": "team-a"}})
    server = TriggerServer(kube)
    await server.start("127.0.0.1", 0)
    env = {"PATH": "/usr/bin:/bin", "KEY": "it's a secret", "TRIGGERS": f"http://127.0.0.1:{server.port}"}
    answers = []
    try:
        for _ in range(2):
            proc = await asyncio.create_subprocess_exec("bash", "-euo", "pipefail", "-c", script, env=env,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            answers.append(json.loads(out))
    finally:
        await server.stop()
    assert answers[0]["started"] is True and answers[0]["workflow"].startswith("digest-on-release-"), answers
    assert answers[1]["duplicate"] is True and answers[1]["workflow"] == answers[0]["workflow"], answers
    [run] = [o for (plural, _, _), o in kube.resources.items() if plural == "workflows"]
    assert run["spec"]["inputs"] == {"topic": "release v1.4.0"}


def python_blocks(after: str) -> list[str]:
    """The ```python blocks of the section that starts with ``after`` (up to the next ## heading)."""
    start = README.index(after)
    end = README.find("\n## ", start + len(after))
    section = README[start:end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_application_client_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    local, cluster, console = python_blocks("## Use it from an application")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")
    exec(compile(local, "README.md (Use it from an application)", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "refused: inputs.topic: 'db' is too short" in out, out
    assert "run Running -> Succeeded" in out and "database upgrades for leadership" in out, out
    assert (tmp_path / ".agentflow" / "runs").is_dir()
    compile(cluster, "README.md (cluster)", "exec")  # needs a cluster to run: the e2e test runs the same calls
    compile(console, "README.md (console)", "exec")  # tests/unit/client/test_console.py makes the same calls
