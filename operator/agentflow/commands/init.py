"""`agentflow init DIR --template NAME`: a new project folder from the template library, runnable offline at once.

::

    agentflow init DIR --template NAME   the template's manifests, its README.md and a .gitignore, into DIR
                                         (a new folder, or an empty one); then prints the commands to try
    agentflow init --list                the templates, one line each

The templates are package data (``agentflow/project_templates/NAME/``), so a ``pip install`` has them and the base
install (no operator extra) runs the command; ``examples/manifests/`` links to their manifests, so each manifest
exists once. Their comments name ``examples/manifests/FILE``: in the project they name ``FILE``, for commands run
from the project folder, as its README's are.

Nothing is overwritten and nothing is left half-written: the files are written and fsynced into a hidden folder
beside DIR (``.DIR.init-XXXXXXXX``), which is then renamed to DIR in one step. An existing empty DIR (``init .``
in a new folder) stays the same folder, so the files are staged inside it (``DIR/.init-XXXXXXXX``) and moved up one
by one, and taken out again if a move fails or init is interrupted. An interrupted init removes the staging
folder; a killed one may leave it behind, never a partial new DIR.

Errors::

    UsageError   an unknown template (the known ones listed), DIR a file, not empty, or not creatable, a bad
                 flag: exit 2 with one line naming the argument
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shlex
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from .inputs import EXIT_OK, EXIT_USAGE, Parser, UsageError

LIBRARY = "project_templates"
"""The folder of the package holding one folder per template."""

GITIGNORE = ".agentflow/\n"
"""The project's .gitignore: local runs' journals, keys and memory stay out of version control."""

EXAMPLES_PREFIX = "examples/manifests/"


@dataclasses.dataclass(frozen=True, slots=True)
class Template:
    """A template of the library: its folder's name, one line on what it does, the commands to try after init
    (``{dir}`` is the project folder)."""

    name: str
    summary: str
    try_next: tuple[str, ...]


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("support", "customer support: triage a ticket, answer or escalate to a human; and an agent loop "
             "with tools, a delegate and memory",
             ("agentflow run {dir}/customer-support.yaml",
              "agentflow run {dir}/customer-support.yaml --input ticket=\"Something is off, please help\" --no-wait",
              "agentflow approve latest escalate --by alice",
              "agentflow resume latest",
              "agentflow run {dir}/support-agent.yaml")),
    Template("document-analysis", "document analysis: summarize documents in parallel (fan-out), then combine "
             "the summaries (fan-in)",
             ("agentflow run {dir}/document-analysis.yaml",)),
    Template("content-pipeline", "content pipeline: draft, review, publish past a quality gate, notify on "
             "failure",
             ("agentflow run {dir}/content-pipeline.yaml --input topic=\"zero-downtime deploys\"",)),
    Template("fraud-detection", "fraud detection as a state machine: score, re-check the grey zone, block, "
             "approve or ask a human",
             ("agentflow run {dir}/fraud-detection.yaml",)),
    Template("content-moderation", "content moderation as a behavior tree: screen a post, then take it down, "
             "publish it or ask a moderator",
             ("agentflow run {dir}/content-moderation.yaml",
              "agentflow run {dir}/content-moderation.yaml --input reports=4 --no-wait",
              "agentflow approve latest 'review#1' --by moderators",
              "agentflow resume latest")),
    Template("devops", "DevOps agent: read-only tools run freely, a rollback waits for a human's approval",
             ("agentflow run {dir}/devops-agent.yaml --no-wait",
              "agentflow approve latest triage/t4/call-1 --reason \"errors began with the deploy\"",
              "agentflow resume latest")),
)}


def library() -> Traversable:
    return resources.files("agentflow").joinpath(LIBRARY)


def template_of(name: str) -> Template:
    """The template called ``name``; a UsageError names it and lists the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise UsageError(f"--template {name!r}: no such template; known: {', '.join(TEMPLATES)} "
                         "(agentflow init --list)") from None


def project_files(template: Template) -> dict[str, str]:
    """The files of a project from ``template``: relative name -> text (pure but for reading the package data)."""
    files: dict[str, str] = {}
    for item in sorted(library().joinpath(template.name).iterdir(), key=lambda t: t.name):
        if not item.is_file() or item.name.startswith("."):
            continue
        text = item.read_text(encoding="utf-8")
        if item.name.endswith((".yaml", ".yml")):
            text = text.replace(EXAMPLES_PREFIX, "")  # the project's commands run from the project folder
        files[item.name] = text
    if not any(name.endswith((".yaml", ".yml")) for name in files):
        raise UsageError(f"--template {template.name!r}: the installed package holds no manifests for it "
                         f"(is {LIBRARY}/ missing from its package data?)")
    files[".gitignore"] = GITIGNORE
    return files


def check_target(target: Path) -> None:
    """DIR must be a folder that does not exist yet, or an empty one; never a file, a link or a full folder."""
    where = f"DIR {str(target)!r}"
    if target.is_symlink():
        raise UsageError(f"{where} is a symbolic link; give a new or empty folder")
    if target.exists():
        if not target.is_dir():
            raise UsageError(f"{where} exists and is not a folder; give a new or empty folder")
        try:
            entries = sorted(p.name for p in target.iterdir())
        except OSError as exc:
            raise UsageError(f"{where}: cannot read it: {exc.strerror or exc}") from None
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UsageError(f"{where} is not empty ({len(entries)} entries: {shown}); init never overwrites: "
                             "give a new or empty folder")


def _fsync_dir(path: Path, *, best_effort: bool = False) -> None:
    """Make a folder's entries durable; ``best_effort`` once the project is in place (a folder one may not open
    for reading must not turn a done init into a failed one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not best_effort:
            raise


def write_project(target: Path, files: dict[str, str]) -> None:
    """Write ``files`` into a hidden staging folder, then make it ``target``: a new folder by renaming the staging
    folder (made beside it); an existing empty one (maybe the shell's working folder, which must stay the same
    folder) by moving the files out of a staging folder made inside it, taking back what was moved if a move
    fails."""
    where = f"DIR {str(target)!r}"
    target = Path(os.path.abspath(target))
    fill = target.is_dir()
    try:
        if not fill:
            target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{where}: cannot create its parent folder {str(target.parent)!r}: "
                         f"{exc.strerror or exc}") from None
    token = secrets.token_hex(4)
    staging = target / f".init-{token}" if fill else target.parent / f".{target.name}.init-{token}"
    moved: list[Path] = []
    try:
        staging.mkdir()  # mode 0o777 less the umask, as a folder mkdir makes
        for name, text in files.items():
            with open(staging / name, "x", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(staging)
        if fill:
            for name in files:
                if (target / name).exists():  # the folder filled up since it was checked
                    raise FileExistsError(f"{name} appeared in it meanwhile")
            for name in files:
                os.rename(staging / name, target / name)
                moved.append(target / name)
            moved.clear()
            staging.rmdir()
            _fsync_dir(target, best_effort=True)
        else:
            staging.rename(target)
            _fsync_dir(target.parent, best_effort=True)
    except OSError as exc:
        raise UsageError(f"{where}: cannot write it: {exc.strerror or exc}") from None
    finally:
        for path in moved:  # an existing empty DIR is left empty
            path.unlink(missing_ok=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def next_commands(template: Template, target: str) -> list[str]:
    folder = shlex.quote(target.rstrip("/") or target)
    return [f"agentflow validate {folder}"] + [c.format(dir=folder) for c in template.try_next]


def build_parser() -> Parser:
    p = Parser(prog="agentflow init", description="Create a project folder from a template: its manifests and a "
               "README.md, runnable offline at once (agentflow run), ready for kubectl apply.",
               epilog="Exit codes: 0 created (or listed); 2 bad flags, an unknown template, or a DIR that exists "
               "and is not an empty folder (nothing is ever overwritten).")
    p.add_argument("dir", nargs="?", metavar="DIR", help="the project folder to create (new, or empty)")
    p.add_argument("--template", "-t", metavar="NAME", help="the template: " + ", ".join(TEMPLATES))
    p.add_argument("--list", action="store_true", help="list the templates with what each does")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return p


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if args.list:
        if args.dir is not None or args.template is not None:
            raise UsageError("--list takes no DIR or --template")
        if args.json:
            print(json.dumps([{"name": t.name, "summary": t.summary} for t in TEMPLATES.values()], indent=2))
        else:
            width = max(len(name) for name in TEMPLATES)
            for t in TEMPLATES.values():
                print(f"{t.name:<{width}}  {t.summary}")
        return EXIT_OK
    if args.template is None:
        raise UsageError("--template: give a template (" + ", ".join(TEMPLATES) + "), or --list to see them")
    template = template_of(args.template)
    if args.dir is None:
        raise UsageError("DIR: give the folder to create, e.g. agentflow init my-" + template.name +
                         f" --template {template.name}")
    if not args.dir.strip():
        raise UsageError("DIR: give the folder to create")
    target = Path(args.dir)
    check_target(target)
    files = project_files(template)
    write_project(target, files)
    commands = next_commands(template, args.dir)
    if args.json:
        print(json.dumps({"dir": args.dir, "template": template.name, "files": sorted(files), "next": commands},
                         indent=2))
        return EXIT_OK
    print(f"created {args.dir} from template {template.name}: {', '.join(sorted(files))}")
    print(f"next (runs offline with no API key; {shlex.quote(args.dir)}/README.md says more, kubectl apply "
          "included):")
    for command in commands:
        print(f"  {command}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"agentflow init: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
