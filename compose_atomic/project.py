"""The compose project as Compose itself resolves it.

We never re-implement Compose's loader: ``docker compose config`` applies override
files, ``.env`` interpolation, profiles and ``include:``, and we read its YAML
output (its JSON output drops service-level ``x-*`` keys, docker/compose#11528).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DockerUnavailable

if TYPE_CHECKING:
    from .docker import Command

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_FILES = (
    "compose.override.yaml", "compose.override.yml",
    "docker-compose.override.yaml", "docker-compose.override.yml",
)


@dataclass(frozen=True)
class ComposeOptions:
    """Compose's global options, exactly as the user gave them."""

    files: tuple[str, ...] = ()
    project_name: str | None = None
    project_directory: str | None = None
    env_files: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    ansi: str | None = None
    progress: str | None = None
    parallel: int | None = None
    compatibility: bool = False
    dry_run: bool = False
    all_resources: bool = False

    def argv(self) -> list[str]:
        """The global flags to put between ``docker compose`` and the subcommand."""
        args: list[str] = []
        for f in self.files:
            args += ["--file", f]
        if self.project_name:
            args += ["--project-name", self.project_name]
        if self.project_directory:
            args += ["--project-directory", self.project_directory]
        for f in self.env_files:
            args += ["--env-file", f]
        for p in self.profiles:
            args += ["--profile", p]
        if self.ansi:
            args += ["--ansi", self.ansi]
        if self.progress:
            args += ["--progress", self.progress]
        if self.parallel is not None:
            args += ["--parallel", str(self.parallel)]
        if self.compatibility:
            args.append("--compatibility")
        if self.dry_run:
            args.append("--dry-run")
        if self.all_resources:
            args.append("--all-resources")
        return args


def compose_command(options: ComposeOptions, *args: str) -> list[str]:
    """``docker compose <global options> <args>`` as an argument list (never a shell string)."""
    return ["docker", "compose", *options.argv(), *args]


def exec_compose(options: ComposeOptions, *args: str) -> None:
    """Hand the command to ``docker compose`` (this process is replaced by it)."""
    from . import docker

    docker.gateway().exec(compose_command(options, *args))


@dataclass
class Project:
    """A resolved compose project plus where its files are."""

    name: str
    options: ComposeOptions
    config: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    working_dir: Path = field(default_factory=Path.cwd)

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return self.config.get("services") or {}

    @property
    def x_atomic(self) -> dict[str, Any]:
        """The top-level ``x-atomic`` mapping (empty when absent)."""
        return self.config.get("x-atomic") or {}

    def service_x_atomic(self, service: str) -> dict[str, Any]:
        """A service's ``x-atomic`` mapping (empty when absent)."""
        return self.services.get(service, {}).get("x-atomic") or {}

    @property
    def atomic_services(self) -> list[str]:
        """Services that carry an ``x-atomic`` annotation, in file order."""
        return [name for name, svc in self.services.items() if svc.get("x-atomic")]

    @property
    def is_atomic(self) -> bool:
        """Whether anything in the project asks for compose-atomic's behaviour."""
        return bool(self.x_atomic) or bool(self.atomic_services)

    @property
    def state_dir(self) -> Path:
        """Where compose-atomic keeps journals, history, snapshots and rendered files.

        ``x-atomic.state_dir`` (relative to the project directory), or
        ``.compose-atomic/`` beside the compose file.
        """
        configured = self.x_atomic.get("state_dir")
        path = Path(configured) if configured else Path(".compose-atomic")
        return path if path.is_absolute() else self.working_dir / path

    def compose(self, *args: str, changes: bool = True, timeout: float | None = None) -> "Command":
        """``docker compose`` with the user's global options, as a gateway command.

        ``--dry-run`` is left to the gateway: a command that changes things is printed, not run.
        """
        from .docker import LONG_TIMEOUT, compose

        return compose(self.options.argv(), *args, changes=changes,
                       timeout=LONG_TIMEOUT if timeout is None else timeout)


def discover_files(options: ComposeOptions, environ: dict[str, str] | None = None) -> list[Path]:
    """The compose files Compose will read, following its own rules.

    Used only to point error messages at a file and line; Compose remains the
    authority on what the project contains.
    """
    env = os.environ if environ is None else environ
    base = Path(options.project_directory) if options.project_directory else Path.cwd()
    if options.files:
        names = list(options.files)
    elif env.get("COMPOSE_FILE"):
        names = env["COMPOSE_FILE"].split(env.get("COMPOSE_PATH_SEPARATOR", os.pathsep))
    else:
        names = []
        for directory in [base, *base.resolve().parents]:
            found = next((directory / n for n in DEFAULT_FILES if (directory / n).is_file()), None)
            if found:
                names.append(str(found))
                override = next((directory / n for n in OVERRIDE_FILES if (directory / n).is_file()), None)
                if override:
                    names.append(str(override))
                break
    files = [Path(n) if Path(n).is_absolute() else Path.cwd() / n for n in names if n != "-"]
    return files + _included_files(files)


def _included_files(files: list[Path]) -> list[Path]:
    if not files:  # no compose file (e.g. `compose-atomic lint` outside a project): no yaml import
        return []
    import yaml

    included: list[Path] = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for entry in data.get("include") or [] if isinstance(data, dict) else []:
            paths = entry if isinstance(entry, (str, list)) else (entry or {}).get("path", [])
            for p in [paths] if isinstance(paths, str) else paths:
                included.append(path.parent / p)
    return included


def load_project(options: ComposeOptions) -> Project:
    """Run ``docker compose config`` and return the resolved project.

    Raises ConfigError with Compose's own message when Compose rejects the files.
    """
    from . import docker

    # --dry-run changes nothing for `config` and some versions refuse it there.
    proc = docker.run(docker.compose(options.argv(), "config", changes=False))
    if proc.returncode != 0:
        message = proc.stderr.strip() or f"docker compose config exited with {proc.returncode}"
        if "is not a docker command" in message or "unknown command" in message and "compose" in message:
            raise DockerUnavailable(
                "the Docker Compose v2 plugin is missing (`docker compose` is not available)",
                hint="Install it as a docker CLI plugin; scripts/testbed.sh shows how.",
            )
        raise ConfigError(f"Compose could not load the project:\n{message}")
    import yaml

    config = yaml.safe_load(proc.stdout) or {}
    files = discover_files(options)
    if options.project_directory:
        working_dir = Path(options.project_directory).resolve()
    elif files:
        working_dir = files[0].resolve().parent
    else:
        working_dir = Path.cwd()
    return Project(name=config.get("name", ""), options=options, config=config,
                   files=files, working_dir=working_dir)
