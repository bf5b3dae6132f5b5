"""How the local runner runs a ``container`` tool's command: isolated with bubblewrap, or as a plain subprocess.

On a cluster a container tool runs in its own step pod (gVisor, no capabilities, its NetworkPolicy). The
local runner has no image to run: it runs the ``command`` on the host. :func:`choose_sandbox` decides how,
from ``AGENTFLOW_CONTAINER_ISOLATION`` (``agentflow run --container-isolation``)::

    auto      (default) bubblewrap when ``bwrap`` is installed and works here (user namespaces allowed),
              else a plain subprocess, said once per run (stderr and the run's summary)
    bwrap     bubblewrap or nothing: a run with a container tool refuses to start without it
    off       a plain subprocess: the command runs as the current user (root in most CI), with the user's
              files and network; only its environment is limited (permissions.env)

Isolated (:meth:`ContainerSandbox.argv`), the command runs as ``nobody`` in new user, PID, IPC, UTS, cgroup and
network namespaces, with no capabilities, and sees only: the system's programs and libraries read-only
(``/usr``, ``/bin``, ``/lib*``, a few files of ``/etc`` such as the TLS certificates, never ``/etc/shadow``),
its ``permissions.readPaths`` read-only, an empty ``/tmp`` (its working directory), ``/proc`` and a minimal
``/dev``. No network unless ``permissions.egressHosts`` grants some (then the host's network, all of it:
locally the hosts cannot be enforced, which the run's warning says). It dies with the runner. A command
outside the system's directories (a virtualenv's python, a script of your project) needs its folder in
``permissions.readPaths``; a tool that writes the host's files is not a container tool (``off`` runs it).

Why ``auto`` isolates by default: a container tool's contract is already "JSON on stdin, JSON on stdout, only
the granted environment"; a tool that keeps it runs the same isolated, and one that reaches for the user's
files or the network without a grant is exactly what should fail. ``unshare`` alone is not offered: without
a root file system of its own it cannot hide the user's files, which is the point.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agentflow.models import ToolSpec

__all__ = ["ISOLATION_ENV", "MODES", "ContainerSandbox", "SandboxUnavailable", "choose_sandbox"]

ISOLATION_ENV = "AGENTFLOW_CONTAINER_ISOLATION"
MODES = ("auto", "bwrap", "off")

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime",
        "/etc/ssl", "/etc/ca-certificates", "/etc/nsswitch.conf", "/etc/mime.types", "/etc/hosts",
        "/etc/resolv.conf")
NOBODY = 65534


class SandboxUnavailable(Exception):
    """Isolation was required (``bwrap``) and cannot be had here; the message says what to install or set."""


@dataclasses.dataclass(frozen=True)
class ContainerSandbox:
    """How container tools run: ``bwrap`` (the path of bubblewrap) or None for a plain subprocess."""

    bwrap: str | None = None
    why_not: str = ""
    """When not isolated: why (off, or what is missing)."""

    @property
    def mode(self) -> str:
        return "bwrap" if self.bwrap is not None else "off"

    def argv(self, command: Sequence[str], tool: ToolSpec) -> list[str]:
        """The argv that runs ``command`` for ``tool``: the command itself, or bubblewrap around it."""
        if self.bwrap is None:
            return list(command)
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
                "--cap-drop", "ALL", "--uid", str(NOBODY), "--gid", str(NOBODY)]
        if tool.permissions.egress_hosts:
            argv.append("--share-net")
        for path in _SYSTEM_DIRS:
            if Path(path).is_symlink():
                argv += ["--symlink", os.readlink(path), path]
            elif Path(path).exists():
                argv += ["--ro-bind", path, path]
        for path in _ETC:
            if Path(path).exists():
                argv += ["--ro-bind", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for path in tool.permissions.read_paths:  # after /tmp: a grant under /tmp stays visible
            argv += ["--ro-bind-try", path, path]
        argv += ["--chdir", "/tmp", "--", *command]
        return argv

    def warning(self, tools: Sequence[ToolSpec], user: str) -> str | None:
        """What a run with these container tools should be told once, or None."""
        if not tools:
            return None
        names = ", ".join(sorted(t.name for t in tools))
        if self.bwrap is None:
            return (f"container tools ({names}) run as plain subprocesses as user {user}, with its files and "
                    f"network and no isolation ({self.why_not}); install bubblewrap (apt-get install bubblewrap) "
                    f"to isolate them, or set {ISOLATION_ENV}=bwrap to refuse to run without it")
        open_net = sorted(t.name for t in tools if t.permissions.egress_hosts)
        if open_net:
            return (f"container tools {', '.join(open_net)} are granted egressHosts: locally they get the host's "
                    "whole network (the hosts are enforced on a cluster only)")
        return None


def _works(bwrap: str) -> str | None:
    """Why bubblewrap cannot isolate here (user namespaces disabled, a seccomp profile...), or None."""
    tool = ToolSpec.model_validate({"name": "probe", "container": {"image": "-", "command": ["true"]}})
    probe = ContainerSandbox(bwrap).argv(["true"], tool)
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} did not run: {exc}"
    if done.returncode != 0:
        return f"{bwrap} cannot isolate here: {done.stderr.strip()[:300] or f'exit {done.returncode}'}"
    return None


@functools.cache
def _probe(bwrap: str) -> str | None:
    return _works(bwrap)


def choose_sandbox(env: Mapping[str, str], *, which: Callable[[str], str | None] = shutil.which,
                   probe: Callable[[str], str | None] = _probe) -> ContainerSandbox:
    """The sandbox ``AGENTFLOW_CONTAINER_ISOLATION`` asks for (see the module docstring).

    ValueError for a value that is not a mode; SandboxUnavailable when ``bwrap`` is required and unusable."""
    mode = (env.get(ISOLATION_ENV) or "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"{ISOLATION_ENV}={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "off":
        return ContainerSandbox(None, f"{ISOLATION_ENV}=off")
    bwrap = which("bwrap")
    problem = "bubblewrap (bwrap) is not installed" if bwrap is None else probe(bwrap)
    if problem is None and bwrap is not None:
        return ContainerSandbox(bwrap)
    if mode == "bwrap":
        raise SandboxUnavailable(f"{ISOLATION_ENV}=bwrap: {problem}; install bubblewrap (apt-get install "
                                 f"bubblewrap) where user namespaces are allowed, or set {ISOLATION_ENV}=auto")
    return ContainerSandbox(None, problem or "")
