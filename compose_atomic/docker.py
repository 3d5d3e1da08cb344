"""The one gateway to Docker: every engine and Compose call of compose-atomic goes through here.

Two halves, as kamal runs its engine:

- **Commands are data.** Small functions below build a :class:`Command`: the argv (never a
  shell string), whether it changes anything, and its timeout. They are pure and tested by
  their argv.
- **One place runs them.** :meth:`Gateway.run` (and :meth:`Gateway.popen` for streams, such as a
  dump piped to a file) executes a command with its timeout, keeps stderr for messages, turns a
  missing CLI or a stopped engine into one :class:`~compose_atomic.errors.DockerUnavailable`, a
  hung call into :class:`~compose_atomic.errors.DockerTimeout`, and handles ``--dry-run`` once:
  a command that changes something is printed, not run, and answers as if it had succeeded.

Tests swap the gateway (:func:`use`) for the recording fake in ``tests/fake_docker.py``, the
way httpx tests swap in a ``MockTransport``: the deploy, migration and backup decisions are then
unit-tested by the commands they would run.

python-on-whales, which this project depends on, is used for what it is good at: the
``Container`` objects hooks receive (:func:`container_object`). Everything else calls the CLI
directly, measured on this project's 2-core test machine under load (2026-12-01): importing
python-on-whales costs 0.33 s (``python -X importtime``), more than compose-atomic's whole
start-up; one inspection takes 121 ms through it against 85 ms for ``docker inspect`` read
as JSON; and it re-inspects on attribute access once its 10 ms cache expires. The health and
monitor loops poll several times a second, so they read one ``docker inspect`` per poll into
a plain dict. python-on-whales also runs the same CLI underneath: it adds no capability the
deploy needs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Iterator, Sequence

from .errors import DockerTimeout, DockerUnavailable

#: Seconds a command may take unless its builder says otherwise.
DEFAULT_TIMEOUT = 60.0
#: Seconds for commands that pull, build or create (Compose may pull an image).
LONG_TIMEOUT = 600.0

LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_HASH = "com.docker.compose.config-hash"
LABEL_ONEOFF = "com.docker.compose.oneoff"
LABEL_NUMBER = "com.docker.compose.container-number"

_ENGINE_DOWN = ("Cannot connect to the Docker daemon", "Is the docker daemon running",
                "error during connect")


@dataclass(frozen=True)
class Command:
    """One docker CLI invocation, as data."""

    argv: tuple[str, ...]
    #: True when running it changes containers, networks, volumes or images.
    changes: bool = False
    timeout: float = DEFAULT_TIMEOUT

    def __str__(self) -> str:
        return shlex.join(self.argv)


@dataclass
class Result:
    """What a command answered."""

    command: Command
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_line(self) -> str:
        """The last non-empty line of stderr, else of stdout: what went wrong, for a message."""
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return ""

    def json(self, default: Any = None) -> Any:
        try:
            return json.loads(self.stdout or "")
        except ValueError:
            return default


class Gateway:
    """Runs commands on the real engine (see the module docstring)."""

    def __init__(self, *, dry_run: bool = False, echo: IO[str] | None = None) -> None:
        self.dry_run = dry_run
        self.echo = echo

    def run(self, command: Command, *, input: str | None = None, capture: bool = True,
            env: dict[str, str] | None = None) -> Result:
        """Run a command to its end. ``capture=False`` lets its output reach the terminal."""
        if self.dry_run and command.changes:
            print(f"dry-run: would run {command}", file=self.echo or sys.stderr, flush=True)
            return Result(command, 0)
        try:
            proc = subprocess.run(list(command.argv), input=input, capture_output=capture, text=True,
                                  timeout=command.timeout, env=env, check=False,
                                  stdin=subprocess.DEVNULL if input is None else None)
        except FileNotFoundError as exc:
            raise _missing_cli() from exc
        except subprocess.TimeoutExpired as exc:
            raise DockerTimeout(f"`{command}` did not answer within {command.timeout:g}s") from exc
        result = Result(command, proc.returncode, proc.stdout or "", proc.stderr or "")
        if not result.ok and any(marker in result.stderr for marker in _ENGINE_DOWN):
            raise DockerUnavailable("the Docker engine is not running or cannot be reached: "
                                    f"{result.last_line()}",
                                    hint="Start it (systemctl start docker), then run the command again.")
        return result

    def exec(self, argv: Sequence[str]) -> None:
        """Replace this process with ``argv`` (pass-through to Compose: same TTY, signals, exit code).

        Not subject to the gateway's --dry-run: the user's own ``--dry-run`` is in ``argv``
        and Compose honours it.
        """
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execvp(argv[0], list(argv))
        except FileNotFoundError as exc:
            raise _missing_cli() from exc

    def container_object(self, cid: str):
        """A python-on-whales ``Container`` (what hooks receive), or None when it is gone."""
        from python_on_whales import docker as pow_docker

        try:
            return pow_docker.container.inspect(cid)
        except Exception:  # noqa: BLE001 - a removed container is not worth failing a hook call for
            return None

    def popen(self, command: Command, **kwargs: Any) -> subprocess.Popen:
        """Start a command whose streams the caller wires (a dump piped to a file, live output).

        The caller owns the process and its timeout (``command.timeout`` is the bound to use).
        Not for --dry-run: streaming commands read or write data, and the callers that use them
        do not run under --dry-run.
        """
        try:
            return subprocess.Popen(list(command.argv), **kwargs)
        except FileNotFoundError as exc:
            raise _missing_cli() from exc


def _missing_cli() -> DockerUnavailable:
    return DockerUnavailable("the docker CLI was not found on PATH",
                             hint="Install Docker with the Compose v2 plugin (scripts/testbed.sh does it on Debian).")


_current = Gateway()


def gateway() -> Gateway:
    """The gateway in use (the real engine, unless a test swapped it)."""
    return _current


def configure(*, dry_run: bool) -> None:
    """Set the process's gateway once from the global options (the CLI does this)."""
    global _current
    _current = Gateway(dry_run=dry_run)


@contextmanager
def use(replacement: Gateway) -> Iterator[Gateway]:
    """Run a block against another gateway (tests: the recording fake)."""
    global _current
    previous, _current = _current, replacement
    try:
        yield replacement
    finally:
        _current = previous


def run(command: Command, **kwargs: Any) -> Result:
    return _current.run(command, **kwargs)


def popen(command: Command, **kwargs: Any) -> subprocess.Popen:
    return _current.popen(command, **kwargs)


# ---- command builders: pure, each returns a Command -----------------------------------------


def docker(*args: str, changes: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Command:
    """``docker ARGS``: the base of every other builder."""
    return Command(("docker", *args), changes=changes, timeout=timeout)


def compose(global_args: Sequence[str], *args: str, changes: bool = True,
            timeout: float = LONG_TIMEOUT) -> Command:
    """``docker compose GLOBAL ARGS``; ``--dry-run`` is the gateway's business, never Compose's."""
    flags = [a for a in global_args if a != "--dry-run"]
    return Command(("docker", "compose", *flags, *args), changes=changes, timeout=timeout)


def inspect_containers(*ids: str) -> Command:
    return docker("inspect", "--type", "container", *ids)


def list_service(project: str, service: str, *, running: bool = False) -> Command:
    """The ids of a service's containers Compose counts (not one-offs): stopped ones too, unless ``running``."""
    return docker("ps", "-q" if running else "-aq", "--no-trunc", "--filter", f"label={LABEL_PROJECT}={project}",
                  "--filter", f"label={LABEL_SERVICE}={service}", "--filter", f"label={LABEL_ONEOFF}=False",
                  *(["--filter", "status=running"] if running else []))


def inspect_image_id(reference: str) -> Command:
    return docker("image", "inspect", "--format", "{{.Id}}", reference)


def inspect_image_healthcheck(reference: str) -> Command:
    """The image's ``HEALTHCHECK`` as JSON (``null`` without one)."""
    return docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}", reference)


def start(*ids: str) -> Command:
    return docker("start", *ids, changes=True)


def stop(grace: float, *ids: str) -> Command:
    """One ``docker stop`` stops them all at once, each with the grace period."""
    return docker("stop", "-t", str(int(round(grace))), *ids, changes=True, timeout=grace + 60)


def remove(*ids: str, volumes: bool = False) -> Command:
    return docker("rm", "-f", *(["-v"] if volumes else []), *ids, changes=True)


def logs_tail(cid: str, lines: int = 20) -> Command:
    return docker("logs", "--tail", str(lines), cid)


def network_disconnect(network: str, cid: str) -> Command:
    return docker("network", "disconnect", "--force", network, cid, changes=True)


def network_connect(network: str, cid: str, *, aliases: Sequence[str] = (), ip: str | None = None) -> Command:
    args = ["network", "connect"]
    for alias in aliases:
        args += ["--alias", alias]
    if ip:
        args += ["--ip", ip]
    return docker(*args, network, cid, changes=True)


def run_detached(name: str, image: str, *, labels: dict[str, str] | None = None, restart: str | None = None,
                 volumes: Sequence[str] = (), env: dict[str, str] | None = None, network: str | None = None,
                 entrypoint: str | None = None, command: Sequence[str] = ()) -> Command:
    """``docker run -d --name NAME ... IMAGE COMMAND`` (the managed proxy's containers)."""
    args = ["run", "-d", "--name", name]
    for key, value in (labels or {}).items():
        args += ["--label", f"{key}={value}"]
    if restart:
        args += ["--restart", restart]
    for volume in volumes:
        args += ["-v", volume]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    if network:
        args += ["--network", network]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    return docker(*args, image, *command, changes=True, timeout=LONG_TIMEOUT)


def update_restart(name: str, policy: str) -> Command:
    """Change a container's restart policy in place."""
    return docker("update", "--restart", policy, name, changes=True)


def rename(old: str, new: str) -> Command:
    return docker("rename", old, new, changes=True)


def volume_create(name: str, labels: dict[str, str] | None = None) -> Command:
    args = ["volume", "create"]
    for key, value in (labels or {}).items():
        args += ["--label", f"{key}={value}"]
    return docker(*args, name, changes=True)


def logs(cid: str, since: str | None = None) -> Command:
    return docker("logs", *(["--since", since] if since else []), cid)


def list_labelled(label: str) -> Command:
    """The ids of every container (stopped ones too) carrying ``label`` (``key`` or ``key=value``)."""
    return docker("ps", "-aq", "--no-trunc", "--filter", f"label={label}")


def node_label_add(node: str, label: str) -> Command:
    return docker("node", "update", "--label-add", label, node, changes=True)


def stack_deploy(stack_file: str, stack: str, *, resolve_image: str = "always", prune: bool = False,
                 registry_auth: bool = False) -> Command:
    """``docker stack deploy`` without waiting: compose-atomic follows the update itself.
    ``registry_auth`` hands this client's registry login to the nodes (a private registry)."""
    return docker("stack", "deploy", "--detach=true", "--resolve-image", resolve_image, "-c", stack_file,
                  *(["--prune"] if prune else []), *(["--with-registry-auth"] if registry_auth else []),
                  stack, changes=True, timeout=300)


def service_rollback(service: str) -> Command:
    """``docker service rollback --detach``: Swarm goes back to the service's previous spec."""
    return docker("service", "rollback", "--detach", "--quiet", service, changes=True)


def config_remove(*names: str) -> Command:
    return docker("config", "rm", *names, changes=True)


def compose_oneoff(project: str, directory: str, service: str, command: Sequence[str], *, name: str,
                   env: Sequence[str] = (), timeout: float = LONG_TIMEOUT) -> Command:
    """``docker compose -f - run --rm --no-deps -T``: a one-off container of ``service`` from a
    configuration given on stdin (the migration command's), named ``name``, with ``-e`` pairs."""
    env_args = [arg for pair in env for arg in ("-e", pair)]
    return Command(("docker", "compose", "-f", "-", "-p", project, "--project-directory", directory,
                    "run", "--rm", "--no-deps", "-T", "--name", name, *env_args, service, *command),
                   changes=True, timeout=timeout)


def compose_stdin(project: str, directory: str, *args: str, timeout: float = LONG_TIMEOUT) -> Command:
    """``docker compose -f - -p PROJECT ARGS``: a configuration given on stdin (a scratch project)."""
    return Command(("docker", "compose", "-f", "-", "-p", project, "--project-directory", directory, *args),
                   changes=True, timeout=timeout)


def exec_in(argv: Sequence[str], *, timeout: float = LONG_TIMEOUT) -> Command:
    """A ``docker exec`` argv built elsewhere (the database's, which keeps the password off it)."""
    return Command(tuple(argv), changes=False, timeout=timeout)


# ---- queries: a command run and its answer parsed -------------------------------------------


def inspect(*ids: str) -> list[dict[str, Any]]:
    """``docker inspect`` of containers; missing ones are left out."""
    if not ids:
        return []
    return run(inspect_containers(*ids)).json([]) or []


def inspect_one(cid: str) -> dict[str, Any] | None:
    found = inspect(cid)
    return found[0] if found else None


def service_containers(project: str, service: str, *, running_only: bool = False) -> list[dict[str, Any]]:
    """The containers Compose counts for a service (not one-offs), lowest number first."""
    ids = run(list_service(project, service)).stdout.split()
    found = [c for c in inspect(*ids) if LABEL_HASH in c["Config"]["Labels"]]
    if running_only:
        found = [c for c in found if c["State"]["Status"] == "running"]
    return sorted(found, key=lambda c: int(c["Config"]["Labels"].get(LABEL_NUMBER, "0") or 0))


def name_of(info: dict[str, Any]) -> str:
    return info["Name"].lstrip("/")


def image_id(reference: str) -> str | None:
    result = run(inspect_image_id(reference))
    return result.stdout.strip() if result.ok else None


def container_object(cid: str | None):
    """A python-on-whales ``Container`` for hook arguments (None stays None)."""
    return _current.container_object(cid) if cid else None

    if not cid:
        return None
    from python_on_whales import docker as pow_docker

    try:
        return pow_docker.container.inspect(cid)
    except Exception:  # noqa: BLE001 - a removed container is not worth failing a hook call for
        return None


# ---- the operator's view (compose_atomic/ops): status, disk pre-flight, prune ---------------


def list_project(project: str) -> Command:
    """The ids of every container of a project (one-offs and stopped ones too): one call for status."""
    return docker("ps", "-aq", "--no-trunc", "--filter", f"label={LABEL_PROJECT}={project}")


def list_all_containers() -> Command:
    """Every container's id, any project, any state: what an image may still be used by."""
    return docker("ps", "-aq", "--no-trunc")


def container_images(*ids: str) -> Command:
    """The image id each container was created from, one per line."""
    return docker("inspect", "--type", "container", "--format", "{{.Image}}", *ids)


def inspect_containers_size(*ids: str) -> Command:
    """``docker inspect --size``: adds SizeRw (the writable layer) to each container."""
    return docker("inspect", "--type", "container", "--size", *ids)


def inspect_images(*references: str) -> Command:
    """``docker image inspect`` of several images at once (missing ones are left out of stdout)."""
    return docker("image", "inspect", *references)


def list_images_labelled(label: str) -> Command:
    """Ids of images carrying a label (``key=value``), dangling ones too."""
    return docker("image", "ls", "-a", "-q", "--no-trunc", "--filter", f"label={label}")


def engine_info(template: str = "{{json .}}") -> Command:
    return docker("info", "--format", template)


def remove_images(*references: str) -> Command:
    """``docker image rm`` without ``--force``: the engine refuses an image a container uses."""
    return docker("image", "rm", *references, changes=True)


# ---- volumes a PITR restore creates (compose_atomic/pitr) -----------------------------------


def volume_inspect(name: str) -> Command:
    return docker("volume", "inspect", name)


def volume_remove(name: str) -> Command:
    return docker("volume", "rm", name, changes=True)
