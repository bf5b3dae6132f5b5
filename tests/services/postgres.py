"""A real, throwaway PostgreSQL server for tests.

``start_postgres()`` finds the Debian server binaries (``/usr/lib/postgresql/VERSION/bin``), installs
the ``postgresql`` package with apt-get when they are missing (as root), initialises a cluster in a
temporary directory, starts it on 127.0.0.1 on a free port, creates a database and returns a
:class:`PostgresServer` whose ``dsn`` connects to it. ``PostgresServer.stop()`` stops the server and
removes the directory.

Set ``AGENTFLOW_TEST_POSTGRES_DSN`` to use a server you run yourself instead (nothing is started or
stopped then; tests create and delete only their own rows).

``start_postgres(pgvector=True)`` starts a server that has the pgvector extension (long-term memory). Debian
bookworm ships no pgvector package, so that server is the PostgreSQL 16.2 + pgvector that the PyPI package
``pgserver`` bundles (its ``pginstall/bin``), installed with pip into this interpreter's environment when missing
(``make services`` does it first, so no test skips for it on a cold machine); pgserver's own Python layer is not
used. ``AGENTFLOW_TEST_PGVECTOR_DSN`` names a pgvector-capable server of your own instead.

initdb and postgres refuse to run as root: as root, they run as the ``postgres`` system user (which
the Debian package creates) on directories owned by it.

Errors::

    PostgresUnavailable   PostgreSQL is not installed and cannot be installed here (no apt-get, not root,
                          the install failed): the caller may skip
    RuntimeError          it is installed but could not be started (the message holds the server log)
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ENV_DSN = "AGENTFLOW_TEST_POSTGRES_DSN"
ENV_PGVECTOR_DSN = "AGENTFLOW_TEST_PGVECTOR_DSN"
PGSERVER = "pgserver==0.1.4"
"""PostgreSQL 16.2 with pgvector, as a manylinux wheel."""
DATABASE = "agentflow_test"
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


class PostgresUnavailable(Exception):
    """PostgreSQL is not installed and cannot be installed on this machine."""


@dataclasses.dataclass
class PostgresServer:
    dsn: str
    data_dir: Path | None = None  # None: an external server we did not start
    bin_dir: Path | None = None
    base_dir: Path | None = None

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its files. Does nothing for an external server."""
        if self.data_dir is None or self.bin_dir is None or self.base_dir is None:
            return
        try:
            for mode in ("fast", "immediate"):
                done = _run_as_postgres(
                    [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"],
                    check=False,
                )
                if done.returncode == 0:
                    break
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` that has initdb and pg_ctl, or None."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bin_dir = Path(initdb).parent
        version = bin_dir.parent.name
        if (bin_dir / "pg_ctl").exists() and version.replace(".", "").isdigit():
            found.append((tuple(int(p) for p in version.split(".")), bin_dir))
    return max(found)[1] if found else None


def install_postgres() -> Path:
    """Install the Debian ``postgresql`` package; the bin directory. Raises PostgresUnavailable."""
    if shutil.which("apt-get") is None:
        raise PostgresUnavailable("PostgreSQL is not installed and there is no apt-get to install it with")
    if os.geteuid() != 0:
        raise PostgresUnavailable(
            "PostgreSQL is not installed and installing it needs root: run "
            "`sudo apt-get install -y --no-install-recommends postgresql`, or set "
            f"{ENV_DSN} to a server of your own"
        )
    install = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    done = subprocess.run(install, env=_APT_ENV, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # most often: the package lists were never fetched
        subprocess.run(["apt-get", "update"], env=_APT_ENV, capture_output=True, text=True, check=False)
        done = subprocess.run(install, env=_APT_ENV, capture_output=True, text=True, check=False)
    bin_dir = find_bin_dir()
    if done.returncode != 0 or bin_dir is None:
        raise PostgresUnavailable(f"`{' '.join(install)}` failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return bin_dir


def find_pgvector_bin_dir(python: str | None = None) -> Path | None:
    """The bin directory of pgserver's bundled PostgreSQL (it has pgvector) in ``python``'s environment (default:
    this interpreter's), or None when pgserver is not installed there."""
    if python is None:
        spec = importlib.util.find_spec("pgserver")  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            return None
        package = Path(next(iter(spec.submodule_search_locations)))
    else:
        done = subprocess.run([python, "-c", "import importlib.util as u; s = u.find_spec('pgserver'); "
                               "print(next(iter(s.submodule_search_locations)) if s else '')"],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0 or not done.stdout.strip():
            return None
        package = Path(done.stdout.strip())
    bin_dir = package / "pginstall" / "bin"
    vector = bin_dir.parent / "share" / "postgresql" / "extension" / "vector.control"
    return bin_dir if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists() and vector.exists() else None


def install_pgvector(python: str | None = None) -> Path:
    """pip install pgserver (PostgreSQL + pgvector) into ``python``'s environment (default: this interpreter's);
    its bin directory. Raises PostgresUnavailable."""
    python = python or sys.executable
    done = subprocess.run([python, "-m", "pip", "install", "-q", PGSERVER], capture_output=True, text=True,
                          check=False)
    importlib.invalidate_caches()
    bin_dir = find_pgvector_bin_dir(python)
    if done.returncode != 0 or bin_dir is None:
        raise PostgresUnavailable(f"`{python} -m pip install {PGSERVER}` (PostgreSQL with pgvector) failed (exit "
                                  f"{done.returncode}): {done.stderr[-2000:]}; or set {ENV_PGVECTOR_DSN}")
    return bin_dir


def _as_root() -> bool:
    return os.geteuid() == 0


def _run_as_postgres(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a server binary, as the postgres system user when we are root (initdb refuses root)."""
    if _as_root():
        argv = ["runuser", "-u", "postgres", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _give_to_postgres(path: Path) -> None:
    if _as_root():
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root but there is no `postgres` system user to run the server as; "
                "install the Debian postgresql package (it creates the user)"
            ) from None
        os.chown(path, user.pw_uid, user.pw_gid)


def start_postgres(*, attempts: int = 3, pgvector: bool = False) -> PostgresServer:
    """Start a throwaway server with a database ``agentflow_test``; see the module docstring."""
    external = os.environ.get(ENV_PGVECTOR_DSN if pgvector else ENV_DSN)
    if external:
        return PostgresServer(dsn=external)
    if pgvector:
        if _as_root():  # the server runs as the postgres user, which the Debian package creates
            find_bin_dir() or install_postgres()
        bin_dir = find_pgvector_bin_dir() or install_pgvector()
    else:
        bin_dir = find_bin_dir() or install_postgres()
    base = Path(tempfile.mkdtemp(prefix="agentflow-pg-"))
    try:
        base.chmod(0o755)  # the postgres user must reach the data and socket directories
        data, sockets, log = base / "data", base / "sock", base / "server.log"
        for d in (data, sockets):
            d.mkdir(mode=0o700)
            _give_to_postgres(d)
        log.touch()
        _give_to_postgres(log)
        _run_as_postgres(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"]
        )  # fmt: skip
        for _ in range(attempts):  # the free port can be taken between choosing and binding it
            port = _free_port()
            options = (
                f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            started = _run_as_postgres(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
                check=False,
            )
            if started.returncode == 0:
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start ({bin_dir}); server log:\n{log.read_text()[-4000:]}")
        server = PostgresServer(
            dsn=f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}", data_dir=data, bin_dir=bin_dir, base_dir=base
        )
        try:
            _run_as_postgres(
                [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE]
            )
        except BaseException:
            server.stop()
            raise
        return server
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


@contextlib.contextmanager
def running_postgres(*, pgvector: bool = False) -> Iterator[PostgresServer]:
    """``start_postgres()`` ... ``stop()``."""
    server = start_postgres(pgvector=pgvector)
    try:
        yield server
    finally:
        server.stop()
