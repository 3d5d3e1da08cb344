"""The deploy's decisions, phase by phase, through the recording fake of the Docker gateway.

No engine: ``FakeDocker`` answers the commands and records them, ``FakeProxy`` records each
routing change. What these tests pin is which commands each decision sends, in which order;
that it all works on a real engine, proxy and app is proven in tests/test_deploy*.py.
"""

from __future__ import annotations

import io

import httpx
import pytest

from compose_atomic import docker
from compose_atomic.deploy.plan import STOP_FIRST, decide, plan_services
from compose_atomic.deploy.reconcile import COMPLETE, FORGET, PARK, UNDO, settle
from compose_atomic.deploy.rollout import Context, Replacement
from compose_atomic.deploy.state import History, Journal, Phase
from compose_atomic.errors import OperationFailed, RolledBack
from compose_atomic import hookimpl
from compose_atomic.plugins import pm
from compose_atomic.progress import Progress
from compose_atomic.project import ComposeOptions, Project
from fake_docker import Behaviour, FakeDocker, FakeProxy

NET = "p_default"


def make_project(tmp_path, **x_atomic) -> Project:
    annotation = {"route": {"port": 8080}, "monitor": "0.3s", "drain": "0.3s",
                  **x_atomic}
    config = {"name": "p", "services": {"web": {"image": "app:v2", "x-atomic": annotation}},
              "networks": {"default": {"name": NET}}, "x-atomic": {"proxy": {}}}
    return Project(name="p", options=ComposeOptions(), config=config, working_dir=tmp_path)


@pytest.fixture
def scene(tmp_path):
    fake = FakeDocker("p", NET)
    fake.image("app:v1")
    with docker.use(fake):
        yield fake, tmp_path


def replacement(fake: FakeDocker, tmp_path, *, new: Behaviour | None = None, proxied: bool = True, **x_atomic):
    fake.image("app:v2", new)
    fake.deploying["web"] = "app:v2"
    fake.hashes["web"] = "hash-2"
    project = make_project(tmp_path, **x_atomic)
    proxy = FakeProxy(fake, "web") if proxied else None
    ctx = Context(project, Progress("plain", stream=io.StringIO()), Journal(project), History(project), proxy)
    ctx.networks = [NET]
    [plan] = plan_services(project, ["web"])
    return Replacement(ctx, plan), proxy


def dial(container) -> str:
    return f"{container.networks[NET]['IPAddress']}:8080"


def index(fake: FakeDocker, *words: str) -> int:
    return next(i for i, argv in enumerate(fake.calls) if all(w in argv for w in words))


# ---- start-first ------------------------------------------------------------------------------


def test_upgrade_creates_gates_switches_with_fallback_then_drains_and_retires_the_old(scene):
    fake, tmp_path = scene
    [old] = fake.running("web", "app:v1")
    rep, proxy = replacement(fake, tmp_path)
    assert rep.plan.action == "replace" and rep.plan.reason == "configuration changed, image changed"

    assert rep.run() == "deployed"

    [new] = fake.of("web")
    assert new.id != old.id and new.status == "running"
    assert fake.commands("up", "--no-start", "--scale", "web=2")
    old_dials = [dial(old), f"p-web-{old.number}:8080"]
    new_dials = [dial(new), f"p-web-{new.number}:8080"]
    assert [c["upstreams"] for c in proxy.changes] == [new_dials + old_dials, new_dials, new_dials]
    assert proxy.changes[1]["draining"] == old_dials  # leaving, still counted
    assert proxy.changes[2]["draining"] == []
    # The old container stops only after the route left it and its open requests were counted.
    assert index(fake, "proxy", "in_flight") < index(fake, "stop", old.id) < index(fake, "rm", old.id)
    assert rep.ctx.journal.read() is None
    assert rep.ctx.history.entries("web")[-1]["outcome"] == "deployed"


def test_the_old_container_is_stopped_only_once_its_open_requests_are_done(scene):
    fake, tmp_path = scene
    [old] = fake.running("web", "app:v1")
    rep, proxy = replacement(fake, tmp_path, drain="5s")
    proxy.open_requests[dial(old)] = [1, 1, 1, 0]  # a long request still open on the old one

    rep.run()

    asked = [i for i, argv in enumerate(fake.calls) if argv[:3] == ("proxy", "in_flight", dial(old))]
    assert len(asked) >= 4 and asked[3] < index(fake, "stop", old.id)


def test_unknown_in_flight_is_never_taken_for_drained(scene):
    fake, tmp_path = scene
    [old] = fake.running("web", "app:v1")
    rep, proxy = replacement(fake, tmp_path, drain="0.5s")
    proxy.open_requests[dial(old)] = [None]  # the proxy cannot tell: hold it until drain runs out

    rep.run()

    asked = [i for i, argv in enumerate(fake.calls) if argv[:3] == ("proxy", "in_flight", dial(old))]
    assert len(asked) > 2, "it waited, asking again, instead of stopping at the first unknown"
    assert fake.commands("stop", old.id)


def test_a_new_version_that_never_gets_healthy_is_removed_and_the_old_one_never_left(scene):
    fake, tmp_path = scene
    [old] = fake.running("web", "app:v1")
    rep, proxy = replacement(fake, tmp_path, new=Behaviour(health="unhealthy"))

    with pytest.raises(RolledBack, match="turned unhealthy"):
        rep.run()

    assert [c.id for c in fake.of("web")] == [old.id] and old.status == "running"
    assert proxy.changes == [] and not fake.commands("stop", old.id)
    assert rep.ctx.history.entries("web")[-1]["outcome"] == "rolled-back"


def test_a_new_container_that_cannot_start_is_removed(scene):
    fake, tmp_path = scene
    [old] = fake.running("web", "app:v1")
    rep, proxy = replacement(fake, tmp_path, new=Behaviour(start_fails=True))

    with pytest.raises(RolledBack, match="did not start"):
        rep.run()

    assert [c.id for c in fake.of("web")] == [old.id] and proxy.changes == []


def test_a_crash_in_the_watch_window_routes_back_to_the_old_before_removing_the_new(scene):
    fake, tmp_path = scene
    [old] = fake.running("web", "app:v1")
    rep, proxy = replacement(fake, tmp_path, monitor="5s")

    def crash(change):
        if len(proxy.changes) == 1:  # the switch: the new container dies right after it
            next(c for c in fake.of("web") if c.id != old.id).status = "exited"

    proxy.on_change = crash
    with pytest.raises(RolledBack, match="exited with code 1"):
        rep.run()

    new_id = next(argv for argv in fake.calls if argv[1:3] == ("rm", "-f"))[-1]
    new = fake.calls[index(fake, "proxy", "set_upstreams")][2]  # the new container's address, first
    # Before routing back, it waited until no request was still dialing the dead address (which
    # Docker no longer shows once the container exited).
    assert index(fake, "proxy", "in_flight", new) < max(
        i for i, argv in enumerate(fake.calls) if argv[:2] == ("proxy", "set_upstreams"))
    assert proxy.changes[-1]["upstreams"] == [dial(old), f"p-web-{old.number}:8080"]
    routed_back = max(i for i, argv in enumerate(fake.calls) if argv[:2] == ("proxy", "set_upstreams"))
    assert routed_back < index(fake, "rm", new_id)
    assert old.status == "running" and not fake.commands("stop", old.id)


def test_a_proxy_error_mid_switch_is_undone_not_a_traceback(scene):
    fake, tmp_path = scene
    [old] = fake.running("web", "app:v1")
    rep, proxy = replacement(fake, tmp_path)
    proxy.fail_with = httpx.ConnectError("admin API gone")

    with pytest.raises(RolledBack, match="ConnectError"):
        rep.run()

    assert [c.id for c in fake.of("web")] == [old.id]


def test_a_failed_pull_still_tells_after_deploy(scene):
    fake, tmp_path = scene
    fake.running("web", "app:v1")
    rep, _ = replacement(fake, tmp_path)
    rep.plan.needs_pull = True
    fake.failing["pull"] = "Error: manifest unknown"
    del fake.images["app:v2"]
    seen = []

    class Listener:
        @hookimpl
        def after_deploy(self, service, outcome):
            seen.append((service, outcome))

    pm.register(Listener(), name="test-listener")
    try:
        with pytest.raises(OperationFailed, match="could not be pulled"):
            rep.run()
    finally:
        pm.unregister(name="test-listener")
    assert seen == [("web", "failed")]


# ---- replicas, stop-first ---------------------------------------------------------------------


def test_replicas_are_balanced_and_the_old_ones_are_counted_while_they_drain(scene):
    fake, tmp_path = scene
    olds = fake.running("web", "app:v1", count=2)
    rep, proxy = replacement(fake, tmp_path)

    rep.run()

    news = fake.of("web")
    assert len(news) == 2 and not {c.id for c in news} & {c.id for c in olds}
    switch = proxy.changes[0]
    assert switch["balance"] and switch["upstreams"] == [dial(c) for c in news]
    assert set(switch["draining"]) >= {dial(c) for c in olds}  # no fallback, but still counted


def test_stop_first_stops_the_old_before_starting_the_new_and_keeps_it_until_the_window_closes(scene):
    fake, tmp_path = scene
    [old] = fake.running("web", "app:v1")
    rep, proxy = replacement(fake, tmp_path, strategy="stop-first")
    assert rep.plan.strategy == STOP_FIRST

    rep.run()

    [new] = fake.of("web")
    assert index(fake, "stop", old.id) < index(fake, "start", new.id) < index(fake, "rm", old.id)
    assert proxy.changes[0]["upstreams"] == [dial(new), f"p-web-{new.number}:8080"]  # no stopped fallback


def test_stop_first_failure_starts_the_old_container_again(scene):
    fake, tmp_path = scene
    [old] = fake.running("web", "app:v1")
    rep, _ = replacement(fake, tmp_path, strategy="stop-first", new=Behaviour(health="unhealthy"))

    with pytest.raises(RolledBack, match="started again"):
        rep.run()

    assert [c.id for c in fake.of("web")] == [old.id] and old.status == "running"
    assert index(fake, "rm", "-f") < max(i for i, a in enumerate(fake.calls) if a[:2] == ("docker", "start"))


def test_every_step_is_journaled_before_it_runs(scene):
    fake, tmp_path = scene
    fake.running("web", "app:v1")
    rep, _ = replacement(fake, tmp_path)
    phases = []
    write = rep.ctx.journal.write
    rep.ctx.journal.write = lambda record: (phases.append(record["phase"]), write(record))

    rep.run()

    assert phases == [p.value for p in (Phase.CREATING, Phase.CREATED, Phase.GATING, Phase.SWITCHED,
                                        Phase.COMMITTED)]


# ---- pure decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize("phase, strategy, action, old_running, new_running, expected", [
    (Phase.PLANNED, "start-first", "replace", True, False, UNDO),
    (Phase.CREATING, "start-first", "replace", True, False, UNDO),
    (Phase.CREATED, "start-first", "replace", True, False, UNDO),
    (Phase.GATING, "start-first", "replace", True, True, UNDO),
    (Phase.SWITCHED, "start-first", "replace", True, True, UNDO),  # the old one still serves: back to it
    (Phase.SWITCHED, "start-first", "replace", False, True, COMPLETE),
    (Phase.COMMITTED, "start-first", "replace", True, True, COMPLETE),
    (Phase.OLD_STOPPED, "stop-first", "replace", False, False, UNDO),
    (Phase.SWITCHED, "stop-first", "replace", False, True, COMPLETE),
    (Phase.SWITCHED, "stop-first", "replace", False, False, UNDO),
    (Phase.IN_PLACE, "stop-first", "replace", False, True, FORGET),
    (Phase.REVIVING, "start-first", "restart-dead", False, True, PARK),
    (Phase.SWITCHED, "start-first", "restart-dead", False, True, COMPLETE),
])
def test_reconcile_settles_every_journal_state(phase, strategy, action, old_running, new_running, expected):
    assert settle(phase, strategy=strategy, action=action, old_running=old_running,
                  new_running=new_running) == expected


def container(status="running", image="sha256:a", config_hash="h"):
    return {"Id": "c1", "Image": image, "State": {"Status": status},
            "Config": {"Labels": {docker.LABEL_HASH: config_hash}}}


@pytest.mark.parametrize("containers, image_id, config_hash, expected", [
    ([], "sha256:a", "h", ("create", "")),
    ([container()], "sha256:a", "h", ("unchanged", "")),
    ([container()], "sha256:a", "h2", ("replace", "configuration changed")),
    ([container()], "sha256:b", "h", ("replace", "image changed")),
    ([container(status="exited")], "sha256:a", "h", ("restart-dead", "no running container to keep serving")),
])
def test_decide_replaces_only_what_compose_would_recreate(tmp_path, containers, image_id, config_hash, expected):
    plan = decide(make_project(tmp_path), "web", containers=containers, image_id=image_id, config_hash=config_hash)
    assert (plan.action, plan.reason) == expected


def test_decide_picks_stop_first_for_a_host_port(tmp_path):
    project = make_project(tmp_path)
    project.services["web"]["ports"] = [{"target": 8080, "published": "8080"}]
    plan = decide(project, "web", containers=[container()], image_id="sha256:b", config_hash="h")
    assert plan.strategy == STOP_FIRST and "publishes host port 8080" in plan.reason
