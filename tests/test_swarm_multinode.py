"""`stack deploy` on a real three-node swarm (scripts/swarm3): one manager, two workers, each a
dockerd in its own network namespace, joined by a bridge the host reaches them on.

What a move from one VPS to three must keep (issue 20), under load through every node's proxy:

- a rollout of a 3-replica service spread over the nodes: no failed request, exit 0;
- the proxy is global (one per node, host ports) and a request through any node reaches a
  healthy replica on any node; a release that never becomes healthy gets no traffic, Swarm
  rolls it back and ``stack deploy`` exits 3;
- an image on the manager only: the nodes that lack it are named, with the way out;
- a worker whose engine stops in the middle of a rollout: the update ends (done or rolled back),
  its replicas are rescheduled on the other nodes, and the site keeps answering through them;
- `stack status` shows per node what runs there (and that the lost node is down).

``compose-atomic`` runs on the host with DOCKER_HOST pointing at the manager, as it would with
``DOCKER_HOST=ssh://manager``. One bed for the module (about 15 s to build); marked like
tests/test_engine_restart.py, so that conftest.py runs it after every other test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest

from conftest import IMAGE_BUSYBOX, IMAGE_CADDY, ROOT, Clients, run_cli

pytestmark = pytest.mark.engine_restart

SCRIPT = ROOT / "scripts" / "swarm3"
# Its own names and subnet, so that it never meets a bed started by hand (scripts/swarm3 up).
ENV = {"SWARM3_NAME": "ca-swarm3-test", "SWARM3_BRIDGE": "caswarm3t", "SWARM3_NET": "10.216.1"}
MANAGER = "unix:///run/ca-swarm3-test-1/docker.sock"
NODES = {1: "ca-swarm3-test-1", 2: "ca-swarm3-test-2", 3: "ca-swarm3-test-3"}
ADDRESS = {1: "10.216.1.11", 2: "10.216.1.12", 3: "10.216.1.13"}
PORT = 8088
STACK = "multi"

COMPOSE = textwrap.dedent("""
    services:
      web:
        image: {busybox}
        command: ["sh", "-c", "mkdir -p /www && echo $$VERSION $$NODE > /www/index.html && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"]
        environment:
          VERSION: ${{VERSION:-v1}}
          NODE: "{{{{.Node.Hostname}}}}"
        deploy:
          replicas: 3
        x-atomic:
          route: {{port: 8080}}
          health: {{path: "${{HEALTH_PATH:-/healthz}}", timeout: 4s, interval: 1s}}
          monitor: 2s
          drain: 1s  # httpd as PID 1 ignores SIGTERM: keep the wait for SIGKILL short
    x-atomic:
      proxy:
        image: {caddy}
        ports: ["{port}:80"]
""")


def swarm3(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(SCRIPT), *args], env={**os.environ, **ENV}, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"scripts/swarm3 {' '.join(args)}: {proc.stderr}"
    return proc


def manager(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "-H", MANAGER, *args], capture_output=True, text=True, timeout=60)


def host_state() -> tuple[list[str], list[str]]:
    """The host's docker0 addresses and FORWARD rules, to check the bed leaves them as it found them."""
    addrs = subprocess.run(["ip", "-o", "addr", "show", "docker0"], capture_output=True, text=True, timeout=10)
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, timeout=10)
    return (sorted(line.split()[3] for line in addrs.stdout.splitlines() if len(line.split()) > 3),
            [r for r in rules.stdout.splitlines() if ENV["SWARM3_BRIDGE"] in r])


def host_swarm() -> str:
    proc = subprocess.run(["docker", "-H", "unix:///var/run/docker.sock", "info", "--format",
                           "{{.Swarm.LocalNodeState}}"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or "unknown"


@pytest.fixture(scope="module")
def bed(docker_engine, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("these tests start three dockerd: run them as root (scripts/test does)")
    docker0, rules = host_state()
    assert docker0 and not rules
    # scripts/swarm3 refuses to start beside a host engine in swarm mode. tests/test_swarm_deploy.py
    # puts it in one for its own file, maybe in another worker right now (-n, --dist loadfile): wait.
    deadline = time.monotonic() + 300
    while host_swarm() != "inactive" and time.monotonic() < deadline:
        time.sleep(2)
    if host_swarm() != "inactive":
        pytest.fail(f"the host's engine is in swarm mode ({host_swarm()}); scripts/swarm3 will not start beside it")
    swarm3("down")
    swarm3("up", IMAGE_BUSYBOX, IMAGE_CADDY)
    directory = tmp_path_factory.mktemp("multinode")
    (directory / "compose.yaml").write_text(COMPOSE.format(busybox=IMAGE_BUSYBOX, caddy=IMAGE_CADDY, port=PORT))
    yield directory
    swarm3("down")
    assert host_state() == (docker0, []), "the host's docker0 or FORWARD chain changed"
    assert subprocess.run(["ip", "link", "show", ENV["SWARM3_BRIDGE"]], capture_output=True,
                          timeout=10).returncode != 0, "the bridge is still there"


def deploy(directory, timeout: str = "90s", **env) -> subprocess.CompletedProcess:
    return run_cli("stack", "deploy", STACK, "--timeout", timeout, "--json", cwd=directory,
                   env={"DOCKER_HOST": MANAGER, **env}, timeout=180)


def stack_status() -> dict:
    proc = run_cli("stack", "status", STACK, "--json", env={"DOCKER_HOST": MANAGER})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def running_tasks(service: str) -> list[tuple[str, str]]:
    """(node hostname, current state) of the service's tasks meant to run now."""
    proc = manager("service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}",
                   f"{STACK}_{service}")
    return sorted(tuple(line.split()[:2]) for line in proc.stdout.splitlines())


def get(node: int, timeout: float = 20):
    import httpx

    return httpx.get(f"http://{ADDRESS[node]}:{PORT}/", timeout=timeout)


class Load(Clients):
    """One request loop per node's proxy, in threads: answers, failures and the slowest request."""

    def __init__(self, nodes=(1, 2, 3), pause: float = 0.02):
        self.nodes, self.pause = nodes, pause
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.slowest = 0.0
        super().__init__()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in nodes]

    def _run(self, node: int) -> None:
        import httpx

        with httpx.Client(timeout=20) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    # A fresh connection each time: Caddy picks an upstream per request anyway.
                    r = client.get(f"http://{ADDRESS[node]}:{PORT}/", headers={"Connection": "close"})
                    if r.status_code == 200:
                        self.answers[r.text.split()[0]] += 1
                    else:
                        self.failures.append(f"node {node}: HTTP {r.status_code} {r.text[:80]!r}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"node {node}: {type(exc).__name__}: {exc}")
                self.slowest = max(self.slowest, time.monotonic() - start)
                time.sleep(self.pause)


    @property
    def total(self) -> int:
        return sum(self.answers.values()) + len(self.failures)

    def summary(self) -> str:
        return f"{self.total} requests, {len(self.failures)} failed, slowest {self.slowest:.2f}s, {dict(self.answers)}"


def wait_until(check, timeout: float, what: str, explain=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}" + (f"\n{explain()}" if explain else ""))


def swarm_state() -> str:
    """What the manager knows, for a failure's message."""
    return "\n".join(manager(*args).stdout for args in (
        ("node", "ls"), ("service", "ls"), ("service", "ps", "--no-trunc", f"{STACK}_web"),
        ("service", "inspect", "--format", "{{json .UpdateStatus}}", f"{STACK}_web")))


def test_rollout_over_three_nodes_through_every_nodes_proxy(bed):
    first = deploy(bed, VERSION="v1")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert {s["service"]: s["outcome"] for s in result["services"]} == {"web": "created", "atomic-proxy": "created"}
    # The proxy was asked on every node at the node's own address (not at 127.0.0.1, which is not the manager here).
    assert result["proxy_nodes"] == dict.fromkeys(NODES.values(), True) and result["proxy_answers"] is True
    # Images loaded on each node, from no registry: said so, and not resolved against a registry.
    assert sorted(result["local_images"]) == sorted([IMAGE_BUSYBOX, IMAGE_CADDY])
    assert "resolve-image never" in first.stderr and "every node must have it" in first.stderr

    # Three replicas, one per node (Swarm spreads them); the proxy is global: one per node.
    assert [node for node, _ in running_tasks("web")] == sorted(NODES.values())
    assert [node for node, _ in running_tasks("atomic-proxy")] == sorted(NODES.values())
    mode = manager("service", "inspect", f"{STACK}_atomic-proxy", "--format", "{{json .Spec.Mode}}").stdout
    assert "Global" in json.loads(mode)

    # `stack status`: per node what runs there.
    status = stack_status()
    assert {n["hostname"]: sorted(t["service"] for t in n["tasks"]) for n in status["nodes"]} == dict.fromkeys(
        NODES.values(), ["atomic-proxy", "web"])
    assert {(s["service"], s["mode"], s["running"], s["desired"]) for s in status["services"]} == {
        ("web", "replicated", 3, 3), ("atomic-proxy", "global", 3, 3)}
    text = run_cli("stack", "status", STACK, env={"DOCKER_HOST": MANAGER})
    assert text.returncode == 0 and f"Node {NODES[1]} (manager, ready, active, {ADDRESS[1]})" in text.stdout, text

    # A request through any node's proxy reaches the replicas on every node (over the overlay network).
    for node in NODES:
        seen = Counter()
        for _ in range(12):
            r = get(node)
            assert r.status_code == 200, r.text
            version, where = r.text.split()
            assert version == "v1"
            seen[where] += 1
        assert set(seen) == set(NODES.values()), f"through node {node}: {seen}"

    # A rollout under load through the three proxies: Swarm starts each new task, waits for its
    # health, then stops an old one; not one request fails.
    started = time.monotonic()
    with Load() as load:
        time.sleep(1)
        second = deploy(bed, VERSION="v2")
        time.sleep(1)
    print(f"rollout over 3 nodes: {time.monotonic() - started:.1f}s, {load.summary()}")
    assert second.returncode == 0, second.stderr
    outcomes = {s["service"]: s["outcome"] for s in json.loads(second.stdout)["services"]}
    assert outcomes == {"web": "updated", "atomic-proxy": "unchanged"}
    assert load.failures == [], f"{len(load.failures)} of {load.total} failed: {load.failures[:5]}"
    assert load.answers["v2"] > 0 and set(load.answers) <= {"v1", "v2"}, load.answers
    assert {get(n).text.split()[0] for n in NODES for _ in range(3)} == {"v2"}
    assert len(running_tasks("web")) == 3
    print(run_cli("stack", "status", STACK, env={"DOCKER_HOST": MANAGER}).stdout)  # the manager's view


def test_a_broken_release_gets_no_traffic_and_is_rolled_back_exit_3(bed):
    """The new tasks never pass their health check: Swarm lists them in no proxy's DNS, rolls
    back, and `stack deploy` exits 3 (where plain `docker stack deploy` exits 0)."""
    with Load() as load:
        broken = deploy(bed, VERSION="v3", HEALTH_PATH="/missing")
    print(f"broken release: {load.summary()}")
    assert broken.returncode == 3, broken.stderr
    assert "Swarm rolled it back" in broken.stderr and "Traceback" not in broken.stderr
    web = next(s for s in json.loads(broken.stdout)["services"] if s["service"] == "web")
    assert web["outcome"] == "rolled back" and web["message"], web
    assert load.failures == [], f"{len(load.failures)} of {load.total} failed: {load.failures[:5]}"
    assert set(load.answers) == {"v2"}, load.answers  # never routed to an unhealthy task
    env = manager("service", "inspect", f"{STACK}_web", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}")
    assert "VERSION=v2" in json.loads(env.stdout)
    wait_until(lambda: len(running_tasks("web")) == 3, 30, "three v2 replicas")
    status = stack_status()
    print(run_cli("stack", "status", STACK, env={"DOCKER_HOST": MANAGER}).stdout)
    assert {(s["service"], s["update"]) for s in status["services"]} >= {("web", "rollback_completed")}


ONLY_HERE = textwrap.dedent("""
    services:
      solo:
        image: catest/only-on-the-manager:1
        command: ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"]
        deploy: {{replicas: 3}}
        x-atomic:
          health: {{path: /healthz, port: 8080, timeout: 4s, interval: 1s}}
          drain: 1s
""")


def test_an_image_on_one_node_only_is_named_with_the_nodes_that_lack_it(bed, tmp_path):
    """An image built or loaded on the manager alone: the deploy warns before submitting, and
    the nodes that reject its tasks (No such image) are named, with the way out (exit 1)."""
    assert manager("tag", IMAGE_BUSYBOX, "catest/only-on-the-manager:1").returncode == 0
    (tmp_path / "compose.yaml").write_text(ONLY_HERE.format())
    proc = run_cli("stack", "deploy", "only", "--timeout", "30s", cwd=tmp_path, env={"DOCKER_HOST": MANAGER},
                   timeout=120)
    try:
        assert proc.returncode == 1, proc.stderr
        assert "catest/only-on-the-manager:1  Warning" in proc.stderr and "every node must have it" in proc.stderr
        assert "No such image" in proc.stderr and "docker save | docker load" in proc.stderr
        lacking = proc.stderr.split("the image is not on node(s) ")[1].split(";")[0]
        assert set(lacking.split(", ")) <= {NODES[2], NODES[3]} and lacking, proc.stderr
    finally:
        manager("stack", "rm", "only")


def test_a_worker_lost_mid_rollout_the_site_keeps_answering_through_the_others(bed):
    """Node 3's engine stops (its containers go with it) while a new v4 task is starting there.
    Swarm reschedules the slot, but its updater waits for the lost task until the node is back
    (Docker 20.10): `stack deploy` sees the update stalled on a lost node and rolls it back
    (exit 3), or the update completes (exit 0) if the updater had moved on. Node 3's replicas
    run on nodes 1 and 2 afterwards; load through their proxies keeps being answered. The
    figures are printed (pytest -s)."""
    # Empty node 3 of web tasks (drain, then active again: tasks do not move back), so that Swarm's
    # spread puts the first new task there, and the loss meets a task starting on node 3.
    # Setup, not the case under test: on a loaded bed a moved task may miss its 4 s start period,
    # be killed as unhealthy (exit 137) and start again (a CI run saw 30 s pass that way). Wait longer.
    assert manager("node", "update", "--availability", "drain", NODES[3]).returncode == 0
    wait_until(lambda: len(running_tasks("web")) == 3 and NODES[3] not in {n for n, _ in running_tasks("web")}
               and all(s == "Running" for _, s in running_tasks("web")), 90, "web off node 3", swarm_state)
    assert manager("node", "update", "--availability", "active", NODES[3]).returncode == 0
    wait_until(lambda: (NODES[3], "Running") in running_tasks("atomic-proxy"), 30, "node 3's proxy back")
    proc = subprocess.Popen([sys.executable, "-m", "compose_atomic", "stack", "deploy", STACK, "--timeout", "90s",
                             "--json"], cwd=bed, env={**os.environ, "NO_COLOR": "1", "DOCKER_HOST": MANAGER,
                                                      "VERSION": "v4"},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    node3 = manager("node", "inspect", NODES[3], "--format", "{{.ID}}").stdout.strip()
    with Load(nodes=(1, 2)) as load:
        # The worst moment: a new (v4) task is starting on node 3, and Swarm's updater waits for it.
        wait_until(lambda: any(node == node3 and state in ("assigned", "accepted", "preparing", "ready", "starting")
                               for node, state in _task_states("v4")), 60, "a v4 task starting on node 3",
                   swarm_state)
        lost = time.monotonic()
        swarm3("stop-node", "3", "TERM")
        out, err = proc.communicate(timeout=150)
        settled = time.monotonic() - lost
        print(f"stack deploy exit {proc.returncode} after {settled:.1f}s:\n{err}")
        # Node 3's replica is rescheduled: three running on nodes 1 and 2.
        wait_until(lambda: manager("node", "inspect", NODES[3], "--format", "{{.Status.State}}").stdout.strip() == "down",
                   30, "node 3 seen down")
        wait_until(lambda: len(running_tasks("web")) == 3
                   and {n for n, s in running_tasks("web")} <= {NODES[1], NODES[2]}
                   and all(s == "Running" for _, s in running_tasks("web")), 60,
                   "three replicas on nodes 1 and 2", swarm_state)
        rescheduled = time.monotonic() - lost
    print(f"worker lost mid-rollout: exit {proc.returncode} after {settled:.1f}s, replicas rescheduled "
          f"after {rescheduled:.1f}s, {load.summary()}, failures: {load.failures[:5]}")
    assert proc.returncode in (0, 3), err
    assert "Traceback" not in err
    web = next(s for s in json.loads(out)["services"] if s["service"] == "web")
    assert web["outcome"] in ("updated", "rolled back"), web
    if web["outcome"] == "rolled back":
        assert f"node {NODES[3]} was lost" in web["message"] and "Swarm rolled it back" in err, err
    versions = {get(n).text.split()[0] for n in (1, 2) for _ in range(6)}
    assert versions == ({"v4"} if web["outcome"] == "updated" else {"v2"}), versions
    assert load.failures == [], f"{len(load.failures)} of {load.total} failed: {load.failures[:5]}"

    # The manager's view: node 3 down, the three replicas on nodes 1 and 2.
    status = stack_status()
    print(run_cli("stack", "status", STACK, env={"DOCKER_HOST": MANAGER}).stdout)
    nodes = {n["hostname"]: n for n in status["nodes"]}
    assert nodes[NODES[3]]["state"] == "down"
    assert sum(t["service"] == "web" for n in (1, 2) for t in nodes[NODES[n]]["tasks"]) == 3
    assert not any(t["service"] == "web" for t in nodes[NODES[3]]["tasks"])

    # The node comes back and rejoins by itself.
    swarm3("start-node", "3")
    wait_until(lambda: manager("node", "inspect", NODES[3], "--format", "{{.Status.State}}").stdout.strip() == "ready",
               30, "node 3 ready again")


def _task_states(version: str) -> list[tuple[str, str]]:
    """(node id, state) of the web tasks meant to run whose spec carries VERSION=<version>."""
    ids = manager("service", "ps", "-q", "--filter", "desired-state=running", f"{STACK}_web").stdout.split()
    if not ids:
        return []
    tasks = json.loads(manager("inspect", *ids).stdout or "[]")
    return [(t.get("NodeID", ""), t["Status"]["State"]) for t in tasks
            if f"VERSION={version}" in (t["Spec"]["ContainerSpec"].get("Env") or [])]
