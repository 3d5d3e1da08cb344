"""Complete service names from the project, as Compose's own completion does.

Runs ``docker compose config --services`` with the global options already typed
(``-f``, ``-p``, ``--profile``...). Completion must never get in the way: any
failure (no docker, no compose file, a slow engine) completes nothing, silently.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

from ..project import ComposeOptions

TIMEOUT = 5.0


def options_from_context(ctx: click.Context) -> ComposeOptions:
    """The Compose global options on the command line being completed.

    During completion click parses without running the group's callback, so
    ``ctx.obj`` is not there yet: rebuild it from the root context's params.
    """
    params = ctx.find_root().params
    return ComposeOptions(
        files=tuple(params.get("files") or ()),
        project_name=params.get("project_name"),
        project_directory=params.get("project_directory"),
        env_files=tuple(params.get("env_files") or ()),
        profiles=tuple(params.get("profiles") or ()),
    )


def service_names(options: ComposeOptions) -> list[str]:
    """The project's services, or an empty list when Compose cannot tell."""
    from .. import docker
    from ..errors import ComposeAtomicError

    try:
        proc = docker.run(docker.compose(options.argv(), "config", "--services", changes=False, timeout=TIMEOUT))
    except ComposeAtomicError:
        return []
    return sorted(proc.stdout.split()) if proc.ok else []


def complete_services(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``shell_complete`` callback for a SERVICES argument."""
    given = set(ctx.params.get(param.name) or ()) if param.name else set()
    return [CompletionItem(name) for name in service_names(options_from_context(ctx))
            if name.startswith(incomplete) and name not in given]
