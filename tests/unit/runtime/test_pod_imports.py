"""The step runtime image installs agentflow without the operator extras: what a step pod imports must not
need asyncpg, kopf, kubernetes or nats (a pod that cannot import crashes before it can report anything)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

OPERATOR_ONLY = ("asyncpg", "kopf", "kubernetes", "nats")


def test_the_step_entry_point_imports_without_the_operator_extras() -> None:
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {OPERATOR_ONLY!r}:
                    raise ImportError("not in the runtime image: " + name)
        sys.meta_path.insert(0, Block())
        import agentflow.cli, agentflow.runtime.step, agentflow.runner.session, agentflow.executors.stepproc
        import agentflow.security.pii, agentflow.tools.wasm, agentflow.storage.audit_file
        import agentflow.storage.memory_ledger, agentflow.gateway.local, agentflow.executors.access
        import agentflow.examples.order_server  # the example's MCP server, started in the pod (python -m)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
