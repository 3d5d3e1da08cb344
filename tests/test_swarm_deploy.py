"""`stack deploy` on a real single-node swarm: roll out under load, roll back a broken version.

The engine is shared: the swarm is created only when the node is not in one (and left
again only if we created it); stacks, configs, volumes and node labels are unique per
test and removed afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter

import pytest

from conftest import IMAGE_BUSYBOX, IMAGE_CADDY, IMAGE_POSTGRES, docker, free_port, run_cli

COMPOSE = textwrap.dedent("""
    services:
      web:
        image: {busybox}
        command: ["sh", "-c", "{app}"]
        environment:
          VERSION: ${{VERSION:-v1}}
          CRASH_AFTER: ${{CRASH_AFTER:-0}}
        x-atomic:
          route: {{port: 8080}}
          health: {{path: "${{HEALTH_PATH:-/healthz}}", timeout: 4s, interval: 1s}}
          monitor: 5s
          drain: 2s
      admin:
        image: {busybox}
        command: ["sh", "-c", "mkdir -p /www && echo admin > /www/index.html && exec httpd -f -p 9000 -h /www"]
        x-atomic:
          route: {{port: 9000, host: admin.example.test}}
          drain: 1s  # httpd as PID 1 ignores SIGTERM: keep the wait for SIGKILL short
{database}
    x-atomic:
      proxy:
        image: {caddy}
        ports: ["{port}:80"]
""")
# The example stack's database, with a password secret and a backup sidecar.
DATABASE = """\
      db:
        image: {postgres}
        environment:
          POSTGRES_PASSWORD_FILE: /run/secrets/pgpass
        secrets: [pgpass]
        volumes: ["dbdata:/var/lib/postgresql/data"]
        healthcheck:
          test: ["CMD", "pg_isready", "-U", "postgres"]
          interval: 1s
          retries: 60
        x-atomic:
          backup: {{schedule: "0 3 * * *"}}
      db-backup:
        image: {busybox}
        command: ["sleep", "86400"]
        stop_grace_period: 1s
        volumes: ["backups:/backups"]
    volumes:
      dbdata: {{}}
      backups: {{}}
    secrets:
      pgpass:
        file: ./pgpass.txt"""
# With CRASH_AFTER set, the version passes its health checks and exits a few seconds later:
# a failure inside the monitor window.
APP = ("mkdir -p /www && echo $$VERSION > /www/index.html && echo ok > /www/healthz && "
       "if [ $$CRASH_AFTER = 0 ]; then exec httpd -f -p 8080 -h /www; fi; "
       "httpd -f -p 8080 -h /www & sleep $$CRASH_AFTER; exit 1")


def test_deploy_outside_a_swarm_is_explained(docker_engine, tmp_path):
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state == "active":
        pytest.skip("the engine is in a swarm (this check runs when it is not)")
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: x\n    x-atomic:\n      route: {port: 80}\n")
    proc = run_cli("stack", "deploy", "demo", cwd=tmp_path)
    assert proc.returncode == 1 and "docker swarm init" in proc.stderr


@pytest.fixture(scope="module")
def swarm(docker_engine):
    """A single-node swarm: this engine's own, or one we create for this file and leave after it
    (the other files, in other workers at the same time, run on an engine out of swarm mode)."""
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    created = False
    gwbridge = docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0
    if state == "inactive":
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        created = True
    elif state != "active":
        pytest.fail(f"the engine's swarm state is {state!r}; expected inactive or active")
    yield
    if created:
        docker("swarm", "leave", "--force", check=False)
        if not gwbridge:  # swarm init created it; leaving does not remove it
            docker("network", "rm", "docker_gwbridge", check=False)


@pytest.fixture
def stack(swarm, tmp_path):
    """A unique stack name and its project directory; everything it created goes afterwards."""
    name = f"catest-{uuid.uuid4().hex[:8]}"
    port = free_port("0.0.0.0")
    (tmp_path / "compose.yaml").write_text(compose_file(port))
    yield name, tmp_path, port
    docker("stack", "rm", name, check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # tasks' containers go asynchronously
        left = docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={name}", check=False)
        if not left.stdout.split():
            break
        time.sleep(1)
    for kind in ("network", "config", "secret", "volume"):
        found = docker(kind, "ls", "-q", "--filter", f"label=com.docker.stack.namespace={name}", check=False)
        if found.stdout.split():
            docker(kind, "rm", *found.stdout.split(), check=False)
    configs = docker("config", "ls", "-q", "--filter", f"name={name}_caddy_", check=False).stdout.split()
    if configs:
        docker("config", "rm", *configs, check=False)
    node = docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
    labels = json.loads(docker("node", "inspect", node, "--format", "{{json .Spec.Labels}}").stdout or "{}")
    ours = [key for key in labels or {} if key.startswith(f"compose-atomic.{name}.")]
    for key in ours:
        docker("node", "update", "--label-rm", key, node, check=False)


def compose_file(port: int, database: bool = False) -> str:
    extra = DATABASE.format(postgres=IMAGE_POSTGRES, busybox=IMAGE_BUSYBOX) if database else ""
    return COMPOSE.format(busybox=IMAGE_BUSYBOX, caddy=IMAGE_CADDY, port=port, app=APP, database=extra)


def get(port: int, timeout: float = 5, host: str | None = None) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host} if host else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode().strip()


class Load:
    """A bounded request loop against the proxy, in a thread: counts answers and failures."""

    def __init__(self, port: int, max_requests: int = 20000, pause: float = 0.01):
        self.port, self.max_requests, self.pause = port, max_requests, pause
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(self.max_requests):
            if self._stop.is_set():
                return
            try:
                # Longer than Caddy's try_duration: a request it holds is not a client-side failure.
                self.answers[get(self.port, timeout=15)] += 1
            except (urllib.error.URLError, OSError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(self.pause)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def total(self) -> int:
        return sum(self.answers.values()) + len(self.failures)


def wait_for(port: int, expected: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            last = get(port, timeout=2)
            if last == expected:
                return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise AssertionError(f"the proxy did not answer {expected!r} within {timeout}s (last: {last!r})")


def interrupt_when_updating(name, cwd, **env) -> subprocess.CompletedProcess:
    """Start `stack deploy`, send SIGINT once it reports the update, return how it ended."""
    proc = subprocess.Popen([sys.executable, "-m", "compose_atomic", "stack", "deploy", name, "--timeout", "90s"],
                            cwd=cwd, env={**os.environ, "NO_COLOR": "1", **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        seen.append(line)
        if "Updating" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(seen) + err)


def deploy(name, cwd, timeout="90s", **env):
    return run_cli("stack", "deploy", name, "--timeout", timeout, "--json", cwd=cwd, env=env, timeout=180)


def test_rollout_under_load_then_broken_version_rolls_back(stack):
    name, project_dir, port = stack
    (project_dir / "compose.yaml").write_text(compose_file(port, database=True))
    (project_dir / "pgpass.txt").write_text("not-in-argv")
    (project_dir / "pgpass.txt").chmod(0o600)

    first = deploy(name, project_dir, VERSION="v1")
    assert first.returncode == 0, first.stderr
    outcome = {s["service"]: s["outcome"] for s in json.loads(first.stdout)["services"]}
    assert outcome == dict.fromkeys(["web", "admin", "db", "db-backup", "atomic-proxy"], "created")
    # The database and its backup sidecar are pinned to the node this deploy labelled.
    label = f"compose-atomic.{name}.db"
    assert label in json.loads(first.stdout)["labelled"]
    for service in ("db", "db-backup"):
        constraints = docker("service", "inspect", f"{name}_{service}", "--format",
                             "{{json .Spec.TaskTemplate.Placement.Constraints}}").stdout
        assert f"node.labels.{label} == true" in json.loads(constraints)
    assert json.loads(first.stdout)["proxy_answers"] is True
    wait_for(port, "v1")
    assert "Deployed" in first.stderr
    # The single-host proxy's routing: a host route matches its host, the route without host the rest.
    assert get(port, host="admin.example.test") == "admin"
    assert get(port, host="www.example.test") == "v1"

    # A new version under light load: Swarm starts it, waits for health, then stops v1.
    with Load(port) as load:
        time.sleep(1)
        second = deploy(name, project_dir, VERSION="v2")
        time.sleep(1)
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert {s["service"]: s["outcome"] for s in result["services"]} == {
        "web": "updated", "admin": "unchanged", "db": "unchanged", "db-backup": "unchanged",
        "atomic-proxy": "unchanged"}
    assert load.failures == [], f"{len(load.failures)} of {load.total} requests failed: {load.failures[:5]}"
    assert load.answers["v2"] > 0 and set(load.answers) <= {"v1", "v2"}, load.answers
    assert get(port) == "v2"

    # A version that never becomes healthy: Swarm rolls it back; v2 serves all along. The first
    # `stack deploy` is interrupted (Ctrl-C) while it waits; running it again follows the update.
    with Load(port) as load:
        interrupted = interrupt_when_updating(name, project_dir, VERSION="v3", HEALTH_PATH="/missing")
        assert interrupted.returncode == 130, interrupted.stderr
        assert "interrupted" in interrupted.stderr and "Traceback" not in interrupted.stderr
        third = deploy(name, project_dir, VERSION="v3", HEALTH_PATH="/missing")
    assert third.returncode == 3, third.stderr
    assert "an earlier update is still running on web" in third.stderr  # waited, did not re-submit over it
    assert "Swarm rolled it back" in third.stderr and "web" in third.stderr
    assert "Traceback" not in third.stderr
    web = next(s for s in json.loads(third.stdout)["services"] if s["service"] == "web")
    assert web["outcome"] == "rolled back" and web["message"]
    assert load.failures == [], f"{len(load.failures)} of {load.total} requests failed: {load.failures[:5]}"
    assert set(load.answers) == {"v2"}, load.answers
    env = docker("service", "inspect", f"{name}_web", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}")
    assert "VERSION=v2" in json.loads(env.stdout)

    # A version that passes its health checks, then dies inside the monitor window: rolled back too.
    with Load(port) as load:
        fourth = deploy(name, project_dir, VERSION="v4", CRASH_AFTER="4")
    assert fourth.returncode == 3, fourth.stderr
    assert get(port) == "v2"
    print(f"crash in monitor window: {load.total} requests, {len(load.failures)} failed", load.failures[:3])
    assert set(load.answers) <= {"v2", "v4"}, load.answers

    # Nothing left over from earlier renders: one proxy config for the stack.
    configs = docker("config", "ls", "--filter", f"name={name}_caddy_", "--format", "{{.Name}}").stdout.split()
    assert len(configs) == 1


def test_new_service_that_never_becomes_ready_fails_with_exit_1(stack):
    name, project_dir, _ = stack
    proc = deploy(name, project_dir, timeout="6s", HEALTH_PATH="/missing")
    assert proc.returncode == 1, proc.stderr
    assert "web" in proc.stderr and "Traceback" not in proc.stderr


HEALTHZ_IMAGE = "compose-atomic-testbed/healthz-app:{tag}"
# An image whose own HEALTHCHECK tests /healthz; with BROKEN=1, / still answers 200 but /healthz is 404.
HEALTHZ_DOCKERFILE = """\
FROM {busybox}
HEALTHCHECK --interval=1s --timeout=2s --retries=2 --start-period=3s CMD wget -q -O /dev/null http://127.0.0.1:8080/healthz
CMD ["sh", "-c", "mkdir -p /www && echo $VERSION > /www/index.html && if [ \\"$BROKEN\\" != 1 ]; then echo ok > /www/healthz; fi; exec httpd -f -p 8080 -h /www"]
"""
HEALTHZ_COMPOSE = """\
services:
  web:
    image: {image}
    environment:
      VERSION: ${{VERSION:-v1}}
      BROKEN: ${{BROKEN:-0}}
    x-atomic:
      route: {{port: 8080}}
      monitor: 5s
      drain: 1s
x-atomic:
  proxy:
    image: {caddy}
    ports: ["{port}:80"]
"""


@pytest.fixture
def healthz_image(docker_engine, request):
    tag = HEALTHZ_IMAGE.format(tag=uuid.uuid4().hex[:8])
    proc = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=HEALTHZ_DOCKERFILE.format(busybox=IMAGE_BUSYBOX),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    request.addfinalizer(lambda: docker("rmi", "-f", tag, check=False))
    return tag


def test_the_images_own_healthcheck_gates_the_rollout_and_no_task_reaches_the_proxys_config(stack, healthz_image):
    """A route without x-atomic.health keeps the image's HEALTHCHECK: a release whose /healthz
    fails (while / answers 200) is rolled back (exit 3), as on one host."""
    from test_proxy import assert_no_admin_answers, listening_tcp

    name, project_dir, port = stack
    (project_dir / "compose.yaml").write_text(HEALTHZ_COMPOSE.format(image=healthz_image, caddy=IMAGE_CADDY, port=port))
    render = run_cli("stack", "render", "--stack-name", name, "-o", "stack.yml", cwd=project_dir)
    assert render.returncode == 0, render.stderr
    text = (project_dir / "stack.yml").read_text()
    assert "x-atomic-gate: 'the image''s HEALTHCHECK: CMD-SHELL wget -q -O /dev/null http://127.0.0.1:8080/healthz'" in text
    import yaml

    assert "healthcheck" not in yaml.safe_load(text)["services"]["web"]  # no probe of / over the image's own

    first = deploy(name, project_dir, VERSION="v1")
    assert first.returncode == 0, first.stderr
    wait_for(port, "v1")

    # Nothing on the stack's network reaches the proxy's configuration (its admin API is off).
    def task(service: str) -> dict:
        ids = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}_{service}").stdout.split()
        return json.loads(docker("inspect", ids[0]).stdout)[0]

    app, proxy = task("web"), task("atomic-proxy")
    ips = [n["IPAddress"] for n in proxy["NetworkSettings"]["Networks"].values() if n.get("IPAddress")]
    listening = listening_tcp(proxy["State"]["Pid"])
    targets = {(ip, p) for ip in ips for _, p in listening} | {(ip, 2019) for ip in ips}
    assert_no_admin_answers(app["Id"], targets)
    assert get(port) == "v1"

    second = deploy(name, project_dir, VERSION="v2", BROKEN="1")
    assert second.returncode == 3, second.stderr
    web = next(s for s in json.loads(second.stdout)["services"] if s["service"] == "web")
    assert web["outcome"] == "rolled back", web
    assert get(port) == "v1"
