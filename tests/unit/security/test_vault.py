"""Keys and the sealed token map: AES-GCM per run, key file 0600, clear errors naming the key source."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from agentflow.security import LocalTokenMapStore, RunKeys, TokenMap, TokenMapError
from agentflow.security.vault import PII_KEY_ENV, seal, unseal

KEY = RunKeys(b"\x07" * 32).run_key("run-a")


def test_seal_round_trips_and_holds_no_value_in_clear() -> None:
    tokens = TokenMap({"<EMAIL_ADDRESS_0123456789>": "ann@example.com"})
    sealed = seal(tokens, KEY, "run-a")
    assert b"ann@example.com" not in sealed and b"ann" not in base64.b64decode(sealed)
    assert unseal(sealed, KEY, "run-a").items() == tokens.items()


@pytest.mark.parametrize("how", ["other run", "other key", "tampered"])
def test_a_map_opens_only_for_its_run_with_its_key(how: str) -> None:
    sealed = seal(TokenMap({"<PERSON_0123456789>": "Ann"}), KEY, "run-a")
    if how == "other run":
        args = (sealed, KEY, "run-b")
    elif how == "other key":
        args = (sealed, RunKeys(b"\x08" * 32).run_key("run-a"), "run-a")
    else:
        raw = bytearray(base64.b64decode(sealed))
        raw[-1] ^= 1
        args = (base64.b64encode(bytes(raw)), KEY, "run-a")
    with pytest.raises(TokenMapError, match=PII_KEY_ENV):
        unseal(*args)


def test_run_keys_differ_per_run_and_master() -> None:
    keys = RunKeys(b"\x07" * 32)
    assert keys.run_key("a") != keys.run_key("b")
    assert keys.run_key("a") == RunKeys(b"\x07" * 32).run_key("a")
    assert RunKeys.ephemeral().run_key("a") != keys.run_key("a")


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    first = RunKeys.from_env({}, tmp_path).run_key("r")
    mode = stat.S_IMODE((tmp_path / "pii.key").stat().st_mode)
    assert mode == 0o600
    assert RunKeys.from_env({}, tmp_path).run_key("r") == first
    os.chmod(tmp_path / "pii.key", 0o644)
    with pytest.raises(TokenMapError, match="chmod 600"):
        RunKeys.from_env({}, tmp_path)


def test_env_key_wins_and_bad_keys_name_the_variable(tmp_path: Path) -> None:
    key = base64.b64encode(b"\x09" * 32).decode()
    assert RunKeys.from_env({PII_KEY_ENV: key}, tmp_path).run_key("r") == RunKeys(b"\x09" * 32).run_key("r")
    assert not (tmp_path / "pii.key").exists()
    with pytest.raises(TokenMapError, match=f"{PII_KEY_ENV} holds 3 bytes, expected 32"):
        RunKeys.from_env({PII_KEY_ENV: "YWJj"})
    with pytest.raises(TokenMapError, match=f"{PII_KEY_ENV} is not base64"):
        RunKeys.from_env({PII_KEY_ENV: "!!!"})


def test_local_store_merges_attempts_under_the_run_directory(tmp_path: Path) -> None:
    store = LocalTokenMapStore(tmp_path)
    store.merge("run-a", KEY, TokenMap({"<PERSON_0000000001>": "Ann"}))
    store.merge("run-a", KEY, TokenMap({"<PERSON_0000000002>": "Bob"}))
    path = tmp_path / "runs" / "run-a" / "pii-tokens.enc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.load("run-a", KEY).items() == {"<PERSON_0000000001>": "Ann", "<PERSON_0000000002>": "Bob"}
    assert len(store.load("run-b", KEY)) == 0
    with pytest.raises(TokenMapError, match="cannot name a directory"):
        store.load("../x", KEY)
