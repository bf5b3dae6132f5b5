"""What every check returns, and the wording the checks share.

A check returns :data:`Finding` values: ``(path parts, message)`` with the path
relative to the resource body (``["spec", "steps", 2, "dependsOn", 0]``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["CEL_NAMES", "Finding", "PathParts", "StepCheck", "known_names", "strings_in"]

PathParts = list[str | int]
Finding = tuple[PathParts, str]
StepCheck = Callable[[str], str | None]
"""Given X of an expression's steps.X: why it may not be read there, or None."""

# Names CEL itself resolves (type names), allowed wherever an identifier is.
CEL_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)


def known_names(names: Iterable[str], what: str) -> str:
    """The end of a message about an unknown name: the names that do exist (at most 12 shown)."""
    ordered = sorted(names)
    if not ordered:
        return f"there are no {what}"
    shown = ", ".join(ordered[:12]) + (f", ... ({len(ordered)} in all)" if len(ordered) > 12 else "")
    return f"{what}: {shown}"


def strings_in(value: Any, path: PathParts) -> Iterator[tuple[PathParts, str]]:
    """Every string in a JSON value with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, child in value.items():
            yield from strings_in(child, [*path, str(key)])
    elif isinstance(value, list | tuple):
        for i, child in enumerate(value):
            yield from strings_in(child, [*path, i])
