"""`stack render`: the stack file Swarm gets, and what it is told Swarm cannot do."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from compose_atomic.project import ComposeOptions, Project
from compose_atomic.swarm import caddy
from compose_atomic.swarm.render import PROXY_SERVICE, health_probe, parse_port, render_stack, stack_yaml

from conftest import IMAGE_BUSYBOX, IMAGE_CADDY, docker, run_cli


def project(services: dict, x_atomic: dict | None = None, **top) -> Project:
    config = {"name": "shop", "services": services, **top}
    if x_atomic is not None:
        config["x-atomic"] = x_atomic
    return Project(name="shop", options=ComposeOptions(), config=config)


WEB = {
    "image": "registry.example.com/web:2",
    "networks": {"default": None},
    "x-atomic": {"route": {"port": 3000, "host": "shop.example.com"},
                 "health": {"path": "/healthz", "timeout": "45s", "interval": "2s"},
                 "monitor": "20s", "drain": "15s"},
}
DB = {
    "image": "postgres:17-alpine",
    "networks": {"default": None},
    "volumes": [{"type": "volume", "source": "dbdata", "target": "/var/lib/postgresql/data", "volume": {}}],
    "x-atomic": {"backup": {"schedule": "0 3 * * *"}},
}


def findings_for(rendered, key):
    return [f for f in rendered.findings if f.key == key]


def test_atomic_service_gets_safe_rolling_update_settings():
    rendered = render_stack(project({"web": WEB}), "prod")
    web = rendered.stack["services"]["web"]
    update = web["deploy"]["update_config"]
    assert update["order"] == "start-first"
    assert update["failure_action"] == "rollback"
    assert update["monitor"] == "20s"  # from x-atomic.monitor
    assert update["parallelism"] == 1
    assert update["max_failure_ratio"] == 0
    rollback = web["deploy"]["rollback_config"]
    assert rollback["order"] == "start-first" and rollback["parallelism"] == 1
    assert web["deploy"]["endpoint_mode"] == "dnsrr"
    assert web["stop_grace_period"] == "15s"  # from x-atomic.drain
    assert web["healthcheck"] == {
        "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3000/healthz"],
        "interval": "2s", "timeout": "5s", "retries": 3, "start_period": "45s",
    }
    assert "x-atomic" in web  # kept: the stack file stays self-describing


def test_defaults_and_user_settings():
    minimal = render_stack(project({"web": {"image": "w", "x-atomic": {"route": {"port": 80}}}}))
    web = minimal.stack["services"]["web"]
    assert web["deploy"]["update_config"]["monitor"] == "10s"
    # A route without x-atomic.health.path keeps the image's own HEALTHCHECK (no probe of / over it).
    assert "healthcheck" not in web
    assert web["x-atomic-gate"].startswith("the image's HEALTHCHECK, if it has one")
    probed = render_stack(project({"web": {"image": "w", "x-atomic": {"route": {"port": 80},
                                                                      "health": {"path": "/up"}}}}))
    hc = probed.stack["services"]["web"]["healthcheck"]
    assert hc["start_period"] == "60s" and hc["interval"] == "1s" and hc["test"][-1] == "http://127.0.0.1:80/up"
    assert probed.stack["services"]["web"]["x-atomic-gate"] == "x-atomic.health: wget http://127.0.0.1:80/up inside the task"
    # The user's own healthcheck and update settings win; a changed setting is reported.
    own = dict(WEB, healthcheck={"test": ["CMD", "true"]},
               deploy={"update_config": {"parallelism": 2}})
    rendered = render_stack(project({"web": own}))
    web = rendered.stack["services"]["web"]
    assert web["healthcheck"] == {"test": ["CMD", "true"]}
    assert web["deploy"]["update_config"]["parallelism"] == 2
    assert web["deploy"]["update_config"]["order"] == "start-first"
    assert findings_for(rendered, "deploy.update_config.parallelism")
    # stop-first when the user asks for it
    stop = render_stack(project({"web": dict(WEB, **{"x-atomic": {"route": {"port": 1}, "strategy": "stop-first"}})}))
    assert stop.stack["services"]["web"]["deploy"]["update_config"]["order"] == "stop-first"


def test_caddy_service_in_front_of_routed_services():
    api = {"image": "api", "x-atomic": {"route": {"port": 8000, "host": "shop.example.com", "path": "/api"}}}
    site = {"image": "site", "x-atomic": {"route": {"port": 8080}}}
    rendered = render_stack(project({"web": WEB, "api": api, "site": site},
                                    {"proxy": {"image": "caddy:2.8-alpine", "ports": ["8080:80"]}}), "prod")
    proxy = rendered.stack["services"][PROXY_SERVICE]
    assert proxy["image"] == "caddy:2.8-alpine"
    assert proxy["ports"] == [{"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"}]
    assert proxy["deploy"]["update_config"]["order"] == "stop-first"  # a host port cannot be bound twice
    assert proxy["configs"][0]["target"] == proxy["command"][-1]
    config_ref = rendered.stack["configs"]["atomic-proxy-caddy"]
    assert config_ref["file"] == "caddy.json"
    assert config_ref["name"] == f"prod_caddy_{caddy.config_digest(rendered.caddy_text)}"

    assert rendered.caddy_config["admin"] == {"disabled": True}  # nothing to reach, not even on loopback
    server = rendered.caddy_config["apps"]["http"]["servers"]["http"]
    assert server["listen"] == [":80"]
    assert server["automatic_https"] == {"disable": True}  # no 443: hosts are matched on plain HTTP
    routes = server["routes"]
    # most specific first; the route without host matches everything, last
    assert [r.get("match") for r in routes] == [
        [{"host": ["shop.example.com"], "path": ["/api", "/api/*"]}],
        [{"host": ["shop.example.com"]}],
        None,
    ]
    handler = routes[1]["handle"][0]
    assert handler["dynamic_upstreams"] == {"source": "a", "name": "tasks.web", "port": "3000", "refresh": "1s"}
    assert handler["load_balancing"]["try_duration"] == caddy.TRY_DURATION
    assert handler["health_checks"]["passive"]["fail_duration"] == caddy.FAIL_DURATION
    assert routes[2]["handle"][0]["dynamic_upstreams"]["name"] == "tasks.site"


def test_https_port_serves_host_routes_with_certificates():
    rendered = render_stack(project({"web": WEB, "site": {"image": "s", "x-atomic": {"route": {"port": 80}}}}))
    servers = rendered.caddy_config["apps"]["http"]["servers"]
    assert servers["https"]["listen"] == [":443"]
    assert [r["match"] for r in servers["https"]["routes"]] == [[{"host": ["shop.example.com"]}]]
    assert "automatic_https" not in servers["http"]  # Caddy redirects HTTP to HTTPS for the hosts
    assert [r.get("match") for r in servers["http"]["routes"]] == [None]
    assert rendered.stack["services"][PROXY_SERVICE]["image"] == "caddy:2.8-alpine"


def test_backup_sidecar_is_placed_next_to_its_database():
    sidecar = {"image": "postgres:17-alpine",
               "volumes": [{"type": "volume", "source": "backups", "target": "/backups"}]}
    offsite = {"image": "rclone/rclone", "labels": {"compose-atomic.backup-of": "db"}}
    rendered = render_stack(project({"web": WEB, "db": DB, "db-backup": sidecar, "offsite": offsite},
                                    volumes={"dbdata": {"name": "shop_dbdata"}, "backups": {"name": "shop_backups"}}),
                            "prod")
    services = rendered.stack["services"]
    constraint = ["node.labels.compose-atomic.prod.db == true"]
    assert services["db"]["deploy"]["placement"]["constraints"] == constraint
    assert services["db-backup"]["deploy"]["placement"]["constraints"] == constraint
    assert services["offsite"]["deploy"]["placement"]["constraints"] == constraint
    assert "placement" not in services["web"]["deploy"]
    assert rendered.node_labels == {"compose-atomic.prod.db": ["db", "db-backup", "offsite"]}
    # a database is never run twice on its data
    assert services["db"]["deploy"]["update_config"]["order"] == "stop-first"
    # compose's generated names go, so the stack namespaces its volumes
    assert rendered.stack["volumes"]["dbdata"] == {}


def test_database_without_sidecar_says_how_to_get_one():
    rendered = render_stack(project({"db": DB}, volumes={"dbdata": {}}))
    assert "backup generate" in findings_for(rendered, "x-atomic.backup")[0].message


def test_what_swarm_cannot_do_is_reported_not_dropped():
    web = dict(WEB, build={"context": "."}, container_name="shop-web", restart="unless-stopped",
               depends_on={"db": {"condition": "service_healthy", "required": True}},
               ports=[{"mode": "ingress", "host_ip": "127.0.0.1", "target": 3000, "published": "3000",
                       "protocol": "tcp"}])
    rendered = render_stack(project({"web": web, "db": DB}, volumes={"dbdata": {}}))
    out = rendered.stack["services"]["web"]
    for key in ("build", "container_name", "depends_on", "restart"):
        assert key not in out
        assert findings_for(rendered, key), key
    assert "service_healthy" in findings_for(rendered, "depends_on")[0].message
    assert "db" in findings_for(rendered, "depends_on")[0].message
    assert out["deploy"]["restart_policy"] == {"condition": "any"}
    assert out["ports"] == [{"target": 3000, "protocol": "tcp", "mode": "host", "published": 3000}]
    assert any("127.0.0.1" in f.message for f in findings_for(rendered, "ports"))
    assert out["deploy"]["update_config"]["order"] == "stop-first"  # a published host port
    assert not rendered.errors  # build with an image is a warning: the image is deployed
    text = stack_yaml(rendered)
    assert "# " in text and "container_name" in text.split("version:")[0]  # the file says it too

    no_image = render_stack(project({"web": {"build": {"context": "."}}}))
    assert [f.key for f in no_image.errors] == ["build"]


def test_migrations_and_alerts_are_not_silently_lost():
    web = dict(WEB, **{"x-atomic": {**WEB["x-atomic"], "migrate": {"sql": "m/*.sql", "database": "db"},
                                    "alert": {"webhook": "https://hooks.example.com/x"}}})
    rendered = render_stack(project({"web": web, "db": DB}, volumes={"dbdata": {}}))
    assert findings_for(rendered, "x-atomic.migrate")[0].severity == "warning"
    assert findings_for(rendered, "x-atomic.alert")


def test_secret_from_environment_cannot_be_deployed():
    rendered = render_stack(project({"web": WEB}, secrets={"key": {"environment": "API_KEY"}}))
    assert [f.key for f in rendered.errors] == ["secrets.key"]


def test_short_port_syntax():
    assert parse_port("80:80") == {"published": "80", "target": 80, "protocol": "tcp"}
    assert parse_port("127.0.0.1:8443:443/tcp") == {"host_ip": "127.0.0.1", "published": "8443",
                                                     "target": 443, "protocol": "tcp"}
    assert parse_port(8080)["published"] == 8080
    assert health_probe({"monitor": "5s"}) is None


# ---- against the real docker CLI and Caddy ----------------------------------------------


COMPOSE = textwrap.dedent("""
    services:
      web:
        image: {busybox}
        container_name: shop-web
        command: ["sh", "-c", "echo $$VERSION > /www/index.html && exec httpd -f -p 8080 -h /www"]
        environment:
          VERSION: "v$$1"
        depends_on:
          db: {{condition: service_healthy}}
        x-atomic:
          route: {{port: 8080}}
          health: {{path: /healthz}}
          monitor: 5s
      db:
        image: {busybox}
        volumes: ["data:/data"]
        x-atomic:
          backup: {{}}
      db-backup:
        image: {busybox}
        volumes: ["backups:/backups"]
    volumes:
      data: {{}}
      backups: {{}}
    x-atomic:
      proxy:
        image: {caddy}
        ports: ["8080:80"]
""")


def test_render_command_writes_what_docker_stack_deploy_and_caddy_accept(docker_engine, tmp_path):
    (tmp_path / "compose.yaml").write_text(COMPOSE.format(busybox=IMAGE_BUSYBOX, caddy=IMAGE_CADDY))
    proc = run_cli("stack", "render", "-o", "out/stack.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "container_name" in proc.stderr and "depends_on" in proc.stderr
    assert "Traceback" not in proc.stderr
    stack_file = tmp_path / "out" / "stack.yml"
    caddy_file = tmp_path / "out" / "stack.caddy.json"
    assert caddy_file.is_file()
    assert stack_file.stat().st_mode & 0o777 == 0o600  # it holds the services' environment
    # The docker CLI's own stack loader accepts it ($$ stays an escaped $).
    checked = docker("stack", "config", "-c", str(stack_file))
    loaded = yaml.safe_load(checked.stdout)
    assert loaded["services"]["web"]["environment"]["VERSION"] == "v$1"
    assert loaded["services"]["web"]["deploy"]["update_config"]["order"] == "start-first"
    # Caddy itself accepts the proxy's config (dynamic upstreams, retries, passive health).
    valid = docker("run", "--rm", "-v", f"{caddy_file}:/etc/caddy/c.json:ro", "--entrypoint", "caddy",
                   IMAGE_CADDY, "validate", "--config", "/etc/caddy/c.json", check=False)
    assert valid.returncode == 0, valid.stderr

    as_json = run_cli("stack", "render", "--json", cwd=tmp_path)
    data = json.loads(as_json.stdout)
    assert {f["key"] for f in data["findings"]} >= {"container_name", "depends_on"}
    assert data["stack"]["services"]["db-backup"]["deploy"]["placement"] == \
        data["stack"]["services"]["db"]["deploy"]["placement"]

    strict = run_cli("stack", "render", "--strict", cwd=tmp_path)
    assert strict.returncode == 2


def test_render_refuses_what_cannot_run_with_exit_2(docker_engine, tmp_path):
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    build: .\n    x-atomic:\n      route: {port: 80}\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    proc = run_cli("stack", "render", cwd=tmp_path)
    assert proc.returncode == 2
    assert 'service "web": build:' in proc.stderr and "image:" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad_name = run_cli("stack", "deploy", "no/slash", cwd=tmp_path)
    assert bad_name.returncode == 2 and "stack name" in bad_name.stderr


def test_deploy_dry_run_renders_and_deploys_nothing(docker_engine, tmp_path):
    (tmp_path / "compose.yaml").write_text(COMPOSE.format(busybox=IMAGE_BUSYBOX, caddy=IMAGE_CADDY))
    proc = run_cli("--dry-run", "stack", "deploy", "dryrun-stack", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "DRY-RUN MODE" in proc.stderr and "would run docker stack deploy" in proc.stderr
    written = tmp_path / ".compose-atomic" / "swarm" / "dryrun-stack"
    assert (written / "stack.yml").is_file() and (written / "caddy.json").is_file()
    assert "container_name" in proc.stderr  # warnings are shown; conversions only by render
    assert "Converted" not in proc.stderr


@pytest.mark.parametrize("args", [["stack", "--help"], ["stack", "deploy", "--help"]])
def test_stack_help(args):
    proc = run_cli(*args)
    assert proc.returncode == 0 and "Swarm" in proc.stdout


def test_plugins_adjust_the_stack_through_swarm_stack():
    from compose_atomic import hookimpl
    from compose_atomic.plugins import load_plugins, pm
    from compose_atomic.swarm.render import Finding

    class TeamLabels:
        @hookimpl
        def swarm_stack(self, project, rendered):
            assert PROXY_SERVICE in rendered.stack["services"]  # the built-in ran first
            for service in rendered.stack["services"].values():
                service.setdefault("labels", {})["team"] = "payments"
            rendered.findings.append(Finding(None, "labels", "labelled", "info"))

    load_plugins()
    pm.register(TeamLabels(), name="team-labels")
    try:
        rendered = render_stack(project({"web": WEB}))
    finally:
        pm.unregister(name="team-labels")
    assert all(s["labels"]["team"] == "payments" for s in rendered.stack["services"].values())
    assert findings_for(rendered, "labels")


def test_exit_codes_match_up():
    from compose_atomic.swarm.deploy import ServiceOutcome, StackResult

    def code(*outcomes):
        return StackResult("s", "f", [ServiceOutcome(str(i), o) for i, o in enumerate(outcomes)]).exit_code

    assert code("updated", "unchanged", "created") == 0
    assert code("updated", "rolled back") == 3
    assert code("rolled back", "rollback paused") == 4
    assert code("updated", "failed") == 1 and code("timeout") == 1 and code("paused") == 1


def test_the_rendered_file_says_which_check_gates_the_rollout():
    route_only = {"web": {"image": "app:2", "x-atomic": {"route": {"port": 8080}}}}
    images = {"app:2": {"Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/healthz"]}}
    rendered = render_stack(project(route_only), image_healthcheck=images.get)
    web = rendered.stack["services"]["web"]
    assert "healthcheck" not in web  # the image's own check is not overridden
    assert web["x-atomic-gate"] == "the image's HEALTHCHECK: CMD-SHELL wget -q -O /dev/null http://127.0.0.1:8080/healthz"
    assert "gated by the image's own HEALTHCHECK" in stack_yaml(rendered)
    # An image without one: said, as a warning.
    bare = render_stack(project(route_only), image_healthcheck=lambda image: {})
    assert bare.stack["services"]["web"]["x-atomic-gate"].startswith("none")
    assert any(f.severity == "warning" for f in findings_for(bare, "healthcheck"))
    # The service's own healthcheck wins, and is named.
    own = {"web": dict(route_only["web"], healthcheck={"test": ["CMD", "true"]})}
    assert render_stack(project(own)).stack["services"]["web"]["x-atomic-gate"] == "the service's healthcheck: CMD true"
