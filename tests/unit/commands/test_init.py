"""`agentflow init DIR --template NAME`: every template makes a project that runs offline at once, as its README
says; the templates are one copy (examples/manifests links to them) shipped as package data; refusals exit 2
naming the argument, and nothing is ever overwritten or left half-written."""

from __future__ import annotations

import fnmatch
import json
import shlex
import tomllib
from pathlib import Path

import pytest

from agentflow.cli import EXIT_OK, EXIT_USAGE, EXIT_WAITING, main
from agentflow.commands import init

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "manifests"
LIBRARY = Path(init.__file__).resolve().parents[1] / init.LIBRARY


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTFLOW_MODEL_MODE", "offline")
    monkeypatch.delenv("AGENTFLOW_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def readme_commands(project: Path) -> list[list[str]]:
    """The commands of the first ```sh block of the project's README.md ("Run it offline")."""
    text = (project / "README.md").read_text(encoding="utf-8")
    body = text[text.index("```sh\n", text.index("## Run it offline")) + len("```sh\n"):]
    body = body[:body.index("```")]
    return [c for c in (shlex.split(line, comments=True) for line in body.splitlines()) if c]


def test_the_library_is_the_catalogue() -> None:
    folders = {p.name for p in LIBRARY.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert folders == set(init.TEMPLATES)
    for name in folders:
        files = {p.name for p in (LIBRARY / name).iterdir()}
        assert "README.md" in files and any(f.endswith(".yaml") for f in files), name


def test_list_names_every_template_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--list"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(init.TEMPLATES)
    assert all(len(line.split()) > 3 for line in lines)
    assert main(["init", "--list", "--json"]) == EXIT_OK
    assert [t["name"] for t in json.loads(capsys.readouterr().out)] == list(init.TEMPLATES)


def test_examples_link_to_the_templates_one_copy() -> None:
    """Each template manifest is also an example: examples/manifests/FILE is a link to it, not a copy."""
    for manifest in sorted(LIBRARY.glob("*/*.yaml")):
        example = EXAMPLES / manifest.name
        assert example.is_symlink(), f"{example} should link to {manifest}"
        assert example.resolve() == manifest.resolve()


def test_package_data_ships_every_template_file() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["agentflow"]
    for path in LIBRARY.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = path.relative_to(LIBRARY.parent).as_posix()
            assert any(fnmatch.fnmatch(relative, p) for p in patterns), f"{relative} is not package data"


@pytest.mark.parametrize("name", list(init.TEMPLATES))
def test_each_template_runs_offline_as_its_readme_says(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", f"my-{name}", "--template", name]) == EXIT_OK
    out = capsys.readouterr().out
    project = tmp_path / f"my-{name}"
    assert f"created my-{name} from template {name}" in out and f"agentflow validate my-{name}" in out
    manifests = sorted(p.name for p in project.glob("*.yaml"))
    assert manifests and (project / "README.md").is_file() and (project / ".gitignore").is_file()
    for manifest in manifests:
        text = (project / manifest).read_text()
        assert "examples/manifests/" not in text  # its comments name the project's files
        assert text == (LIBRARY / name / manifest).read_text().replace("examples/manifests/", "")
    # What init printed runs as printed, from here.
    printed = [shlex.split(line) for line in out.splitlines() if line.startswith("  agentflow ")]
    assert printed[0] == ["agentflow", "validate", f"my-{name}"]
    for argv in printed:
        code = main([*argv[1:], "--progress", "lines"] if argv[1] in ("run", "resume") else argv[1:])
        expected = EXIT_WAITING if "--no-wait" in argv else EXIT_OK
        assert code == expected, (argv, capsys.readouterr())
    # The README's offline block, line by line, from the project folder.
    monkeypatch.chdir(project)
    commands = readme_commands(project)
    ran: set[str] = set()
    for command in commands:
        assert command[0] == "agentflow", command
        argv = command[1:]
        if argv[0] in ("run", "resume"):
            ran.update(a for a in argv if a.endswith(".yaml"))
            argv += ["--progress", "lines"]
        code = main(argv)
        output = capsys.readouterr()
        expected = EXIT_WAITING if "--no-wait" in argv else EXIT_OK
        assert code == expected, (command, output.out[-2000:], output.err[-2000:])
        assert "Traceback" not in output.err
        if argv[0] == "resume":
            assert "Succeeded" in output.out, output.out[-2000:]
    assert ran == set(manifests), "the README runs every Workflow of the template"


def test_devops_waits_for_the_rollback_then_finishes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "ops", "--template", "devops"]) == EXIT_OK
    capsys.readouterr()
    assert main(["run", "ops/devops-agent.yaml", "--no-wait", "--json"]) == EXIT_WAITING
    waiting = json.loads(capsys.readouterr().out)
    phases = {n["node"]: n["phase"] for n in waiting["nodes"]}
    # the read-only tools ran without a human; the rollback waits
    assert [phases[f"triage/t{i}/call-1"] for i in (1, 2, 3)] == ["Succeeded"] * 3
    assert phases["triage/t4/call-1"] == "Waiting" and phases["report"] == "Pending"
    assert main(["approve", "latest", "triage/t4/call-1", "--by", "oncall", "--reason", "deploy"]) == EXIT_OK
    capsys.readouterr()
    assert main(["resume", "latest", "--json"]) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    assert done["phase"] == "Succeeded" and done["outputs"]["action"]
    assert {n["node"]: n["phase"] for n in done["nodes"]}["report"] == "Succeeded"


def test_devops_rejected_rollback_is_told_to_the_agent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "ops", "--template", "devops"]) == EXIT_OK
    assert main(["run", "ops/devops-agent.yaml", "--no-wait", "--json"]) == EXIT_WAITING
    assert main(["approve", "latest", "triage/t4/call-1", "--reject", "--reason", "not the deploy"]) == EXIT_OK
    capsys.readouterr()
    assert main(["resume", "latest", "--json"]) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    phases = {n["node"]: n["phase"] for n in done["nodes"]}
    assert done["phase"] == "Succeeded" and phases["triage/t4/call-1"] != "Succeeded"


def test_an_empty_folder_is_filled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["init", "empty", "--template", "fraud-detection"]) == EXIT_OK
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == [".gitignore", "README.md",
                                                                       "fraud-detection.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no staging folder left


def test_parents_are_created(tmp_path: Path) -> None:
    assert main(["init", "a/b/proj", "-t", "content-pipeline"]) == EXIT_OK
    assert (tmp_path / "a" / "b" / "proj" / "content-pipeline.yaml").is_file()


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err and captured.err.count("\n") == 1, captured
    assert captured.err.startswith("agentflow init: ")
    return captured.err


def test_a_folder_with_files_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "mine"
    project.mkdir()
    (project / "customer-support.yaml").write_text("my own\n")
    err = refused(["init", "mine", "--template", "support"], capsys)
    assert "DIR 'mine' is not empty" in err and "customer-support.yaml" in err
    assert [p.name for p in project.iterdir()] == ["customer-support.yaml"]
    assert (project / "customer-support.yaml").read_text() == "my own\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_file_or_a_link_is_not_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert "DIR 'notes.txt' exists and is not a folder" in refused(["init", "notes.txt", "-t", "devops"], capsys)
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    assert "DIR 'link' is a symbolic link" in refused(["init", "link", "-t", "devops"], capsys)
    assert "DIR 'notes.txt/proj'" in refused(["init", "notes.txt/proj", "-t", "devops"], capsys)
    assert "DIR: give the folder" in refused(["init", "", "-t", "devops"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "link", "notes.txt"]


def test_unknown_template_names_it_and_lists_the_known(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["init", "proj", "--template", "helpdesk"], capsys)
    assert "--template 'helpdesk': no such template" in err
    assert all(name in err for name in init.TEMPLATES)
    assert not Path("proj").exists()


def test_missing_arguments_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--template: give a template" in refused(["init", "proj"], capsys)
    assert "DIR: give the folder to create" in refused(["init", "--template", "devops"], capsys)
    assert "--list takes no DIR" in refused(["init", "proj", "--list"], capsys)
    assert "unrecognized arguments: --force" in refused(["init", "proj", "-t", "devops", "--force"], capsys)


def test_an_interrupted_init_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    real_fsync = init.os.fsync
    calls = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second file: written, not yet renamed into place
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(init.os, "fsync", fsync)
    assert main(["init", "proj", "--template", "support"]) == 130
    assert list(tmp_path.iterdir()) == []

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(init.os, "fsync", no_space)
    assert "DIR 'proj': cannot write it: No space left on device" in refused(["init", "proj", "-t", "support"],
                                                                            capsys)
    assert list(tmp_path.iterdir()) == []


def test_init_dot_fills_the_working_folder_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    inode = Path(".").stat().st_ino
    assert main(["init", ".", "--template", "document-analysis"]) == EXIT_OK
    assert Path(".").stat().st_ino == inode and Path("document-analysis.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_a_failed_move_into_an_empty_folder_leaves_it_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    real_rename = init.os.rename
    moves = []

    def rename(src: str, dst: str) -> None:
        moves.append(dst)
        if len(moves) == 2:
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(init.os, "rename", rename)
    assert "cannot write it: Input/output error" in refused(["init", "empty", "-t", "support"], capsys)
    assert list((tmp_path / "empty").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
