"""Composition: a PromptVersion's messages may include named parts of PromptVersions (``spec.parts``).

A message ``{include: {prompt: P, part: X}}`` stands for the messages of part X of PromptVersion P (its own
name for its own parts); a part's messages may include parts in turn. :func:`compose` returns the
PromptVersion with every include replaced by the messages it stands for (roles kept, templates rendered
later over the including step's inputs). :class:`CompositionError` names the field of the including
PromptVersion (``spec.messages[2].include.part``, ``spec.parts.policy[0].include.prompt``) and, for a
cycle, the chain (``a:policy -> b:rules -> a:policy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agentflow.models import PromptMessage, PromptVersion

__all__ = ["MAX_INCLUDE_DEPTH", "CompositionError", "compose", "composition_findings"]

MAX_INCLUDE_DEPTH = 8
"""Includes nested deeper than this are refused (a part that includes a part that includes ...)."""

Path = list[str | int]


class CompositionError(ValueError):
    """An include that cannot be resolved; ``path`` is the field of the including PromptVersion."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _expand(messages: Sequence[PromptMessage], path: Path, owner: PromptVersion,
            prompts: Mapping[str, PromptVersion], chain: tuple[str, ...], start: int = 0) -> list[PromptMessage]:
    out: list[PromptMessage] = []
    for i, message in enumerate(messages, start):
        ref = message.include
        if ref is None:
            out.append(message)
            continue
        where: Path = [*path, i, "include"]
        target = owner if ref.prompt == owner.metadata.name else prompts.get(ref.prompt)
        if target is None:
            known = ", ".join(sorted(prompts)[:12]) or "none"
            raise CompositionError([*where, "prompt"], f"unknown PromptVersion {ref.prompt!r}; PromptVersions: {known}")
        if ref.part not in target.spec.parts:
            known = ", ".join(sorted(target.spec.parts)) or "none"
            raise CompositionError([*where, "part"], f"PromptVersion {ref.prompt!r} has no part {ref.part!r} in "
                                   f"spec.parts; its parts: {known}")
        key = f"{ref.prompt}:{ref.part}"
        if key in chain:
            cycle = " -> ".join([*chain[chain.index(key):], key])
            raise CompositionError(where, f"include cycle: {cycle}")
        if len(chain) >= MAX_INCLUDE_DEPTH:
            raise CompositionError(where, f"includes nested deeper than {MAX_INCLUDE_DEPTH}: "
                                   f"{' -> '.join([*chain, key])}")
        try:
            out.extend(_expand(target.spec.parts[ref.part], ["spec", "parts", ref.part], target, prompts,
                               (*chain, key)))
        except CompositionError as exc:
            if target is owner:  # the path already names a field of the including PromptVersion
                raise
            inner = ".".join(str(p) for p in exc.path)
            raise CompositionError(where, f"{key}: {exc.message} (at PromptVersion {target.metadata.name!r} "
                                   f"{inner})") from None
    return out


def compose(prompt: PromptVersion, prompts: Mapping[str, PromptVersion]) -> PromptVersion:
    """``prompt`` with every include resolved (itself when it has none); CompositionError otherwise."""
    if not any(m.include is not None for m in prompt.spec.messages):
        return prompt
    messages = _expand(prompt.spec.messages, ["spec", "messages"], prompt, prompts, ())
    return prompt.model_copy(update={"spec": prompt.spec.model_copy(update={"messages": messages})})


def composition_findings(prompt: PromptVersion, prompts: Mapping[str, PromptVersion]) -> list[tuple[Path, str]]:
    """Every include of the messages and of each part that cannot be resolved, with its path."""
    findings: list[tuple[Path, str]] = []
    sources: list[tuple[Path, Sequence[PromptMessage], tuple[str, ...]]] = [
        (["spec", "messages"], prompt.spec.messages, ())]
    sources += [(["spec", "parts", k], v, (f"{prompt.metadata.name}:{k}",))
                for k, v in sorted(prompt.spec.parts.items())]
    for path, messages, chain in sources:
        for i, message in enumerate(messages):
            if message.include is None:
                continue
            try:
                _expand([message], path, prompt, prompts, chain, start=i)
            except CompositionError as exc:
                findings.append((exc.path, exc.message))
    return findings
