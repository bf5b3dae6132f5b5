"""Keys of the PII tokens and the run's token map, sealed with AES-GCM.

Keys::

    master key   32 random bytes: AGENTFLOW_PII_KEY (base64, urlsafe or standard), else the file
                 STATE_DIR/pii.key (created 0600 on first use, the local runner's ROOT is .agentflow),
                 else an ephemeral key of this process (tokens then stable within the process only)
    run key      HMAC-SHA256(master key, "agentflow-pii/run/" + run id): keys the tokens of one run
                 (agentflow.security.pii.token_for) and seals that run's token map

The sealed map is ``base64(nonce(12) | AES-GCM(run key', JSON {token: value}, aad=run id))`` with run key'
derived from the run key for sealing only, so the file of one run cannot be passed off as another's.
:class:`LocalTokenMapStore` keeps it at ``ROOT/runs/RUN_ID/pii-tokens.enc`` (0600), merged under a lock
file so concurrent attempts of one run do not lose each other's tokens.

In a step pod the master key comes from AGENTFLOW_PII_KEY (a Secret the operator mounts); without it the
pod's tokens are stable within the attempt only, and each attempt restores what it redacted itself.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import TokenMapError
from .pii import TokenMap

PII_KEY_ENV = "AGENTFLOW_PII_KEY"
KEY_FILE = "pii.key"
MAP_FILE = "pii-tokens.enc"


def decode_key(text: str, where: str) -> bytes:
    """32 bytes from base64 text (urlsafe or standard, padding optional); TokenMapError names ``where``."""
    raw = text.strip()
    try:
        key = base64.b64decode(raw.replace("-", "+").replace("_", "/") + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TokenMapError(f"{where} is not base64: {exc}; generate one with: openssl rand -base64 32") from exc
    if len(key) != 32:
        raise TokenMapError(
            f"{where} holds {len(key)} bytes, expected 32; generate one with: openssl rand -base64 32"
        )
    return key


def load_or_create_key_file(state_dir: str | Path) -> bytes:
    """The master key in STATE_DIR/pii.key, created (0600, exclusive) when absent."""
    path = Path(state_dir) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise TokenMapError(
                f"{path} is readable by other users (mode {mode:o}); chmod 600 it (it keys the PII tokens)"
            ) from None
        return decode_key(path.read_text("ascii"), str(path))
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii") + "\n")
    return decode_key(path.read_text("ascii"), str(path))


class RunKeys:
    """Derives the per-run key from the master key."""

    def __init__(self, master: bytes) -> None:
        if len(master) != 32:
            raise TokenMapError(f"the PII master key must be 32 bytes, got {len(master)}")
        self._master = master

    @classmethod
    def ephemeral(cls) -> RunKeys:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_env(cls, env: Mapping[str, str], state_dir: str | Path | None = None) -> RunKeys:
        """AGENTFLOW_PII_KEY, else STATE_DIR/pii.key (created), else an ephemeral key."""
        text = env.get(PII_KEY_ENV, "").strip()
        if text:
            return cls(decode_key(text, PII_KEY_ENV))
        if state_dir is not None:
            return cls(load_or_create_key_file(state_dir))
        return cls.ephemeral()

    def run_key(self, run_id: str) -> bytes:
        return hmac.new(self._master, b"agentflow-pii/run/" + run_id.encode(), hashlib.sha256).digest()


def _sealing_key(run_key: bytes) -> bytes:
    return hmac.new(run_key, b"agentflow-pii/seal", hashlib.sha256).digest()


def seal(tokens: TokenMap, run_key: bytes, run_id: str) -> bytes:
    """The token map encrypted and authenticated for this run (base64 text as bytes)."""
    nonce = secrets.token_bytes(12)
    plain = json.dumps(tokens.items(), sort_keys=True, ensure_ascii=False).encode()
    sealed = AESGCM(_sealing_key(run_key)).encrypt(nonce, plain, run_id.encode())
    return base64.b64encode(nonce + sealed)


def unseal(data: bytes, run_key: bytes, run_id: str) -> TokenMap:
    """The token map of ``seal``; TokenMapError when the key or run id differ or the data was changed."""
    try:
        raw = base64.b64decode(data, validate=True)
        plain = AESGCM(_sealing_key(run_key)).decrypt(raw[:12], raw[12:], run_id.encode())
        items = json.loads(plain)
    except (binascii.Error, ValueError, InvalidTag) as exc:
        raise TokenMapError(
            f"the sealed PII token map of run {run_id!r} cannot be opened (wrong {PII_KEY_ENV} or pii.key, "
            "or the file was modified)"
        ) from exc
    if not isinstance(items, dict) or not all(isinstance(v, str) for v in items.values()):
        raise TokenMapError(f"the PII token map of run {run_id!r} is not an object of strings")
    return TokenMap(items)


class TokenMapStore(Protocol):
    """Where the sealed token map of a run is kept between attempts."""

    def load(self, run_id: str, run_key: bytes) -> TokenMap: ...

    def merge(self, run_id: str, run_key: bytes, tokens: TokenMap) -> None: ...


class LocalTokenMapStore:
    """``ROOT/runs/RUN_ID/pii-tokens.enc``, beside the run's journal (blocking file I/O, small files)."""

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root)

    def path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise TokenMapError(f"run id {run_id!r} cannot name a directory")
        return self._root / "runs" / run_id / MAP_FILE

    def load(self, run_id: str, run_key: bytes) -> TokenMap:
        path = self.path(run_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return TokenMap()
        return unseal(data, run_key, run_id)

    def merge(self, run_id: str, run_key: bytes, tokens: TokenMap) -> None:
        if not len(tokens):
            return
        path = self.path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            merged = self.load(run_id, run_key)
            merged.update(tokens)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(seal(merged, run_key, run_id))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            os.close(lock_fd)
