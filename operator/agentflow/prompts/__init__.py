"""PromptOps decisions, pure: what an evaluation concludes, which version of a family a run gets, what a
prompt includes.

    assertions.py   one assertion over a case's output -> a Verdict (passed, score, why)
    suite.py        the judge's and the pairwise comparison's PromptVersions (built, not loaded), their answers
                    read back as Verdicts, a suite's results summarised against its thresholds
    rollout.py      a family's versions and rollout state -> the version a run gets (hash of run id + family)
    compose.py      includes of named parts of other PromptVersions, resolved (cycles and missing parts named)

Nothing here does I/O, reads a clock or draws random numbers: the local runner (``agentflow prompt eval``,
``agentflow run``) and the operator call the same functions and get the same answers.
"""
