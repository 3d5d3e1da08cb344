"""A recording fake of compose-atomic's own Docker gateway, for unit tests of decisions.

It plays the role httpx's ``MockTransport`` plays in httpx's tests: the code under test runs
unchanged, through ``compose_atomic.docker.use(FakeDocker())``, and the fake records every
command and answers it from a tiny model of containers. It is not a model of Docker: it knows
only the commands the deploy sends, and fails loudly on any other. Features are proven on the
real engine (tests/test_deploy*.py); these tests prove which commands each decision sends.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from compose_atomic import docker
from compose_atomic.docker import Command, Gateway, Result

_ids = itertools.count(1)


@dataclass
class Behaviour:
    """How containers of an image behave once started."""

    health: str | None = "healthy"  # None: no healthcheck; "unhealthy"; "starting"
    #: After this many inspections once running, the container exits (a crash in the window).
    crash_after: int | None = None
    start_fails: bool = False


@dataclass
class FakeContainer:
    id: str
    name: str
    project: str
    service: str
    number: int
    image_id: str
    config_hash: str
    status: str = "created"
    inspections: int = 0
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def inspect(self, behaviour: Behaviour) -> dict[str, Any]:
        if self.status == "running":
            self.inspections += 1
            if behaviour.crash_after is not None and self.inspections > behaviour.crash_after:
                self.status = "exited"
        state: dict[str, Any] = {"Status": self.status, "ExitCode": 1 if self.status == "exited" else 0,
                                 "Restarting": False}
        healthcheck = {"Test": ["NONE"]}
        if behaviour.health:
            healthcheck = {"Test": ["CMD", "true"], "Interval": int(0.05e9), "Retries": 2, "Timeout": int(0.05e9)}
            if self.status == "running":
                state["Health"] = {"Status": behaviour.health, "Log": []}
        return {"Id": self.id, "Name": f"/{self.name}", "Image": self.image_id, "RestartCount": 0,
                "State": state,
                "Config": {"Labels": {docker.LABEL_PROJECT: self.project, docker.LABEL_SERVICE: self.service,
                                      docker.LABEL_HASH: self.config_hash, docker.LABEL_ONEOFF: "False",
                                      docker.LABEL_NUMBER: str(self.number)},
                           "Healthcheck": healthcheck},
                # as Docker does: a container that is not running has no address any more
                "NetworkSettings": {"Networks": self.networks if self.status == "running" else
                                    {n: {**c, "IPAddress": ""} for n, c in self.networks.items()}}}


class FakeDocker(Gateway):
    """Records commands (``calls``: argv tuples) and answers from its containers."""

    def __init__(self, project: str, network: str | None = None) -> None:
        super().__init__()
        self.project = project
        self.network = network or f"{project}_default"
        self.calls: list[tuple[str, ...]] = []
        self.containers: dict[str, FakeContainer] = {}
        self.images: dict[str, str] = {}  # reference -> image id
        self.behaviour: dict[str, Behaviour] = {}  # image id -> behaviour
        self.hashes: dict[str, str] = {}  # service -> Compose's config hash now
        self.failing: dict[str, str] = {}  # argv word (e.g. "pull") -> stderr of a failure
        self.deploying: dict[str, str] = {}  # service -> the image reference Compose creates it from

    # -- setting the scene --

    def image(self, reference: str, behaviour: Behaviour | None = None) -> str:
        image_id = f"sha256:{next(_ids):064x}"
        self.images[reference] = image_id
        self.behaviour[image_id] = behaviour or Behaviour()
        return image_id

    def running(self, service: str, reference: str, count: int = 1) -> list[FakeContainer]:
        """Containers of ``service`` already serving ``reference`` (the old version)."""
        self.hashes.setdefault(service, "hash-1")
        return [self._create(service, self.images[reference], status="running") for _ in range(count)]

    def _create(self, service: str, image_id: str, status: str = "created") -> FakeContainer:
        n = next(_ids)
        number = 1 + max([c.number for c in self.containers.values() if c.service == service], default=0)
        cid = f"{n:064x}"
        container = FakeContainer(cid, f"{self.project}-{service}-{number}", self.project, service, number,
                                  image_id, self.hashes.get(service, "hash-1"), status,
                                  networks={self.network: {"IPAddress": f"10.0.0.{n % 250 + 2}", "Aliases": []}})
        self.containers[cid] = container
        return container

    def of(self, service: str) -> list[FakeContainer]:
        return sorted((c for c in self.containers.values() if c.service == service), key=lambda c: c.number)

    def commands(self, *words: str) -> list[tuple[str, ...]]:
        """The recorded commands whose argv contains every one of ``words``."""
        return [argv for argv in self.calls if all(w in argv for w in words)]

    # -- the gateway --

    def run(self, command: Command, *, input: str | None = None, capture: bool = True,
            env: dict[str, str] | None = None) -> Result:
        argv = command.argv
        self.calls.append(argv)
        for word, stderr in self.failing.items():
            if word in argv:
                return Result(command, 1, "", stderr)
        if argv[:2] == ("docker", "compose"):
            return self._compose(command, [a for a in argv[2:]])
        verb = argv[1]
        handler = getattr(self, f"_{verb}", None)
        if handler is None:
            raise AssertionError(f"FakeDocker does not know {command}")
        return handler(command, list(argv[2:]))

    def _inspect(self, command: Command, args: list[str]) -> Result:
        found = [self.containers[i].inspect(self.behaviour[self.containers[i].image_id])
                 for i in args if i in self.containers]
        return Result(command, 0 if found else 1, json.dumps(found))

    def _ps(self, command: Command, args: list[str]) -> Result:
        filters = [args[i + 1] for i, a in enumerate(args) if a == "--filter"]
        service = next(f.split("=", 2)[2] for f in filters if docker.LABEL_SERVICE in f)
        return Result(command, 0, "\n".join(c.id for c in self.of(service)))

    def _image(self, command: Command, args: list[str]) -> Result:
        reference = args[-1]
        if reference in self.images:
            return Result(command, 0, self.images[reference] + "\n")
        return Result(command, 1, "", f"Error: No such image: {reference}")

    def _start(self, command: Command, args: list[str]) -> Result:
        for cid in args:
            if self.behaviour[self.containers[cid].image_id].start_fails:
                return Result(command, 1, "", "Error response from daemon: driver failed programming")
            self.containers[cid].status, self.containers[cid].inspections = "running", 0
        return Result(command, 0)

    def _stop(self, command: Command, args: list[str]) -> Result:
        for cid in args[2:]:
            self.containers[cid].status = "exited"
        return Result(command, 0)

    def _rm(self, command: Command, args: list[str]) -> Result:
        for cid in [a for a in args if not a.startswith("-")]:
            self.containers.pop(cid, None)
        return Result(command, 0)

    def container_object(self, cid: str | None):
        return None if cid is None else {"id": cid}

    def _logs(self, command: Command, args: list[str]) -> Result:
        return Result(command, 0, "")

    def _network(self, command: Command, args: list[str]) -> Result:
        return Result(command, 0)

    def _compose(self, command: Command, args: list[str]) -> Result:
        while args and args[0].startswith("--"):  # global flags and their values
            args = args[2:] if args[0] in ("--file", "--project-name", "--project-directory") else args[1:]
        verb, rest = args[0], args[1:]
        if verb == "config" and rest[:1] == ["--hash"]:
            return Result(command, 0, "\n".join(f"{s} {self.hashes.get(s, 'hash-1')}"
                                                for s in rest[1].split(",")))
        if verb == "pull":
            return Result(command, 0)
        if verb == "up" and "--no-start" in rest:
            service = rest[-1]
            scale = next((int(a.split("=")[1]) for a in rest if a.startswith(f"{service}=")), 1)
            reference = self.deploying[service]
            while len(self.of(service)) < scale:
                self._create(service, self.images[reference])
            return Result(command, 0)
        raise AssertionError(f"FakeDocker does not know {command}")


class FakeProxy:
    """Stands in for CaddyProxy in unit tests: records each routing change."""

    def __init__(self, fake: FakeDocker, service: str, port: int = 8080) -> None:
        from compose_atomic.proxy import Route

        self.fake = fake
        self.routes = {service: Route(service, port)}
        self.changes: list[dict[str, Any]] = []
        #: Answers of in_flight, in order, per dial (then 0); None means "cannot tell".
        self.open_requests: dict[str, list[int | None]] = {}
        self.on_change = None  # called with each change, e.g. to crash the new container
        self.fail_with: Exception | None = None

    def set_upstreams(self, service, dials, networks, *, balance=False, draining=None):
        if self.fail_with is not None:
            raise self.fail_with
        change = {"upstreams": list(dials), "balance": balance, "draining": list(draining or [])}
        self.routes[service].upstreams = list(dials)
        self.changes.append(change)
        self.fake.calls.append(("proxy", "set_upstreams", *dials))
        if self.on_change:
            self.on_change(change)

    def in_flight(self, dial):
        self.fake.calls.append(("proxy", "in_flight", dial))
        answers = self.open_requests.get(dial) or [0]
        return answers.pop(0) if len(answers) > 1 else answers[0]
