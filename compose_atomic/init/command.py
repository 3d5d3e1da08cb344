"""The ``init`` command's flow: read, plan, explain, show the diff, validate, write."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..project import ComposeOptions, discover_files
from .detect import ImageFacts, InitError, Plan, image_facts, merge_services, plan_project, read_env, read_file
from .edit import apply_plan, unified_diff


def run_init(options: ComposeOptions | None, *, dry_run: bool, yes: bool, interactive: bool,
             as_json: bool = False) -> int:
    """Annotate the project's compose files; returns the exit code.

    Explanations go to stderr; the diff (or, with ``as_json``, the whole report)
    goes to stdout.
    """
    options = options or ComposeOptions()
    paths = [p for p in discover_files(options) if p.is_file()]
    if not paths:
        missing = [str(p) for p in discover_files(options)]
        raise InitError(
            f"no compose file found{' (' + ', '.join(missing) + ' do not exist)' if missing else ''}",
            hint="Run init in the directory of your compose.yaml, or name the files with -f.")
    files = [read_file(p) for p in paths]
    base = Path(options.project_directory) if options.project_directory else paths[0].parent
    env = read_env(base)
    plan = plan_project(files, env, local_images(files, env))
    _check_plan(plan)

    shown = ", ".join(_relative(p) for p in paths)
    click.echo(f"init: read {shown}", err=True)
    for line in plan.notes:
        click.echo(f"  {line}", err=True)
    for line in plan.warnings:
        click.echo(f"warning: {line}", err=True)

    edits = apply_plan(files, plan)
    for snippet in edits.manual:
        click.echo(f"add by hand in {snippet}", err=True)
    report = {"files": [_relative(p) for p in paths],
              "annotations": {"project": plan.project, "services": plan.services},
              "routes": plan.routes, "backups": plan.backups,
              "notes": plan.notes, "warnings": plan.warnings, "manual": edits.manual,
              "diff": "", "written": []}
    if not edits.texts:
        click.echo("init: nothing to add; the files are unchanged", err=True)
        _emit(report, as_json)
        return 0
    report["diff"] = unified_diff(files, edits, Path.cwd())
    if not as_json:
        click.echo(report["diff"], nl=False)
    if dry_run:
        click.echo("init: dry run, nothing written", err=True)
        _emit(report, as_json)
        return 0
    if not yes:
        if not interactive:
            raise InitError("not writing without --yes, since stdin is not a terminal",
                            hint="Re-run with --yes to write the diff above, or --dry-run to only show it.")
        if not click.confirm("Write these changes?", default=True, err=True):
            click.echo("init: nothing written", err=True)
            _emit(report, as_json)
            return 1
    unwritable = [str(p) for p in edits.texts if not os.access(p, os.W_OK)]
    if unwritable:  # check them all first, so a project is never left half-annotated
        raise InitError(f"cannot write {', '.join(unwritable)} (permission denied); nothing was written",
                        hint="Run init as the files' owner, or apply the diff above by hand.")
    for path, text in edits.texts.items():
        try:
            with open(path, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
        except OSError as exc:
            raise InitError(f"cannot write {path}: {exc.strerror or exc}") from None
        click.echo(f"init: wrote {_relative(path)}", err=True)
        report["written"].append(_relative(path))
    click.echo("init: next, `compose-atomic check`, then `compose-atomic up -d`", err=True)
    _emit(report, as_json)
    return 0


def _emit(report: dict, as_json: bool) -> None:
    if as_json:
        import json

        click.echo(json.dumps(report, indent=2, ensure_ascii=False))


def _check_plan(plan: Plan) -> None:
    """Never write an annotation that `compose-atomic check` would reject."""
    from ..config import full_schema, route_conflicts, schema_problems

    config = {"services": {n: {"x-atomic": a} for n, a in plan.services.items()}}
    if plan.project:
        config["x-atomic"] = plan.project
    problems = list(schema_problems(config, full_schema()))
    problems += route_conflicts({n: a["route"] for n, a in plan.services.items() if "route" in a})
    if problems:  # a bug in init, not in the user's files
        raise InitError("init proposed annotations that do not validate:\n"
                        + "\n".join(f"  - {p}" for p in problems))


def inspect_image_command(image: str):
    """``docker image inspect`` of one image's config, read-only, a short timeout."""
    from .. import docker

    return docker.docker("image", "inspect", "--format", "{{json .Config}}", image, timeout=15)


def local_images(files: list, env: dict[str, str]) -> dict[str, ImageFacts | None]:
    """What the images on this machine define (healthcheck, ports); None for an image not here.

    Read-only and local: nothing is pulled. Without a docker CLI every image is unknown.
    """
    import json

    from .. import docker
    from ..errors import ComposeAtomicError
    from .detect import Service

    found: dict[str, ImageFacts | None] = {}
    for name, config in merge_services(files).items():
        image = Service(name, config, env).image
        if not image or image in found or "$" in image:
            continue
        try:
            result = docker.run(inspect_image_command(image))
        except ComposeAtomicError:  # no docker CLI, no engine, no answer: every image unknown
            return {}
        if result.returncode != 0:
            if "no such image" in (result.stderr or "").lower():
                found[image] = None  # not on this machine
            continue  # the engine could not be asked: unknown, not "absent"
        try:
            found[image] = image_facts(json.loads(result.stdout))
        except ValueError:
            continue
    return found


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
