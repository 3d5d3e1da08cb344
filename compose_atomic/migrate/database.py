"""The PostgreSQL service's running container: who to connect as, and two ways in.

- ``exec_argv`` runs PostgreSQL's own tools *inside* the container (``docker exec``
  with an argument list), so pg_dump always matches the server's version and the
  host needs no PostgreSQL client.
- ``connect`` opens a psycopg connection from the host to the container's IP on its
  compose network. On Linux, bridge networks are routable from the host, so the
  database port never has to be published. Docker Desktop (macOS, Windows) runs
  containers in a VM whose networks the host cannot reach: there, set
  ``COMPOSE_ATOMIC_PG_ADDRESS=127.0.0.1:PORT`` to a port published on the loopback
  only (see docs/migrations.md).

The password comes from the container's own environment (``POSTGRES_PASSWORD`` or
the file ``POSTGRES_PASSWORD_FILE`` names). It is never put on a command line: it
reaches ``docker exec`` as ``-e PGPASSWORD`` *without a value* (the docker CLI copies
it from its own environment) and psycopg as a keyword argument.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from ..project import Project
from ..errors import DatabaseUnavailable

PG_PORT = 5432
# Every connection speaks UTF8, whatever the server's encoding. PostgreSQL converts from
# LATIN1 and the others; a SQL_ASCII server converts nothing, and psycopg would otherwise
# return its text as bytes (a snapshot id of b'...' broke every guarded migration there).
# Names in a SQL_ASCII database are then read as the UTF-8 its clients almost always wrote.
CLIENT_ENCODING = "UTF8"


def docker_json(*args: str) -> Any:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DatabaseUnavailable(f"docker {args[0]} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def find_container(project: Project, service: str) -> str | None:
    """The id of the service's running (not one-off) container, or None."""
    proc = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project.name}",
         "--filter", f"label=com.docker.compose.service={service}",
         "--filter", "label=com.docker.compose.oneoff=False", "--filter", "status=running"],
        capture_output=True, text=True, check=False)
    ids = proc.stdout.split()
    return ids[0] if ids else None


def container_ips(container: str) -> list[str]:
    """The container's IPv4 addresses, one per network."""
    info = docker_json("inspect", container)[0]
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    return [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]


@dataclass
class Database:
    """One PostgreSQL database inside a compose service's container."""

    project: Project
    service: str
    container: str
    dbname: str
    user: str
    _password: str | None = field(default=None, repr=False)

    @classmethod
    def locate(cls, project: Project, service: str) -> "Database":
        """Find the service's running container and read its connection settings."""
        container = find_container(project, service)
        if container is None:
            raise DatabaseUnavailable(
                f'the database service "{service}" has no running container',
                hint=f"Start it first: compose-atomic up -d {service}")
        info = docker_json("inspect", container)[0]
        env = dict(item.split("=", 1) for item in info["Config"].get("Env") or [] if "=" in item)
        user = env.get("POSTGRES_USER") or "postgres"
        dbname = env.get("POSTGRES_DB") or user
        password = env.get("POSTGRES_PASSWORD")
        if password is None and env.get("POSTGRES_PASSWORD_FILE"):
            proc = subprocess.run(["docker", "exec", container, "cat", env["POSTGRES_PASSWORD_FILE"]],
                                  capture_output=True, text=True, check=False)
            if proc.returncode == 0:
                password = proc.stdout.rstrip("\n")
        return cls(project=project, service=service, container=container, dbname=dbname,
                   user=user, _password=password)

    # ---- inside the container -------------------------------------------------

    def exec_argv(self, *tool_args: str, stdin: bool = False) -> list[str]:
        """``docker exec`` argv for a PostgreSQL tool run inside the container."""
        argv = ["docker", "exec"]
        if stdin:
            argv.append("-i")
        if self._password is not None:
            argv += ["-e", "PGPASSWORD"]  # value copied from exec_env(), never on argv
        return [*argv, self.container, *tool_args]

    def exec_env(self) -> dict[str, str]:
        """The environment for the docker CLI process that runs ``exec_argv``."""
        env = dict(os.environ)
        if self._password is not None:
            env["PGPASSWORD"] = self._password
        return env

    # ---- from the host --------------------------------------------------------

    def address(self) -> tuple[str, int]:
        """Where the host reaches PostgreSQL: the container's IP unless overridden."""
        override = os.environ.get("COMPOSE_ATOMIC_PG_ADDRESS")
        if override:
            host, _, port = override.rpartition(":")
            return host, int(port)
        ips = container_ips(self.container)
        if not ips:
            raise DatabaseUnavailable(f'the database container of "{self.service}" has no IP address')
        return ips[0], PG_PORT

    def connect(self, dbname: str | None = None, *, autocommit: bool = True,
                application_name: str = "compose-atomic"):
        """A psycopg connection to ``dbname`` (default: the service's database)."""
        import psycopg

        host, port = self.address()
        try:
            return psycopg.connect(host=host, port=port, user=self.user, password=self._password,
                                   dbname=dbname or self.dbname, connect_timeout=10,
                                   autocommit=autocommit, application_name=application_name,
                                   client_encoding=CLIENT_ENCODING)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(
                f'cannot connect to PostgreSQL of "{self.service}" at {host}:{port}: '
                f"{str(exc).strip().splitlines()[-1]}",
                hint="On Docker Desktop the container network is not reachable from the host: "
                     "set COMPOSE_ATOMIC_PG_ADDRESS=127.0.0.1:PORT (see docs/migrations.md).",
            ) from None

    @property
    def maintenance_db(self) -> str:
        """A database to connect to while ``dbname`` is dropped or renamed."""
        return "template1" if self.dbname == "postgres" else "postgres"
