"""Which PromptVersion of a family a run gets: the family's rollout state and a hash of (run id, family).

A family is the PromptVersions with the same ``spec.prompt``. Its rollout state is read from them:

    a PromptRollout (agentflow.models.rollout) with spec.prompt = the family:
        Promoted                      stable = its candidate, every run gets it
        any other phase               stable = its spec.stable, candidate = its spec.candidate at
                                      status.weight: the weight the operator has reached (0 before the
                                      operator has looked at this generation of the spec, WaitingForEvaluation,
                                      RolledBack, Failed), never a weight from the spec itself
    one version with spec.canary      candidate = it, stable = its canary.baseline (in the same family),
                                      candidate weight = canary.weight (percent of runs)
    none                              stable = the highest spec.version (numeric parts compared as numbers:
                                      1.10 > 1.9 > 1), every run gets it
    several candidates, or a canary   RolloutError naming them: one candidate at a time
    and a PromptRollout, or two
    PromptRollouts

A PromptRollout holds its outcome only while it exists: deleted, the family is back to the rules below it (the
highest version is stable), so a rolled-back candidate that is also the highest version would get the runs
again. Keep the RolledBack PromptRollout (or delete the candidate PromptVersion); after a promotion, the
candidate is normally the highest version anyway.

A run's bucket is the first 8 bytes of SHA-256("RUN_ID/FAMILY") mod 100; buckets below the weight get the
candidate. The same run id always gets the same version, and a run's choice is recorded when it starts
(RunStarted ``prompts``), so a resumed or replayed run keeps it even if the weight changed since.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from agentflow.models import PromptRollout, PromptVersion, StepSpec, Workflow

__all__ = [
    "Choice", "Rollout", "RolloutError", "bind", "bucket", "choices_for", "choose", "family_steps",
    "planned_version", "recorded", "resolve", "rollout_of", "rollout_weight", "version_key",
]

_PART = re.compile(r"\d+|[^\d.\-_+]+")


class RolloutError(ValueError):
    """The family's versions do not make one rollout (or a pinned version is not there); the message says
    which field to fix."""


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a version label: numeric parts as numbers, others as text (numbers sort after text)."""
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in _PART.findall(version))


@dataclasses.dataclass(frozen=True)
class Rollout:
    family: str
    stable: str
    candidate: str | None = None
    candidate_weight: int = 0

    def role(self, name: str) -> str:
        return "candidate" if name == self.candidate else "stable" if name == self.stable else "inactive"

    def weight(self, name: str) -> int:
        if name == self.candidate:
            return self.candidate_weight
        return 100 - self.candidate_weight if name == self.stable else 0


def rollout_weight(rollout: PromptRollout) -> int:
    """The candidate's weight the operator has reached for this generation of the rollout's spec (0 when its
    status is of another generation, or missing)."""
    status = rollout.status
    if status is None or status.weight is None or status.observed_generation != rollout.metadata.generation:
        return 0
    return status.weight


def _from_rollout(family: str, rollout: PromptRollout, names: set[str]) -> Rollout:
    where = f"PromptRollout {rollout.metadata.name!r}"
    for field, name in (("stable", rollout.spec.stable), ("candidate", rollout.spec.candidate)):
        if name not in names:
            raise RolloutError(f"{where} spec.{field}: {name!r} is not a PromptVersion of family {family!r}")
    status = rollout.status
    current = status is not None and status.observed_generation == rollout.metadata.generation
    if current and status is not None and status.phase == "Promoted":
        return Rollout(family, rollout.spec.candidate)
    return Rollout(family, rollout.spec.stable, rollout.spec.candidate, rollout_weight(rollout))


def rollout_of(family: str, versions: Iterable[PromptVersion], rollouts: Iterable[PromptRollout] = ()) -> Rollout:
    """The rollout state of ``family`` from its PromptVersions and PromptRollouts (others are ignored)."""
    members = sorted((p for p in versions if p.spec.prompt == family), key=lambda p: p.metadata.name)
    if not members:
        raise RolloutError(f"no PromptVersion has spec.prompt {family!r}")
    canaries = [p for p in members if p.spec.canary is not None]
    active = sorted((r for r in rollouts if r.spec.prompt == family), key=lambda r: r.metadata.name)
    if len(active) > 1:
        names = ", ".join(r.metadata.name for r in active)
        raise RolloutError(f"prompt family {family!r} has {len(active)} PromptRollouts ({names}): one at a time")
    if active and canaries:
        raise RolloutError(f"prompt family {family!r} has both PromptVersion {canaries[0].metadata.name!r} with "
                           f"spec.canary and PromptRollout {active[0].metadata.name!r}: remove spec.canary (a new "
                           "PromptVersion without it) or the PromptRollout")
    if active:
        return _from_rollout(family, active[0], {p.metadata.name for p in members})
    if len(canaries) > 1:
        names = ", ".join(p.metadata.name for p in canaries)
        raise RolloutError(f"prompt family {family!r} has {len(canaries)} candidates ({names}): spec.canary on one "
                           "PromptVersion of a family at a time")
    if not canaries:
        stable = max(members, key=lambda p: (version_key(p.spec.version), p.metadata.name))
        return Rollout(family, stable.metadata.name)
    candidate = canaries[0]
    assert candidate.spec.canary is not None
    baseline = candidate.spec.canary.baseline.name
    if baseline not in {p.metadata.name for p in members}:
        raise RolloutError(f"PromptVersion {candidate.metadata.name!r} spec.canary.baseline.name: {baseline!r} is "
                           f"not a PromptVersion of family {family!r}")
    return Rollout(family, baseline, candidate.metadata.name, candidate.spec.canary.weight)


def bucket(run_id: str, family: str) -> int:
    """The run's bucket for this family, 0 to 99."""
    return int.from_bytes(hashlib.sha256(f"{run_id}/{family}".encode()).digest()[:8], "big") % 100


@dataclasses.dataclass(frozen=True)
class Choice:
    """The PromptVersion a run got for one family, and why (the record kept in RunStarted)."""

    family: str
    name: str
    version: str
    reason: str  # pinned | stable | candidate
    bucket: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"family": self.family, "name": self.name, "version": self.version,
                               "reason": self.reason}
        if self.bucket is not None:
            out["bucket"] = self.bucket
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Choice:
        raw = d.get("bucket")
        return cls(str(d["family"]), str(d["name"]), str(d.get("version", "")), str(d.get("reason", "")),
                   int(raw) if raw is not None else None)


def choose(rollout: Rollout, run_id: str, prompts: Mapping[str, PromptVersion]) -> Choice:
    """The version run ``run_id`` gets: the candidate when its bucket is below the candidate's weight."""
    b = bucket(run_id, rollout.family)
    name, reason = ((rollout.candidate, "candidate") if rollout.candidate is not None and b < rollout.candidate_weight
                    else (rollout.stable, "stable"))
    return Choice(rollout.family, name, prompts[name].spec.version, reason, b)


def resolve(family: str, version: str | None, run_id: str, prompts: Mapping[str, PromptVersion],
            rollouts: Mapping[str, PromptRollout] | None = None) -> Choice:
    """A family reference's PromptVersion for a run: the pinned ``version`` when given, else the rollout's."""
    if version is not None:
        for name, p in sorted(prompts.items()):
            if p.spec.prompt == family and p.spec.version == version:
                return Choice(family, name, version, "pinned")
        have = sorted((p.spec.version for p in prompts.values() if p.spec.prompt == family), key=version_key)
        raise RolloutError(f"prompt family {family!r} has no version {version!r}; versions: "
                           f"{', '.join(have) or 'none'}")
    return choose(rollout_of(family, prompts.values(), (rollouts or {}).values()), run_id, prompts)


def planned_version(family: str, version: str | None, prompts: Mapping[str, PromptVersion],
                    rollouts: Mapping[str, PromptRollout] | None = None) -> str:
    """The PromptVersion a plan counts on before any run id exists (cost estimates): the pinned version, else
    the stable one. RolloutError when there is none."""
    if version is not None:
        return resolve(family, version, "", prompts).name
    return rollout_of(family, prompts.values(), (rollouts or {}).values()).stable


def family_steps(workflow: Workflow) -> list[StepSpec]:
    """The llm steps (of the DAG or the states) whose promptRef names a family."""
    spec = workflow.spec
    steps = list(spec.steps) if spec.state_machine is None else [
        s.step for s in spec.state_machine.states if s.step is not None]
    return [s for s in steps if s.prompt_ref is not None and s.prompt_ref.family is not None]


def choices_for(workflow: Workflow, prompts: Mapping[str, PromptVersion], run_id: str,
                recorded: Mapping[str, Choice] | None = None,
                rollouts: Mapping[str, PromptRollout] | None = None) -> dict[str, Choice]:
    """The PromptVersion of each family step of run ``run_id``, by step name: what the run recorded when it
    started (``recorded``, RunStarted ``prompts``), else decided now. RolloutError when a family cannot be."""
    out: dict[str, Choice] = {}
    for step in family_steps(workflow):
        ref = step.prompt_ref
        assert ref is not None and ref.family is not None
        kept = (recorded or {}).get(step.name)
        out[step.name] = kept if kept is not None else resolve(ref.family, ref.version, run_id, prompts,
                                                                             rollouts)
    return out


def recorded(data: Mapping[str, Any]) -> dict[str, Choice]:
    """The choices a RunStarted event's data recorded (``prompts``), by step."""
    raw = data.get("prompts") or {}
    return {str(k): Choice.from_dict(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def bind(workflow: Workflow, choices: Mapping[str, Choice]) -> Workflow:
    """The Workflow with each family step's promptRef replaced by the chosen PromptVersion's name (what the
    executors, the gateway and step pods read); the choices themselves are recorded in RunStarted."""
    if not choices:
        return workflow
    body = workflow.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec = body["spec"]
    steps = spec.get("steps") or [s["step"] for s in (spec.get("stateMachine") or {}).get("states", []) if "step" in s]
    for step in steps:
        choice = choices.get(step["name"])
        if choice is not None:
            step["promptRef"] = {"name": choice.name}
    return Workflow.model_validate(body)
