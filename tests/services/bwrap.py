"""bubblewrap for the tests of the local runner's container isolation (agentflow.tools.sandbox).

``ensure_bwrap()`` returns the path of ``bwrap``, installing the Debian ``bubblewrap`` package with apt-get when
it is missing and we are root (CI runs as root, so the isolation tests never skip there). Raises
BwrapUnavailable saying why otherwise; the tests skip on it, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["BwrapUnavailable", "ensure_bwrap"]

_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


class BwrapUnavailable(Exception):
    """bubblewrap is not installed and cannot be installed here."""


def ensure_bwrap() -> str:
    found = shutil.which("bwrap")
    if found is not None:
        return found
    if shutil.which("apt-get") is None:
        raise BwrapUnavailable("bubblewrap is not installed and there is no apt-get to install it with")
    if os.geteuid() != 0:
        raise BwrapUnavailable("bubblewrap is not installed and installing it needs root: run "
                               "`sudo apt-get install -y --no-install-recommends bubblewrap`")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "bubblewrap"]
    done = subprocess.run(install, env=_APT_ENV, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # most often: the package lists were never fetched
        subprocess.run(["apt-get", "update"], env=_APT_ENV, capture_output=True, text=True, check=False)
        done = subprocess.run(install, env=_APT_ENV, capture_output=True, text=True, check=False)
    found = shutil.which("bwrap")
    if done.returncode != 0 or found is None:
        raise BwrapUnavailable(f"`{' '.join(install)}` failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return found


if __name__ == "__main__":  # `make tools`: install it before the tests when we can, say why not otherwise
    try:
        print(f"bwrap: {ensure_bwrap()}")
    except BwrapUnavailable as exc:
        print(f"bwrap: {exc} (tests/unit/tools/test_sandbox.py will skip, or fail in CI)")
