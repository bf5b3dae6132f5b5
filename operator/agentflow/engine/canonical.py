"""Canonical JSON: the one byte encoding of a JSON value that the journal hashes.

Canonical JSON (:func:`canonical_json`) is orjson with sorted keys: UTF-8, no
whitespace. Only JSON values are accepted (dict with str keys, list, tuple, str,
int, float, bool, None); NaN, infinity, sets, bytes, datetimes and other objects
are rejected with an error naming the key path, because they would not read back
as the value that was hashed. Pure: no I/O.

Errors::

    TypeError    a value of a type JSON does not have (set, bytes, object, non-string key)
    ValueError   a value JSON cannot carry faithfully (NaN, infinity, an integer out of
                 the 64-bit range, a lone surrogate, nesting deeper than 254 levels)

Besides :func:`canonical_json`, the journal uses the pieces directly on its hot
path: :func:`is_plain` (a fast check that needs no conversion),
:func:`check_json` (the slow check that names the path of a bad value),
:func:`to_builtin` (orjson's ``default`` hook) and :data:`ORJSON_OPTIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["ORJSON_OPTIONS", "canonical_json", "check_json", "encode", "is_plain", "to_builtin"]

ORJSON_OPTIONS = orjson.OPT_SORT_KEYS
"""The orjson options of canonical JSON."""

_MAX_DEPTH = 254  # orjson refuses deeper nesting; say so with a path instead
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can encode
_dumps = orjson.dumps


def is_plain(v: Any, depth: int) -> bool:
    """Fast check: True when ``v`` is made only of exact builtin JSON types.

    False does not mean invalid: subclasses and read-only mappings are fine too,
    :func:`check_json` decides those (and names the path of anything invalid).
    Leaves are checked inline (no call per leaf): this runs on every append.
    ``x - x == 0.0`` is False exactly for NaN and the infinities.
    """
    t = type(v)
    if t is dict:
        if depth >= _MAX_DEPTH:
            return False
        for k, x in v.items():
            if type(k) is not str:
                return False
            t = type(x)
            if t is str or x is None or t is bool:
                continue
            if t is float:
                if x - x != 0.0:
                    return False
            elif t is int:
                if not -9223372036854775808 <= x <= 18446744073709551615:
                    return False
            elif not is_plain(x, depth + 1):
                return False
        return True
    if t is list or t is tuple:
        if depth >= _MAX_DEPTH:
            return False
        for x in v:
            t = type(x)
            if t is str or x is None or t is bool:
                continue
            if t is float:
                if x - x != 0.0:
                    return False
            elif t is int:
                if not -9223372036854775808 <= x <= 18446744073709551615:
                    return False
            elif not is_plain(x, depth + 1):
                return False
        return True
    if t is str or t is bool or v is None:
        return True
    if t is float:
        return bool(v - v == 0.0)
    if t is int:
        return bool(_INT_MIN <= v <= _INT_MAX)
    return False


def _join(path: str, key: str) -> str:
    if not key.isidentifier():
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def check_json(v: Any, path: str, depth: int = 0) -> None:
    """Raise TypeError/ValueError naming ``path`` if ``v`` is not a JSON value."""
    where = path or "value"
    if v is None or isinstance(v, bool):
        return
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{where}: string is not valid UTF-8 ({e.reason}); remove lone surrogates") from None
        return
    if isinstance(v, int):
        if not _INT_MIN <= v <= _INT_MAX:
            raise ValueError(f"{where}: integer {v} is out of the 64-bit range; store it as a string")
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{where}: {v} is not valid JSON (NaN and infinity are not allowed); use null or a string")
        return
    if depth >= _MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {_MAX_DEPTH} levels; flatten the value")
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; JSON object keys must be strings")
            check_json(k, f"{where} key {k!r}", depth + 1)
            check_json(x, _join(path, k), depth + 1)
        return
    if isinstance(v, list | tuple):
        for i, x in enumerate(v):
            check_json(x, f"{path}[{i}]", depth + 1)
        return
    raise TypeError(
        f"{where}: type {type(v).__name__!r} is not a JSON type; "
        "convert it to dict, list, str, int, float, bool or None"
    )


def to_builtin(o: Any) -> Any:
    """orjson ``default`` hook for the non-builtin types :func:`check_json` accepted."""
    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, tuple):
        return list(o)
    if isinstance(o, float):
        return float(o)
    raise TypeError(f"a {type(o).__name__} is not a JSON value")


def encode(obj: Any, path: str) -> bytes:
    """Canonical bytes of ``obj``; the happy path costs one orjson call."""
    if not is_plain(obj, 0):
        check_json(obj, path)
    try:
        return _dumps(obj, default=to_builtin, option=ORJSON_OPTIONS)
    except orjson.JSONEncodeError as e:
        check_json(obj, path)  # raises with the path when it can find the culprit
        raise TypeError(f"{path or 'value'}: cannot be encoded as canonical JSON: {e}") from e


def canonical_json(obj: Any) -> bytes:
    """The canonical JSON encoding of a JSON value: sorted keys, no whitespace, UTF-8.

    Equal values give equal bytes whatever the key order. Raises TypeError
    (wrong type: set, bytes, object, non-string key) or ValueError (NaN,
    infinity, out-of-range integer, lone surrogate) naming the key path.
    """
    return encode(obj, "")
