"""`make quickstart` installs agentflow without the operator extra: every subcommand's --help, and every command
that needs no cluster, works there; what needs the extra says so in one line, never with a traceback.

The base install is simulated as the step pod's is (tests/unit/runtime/test_pod_imports.py): the operator extra's
modules cannot be imported. One subprocess runs every command in turn through ``agentflow.cli.main``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import OPERATOR_EXTRA_MODULES, OWN_PARSERS, build_parser

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "manifests"
QUICKSTART = str(EXAMPLES / "quickstart.yaml")
EXTRA = "pip install -e '.[operator]' in the repository"

# Commands of the cluster: without the extra, one line naming it.
NEEDS_EXTRA = {"operator", "gateway"}

# (argv, exit code): in order, in one state dir (the run comes first: later commands read it).
LOCAL: list[tuple[list[str], int]] = [
    (["validate", str(EXAMPLES)], 0),
    (["run", QUICKSTART, "--progress", "none"], 0),
    (["runs"], 0),
    (["show", "latest"], 0),
    (["verify", "latest"], 0),
    (["replay", "latest"], 0),
    (["diff", "latest", "latest"], 0),
    (["cost", QUICKSTART], 0),
    (["cost", "report"], 0),
    (["audit", "verify"], 0),
    (["audit", "export", "-o", "audit-export.jsonl"], 0),
    (["audit", "verify", "--file", "audit-export.jsonl", "--expect-head", "@audit-export.jsonl.head.json"], 0),
    (["events", "quickstart"], 0),
    (["memory", "list"], 0),
    (["memory", "search", "--agent", "quickstart-agent", "refund"], 0),
    (["init", "--list"], 0),
    (["init", "ops", "--template", "devops"], 0),  # the templates are package data, not the repository's
    (["run", "ops/devops-agent.yaml", "--no-wait", "--progress", "none"], 3),
]

# What reaches for the cluster's services: one line naming the extra, exit 2.
CLUSTER: list[list[str]] = [
    ["cost", QUICKSTART, "--postgres-dsn", "postgresql://127.0.0.1:1/x"],
    ["cost", "report", "--postgres-dsn", "postgresql://127.0.0.1:1/x"],
    ["audit", "verify", "--postgres-dsn", "postgresql://127.0.0.1:1/x"],
    ["memory", "list", "--postgres-dsn", "postgresql://127.0.0.1:1/x"],
    ["events", "--nats-url", "nats://127.0.0.1:1"],
    ["approve", "customer-support", "escalate", "-n", "default"],
]


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)  # type: ignore[arg-type]


def helps() -> list[list[str]]:
    argvs = [[name, "--help"] for name in subcommands()]
    nested = {"cost": ["report"], "audit": ["verify", "export"], "memory": ["search", "list", "forget"]}
    for name, subs in nested.items():
        argvs += [[name, sub, "--help"] for sub in subs]
    return argvs


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    argvs = helps() + [argv for argv, _ in LOCAL] + CLUSTER
    script = textwrap.dedent(f"""
        import contextlib, importlib.abc, io, json, os, sys
        BLOCKED = {OPERATOR_EXTRA_MODULES!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if any(name == m or name.startswith(m + ".") for m in BLOCKED):
                    raise ModuleNotFoundError("not in the base install: " + name, name=name)
        sys.meta_path.insert(0, Block())
        from agentflow.cli import main
        real, results = sys.stdout, {{}}
        for argv in {argvs!r}:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(argv)
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else 2
                except BaseException as e:
                    import traceback
                    traceback.print_exc()
                    code = "raised"
            results[" ".join(argv)] = {{"code": code, "out": out.getvalue(), "err": err.getvalue()}}
        real.write(json.dumps(results))
    """)
    cwd = tmp_path_factory.mktemp("base-install")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "AGENTFLOW_MODEL_MODE": "offline",
           "PYTHONPATH": ":".join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    parsed: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return parsed


def test_every_subcommand_is_covered() -> None:
    assert set(OWN_PARSERS) <= set(subcommands())
    assert {"run", "validate", "approve", "audit", "cost", "operator", "gateway"} <= set(subcommands())


@pytest.mark.parametrize("argv", helps(), ids=" ".join)
def test_help_works_or_names_the_extra(argv: list[str], results: dict[str, dict[str, Any]]) -> None:
    got = results[" ".join(argv)]
    assert "Traceback" not in got["err"], got["err"]
    if argv[0] in NEEDS_EXTRA:
        assert got["code"] == 2 and got["err"].count("\n") == 1 and EXTRA in got["err"], got
    else:
        assert got["code"] == 0 and "usage: agentflow" in got["out"], got


@pytest.mark.parametrize(("argv", "code"), LOCAL, ids=[" ".join(a) for a, _ in LOCAL])
def test_local_commands_work(argv: list[str], code: int, results: dict[str, dict[str, Any]]) -> None:
    got = results[" ".join(argv)]
    assert got["code"] == code and "Traceback" not in got["err"], got


@pytest.mark.parametrize("argv", CLUSTER, ids=" ".join)
def test_cluster_commands_name_the_extra(argv: list[str], results: dict[str, dict[str, Any]]) -> None:
    got = results[" ".join(argv)]
    assert got["code"] == 2 and "Traceback" not in got["err"] and EXTRA in got["err"], got
    assert got["err"].strip().count("\n") == 0, got["err"]
