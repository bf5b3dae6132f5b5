"""A generated corpus of hostile and careless manifests, by class, with what each must end in.

Every case is a few files and the commands run on them (``agentflow validate`` and ``agentflow run --no-wait``,
in a folder of their own). What a command must end in:

    Refused(*names)   exit 2, no traceback, and the message names each of ``names`` (the file, ``file:line``, the
                      field path, the limit...)
    Runs()            a clean end: exit 0 (succeeded), 1 (the run failed, with its reason) or 3 (waits for a
                      human); never a traceback

The classes are those of the issue "Hostile and careless input: nothing crashes, hangs or escapes" (numbers,
YAML bombs and nesting, sizes, files and URLs, structure, inputs, runs that cannot progress); worker.py runs
the commands, test_corpus.py checks them, report.py prints the table of a code base (``--pythonpath``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

__all__ = ["CASES", "Case", "Command", "Refused", "Runs"]

HEAD = "apiVersion: agentflow.dev/v1alpha1\n"
TOOLS = """---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: tools}
spec:
  tools:
  - name: echo
    builtin: {name: echo}
"""


@dataclasses.dataclass(frozen=True)
class Refused:
    """Exit 2 naming every one of ``names``."""

    names: tuple[str, ...]

    def __init__(self, *names: str) -> None:
        object.__setattr__(self, "names", names)


@dataclasses.dataclass(frozen=True)
class Runs:
    """A clean end: exit 0, 1 or 3 (``codes``), no traceback; ``names`` in the output (e.g. a run's reason)."""

    codes: tuple[int, ...] = (0, 1, 3)
    names: tuple[str, ...] = ()


Expect = Refused | Runs


@dataclasses.dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    expect: Expect


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    kind: str  # the class of the table
    files: dict[str, str | bytes]
    commands: tuple[Command, ...]
    symlinks: dict[str, str] = dataclasses.field(default_factory=dict)


def workflow(spec: str, name: str = "w") -> str:
    """A Workflow document with ``spec`` (indented YAML under ``spec:``) and the echo ToolPolicy."""
    return f"{HEAD}kind: Workflow\nmetadata: {{name: {name}}}\nspec:\n{spec}" + TOOLS


STEP = "  steps:\n  - {name: a, kind: tool, tool: echo}\n"


def both(file: str, *names: str) -> tuple[Command, ...]:
    """validate and run must both refuse, naming ``names``."""
    return (Command(("validate", file), Refused(*names)),
            Command(("run", "--no-wait", "--progress", "none", file), Refused(*names)))


def runs(file: str, *names: str, codes: tuple[int, ...] = (0, 1, 3), argv: tuple[str, ...] = ()) -> tuple[
        Command, ...]:
    """validate accepts it and the run ends cleanly."""
    return (Command(("validate", file), Runs((0,))),
            Command(("run", "--no-wait", "--progress", "none", *argv, file), Runs(codes, names)))


def numbers() -> Iterator[Case]:
    """Numbers past every sane bound, NaN and infinity (YAML reads .inf, .nan and 1e400 as floats)."""
    for i, (spec, field, line) in enumerate([
        ("  timeoutSeconds: .inf\n" + STEP, "spec.timeoutSeconds", 5),
        ("  timeoutSeconds: 1e400\n" + STEP, "spec.timeoutSeconds", 5),
        ("  timeoutSeconds: 1e300\n" + STEP, "spec.timeoutSeconds", 5),
        ("  timeoutSeconds: -5\n" + STEP, "spec.timeoutSeconds", 5),
        ("  timeoutSeconds: .nan\n" + STEP, "spec.timeoutSeconds", 5),
        ("  parallelism: 0\n" + STEP, "spec.parallelism", 5),
        ("  parallelism: 100000000000000000000\n" + STEP, "spec.parallelism", 5),
        ("  retry: {limit: 1000000000}\n" + STEP, "spec.retry.limit", 5),
        ("  retry: {limit: 3, backoff: {factor: .inf}}\n" + STEP, "spec.retry.backoff.factor", 5),
        ("  retry: {limit: 3, backoff: {maxSeconds: 1e999}}\n" + STEP, "spec.retry.backoff.maxSeconds", 5),
        ("  steps:\n  - {name: a, kind: tool, tool: echo, timeoutSeconds: 1e400}\n", "spec.steps[0].timeoutSeconds", 6),
        ("  steps:\n  - {name: a, kind: tool, tool: echo, forEach: '[1]', parallelism: 99999999999}\n",
         "spec.steps[0].parallelism", 6),
        ("  steps:\n  - {name: a, kind: approval, approval: {timeoutSeconds: .inf}}\n",
         "spec.steps[0].approval.timeoutSeconds", 6),
        ("  stateMachine:\n    initial: s\n    maxVisits: 100000000000000000000000\n    states:\n"
         "    - {name: s, step: {name: s, kind: tool, tool: echo}, transitions: [{target: d}]}\n"
         "    - {name: d, final: Succeeded}\n", "spec.stateMachine.maxVisits", 7),
        ("  stateMachine:\n    initial: s\n    states:\n"
         "    - {name: s, maxVisits: -1, step: {name: s, kind: tool, tool: echo}, transitions: [{target: d}]}\n"
         "    - {name: d, final: Succeeded}\n", "spec.stateMachine.states[0].maxVisits", 8),
    ]):
        yield Case(f"number-workflow-{i}", "numbers", {"m.yaml": workflow(spec)},
                   both("m.yaml", f"m.yaml:{line}", field))
    agent = "kind: Agent\nmetadata: {name: a}\nspec:\n  role: r\n"
    others = [
        ("agent-max-tokens", agent + "  model: {name: m, maxTokens: 1e30}\n",
         "spec.model.maxTokens"),
        ("agent-temperature", agent + "  model: {name: m, temperature: .nan}\n",
         "spec.model.temperature"),
        ("agent-threshold", "kind: Agent\nmetadata: {name: a}\nspec:\n  role: r\n  model: {name: m}\n"
         "  injection: {threshold: .inf}\n", "spec.injection.threshold"),
        ("agent-memory", "kind: Agent\nmetadata: {name: a}\nspec:\n  role: r\n  model: {name: m}\n"
         "  memory: {maxMessages: 99999999999}\n", "spec.memory.maxMessages"),
        ("budget-usd", "kind: Budget\nmetadata: {name: b}\nspec:\n  limits: {usd: .inf}\n", "spec.limits.usd"),
        ("budget-tokens", "kind: Budget\nmetadata: {name: b}\nspec:\n  limits: {tokens: -1}\n", "spec.limits.tokens"),
        ("budget-threshold", "kind: Budget\nmetadata: {name: b}\nspec:\n  limits: {usd: 1}\n"
         "  alertThresholds: [.nan]\n",
         "spec.alertThresholds"),
        ("budget-quota", "kind: Budget\nmetadata: {name: b}\nspec:\n  limits: {usd: 1}\n"
         "  maxConcurrentSteps: 1e99\n", "spec.maxConcurrentSteps"),
        ("tool-fuel", "kind: ToolPolicy\nmetadata: {name: p}\nspec:\n  tools:\n  - name: t\n"
         "    wasm: {wat: '(module)', fuel: 100000000000000000000000000}\n", "spec.tools[0].wasm.fuel"),
        ("tool-timeout", "kind: ToolPolicy\nmetadata: {name: p}\nspec:\n  tools:\n  - name: t\n"
         "    builtin: {name: echo}\n    timeoutSeconds: .inf\n", "spec.tools[0].timeoutSeconds"),
        ("tool-rate", "kind: ToolPolicy\nmetadata: {name: p}\nspec:\n  tools:\n  - name: t\n"
         "    builtin: {name: echo}\n    rateLimit: {perMinute: 0}\n", "spec.tools[0].rateLimit.perMinute"),
        ("tool-cost", "kind: ToolPolicy\nmetadata: {name: p}\nspec:\n  tools:\n  - name: t\n"
         "    builtin: {name: echo}\n    costPerCallUsd: .nan\n", "spec.tools[0].costPerCallUsd"),
        ("prompt-weight", "kind: PromptVersion\nmetadata: {name: p}\nspec:\n  prompt: p\n  version: '1'\n"
         "  messages: [{role: user, content: hi}]\n  canary: {baseline: {name: q}, weight: 1e10}\n",
         "spec.canary.weight"),
    ]
    for name, body, field in others:
        yield Case(f"number-{name}", "numbers", {"m.yaml": HEAD + body}, (Command(("validate", "m.yaml"),
                                                                                   Refused("m.yaml:", field)),))


def _laughs(levels: int) -> str:
    lines = ['    a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"    a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return f"{HEAD}kind: Workflow\nmetadata: {{name: w}}\nspec:\n  inputs:\n" + "\n".join(lines) + "\n" + STEP


def yaml_bombs() -> Iterator[Case]:
    """Alias bombs, recursive aliases, deep nesting, huge files and many documents: refused early."""
    yield Case("yaml-billion-laughs", "yaml", {"m.yaml": _laughs(10)},
               both("m.yaml", "m.yaml:", "100,000 values", "billion laughs"))
    yield Case("yaml-recursive-alias", "yaml", {"m.yaml": f"{HEAD}kind: Workflow\nmetadata: {{name: w}}\nspec:\n"
                                                 f"  inputs: &x\n    y: *x\n{STEP}"},
               both("m.yaml", "m.yaml:5", "spec.inputs.y", "recursive"))
    yield Case("yaml-recursive-list", "yaml", {"m.yaml": f"{HEAD}kind: Workflow\nmetadata: {{name: w}}\nspec:\n"
                                                f"  inputs: {{x: &l [1, *l]}}\n{STEP}"},
               both("m.yaml", "m.yaml:5", "recursive"))
    deep = "[" * 20_000 + "]" * 20_000
    yield Case("yaml-deep-flow", "yaml", {"m.yaml": workflow(f"  inputs:\n    x: {deep}\n" + STEP)},
               both("m.yaml", "m.yaml:6", "deeper than 100 levels"))
    block = "".join(" " * (i + 4) + f"k{i}:\n" for i in range(1500)) + " " * 1504 + "v: 1\n"
    yield Case("yaml-deep-block", "yaml", {"m.yaml": workflow("  inputs:\n" + block + STEP)},
               both("m.yaml", "m.yaml:", "deeper than 100 levels"))
    yield Case("yaml-many-values", "yaml", {"m.yaml": workflow("  inputs:\n    x: [" + ",".join(["1"] * 150_000)
                                                                 + "]\n" + STEP)},
               both("m.yaml", "m.yaml:6", "more than 100,000 values"))
    yield Case("yaml-huge-file", "yaml", {"m.yaml": workflow("  inputs:\n    x: '" + "a" * (5 * 1024 * 1024) + "'\n"
                                                               + STEP)},
               both("m.yaml", "at most 4,194,304 bytes"))
    yield Case("yaml-many-documents", "yaml", {"m.yaml": "---\n{}\n" * 1200},
               both("m.yaml", "m.yaml:", "more than 1000 YAML documents"))
    yield Case("yaml-merge-key", "yaml", {"m.yaml": workflow("  base: &b {a: 1}\n  inputs:\n    <<: *b\n" + STEP)},
               both("m.yaml", "m.yaml:", "merge keys"))
    yield Case("yaml-duplicate-key", "yaml", {"m.yaml": workflow("  inputs: {a: 1, a: 2}\n" + STEP)},
               both("m.yaml", "m.yaml:5", "duplicate key"))
    yield Case("yaml-unclosed-quote", "yaml", {"m.yaml": workflow("  inputs: {a: 'x}\n" + STEP)},
               both("m.yaml", "m.yaml:", "malformed YAML"))
    yield Case("yaml-tab-indent", "yaml", {"m.yaml": workflow("\tinputs: {}\n" + STEP)},
               both("m.yaml", "m.yaml:", "malformed YAML"))
    yield Case("yaml-binary", "yaml", {"m.yaml": b"\x00\x01\xff\xfe garbage \x89PNG"},
               both("m.yaml", "not UTF-8"))
    yield Case("yaml-bad-timestamp-tag", "yaml", {"m.yaml": workflow("  inputs: {a: !!int 'x'}\n" + STEP)},
               both("m.yaml", "m.yaml:5", "spec.inputs.a"))


def emptiness() -> Iterator[Case]:
    """Files that hold nothing to run: an error naming the file, exit 2, never a silent 0."""
    yield Case("empty-file", "empty", {"m.yaml": ""}, both("m.yaml", "holds no manifest"))
    yield Case("empty-comments", "empty", {"m.yaml": "# nothing here\n# at all\n"}, both("m.yaml", "holds no manifest"))
    yield Case("empty-separators", "empty", {"m.yaml": "---\n---\n...\n"}, both("m.yaml", "holds no manifest"))
    yield Case("empty-null-doc", "empty", {"m.yaml": "null\n"}, both("m.yaml", "holds no manifest"))
    yield Case("empty-folder", "empty", {"sub/readme.txt": "no yaml here"}, both("sub", "no .yaml or .yml file"))
    yield Case("scalar-document", "structure", {"m.yaml": "just a string\n"}, both("m.yaml", "must be a mapping"))
    yield Case("list-document", "structure", {"m.yaml": "- a\n- b\n"}, both("m.yaml", "must be a mapping"))
    yield Case("not-a-regular-file", "empty", {}, both("/dev/zero", "not a regular file"))


def structure() -> Iterator[Case]:
    """Shapes the models and validation refuse, each naming the field."""
    yield Case("no-api-version", "structure", {"m.yaml": "kind: Workflow\nmetadata: {name: w}\nspec: {}\n"},
               both("m.yaml", "m.yaml", "apiVersion"))
    yield Case("unknown-kind", "structure", {"m.yaml": HEAD + "kind: Workflo\nmetadata: {name: w}\n"},
               both("m.yaml", "m.yaml:2", "kind", "unknown kind"))
    yield Case("unknown-field", "structure", {"m.yaml": workflow("  timeoutSecond: 5\n" + STEP)},
               both("m.yaml", "m.yaml:5", "spec.timeoutSecond", "unknown field"))
    yield Case("bad-name", "structure", {"m.yaml": workflow(STEP, name="Not_A_Name")},
               both("m.yaml", "m.yaml:3", "metadata.name"))
    yield Case("no-steps", "structure", {"m.yaml": workflow("  inputs: {}\n")},
               both("m.yaml", "m.yaml:4", "exactly one of steps, stateMachine or behaviorTree"))
    deep = "{type: step, step: {name: a, kind: tool, tool: echo}}"
    for _ in range(40):
        deep = f"{{type: invert, child: {deep}}}"
    yield Case("tree-too-deep", "structure", {"m.yaml": workflow(f"  behaviorTree: {deep}\n")},
               both("m.yaml", "spec.behaviorTree" + ".child" * 32, "33 levels deep"))
    yield Case("tree-run-bomb", "structure", {"m.yaml": workflow(
        "  behaviorTree: {type: repeat, count: 10000, child: {type: retry, limit: 100, child: "
        "{type: step, step: {name: a, kind: tool, tool: echo}}}}\n")},
        both("m.yaml", "m.yaml:5", "spec.behaviorTree", "1,010,000 times"))
    yield Case("tree-runs", "structure", {"m.yaml": workflow(
        "  behaviorTree: {type: selector, children: [{type: condition, when: 'inputs.nope'}, "
        "{type: repeat, count: 3, child: {type: step, step: {name: a, kind: tool, tool: echo}}}]}\n")},
        runs("m.yaml"))
    yield Case("dependency-cycle", "structure", {"m.yaml": workflow(
        "  steps:\n  - {name: a, kind: tool, tool: echo, dependsOn: [b]}\n"
        "  - {name: b, kind: tool, tool: echo, dependsOn: [a]}\n")},
        both("m.yaml", "m.yaml:6", "spec.steps[0].dependsOn", "cycle"))
    yield Case("unknown-dependency", "structure", {"m.yaml": workflow(
        "  steps:\n  - {name: a, kind: tool, tool: echo, dependsOn: [nope]}\n")},
        both("m.yaml", "m.yaml:6", "spec.steps[0].dependsOn[0]", "unknown step 'nope'"))
    yield Case("bad-cel", "structure", {"m.yaml": workflow(
        "  steps:\n  - {name: a, kind: tool, tool: echo, when: 'inputs.x ==='}\n")},
        both("m.yaml", "m.yaml:6", "spec.steps[0].when"))
    yield Case("unknown-tool", "structure", {"m.yaml": workflow("  steps:\n  - {name: a, kind: tool, tool: ghost}\n")},
               both("m.yaml", "m.yaml:6", "spec.steps[0].tool", "ghost"))
    yield Case("fsm-no-final", "structure", {"m.yaml": workflow(
        "  stateMachine:\n    initial: s\n    states:\n"
        "    - {name: s, step: {name: s, kind: tool, tool: echo}, transitions: [{target: s}]}\n")},
        both("m.yaml", "m.yaml:", "spec.stateMachine", "no final state"))
    yield Case("huge-integer-input", "structure",
               {"m.yaml": workflow("  inputs: {x: 100000000000000000000000}\n" + STEP)},
               both("m.yaml", "m.yaml:5", "spec.inputs.x", "64-bit"))
    yield Case("infinite-input", "structure", {"m.yaml": workflow("  inputs: {x: .inf}\n" + STEP)},
               both("m.yaml", "m.yaml:5", "spec.inputs.x", "NaN and infinity"))
    yield Case("lone-surrogate", "structure", {"m.yaml": workflow('  inputs: {x: "\\ud800"}\n' + STEP)},
               both("m.yaml", "m.yaml:5", "Unicode"))  # libyaml refuses it; a JSON body: test_values.py
    yield Case("env-name", "structure", {"m.yaml": HEAD + "kind: ToolPolicy\nmetadata: {name: p}\nspec:\n  tools:\n"
                                          "  - name: t\n    container: {image: i, command: [x]}\n"
                                          "    permissions: {env: {'A=B': '1'}}\n"},
               both("m.yaml", "m.yaml:8", "spec.tools[0].permissions.env", "'A=B'"))
    yield Case("runtime-class", "structure", {"m.yaml": HEAD + "kind: Agent\nmetadata: {name: a}\nspec:\n  role: r\n"
                                               "  model: {name: m}\n  runtimeClassName: Not_Valid\n"},
               both("m.yaml", "m.yaml:7", "spec.runtimeClassName"))
    yield Case("duplicate-policy", "structure", {"a.yaml": workflow(STEP), "b.yaml": TOOLS[4:]},
               both(".", "b.yaml:", "duplicate ToolPolicy name"))


def _steps(count: int) -> str:
    return "  steps:\n" + "".join(f"  - {{name: s{i}, kind: tool, tool: echo}}\n" for i in range(count))


def sizes() -> Iterator[Case]:
    """Workflows past the size limits: refused at validation naming the limit, before anything runs."""
    yield Case("too-many-steps", "sizes", {"m.yaml": workflow(_steps(2_500))},
               both("m.yaml", "m.yaml:5", "spec.steps", "at most 2000"))
    states = "".join(f"    - {{name: s{i}, transitions: [{{target: s{i + 1}}}]}}\n" for i in range(600))
    yield Case("too-many-states", "sizes", {"m.yaml": workflow(
        f"  stateMachine:\n    initial: s0\n    states:\n{states}    - {{name: s600, final: Succeeded}}\n")},
        both("m.yaml", "m.yaml:", "spec.stateMachine.states", "at most 500"))
    visits = "".join(f"    - {{name: s{i}, maxVisits: 10000, transitions: [{{target: s{i + 1}}}]}}\n"
                     for i in range(20))
    yield Case("too-many-visits", "sizes", {"m.yaml": workflow(
        f"  stateMachine:\n    initial: s0\n    states:\n{visits}    - {{name: s20, final: Succeeded}}\n")},
        both("m.yaml", "m.yaml:", "spec.stateMachine", "100,000 visits"))
    yield Case("inputs-too-big", "sizes", {"m.yaml": workflow("  inputs: {x: '" + "y" * 300_000 + "'}\n" + STEP)},
               both("m.yaml", "m.yaml:5", "spec.inputs", "262,144 allowed"))
    yield Case("fan-out-over-limit-at-run-time", "sizes", {"m.yaml": workflow(
        "  inputs: {items: []}\n  steps:\n  - {name: a, kind: tool, tool: echo, forEach: 'inputs.items'}\n")},
        runs("m.yaml", "TooManyItems", codes=(1,), argv=("--input", "items=[" + ",".join(["0"] * 10_001) + "]")))
    yield Case("wide-but-allowed", "sizes", {"m.yaml": workflow(_steps(2_000))}, runs("m.yaml", codes=(0,)))


def files_and_urls() -> Iterator[Case]:
    """Files a manifest names must stay in its folder; http tools only http(s) URLs."""
    policy = (HEAD + "kind: ToolPolicy\nmetadata: {{name: p}}\nspec:\n  tools:\n  - name: x\n"
              "    wasm: {{module: {module}}}\n")
    yield Case("wasm-path-escape", "files", {"m.yaml": policy.format(module="../../../../../../etc/passwd")},
               both("m.yaml", "m.yaml:7", "spec.tools[0].wasm.module", "outside the manifest's folder"))
    yield Case("wasm-symlink-escape", "files", {"m.yaml": policy.format(module="link.wat")},
               both("m.yaml", "m.yaml:7", "spec.tools[0].wasm.module", "outside"), symlinks={"link.wat": "/etc/passwd"})
    yield Case("wasm-missing-module", "files", {"m.yaml": workflow(
        "  steps:\n  - {name: a, kind: tool, tool: x}\n") + "  - name: x\n    wasm: {module: gone.wat}\n"},
        (Command(("run", "--no-wait", "--progress", "none", "m.yaml"), Refused("m.yaml:16", "spec.tools[1].wasm.module",
                                                                               "gone.wat")),))
    for i, url in enumerate(["file:///etc/passwd", "ftp://example.com/x", "http://", "javascript:alert(1)",
                             "http://a b/", "gopher://h/"]):
        body = (HEAD + "kind: ToolPolicy\nmetadata: {name: p}\nspec:\n  tools:\n  - name: x\n"
                f"    http: {{url: '{url}'}}\n")
        yield Case(f"http-url-{i}", "urls", {"m.yaml": body}, both("m.yaml", "m.yaml:7", "spec.tools[0].http.url"))


def progress() -> Iterator[Case]:
    """Runs that could never progress: refused at validation, and (past validation) failed with the reason."""
    spec = ("  steps:\n  - {name: a, kind: tool, tool: echo}\n  - {name: h, kind: tool, tool: echo, runOn: failure}\n"
            "  - {name: b, kind: tool, tool: echo, dependsOn: [h]}\n")
    yield Case("depends-on-exit-handler", "progress", {"m.yaml": workflow(spec)},
               both("m.yaml", "m.yaml:8", "spec.steps[2].dependsOn[0]", "exit handler"))
    always = spec.replace("runOn: failure", "runOn: always")
    yield Case("depends-on-always-handler", "progress", {"m.yaml": workflow(always)},
               both("m.yaml", "m.yaml:8", "exit handler"))
    yield Case("for-each-not-a-list", "progress", {"m.yaml": workflow(
        "  inputs: {x: 3}\n  steps:\n  - {name: a, kind: tool, tool: echo, forEach: 'inputs.x'}\n")},
        runs("m.yaml", "forEach must give a list", codes=(1,)))
    yield Case("approval-waits", "progress", {"m.yaml": workflow("  steps:\n  - {name: a, kind: approval}\n")},
               runs("m.yaml", codes=(3,)))


def inputs() -> Iterator[Case]:
    """--input: typos, bombs and bad YAML."""
    spec = ("  inputs: {ticket: default}\n  steps:\n"
            "  - {name: a, kind: tool, tool: echo, inputs: {t: '${{ inputs.ticket }}'}}\n")
    doc = {"m.yaml": workflow(spec)}
    yield Case("input-typo", "inputs", doc, (Command(("run", "--no-wait", "--progress", "none", "m.yaml", "--input",
                                                      "tiket=hi"), Refused("tiket", "ticket")),))
    yield Case("input-schema-typo", "inputs", {"m.yaml": workflow(
        "  inputSchema: {type: object, properties: {ticket: {type: string}}}\n" + STEP)},
        (Command(("run", "--no-wait", "--progress", "none", "m.yaml", "--input", "tiket=hi"),
                 Refused("--input tiket", "ticket")),))
    bomb = "{a0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]" + "".join(
        f", a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)) + "}"
    yield Case("input-bomb", "inputs", doc, (Command(("run", "--no-wait", "--progress", "none", "m.yaml", "--input",
                                                      f"ticket={bomb}"), Refused("--input ticket", "billion laughs")),))
    yield Case("input-deep", "inputs", doc, (Command(("run", "--no-wait", "--progress", "none", "m.yaml", "--input",
                                                      "ticket=" + "[" * 5000 + "]" * 5000),
                                                     Refused("--input ticket", "deeper than 100 levels")),))
    yield Case("input-bad-yaml", "inputs", doc, (Command(("run", "--no-wait", "--progress", "none", "m.yaml",
                                                          "--input", "ticket={a: [}"), Refused("--input ticket")),))
    yield Case("input-known", "inputs", doc, runs("m.yaml", codes=(0,), argv=("--input", "ticket=hi")))


def flags_and_kinds() -> Iterator[Case]:
    """Flags refused before a run exists; values JSON cannot hold; schedules, triggers and notifications."""
    spec = "  inputs: {ticket: default}\n" + STEP
    doc = {"m.yaml": workflow(spec)}
    run = ("run", "--no-wait", "--progress", "none", "m.yaml")
    for i, (value, names) in enumerate([(".nan", ("--input ticket", "NaN")),
                                        ("!!binary aGVsbG8=", ("--input ticket", "!!binary")),
                                        ("-.inf", ("--input ticket", "infinity"))]):
        yield Case(f"input-not-json-{i}", "inputs", doc,
                   (Command((*run, "--input", f"ticket={value}"), Refused(*names)),))
    for i, value in enumerate(["0", "-1", "abc", "1e23", "100001"]):
        yield Case(f"max-parallel-{i}", "inputs", doc, (Command((*run, "--max-parallel", value),
                                                               Refused("--max-parallel", value)),))
    yield Case("workflow-not-there", "inputs", doc, (Command((*run, "--workflow", "nope"),
                                                            Refused("--workflow 'nope'", "Workflows: w")),))
    yield Case("state-dir-is-a-file", "files", doc, (Command(("--state-dir", "m.yaml", *run),
                                                             Refused("--state-dir m.yaml", "not a folder")),))
    yield Case("binary-in-a-manifest", "structure", {"m.yaml": workflow("  inputs: {x: !!binary aGVsbG8=}\n" + STEP)},
               both("m.yaml", "m.yaml:5", "spec.inputs.x", "!!binary"))
    template = (HEAD + "kind: WorkflowTemplate\nmetadata: {name: t}\nspec:\n" + STEP + "---\n" + HEAD
                + "kind: WorkflowSchedule\nmetadata: {name: s}\nspec:\n  workflowTemplateRef: {name: t}\n")
    for i, (line, names) in enumerate([
            ("  schedule: '\u00b2 7 * * *'\n", ("spec.schedule", "is not a number")),
            ("  schedule: '\uff11 7 * * *'\n", ("spec.schedule", "is not a number")),
            ("  schedule: '*/\u0663 * * * *'\n", ("spec.schedule", "step")),
            ("  schedule: '0 7 * * *'\n  timeZone: Europe\n", ("spec.timeZone", "unknown time zone 'Europe'")),
            ("  schedule: '0 7 * * *'\n  timeZone: Etc\n", ("spec.timeZone", "unknown time zone")),
            ("  schedule: '0 7 * * *'\n  timeZone: " + "A" * 5000 + "\n", ("spec.timeZone", "64")),
            ("  schedule: '0 7 * * *'\n  timeZone: ../../etc/passwd\n", ("spec.timeZone", "unknown time zone"))]):
        yield Case(f"schedule-{i}", "structure", {"m.yaml": template + line + TOOLS},
                   (Command(("validate", "m.yaml"), Refused(*names)),))
    trigger = (HEAD + "kind: WorkflowTemplate\nmetadata: {name: t}\nspec:\n" + STEP + "---\n" + HEAD
               + "kind: WorkflowTrigger\nmetadata: {name: g}\nspec:\n  workflowTemplateRef: {name: t}\n"
               "  auth: {hmac: {secretRef: {name: %s, key: %s}}}\n")
    for i, (name, key, field) in enumerate([("'Bad Name!'", "secret", "spec.auth.hmac.secretRef.name"),
                                            ("gh", "'../x'", "spec.auth.hmac.secretRef.key"),
                                            ("'UPPER/../x'", "secret", "spec.auth.hmac.secretRef.name")]):
        yield Case(f"trigger-secret-ref-{i}", "structure", {"m.yaml": trigger % (name, key) + TOOLS},
                   (Command(("validate", "m.yaml"), Refused(field)),))
    yield Case("notify-secret-ref", "structure", {"m.yaml": workflow(
        "  steps:\n  - name: a\n    kind: approval\n    approval:\n      notify:\n"
        "        webhookSecretRef: {name: 'UPPER/../x'}\n")},
        (Command(("validate", "m.yaml"), Refused("webhookSecretRef.name")),))


GENERATORS: tuple[Callable[[], Iterator[Case]], ...] = (numbers, yaml_bombs, emptiness, structure, sizes,
                                                         files_and_urls, progress, inputs, flags_and_kinds)
CASES: tuple[Case, ...] = tuple(case for generate in GENERATORS for case in generate())
